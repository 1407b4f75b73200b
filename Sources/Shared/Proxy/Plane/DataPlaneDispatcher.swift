import HTTPTypes
import NIOCore
import NIOHTTPTypes
import Synchronization
import Server
import Wire

/// One listener for both planes: sits in each HTTP/1 connection's pipeline after
/// Hummingbird's connection-state handler, answers the requests its ``DataPlane`` claims,
/// and passes every other request on to Hummingbird unchanged.
///
/// - Order: HTTP/1 answers go out in request order. Parts that arrive while a claimed
///   request is being answered, or a claimed request that arrives while Hummingbird is still
///   answering an earlier one (a pipelining client), are held and replayed in order.
/// - The connection-state handler before it sees every request and answer, so idle
///   timeouts and graceful shutdown (close after the answer in progress) hold for both.
/// - A claimed body is read whole, up to the plane's limit (413: the rest is dropped and the
///   connection kept) within its timeout (408: the connection closes). `Expect: 100-continue`
///   is answered at once: `100 Continue`, or 413 when the announced length is over the limit.
final class DataPlaneDispatcher: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private enum State {
        case idle
        /// A request Hummingbird answers is being read.
        case passing
        /// A claimed request is being read.
        case reading(head: HTTPRequest, body: ByteBuffer, record: AccessRecord, timer: Scheduled<Void>?)
        /// A claimed request is being answered.
        case answering(ClientWriter)
        /// The rest of a request answered early (413) is read and dropped; then the next may come.
        case discarding
        /// The connection closes after an early answer (408), or has closed; nothing more is read.
        case rejected
    }

    private let plane: any DataPlane
    private let runner: DataPlaneRunner
    private let accessLog: AccessLog
    private var state = State.idle
    private var context: ChannelHandlerContext?
    /// Requests passed on to Hummingbird whose answer's end has not gone out yet.
    private var passedOpen = 0
    /// Parts held back to keep answers in request order.
    private var held = CircularBuffer<HTTPRequestPart>()
    private var readPending = false
    /// Held parts beyond which the connection stops reading.
    private static let maxHeld = 64

    static let tooLarge = OpenAIError(.requestTooLarge, message: "Request body is larger than the configured limit")

    init(plane: any DataPlane, runner: DataPlaneRunner, accessLog: AccessLog) {
        self.plane = plane
        self.runner = runner
        self.accessLog = accessLog
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        connectionClosed()
        self.context = nil
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if !held.isEmpty || mustHold(part) {
            held.append(part)
            return
        }
        handle(part, context: context)
    }

    /// Whether `part` has to wait for the answer in progress.
    private func mustHold(_ part: HTTPRequestPart) -> Bool {
        switch state {
        case .answering: return true
        case .idle:
            if case .head(let head) = part, passedOpen > 0, plane.claims(head) { return true }
            return false
        case .passing, .reading, .discarding, .rejected: return false
        }
    }

    private func handle(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        switch (state, part) {
        case (.idle, .head(let head)):
            guard plane.claims(head) else {
                state = .passing
                passedOpen += 1
                context.fireChannelRead(wrapInboundOut(part))
                return
            }
            let record = AccessRecord(id: RequestIDHeader.accept(head.headerFields[RequestIDHeader.field]))
            let timer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(plane.bodyTimeout)) { [self] in
                reject(OpenAIError(.requestBodyTimeout, message: "The request body did not arrive within \(plane.bodyTimeout)"), close: true)
            }
            // Sized for the announced body (within the limit): one allocation, no regrowth.
            let announced = head.headerFields[.contentLength].flatMap { Int($0) } ?? 0
            let body = context.channel.allocator.buffer(capacity: min(max(announced, 0), plane.maxBodyBytes))
            state = .reading(head: head, body: body, record: record, timer: timer)
            let expectsContinue = head.headerFields[.expect]?.lowercased() == "100-continue"
            guard announced <= plane.maxBodyBytes else {
                // Refused before the body is sent: a client that asked first (curl does above
                // 1 MiB) sends nothing more, so the connection closes; another one's body is dropped.
                return reject(Self.tooLarge, close: expectsContinue)
            }
            if expectsContinue {
                // Without it the client waits (curl: 1 s) before sending the body.
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
            }
        case (.passing, .end):
            state = .idle
            context.fireChannelRead(wrapInboundOut(part))
        case (.passing, _):
            context.fireChannelRead(wrapInboundOut(part))
        case (.reading(let head, var body, let record, let timer), .body(var chunk)):
            state = .idle  // keeps `body` uniquely referenced while it grows
            guard body.readableBytes + chunk.readableBytes <= plane.maxBodyBytes else {
                state = .reading(head: head, body: body, record: record, timer: timer)
                return reject(Self.tooLarge, close: false)
            }
            body.writeBuffer(&chunk)
            state = .reading(head: head, body: body, record: record, timer: timer)
        case (.reading(let head, let body, let record, let timer), .end):
            timer?.cancel()
            answer(head, body: body, record: record, context: context)
        case (.discarding, .end):
            state = .idle
        case (.discarding, _), (.rejected, _):
            break
        default:
            // A part out of order (the codec guarantees head, body..., end): end the connection.
            context.close(promise: nil)
        }
    }

    private func answer(_ head: HTTPRequest, body: ByteBuffer, record: AccessRecord, context: ChannelHandlerContext) {
        let headers = ExtraHeaders([RequestIDHeader.field: record.id])
        let keepAlive = !(head.headerFields[.connection]?.lowercased().contains("close") ?? false)
        let method = head.method.rawValue
        let path = String(ClientExchange.requestPath(head.path))
        let accessLog = self.accessLog
        let writer = ClientWriter(context: context, headers: { headers.current }, ended: { [self] status in
            accessLog.complete(record, method: method, path: path, status: status)
            answered(keepAlive: keepAlive)
        }, gone: { status in
            record.update { if $0.finish == nil, status != nil { $0.finish = .clientGone(.init()) } }
            accessLog.complete(record, method: method, path: path, status: status ?? 499)
        })
        state = .answering(writer)
        let exchange = ClientExchange(request: head, body: body, access: record,
                                      departure: ClientDepartureHandler.departure(of: context.channel),
                                      peer: context.channel.remoteAddress?.ipAddress,
                                      writer: NIOLoopBound(writer, eventLoop: context.eventLoop), headers: headers, runner: runner)
        plane.answer(exchange)
    }

    /// The claimed request's answer is out: the next request may be read.
    private func answered(keepAlive: Bool) {
        state = .idle
        guard keepAlive, let context else {
            context?.close(promise: nil)
            return
        }
        replayHeld(context)
    }

    /// Answers a claimed request early: its body too large (the rest is read and dropped, as
    /// Hummingbird does) or too slow (`close`: the connection ends, its rest cannot be waited for).
    private func reject(_ error: OpenAIError, close: Bool) {
        guard case .reading(let head, _, let record, let timer) = state, let context else { return }
        timer?.cancel()
        state = close ? .rejected : .discarding
        record.update { $0.code = error.code }
        var headers = error.headers
        headers[.contentType] = "application/json"
        if close {
            headers[.connection] = "close"
            held.removeAll()
        }
        headers[RequestIDHeader.field] = record.id
        let body = ByteBuffer(bytes: error.body)
        headers[.contentLength] = String(body.readableBytes)
        context.write(wrapOutboundOut(.head(HTTPResponse(status: error.status, headerFields: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        let end = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if close { end.whenComplete { _ in context.close(promise: nil) } }
        let path = String(ClientExchange.requestPath(head.path))
        accessLog.complete(record, method: head.method.rawValue, path: path, status: error.status.code)
    }

    private func replayHeld(_ context: ChannelHandlerContext) {
        guard !held.isEmpty else { return }
        while let part = held.first, !mustHold(part) {
            held.removeFirst()
            handle(part, context: context)
        }
        // Outside a read, Hummingbird's async channel hands parts on only at read-complete.
        context.fireChannelReadComplete()
        if held.count < Self.maxHeld, readPending {
            readPending = false
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .answering(let writer) = state { writer.writabilityChanged() }
        context.fireChannelWritabilityChanged()
    }

    /// A client that closes its side while its answer is in progress has left (as
    /// ``ClientDepartureHandler`` tells waits): the connection closes and the relay stops.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(.inputClosed) = event as? ChannelEvent {
            switch state {
            case .reading, .answering:
                context.close(promise: nil)
                return
            default:
                break
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        connectionClosed()
        context.fireChannelInactive()
    }

    /// The connection closed: a claimed request in progress ends (the relay stops, the record
    /// is written). Also called when the handler is removed: Hummingbird's state handler
    /// before this one does not pass `channelInactive` on.
    private func connectionClosed() {
        switch state {
        case .reading(_, _, _, let timer): timer?.cancel()
        case .answering(let writer): writer.connectionClosed()
        default: break
        }
        state = .rejected
    }

    // MARK: outbound

    func read(context: ChannelHandlerContext) {
        guard held.count < Self.maxHeld else {
            readPending = true
            return
        }
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // Hummingbird's answers: when one ends, a held claimed request may go.
        if case .end = unwrapOutboundIn(data) {
            passedOpen -= 1
            context.write(data, promise: promise)
            if passedOpen == 0, !held.isEmpty {
                context.eventLoop.assumeIsolated().execute { [self] in
                    if let context = self.context { replayHeld(context) }
                }
            }
            return
        }
        context.write(data, promise: promise)
    }
}
