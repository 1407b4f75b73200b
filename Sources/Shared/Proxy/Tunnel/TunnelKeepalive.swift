import NIOCore
import NIOHTTP2

/// Keeps a tunnel honest, on both ends: an HTTP/2 PING every `interval`, and the connection
/// is closed when nothing came back for `timeout`. A peer behind a NAT whose mapping was
/// dropped, or a partitioned link, shows no error on its own: without this a dead tunnel
/// would hold its streams until TCP gave up, minutes later.
final class TunnelKeepalive: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let interval: TimeAmount
    private let timeout: TimeAmount
    private var lastHeard = NIODeadline.now()
    private var task: RepeatedTask?
    private var sent: UInt64 = 0

    init(interval: TimeAmount, timeout: TimeAmount) {
        self.interval = interval
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastHeard = .now()
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
        lastHeard = .now()
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        task = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            let (handler, context) = bound.value
            guard NIODeadline.now() - handler.lastHeard < handler.timeout else {
                context.close(promise: nil)
                return
            }
            handler.sent &+= 1
            let ping = HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: handler.sent), ack: false))
            context.writeAndFlush(handler.wrapOutboundOut(ping), promise: nil)
        }
    }
}
