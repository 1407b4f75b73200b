import Server
import Foundation
import Hummingbird
import Logging
import Config
import Wire

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
        let record = AccessRecord(id: RequestIDHeader.accept(request.headers[RequestIDHeader.field]))
        var context = context
        context.access = record
        let method = request.method.rawValue
        let path = request.uri.path
        do {
            var response = try await next(request, context)
            response.headers[RequestIDHeader.field] = record.id
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
            error.headers[RequestIDHeader.field] = record.id
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
        String(format: "%.1f", duration.milliseconds)
    }
}
