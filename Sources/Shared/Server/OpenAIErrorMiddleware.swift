import Logging
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Wire

/// Renders every error, framework ones included, in the OpenAI envelope.
public struct OpenAIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        do {
            return try await next(request, context)
        } catch is CancellationError {
            // The client went away (e.g. while queued); nobody reads this answer.
            context.logger.debug("request cancelled: client gone")
            return Response(status: .init(code: 499, reasonPhrase: "Client Closed Request"))
        } catch {
            if !(error is OpenAIError) && !(error is HTTPError) && !(error is NIOTooManyBytesError) {
                context.logger.error("unhandled error", metadata: ["error": "\(error)"])
            }
            return try OpenAIError.from(error).response(from: request, context: context)
        }
    }
}

/// A JSON response with the wire encoding (snake_case keys).
public func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
    let data = try WireCoding.encoder().encode(value)
    return Response(status: status, headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(bytes: data)))
}
