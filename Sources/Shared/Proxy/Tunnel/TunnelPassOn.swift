import HTTPTypes
import NIOCore
import NIOHTTPTypes
import Server

/// Answers, in this process, a request on a tunnel stream that the data plane does not claim:
/// on a worker, its own router (the admin API the hub relays to), so a worker behind NAT is
/// steered exactly like one the hub dials. It writes the answer's parts to `stream`.
public protocol TunnelResponder: Sendable {
    func respond(to head: HTTPRequest, body: ByteBuffer, on stream: any Channel) async
}

/// The last handler of a tunnel stream: reads a request the data plane passed on (its body
/// up to the limit, else 413) and hands it to the ``TunnelResponder`` as a child task of the
/// ``DataPlaneRunner``.
final class TunnelPassOn: ChannelInboundHandler {
    typealias InboundIn = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart

    private let responder: any TunnelResponder
    private let runner: DataPlaneRunner
    private let maxBodyBytes: Int
    private var head: HTTPRequest?
    private var body = ByteBuffer()

    init(responder: any TunnelResponder, runner: DataPlaneRunner, maxBodyBytes: Int) {
        self.responder = responder
        self.runner = runner
        self.maxBodyBytes = maxBodyBytes
    }

    /// A stream reset by the hub (its client left) ends here; the stream is closed already.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {}

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            head = request
        case .body(var part):
            guard head != nil else { return }
            guard body.readableBytes + part.readableBytes <= maxBodyBytes else {
                head = nil
                return fail(context, DataPlaneDispatcher.tooLarge, status: .contentTooLarge)
            }
            body.writeBuffer(&part)
        case .end:
            guard let request = head else { return }
            head = nil
            let (responder, body, stream) = (self.responder, self.body, context.channel)
            self.body = ByteBuffer()
            _ = runner.run(on: context.eventLoop) { await responder.respond(to: request, body: body, on: stream) }
        }
    }

    private func fail(_ context: ChannelHandlerContext, _ error: OpenAIError, status: HTTPResponse.Status) {
        let body = ByteBuffer(bytes: error.body)
        let response = HTTPResponse(status: status, headerFields: [.contentType: "application/json",
                                                                   .contentLength: String(body.readableBytes)])
        context.write(wrapOutboundOut(.head(response)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}
