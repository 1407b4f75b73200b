import NIOCore

/// The tunnel's first lines, before HTTP/2 takes the connection over.
///
///     worker -> hub:  CARAVAN-TUNNEL/1 <the worker's signed token>\n
///     hub -> worker:  OK\n                  (then HTTP/2: the hub is the client)
///                     ERROR <reason>\n      (then the hub closes)
///
/// A first line rather than ALPN so the same bytes work over TLS and plain TCP (h2c).
enum TunnelHandshake {
    static let hello = "CARAVAN-TUNNEL/1 "
    static let accepted = "OK"
    static let refused = "ERROR "
    /// Longest first line either side reads (a token is under 1 KiB).
    static let maxLine = 8192
}

/// Reads one line (up to ``TunnelHandshake/maxLine`` bytes), gives it to `onLine`, and holds
/// whatever comes after it until ``handOver(_:)``: then those bytes go to the handlers the
/// owner installed after this one (HTTP/2), and this handler leaves the pipeline.
final class TunnelPreamble: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var buffer: ByteBuffer?
    private var lineSeen = false
    private let onLine: (String, ChannelHandlerContext) -> Void

    init(onLine: @escaping (String, ChannelHandlerContext) -> Void) { self.onLine = onLine }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffer == nil { buffer = incoming } else { buffer!.writeBuffer(&incoming) }
        guard !lineSeen else { return }
        guard let newline = buffer!.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer!.readableBytes > TunnelHandshake.maxLine { context.close(promise: nil) }
            return
        }
        let length = newline - buffer!.readerIndex
        guard length <= TunnelHandshake.maxLine, let line = buffer!.readString(length: length) else {
            return context.close(promise: nil)
        }
        buffer!.moveReaderIndex(forwardBy: 1)
        lineSeen = true
        onLine(line.hasSuffix("\r") ? String(line.dropLast()) : line, context)
    }

    /// Passes the bytes after the line on and leaves the pipeline; call on the channel's loop,
    /// after installing the protocol that follows.
    func handOver(_ context: ChannelHandlerContext) {
        if let rest = buffer, rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
        buffer = nil
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
