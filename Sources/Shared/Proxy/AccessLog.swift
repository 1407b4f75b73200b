import Server
import Foundation
import Hummingbird
import Logging
import Config
import Wire

/// Writes one access log line per request when its last byte is out: id, subject, model,
/// worker, status, outcome, TTFT, duration, tokens and retries; and tells `onComplete`
/// (the hub's metrics). One for both planes: Hummingbird's routes and the data plane.
public struct AccessLog: Sendable {
    public typealias Completion = @Sendable (_ record: AccessRecord, _ fields: AccessRecord.Fields, _ status: Int,
                                             _ outcome: String, _ duration: Duration) -> Void
    let logger: Logger
    /// Paths logged at debug rather than info (heartbeats, health checks, scrapes).
    let quiet: @Sendable (String) -> Bool
    let onComplete: Completion?

    public init(logger: Logger, quiet: @escaping @Sendable (String) -> Bool, onComplete: Completion? = nil) {
        self.logger = logger
        self.quiet = quiet
        self.onComplete = onComplete
    }

    /// Writes the record's line, once (later calls do nothing).
    func complete(_ record: AccessRecord, method: String, path: String, status: Int) {
        guard record.complete() else { return }
        let fields = record.current
        let duration = ContinuousClock.now - record.start
        let outcome = AccessRecord.outcome(status: status, code: fields.code, finish: fields.finish)
        defer { onComplete?(record, fields, status, outcome, duration) }
        let level: Logger.Level = quiet(path) ? .debug : .info
        guard logger.logLevel <= level else { return }  // the line is built only when it is written
        var metadata: Logger.Metadata = [
            "request_id": "\(record.id)", "method": "\(method)", "path": "\(path)", "status": "\(status)",
            "outcome": "\(outcome)", "duration_ms": "\(Self.milliseconds(duration))",
        ]
        if let subject = fields.subject { metadata["subject"] = "\(subject)" }
        if let model = fields.model { metadata["model"] = "\(model)" }
        if let worker = fields.worker { metadata["worker"] = "\(worker)" }
        if let ttft = fields.ttft { metadata["ttft_ms"] = "\(Self.milliseconds(ttft))" }
        if let usage = fields.usage {
            metadata["tokens_in"] = "\(usage.prompt)"
            metadata["tokens_out"] = "\(usage.completion)"
            if let cached = usage.cached { metadata["tokens_cached"] = "\(cached)" }
        }
        if let route = fields.route {
            metadata["route"] = "\(route)"
            if fields.predictedBlocks > 0 { metadata["predicted_blocks"] = "\(fields.predictedBlocks)" }
        }
        if fields.retries > 0 { metadata["retries"] = "\(fields.retries)" }
        if let code = fields.code { metadata["code"] = "\(code)" }
        logger.log(level: level, "\(method) \(path) \(status)", metadata: metadata)
    }

    static func milliseconds(_ duration: Duration) -> String {
        String(format: "%.1f", duration.milliseconds)
    }
}
