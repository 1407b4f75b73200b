import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import Server
import Wire

/// The handler at the end of an upstream connection's pipeline, and the relay: performs
/// what its ``UpstreamConnectionStateMachine`` decides, writing the answer straight to the
/// client's ``ClientWriter`` on the same event loop. A stream's chunks go out as they come;
/// reads from the upstream pause while the client's connection is not writable (and the
/// client is cut off when it stays so past its write timeout). No task, no async sequence.
final class UpstreamConnection: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    private let key: ConnectionPool.Key?
    private let pool: ConnectionPool?
    private var context: ChannelHandlerContext?
    private var machine = UpstreamConnectionStateMachine()
    private var exchange: Exchange?
    /// The answer is a stream being relayed (flush the client after each read).
    private var streaming = false
    /// The head deadline, then the stream's silence check.
    private var timer: Scheduled<Void>?
    private var shutdownWatch: Int?

    /// - Parameters: key, pool: where the connection is parked between exchanges; nil for a
    ///   connection that serves one exchange (a tunnel's HTTP/2 stream), closed after it.
    init(key: ConnectionPool.Key?, pool: ConnectionPool?) {
        self.key = key
        self.pool = pool
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    var isActive: Bool { context?.channel.isActive ?? false }

    func begin(_ exchange: Exchange) {
        let action = machine.begin(exchange.limits, channelActive: isActive)
        if case .refuse(let error) = action { return exchange.promise.succeed(.failed(nil, error)) }
        self.exchange = exchange
        let id = exchange.id
        exchange.writer.onGone = { [self] in
            perform(machine.clientDeparted(id))
            perform(machine.readerLeft(id))
        }
        if let shutdown = exchange.shutdown, let loop = context?.eventLoop {
            let bound = NIOLoopBound(self, eventLoop: loop)
            shutdownWatch = shutdown.onExpiry { loop.execute { bound.value.perform(bound.value.machine.abort(id, .shuttingDown)) } }
        }
        perform(action)
    }

    func read(context: ChannelHandlerContext) { perform(machine.read()) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): perform(machine.head(head, now: .now()))
        case .body(let chunk): perform(machine.body(chunk, now: .now()))
        case .end: perform(machine.end())
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if streaming { exchange?.writer.flush() }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        perform(machine.channelInactive())
        if let pool, let key { pool.forget(key, context.channel) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let isReset = (error as? IOError).map { [ECONNRESET, EPIPE].contains($0.errnoCode) } ?? false
        perform(machine.errorCaught(.transport(error), isReset: isReset))
    }

    private func perform(_ action: UpstreamConnectionStateMachine.Action) {
        switch action {
        case .none, .refuse:
            break
        case .sendRequest(let headDeadline):
            guard let context, let exchange else { return }
            arm(headDeadline) { $0.headDeadlinePassed() }
            context.write(wrapOutboundOut(.head(exchange.head)), promise: nil)
            if exchange.body.readableBytes > 0 {
                context.write(wrapOutboundOut(.body(.byteBuffer(exchange.body))), promise: nil)
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        case .beginStream(let head, let silenceCheck):
            guard let exchange else { return }
            let id = exchange.id
            streaming = true
            arm(silenceCheck) { $0.silenceCheck(now: .now()) }
            exchange.writer.onWritable = { [self] in perform(machine.readerWantsMore(id, now: .now())) }
            exchange.writer.head(Self.response(head))
            exchange.promise.succeed(.relayed)
            if !exchange.writer.isWritable { perform(machine.readerFull(now: .now())) }
        case .yield(let chunk, let first):
            guard let exchange else { return }
            if first { exchange.onFirstByte?() }
            exchange.writer.body(chunk)
            if !exchange.writer.isWritable { perform(machine.readerFull(now: .now())) }
        case .succeed(var head, var body, let after):
            guard let exchange else { return }
            let status = Int(head.status.code)
            if status >= 400, body.readableBytes == 0 { (head, body) = Self.explained(head) }
            // 501 is the engine saying it cannot do this at all (llama-server without --reranking, a
            // model without FIM tokens): another worker's copy would say the same.
            // A worker's "full" answer is always held back: the caller sends the request elsewhere or queues it.
            let full = status == 429 && head.headers.first(name: admissionHeaderName) == admissionFull
            if full || exchange.interceptRetryable && (status >= 500 && status != 501 || status == 429) {
                let reply = UpstreamForwarder.ErrorReply(status: HTTPResponse.Status(code: status, reasonPhrase: head.status.reasonPhrase),
                                                         headers: HTTPForwarding.responseHeaders(head.headers), body: body)
                ended(after)
                return exchange.promise.succeed(.failed(reply, full ? .workerFull : .httpStatus(status)))
            }
            // No first-byte time: llama-server sends a non-streamed head only after generating
            // every token, so that time measures the whole generation, not the worker's health.
            var timing = UpstreamForwarder.Timing()
            timing.status = status
            if exchange.limits.readUsage { timing.usage = ResponseTail.usage(in: body) }
            ended(after)
            exchange.onFinish(UpstreamForwarder.finish(status: status, timing: timing))
            exchange.writer.complete(Self.response(head), body: body)
            exchange.promise.succeed(.relayed)
        case .finishStream(let timing, let after):
            guard let exchange else { return }
            ended(after)
            exchange.onFinish(.completed(timing))
            exchange.writer.end()
        case .failAnswer(let failure):
            guard let exchange else { return }
            closed()
            switch failure {
            case .upstream(let error): exchange.promise.succeed(.failed(nil, error))
            case .clientDeparted: exchange.promise.succeed(.clientGone)
            }
        case .failStream(let error, let timing):
            guard let exchange else { return }
            closed()
            let writer = exchange.writer
            switch error.kind {
            case .readerStalled:
                // The client stopped reading: its problem, not the upstream's.
                exchange.logger.warning("client stopped reading a stream; connection closed", metadata: ["error": "\(error)"])
                exchange.onFinish(.clientGone(timing))
                writer.closeConnection()
            case .shuttingDown:
                // Not the upstream's failure: this process ran out of shutdown grace.
                exchange.logger.notice("stream ended: shutdown grace is over")
                exchange.onFinish(.clientGone(timing))
                writer.body(OpenAIError.shuttingDown.sseEvent)
                writer.end()
            default:
                exchange.logger.warning("upstream stream failed", metadata: ["error": "\(error)"])
                exchange.onFinish(.upstreamFailed(error, timing))
                writer.body(OpenAIError(.upstreamStreamError, message: "The upstream failed while streaming: \(error)").sseEvent)
                writer.end()
            }
        case .abandonStream(let timing):
            guard let exchange else { return }
            closed()
            exchange.onFinish(.clientGone(timing))
        case .close:
            closed()
        case .read:
            context?.read()
        case .scheduleSilenceCheck(let next):
            arm(next) { $0.silenceCheck(now: .now()) }
        }
    }

    /// An error answer without a body (llama.cpp's HTTP server refuses a malformed header,
    /// such as `Accept: **`, with a bare 400) made into an OpenAI envelope: every error a client
    /// gets says what happened.
    static func explained(_ head: HTTPResponseHead) -> (HTTPResponseHead, ByteBuffer) {
        let status = Int(head.status.code)
        var error = OpenAIError(.engineError, message: "The engine answered HTTP \(status) without a message"
                                    + (status < 500 ? "; a malformed header (such as Accept) or body can cause this" : ""))
        // The engine's own status, and whose mistake it names.
        error.status = HTTPResponse.Status(code: status)
        error.type = status < 500 ? .invalidRequest : .server
        var head = head
        head.headers.replaceOrAdd(name: "Content-Type", value: "application/json")
        return (head, ByteBuffer(bytes: error.body))
    }

    /// The upstream's head as the client gets it: hop-by-hop and CORS headers removed.
    private static func response(_ head: HTTPResponseHead) -> HTTPResponse {
        HTTPResponse(status: HTTPResponse.Status(code: Int(head.status.code), reasonPhrase: head.status.reasonPhrase),
                     headerFields: HTTPForwarding.responseHeaders(head.headers))
    }

    /// One timer at a time: the head deadline, then the stream's silence check.
    private func arm(_ deadline: NIODeadline, _ event: @escaping (inout UpstreamConnectionStateMachine) -> UpstreamConnectionStateMachine.Action) {
        timer?.cancel()
        guard let context else { return }
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            perform(event(&machine))
        }
    }

    /// Forgets the exchange: its timer, its watch and its hold on the client's writer.
    private func release() {
        timer?.cancel()
        timer = nil
        if let watch = shutdownWatch { exchange?.shutdown?.cancel(watch) }
        shutdownWatch = nil
        exchange?.writer.onGone = nil
        exchange?.writer.onWritable = nil
        exchange = nil
        streaming = false
    }

    /// The exchange ended cleanly: park the connection for the next one, or close it. An
    /// HTTP/2 stream (no pool) has closed itself with the answer's end: closing it again
    /// would send a RST_STREAM for every request.
    private func ended(_ after: UpstreamConnectionStateMachine.After) {
        release()
        guard let context, pool != nil else { return }
        switch after {
        case .park(let read):
            guard let pool, let key else { return }
            pool.park(key, PooledConnection(channel: context.channel, handler: NIOLoopBound(self, eventLoop: context.eventLoop)))
            if read { context.read() }
        case .close:
            context.close(promise: nil)
        }
    }

    /// The exchange (if any) ended with a failure: the connection closes.
    private func closed() {
        release()
        context?.close(promise: nil)
    }
}
