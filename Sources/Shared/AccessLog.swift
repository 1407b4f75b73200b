import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// A request context that carries the request's ``AccessRecord``.
public protocol AccessRecordingContext: RequestContext {
    var access: AccessRecord? { get set }
}

/// What one request did, filled in by whoever learns it (authentication: the subject; the
/// router: model, worker, retries; the relay: first byte, usage, how it ended) and written
/// once as the access log line (and the hub's metrics) when the last byte is out.
public final class AccessRecord: Sendable {
    public struct Fields: Sendable {
        public var subject: String?
        /// A configured model name (never the client's text).
        public var model: String?
        public var worker: String?
        public var retries = 0
        public var ttft: Duration?
        public var meanGap: Duration?
        public var usage: TokenUsage?
        public var queueWait: Duration?
        /// How the relayed answer ended.
        public var finish: UpstreamForwarder.Finish?
        /// The error envelope's code, when the answer was one of ours.
        public var code: String?
        /// A request to the API (not the control plane or an admin call): counted in the metrics.
        public var isAPI = false

        public init() {}
    }

    /// This request's id: the caller's `X-Request-Id` when well-formed, else a new one.
    public let id: String
    public let start = ContinuousClock.now
    private let fields = Mutex(Fields())
    private let completed = Atomic<Bool>(false)

    public init(id: String) { self.id = id }

    public func update(_ change: (inout Fields) -> Void) { fields.withLock { change(&$0) } }

    public var current: Fields { fields.withLock { $0 } }

    /// Records a relayed answer's end: its timing and usage.
    public func finished(_ finish: UpstreamForwarder.Finish) {
        update { fields in
            fields.finish = finish
            if let timing = finish.timing {
                fields.ttft = fields.ttft ?? timing.firstByte
                fields.meanGap = timing.meanGap
                fields.usage = timing.usage ?? fields.usage
            }
        }
    }

    /// True for the first caller only.
    func complete() -> Bool { !completed.exchange(true, ordering: .acquiringAndReleasing) }

    /// What became of a request, for the log and the `outcome` label.
    public static func outcome(status: Int, code: String?, finish: UpstreamForwarder.Finish?) -> String {
        switch finish {
        case .clientGone?: return "client_gone"
        case .upstreamFailed(let reason, _)?:
            return reason.hasPrefix("no data for") || reason.contains("timed out") ? "timeout" : "upstream_error"
        default: break
        }
        switch status {
        case 499: return "client_gone"
        case 401, 403: return "rejected_auth"
        case 429 where code == "rate_limit_exceeded": return "rejected_limit"
        case 429 where code == "queue_full", 503 where code == "queue_timeout": return "rejected_queue"
        case 408, 504: return "timeout"
        case ..<400: return "ok"
        case 400..<500 where status != 429: return "client_error"
        default: return "upstream_error"
        }
    }
}

/// Gives every request an id (answered in `X-Request-Id`), and writes one access log line
/// per request when its last byte is out: id, subject, model, worker, status, outcome,
/// TTFT, duration, tokens and retries.
///
/// Placed inside ``OpenAIErrorMiddleware``: an error thrown below is recorded with its
/// envelope's status and code and goes on up with the id added to its headers.
public struct AccessLogMiddleware<Context: AccessRecordingContext>: RouterMiddleware {
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

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        let record = AccessRecord(id: RequestID.accept(request.headers[RequestID.field]))
        var context = context
        context.access = record
        let method = request.method.rawValue
        let path = request.uri.path
        do {
            var response = try await next(request, context)
            response.headers[RequestID.field] = record.id
            let status = Int(response.status.code)
            guard response.body.contentLength == nil else {
                complete(record, method: method, path: path, status: status)
                return response
            }
            let body = response.body
            response.body = ResponseBody { writer in
                do {
                    try await body.write(writer)
                } catch {
                    record.update { if $0.finish == nil { $0.finish = .clientGone(.init()) } }
                    complete(record, method: method, path: path, status: status)
                    throw error
                }
                complete(record, method: method, path: path, status: status)
            }
            return response
        } catch is CancellationError {
            complete(record, method: method, path: path, status: 499)
            throw CancellationError()
        } catch var error as OpenAIError {
            error.headers[RequestID.field] = record.id
            record.update { $0.code = error.code }
            complete(record, method: method, path: path, status: Int(error.status.code))
            throw error
        } catch {
            let envelope = OpenAIError.from(error)
            record.update { $0.code = envelope.code }
            complete(record, method: method, path: path, status: Int(envelope.status.code))
            throw error
        }
    }

    private func complete(_ record: AccessRecord, method: String, path: String, status: Int) {
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
        }
        if fields.retries > 0 { metadata["retries"] = "\(fields.retries)" }
        if let code = fields.code { metadata["code"] = "\(code)" }
        logger.log(level: level, "\(method) \(path) \(status)", metadata: metadata)
    }

    static func milliseconds(_ duration: Duration) -> String {
        let value = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
        return String(format: "%.1f", value)
    }
}

extension RequestID {
    public static let field = HTTPField.Name(header)!
}
