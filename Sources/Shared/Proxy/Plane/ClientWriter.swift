import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Writes one answer to the client's connection, on its event loop: the head (with the
/// exchange's own headers added), body parts as they come, the end. The upstream's relay
/// calls it directly (both connections share the loop), and learns from it when the client
/// can take more (``onWritable``) or has gone (``onGone``).
final class ClientWriter {
    enum State: Equatable {
        case awaitingHead
        /// The head is out with this status.
        case answering(status: Int)
        case ended(status: Int)
        /// The connection closed before the end.
        case gone(status: Int?)
    }

    private let context: ChannelHandlerContext
    private let headers: @Sendable () -> HTTPFields
    private let ended: (_ status: Int) -> Void
    private let gone: (_ status: Int?) -> Void
    private(set) var state = State.awaitingHead
    /// Called when the client's connection can take writes again (the relay resumes reads).
    var onWritable: (() -> Void)?
    /// Called once when the client's connection closes before the end.
    var onGone: (() -> Void)?

    /// - Parameters:
    ///   - headers: added to the answer's head (request id, CORS), read when the head is written.
    ///   - ended: told when the answer's end is out.
    ///   - gone: told when the connection closed first (with the status, if the head was out).
    init(context: ChannelHandlerContext, headers: @escaping @Sendable () -> HTTPFields,
         ended: @escaping (_ status: Int) -> Void, gone: @escaping (_ status: Int?) -> Void) {
        self.context = context
        self.headers = headers
        self.ended = ended
        self.gone = gone
    }

    var eventLoop: any EventLoop { context.eventLoop }
    var isWritable: Bool { context.channel.isWritable }
    var hasHead: Bool { state != .awaitingHead }

    func head(_ response: HTTPResponse) {
        guard case .awaitingHead = state else { return }
        var response = response
        for field in headers() { response.headerFields[field.name] = field.value }
        state = .answering(status: response.status.code)
        context.write(NIOAny(HTTPResponsePart.head(response)), promise: nil)
    }

    func body(_ buffer: ByteBuffer) {
        guard case .answering = state else { return }
        context.write(NIOAny(HTTPResponsePart.body(buffer)), promise: nil)
    }

    func flush() { context.flush() }

    func end() {
        guard case .answering(let status) = state else { return }
        state = .ended(status: status)
        onWritable = nil
        onGone = nil
        context.writeAndFlush(NIOAny(HTTPResponsePart.end(nil)), promise: nil)
        ended(status)
    }

    /// A whole answer at once: head, body (with its length) and end, flushed once.
    func complete(_ response: HTTPResponse, body: ByteBuffer) {
        var response = response
        response.headerFields[.contentLength] = String(body.readableBytes)
        head(response)
        if body.readableBytes > 0 { self.body(body) }
        end()
    }

    /// Closes the client's connection (a client that stopped reading).
    func closeConnection() { context.close(promise: nil) }

    // MARK: from the dispatcher

    func writabilityChanged() {
        if context.channel.isWritable { onWritable?() }
    }

    func connectionClosed() {
        let status: Int?
        switch state {
        case .awaitingHead: status = nil
        case .answering(let code): status = code
        case .ended, .gone: return
        }
        state = .gone(status: status)
        let relay = onGone
        onGone = nil
        onWritable = nil
        relay?()  // the relay records how the answer ended before the record is written
        gone(status)
    }
}
