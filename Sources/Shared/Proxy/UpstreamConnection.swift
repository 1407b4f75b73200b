import Foundation
import Wire
import NIOCore
import NIOHTTP1

/// One exchange on a connection, created by the caller and run on the connection's loop:
/// the request, what the state machine needs to know (``UpstreamConnectionStateMachine/Limits``)
/// and where the answer goes.
struct Exchange: Sendable {
    var head: HTTPRequestHead
    var body: ByteBuffer
    var limits: UpstreamConnectionStateMachine.Limits
    var promise: EventLoopPromise<UpstreamResponse>
    /// Called on the connection's loop when an event stream's first body byte arrives.
    var onFirstByte: (@Sendable () -> Void)?

    var id: Int { limits.id }
}

/// The handler at the end of an upstream connection's pipeline: performs what its
/// ``UpstreamConnectionStateMachine`` decides (writes the request, hands over or streams the
/// answer, runs the one timer, parks or closes the connection). It holds the exchange's
/// promise and the stream's producer; every decision is the machine's.
final class UpstreamConnection: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    private let key: String
    private let pool: ConnectionPool
    private var context: ChannelHandlerContext?
    private var machine = UpstreamConnectionStateMachine()
    /// The exchange in progress, and its stream once the answer is one.
    private var exchange: Exchange?
    private var stream: (source: UpstreamEventStream.Producer.Source, timing: TimingBox)?
    /// The head deadline, then the stream's silence check.
    private var timer: Scheduled<Void>?

    init(key: String, pool: ConnectionPool) {
        self.key = key
        self.pool = pool
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func begin(_ exchange: Exchange) {
        let action = machine.begin(exchange.limits, channelActive: context?.channel.isActive ?? false)
        if case .refuse(let error) = action { return exchange.promise.fail(error) }
        self.exchange = exchange
        perform(action)
    }

    /// The caller's client left: drop the exchange unless its answer is already handed over.
    func abandon(_ id: Int) { perform(machine.clientDeparted(id)) }

    /// Ends the exchange `id` with `error` (see ``UpstreamEventStream/abort(_:)``).
    func abort(_ id: Int, _ error: UpstreamError) { perform(machine.abort(id, error)) }

    func resumeReads(_ id: Int) { perform(machine.readerWantsMore(id, now: .now())) }

    /// The stream's reader stopped before the end (its client left): stop the upstream.
    func readerLeft(_ id: Int) { perform(machine.readerLeft(id)) }

    func read(context: ChannelHandlerContext) { perform(machine.read()) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): perform(machine.head(head, now: .now()))
        case .body(let chunk): perform(machine.body(chunk, now: .now()))
        case .end: perform(machine.end())
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        perform(machine.channelInactive())
        pool.forget(key, context.channel)
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
            guard let context, let exchange else { return }
            let box = TimingBox()
            let delegate = StreamDelegate(handler: NIOLoopBound(self, eventLoop: context.eventLoop), id: exchange.id)
            let producer = UpstreamEventStream.Producer.makeSequence(
                backPressureStrategy: .init(lowWatermark: 4, highWatermark: 32), finishOnDeinit: false, delegate: delegate)
            stream = (producer.source, box)
            arm(silenceCheck) { $0.silenceCheck(now: .now()) }
            exchange.promise.succeed(UpstreamResponse(head: head, body: .stream(
                UpstreamEventStream(producer: producer.sequence, timingBox: box, delegate: delegate))))
        case .yield(let chunk, let first):
            if first { exchange?.onFirstByte?() }
            if case .stopProducing = stream?.source.yield(chunk) { machine.readerFull(now: .now()) }
        case .succeed(let head, let body, let after):
            let promise = exchange?.promise
            ended(after)
            promise?.succeed(UpstreamResponse(head: head, body: .complete(body)))
        case .finishStream(let timing, let after):
            let stream = self.stream
            stream?.timing.value = timing
            ended(after)
            stream?.source.finish()
        case .failAnswer(let failure):
            let promise = exchange?.promise
            closed()
            switch failure {
            case .upstream(let error): promise?.fail(error)
            case .clientDeparted: promise?.fail(ClientDeparted())
            }
        case .failStream(let error, let timing):
            let stream = self.stream
            stream?.timing.value = timing
            closed()
            stream?.source.finish(error)
        case .abandonStream(let timing):
            stream?.timing.value = timing
            closed()
        case .close:
            closed()
        case .read:
            context?.read()
        case .scheduleSilenceCheck(let next):
            arm(next) { $0.silenceCheck(now: .now()) }
        }
    }

    /// One timer at a time: the head deadline, then the stream's silence check.
    private func arm(_ deadline: NIODeadline, _ event: @escaping (inout UpstreamConnectionStateMachine) -> UpstreamConnectionStateMachine.Action) {
        timer?.cancel()
        guard let context else { return }
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            perform(event(&machine))
        }
    }

    /// The exchange ended cleanly: park the connection for the next one, or close it.
    private func ended(_ after: UpstreamConnectionStateMachine.After) {
        timer?.cancel()
        timer = nil
        exchange = nil
        stream = nil
        guard let context else { return }
        switch after {
        case .park(let read):
            pool.park(key, PooledConnection(channel: context.channel, handler: NIOLoopBound(self, eventLoop: context.eventLoop)))
            if read { context.read() }
        case .close:
            context.close(promise: nil)
        }
    }

    /// The exchange (if any) ended with a failure: the connection closes.
    private func closed() {
        timer?.cancel()
        timer = nil
        exchange = nil
        stream = nil
        context?.close(promise: nil)
    }
}
