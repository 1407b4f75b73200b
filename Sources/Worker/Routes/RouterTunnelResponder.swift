import Hummingbird
import HTTPTypes
import Logging
import NIOCore
import NIOHTTPTypes
import Proxy
import Server

/// The worker's own router answering what the hub sends over a tunnel besides inference: the
/// admin API (drain, load and unload, reset, logs and their follow, metrics, cache wipes).
/// The same routes, middlewares and credential checks as on its listener, so a worker behind
/// NAT is steered exactly like one the hub dials.
struct RouterTunnelResponder: TunnelResponder {
    let responder: RouterResponder<WorkerRequestContext>
    let logger: Logger

    func respond(to head: HTTPRequest, body: ByteBuffer, on stream: any Channel) async {
        let request = Request(head: head, body: RequestBody(buffer: body))
        let context = WorkerRequestContext(source: ApplicationRequestContextSource(channel: stream, logger: logger))
        var response: Response
        do {
            response = try await responder.respond(to: request, context: context)
        } catch {
            response = (try? OpenAIError.from(error).response(from: request, context: context))
                ?? Response(status: .internalServerError)
        }
        if let length = response.body.contentLength { response.headers[.contentLength] = String(length) }
        do {
            try await stream.writeAndFlush(HTTPResponsePart.head(response.head)).get()
            try await response.body.write(StreamBodyWriter(stream: stream))
        } catch {
            // The hub reset the stream (its admin left, a follow ended): nothing more to write.
            stream.close(promise: nil)
        }
    }
}

/// Writes a response body to a tunnel stream, each part as the stream takes it (HTTP/2 flow
/// control holds a follow whose reader is slow).
private struct StreamBodyWriter: ResponseBodyWriter {
    let stream: any Channel

    mutating func write(_ buffer: ByteBuffer) async throws {
        try await stream.writeAndFlush(HTTPResponsePart.body(buffer)).get()
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        try await stream.writeAndFlush(HTTPResponsePart.end(trailingHeaders)).get()
    }
}
