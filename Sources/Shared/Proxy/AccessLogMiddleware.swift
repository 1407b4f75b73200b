import Server
import Foundation
import Hummingbird
import Logging
import Config
import Wire

/// Gives every request Hummingbird answers an id (answered in `X-Request-Id`), and writes
/// its ``AccessLog`` line when its last byte is out. (The data plane's requests get theirs
/// from ``DataPlaneDispatcher``.)
///
/// Placed inside ``OpenAIErrorMiddleware``: an error thrown below is recorded with its
/// envelope's status and code and goes on up with the id added to its headers.
public struct AccessLogMiddleware<Context: AccessRecordingContext>: RouterMiddleware {
    let log: AccessLog

    public init(_ log: AccessLog) { self.log = log }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        let record = AccessRecord(id: RequestIDHeader.accept(request.headers[RequestIDHeader.field]))
        var context = context
        context.access = record
        let method = request.method.rawValue
        let path = request.uri.path
        let log = self.log
        do {
            var response = try await next(request, context)
            response.headers[RequestIDHeader.field] = record.id
            let status = Int(response.status.code)
            guard response.body.contentLength == nil else {
                log.complete(record, method: method, path: path, status: status)
                return response
            }
            let body = response.body
            response.body = ResponseBody { writer in
                do {
                    try await body.write(writer)
                } catch {
                    record.update { if $0.finish == nil { $0.finish = .clientGone(.init()) } }
                    log.complete(record, method: method, path: path, status: status)
                    throw error
                }
                log.complete(record, method: method, path: path, status: status)
            }
            return response
        } catch is CancellationError {
            log.complete(record, method: method, path: path, status: 499)
            throw CancellationError()
        } catch var error as OpenAIError {
            error.headers[RequestIDHeader.field] = record.id
            record.update { $0.code = error.code }
            log.complete(record, method: method, path: path, status: Int(error.status.code))
            throw error
        } catch {
            let envelope = OpenAIError.from(error)
            record.update { $0.code = envelope.code }
            log.complete(record, method: method, path: path, status: Int(envelope.status.code))
            throw error
        }
    }
}
