import Logging
import NIOCore
import NIOHTTP2

/// Keeps a tunnel honest, on both ends: an HTTP/2 PING every `interval`, and the connection
/// is closed when *nothing at all* came from the peer for `timeout`. A peer behind a NAT
/// whose mapping was dropped, or a partitioned link, shows no error on its own: without this
/// a dead tunnel would hold its streams until TCP gave up, minutes later.
///
/// Two handlers share one ``Heard`` clock: ``TunnelHeard`` sits before the HTTP/2 handler
/// and notes every byte read (a tunnel busy with a thousand streams is alive even while a
/// PING answer waits behind their data), ``TunnelKeepalive`` sits after it and sends PINGs.
final class TunnelKeepalive: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// When the peer was last heard from; loop-confined (both handlers share the channel's loop).
    final class Heard {
        var at = NIODeadline.now()
    }

    private let interval: TimeAmount
    private let timeout: TimeAmount
    private let heard: Heard
    private let logger: Logger
    private var task: RepeatedTask?
    private var sent: UInt64 = 0
    /// When the check last ran: a check that runs late means this loop itself was stalled,
    /// and whatever the peer sent meanwhile may still wait unread in the socket.
    private var lastCheck = NIODeadline.now()

    init(interval: TimeAmount, timeout: TimeAmount, heard: Heard, logger: Logger) {
        self.interval = interval
        self.timeout = timeout
        self.heard = heard
        self.logger = logger
    }

    /// Adds both handlers: the byte-level clock before `http2`, the pinger at the end. PINGs
    /// go every `interval` (the heartbeat interval, at least 1 s); silence for three of them,
    /// and at least 5 s, closes the tunnel: a loop busy with a burst of streams on a small
    /// machine must not read as a dead peer.
    static func add(to pipeline: ChannelPipeline.SynchronousOperations, before http2: NIOHTTP2Handler, interval: TimeAmount,
                    logger: Logger) throws {
        let heard = Heard()
        let interval = max(interval, .seconds(1))
        try pipeline.addHandler(TunnelHeard(heard), position: .before(http2))
        try pipeline.addHandler(TunnelKeepalive(interval: interval, timeout: max(interval * 3, .seconds(5)), heard: heard,
                                                logger: logger))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    /// A connection error (NIO has sent GOAWAY, so no new stream may start on it): the tunnel is
    /// closed, and the worker dials a fresh one, rather than left open for nothing but its
    /// streams in flight while new requests would wait.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.warning("tunnel error; closing it", metadata: [
            "error": "\(error)", "peer": "\(context.channel.remoteAddress?.description ?? "?")",
        ])
        context.close(promise: nil)
    }

    /// The peer's GOAWAY: it takes no new streams, so this tunnel is done.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .goAway(let last, let code, _) = unwrapInboundIn(data).payload {
            logger.warning("tunnel: the peer sent GOAWAY; closing it", metadata: ["last_stream": "\(last)", "code": "\(code)"])
            return context.close(promise: nil)
        }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        task?.cancel()
        task = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        task?.cancel()
        task = nil
    }

    private func start(_ context: ChannelHandlerContext) {
        guard task == nil else { return }
        heard.at = .now()
        lastCheck = .now()
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        task = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let (handler, context) = bound.value
            let now = NIODeadline.now()
            defer { handler.lastCheck = now }
            if now - handler.lastCheck > handler.interval * 2 {
                // This loop was busy for more than a tick: read first, judge at the next tick.
                handler.heard.at = max(handler.heard.at, now - handler.interval)
            }
            let silent = now - handler.heard.at
            guard silent < handler.timeout else {
                handler.logger.warning("tunnel silent; closing it", metadata: [
                    "silent_ms": "\(silent.nanoseconds / 1_000_000)", "peer": "\(context.channel.remoteAddress?.description ?? "?")",
                ])
                context.close(promise: nil)
                return
            }
            handler.sent &+= 1
            let ping = HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: handler.sent), ack: false))
            context.writeAndFlush(handler.wrapOutboundOut(ping), promise: nil)
        }
    }
}

/// Notes every read of a tunnel's connection in its ``TunnelKeepalive/Heard`` clock.
final class TunnelHeard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let heard: TunnelKeepalive.Heard

    init(_ heard: TunnelKeepalive.Heard) { self.heard = heard }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        heard.at = .now()
        context.fireChannelRead(data)
    }
}
