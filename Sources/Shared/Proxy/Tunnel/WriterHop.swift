import HTTPTypes
import NIOCore

/// The client's ``RelayClient`` seen from another event loop: a relay on a tunnel's loop
/// writes here, and every write goes on to the client's loop in order. What comes back
/// (the client can take more, or left) comes back to the relay's loop in order too.
///
/// Back-pressure: the relay holds its reads (and HTTP/2 flow control then holds the worker)
/// once the client's connection is seen not writable; that news takes one hop, so at most
/// the chunks of one hop's time, within the stream's flow-control window, are in between.
final class WriterHop: ResponseSink {
    private let writer: NIOLoopBound<any RelayClient>
    private let clientLoop: any EventLoop
    private let relayLoop: any EventLoop
    private(set) var isWritable = true
    /// The client left (seen on the relay's loop): a relay that has not begun must not.
    private(set) var isGone = false
    var onWritable: (() -> Void)?
    var onGone: (() -> Void)?

    /// Call on the client's loop; the hop is then used on `relayLoop` only.
    init(_ writer: any RelayClient, relayLoop: any EventLoop) {
        clientLoop = writer.eventLoop
        self.relayLoop = relayLoop
        self.writer = NIOLoopBound(writer, eventLoop: writer.eventLoop)
        let hop = Handed(self)
        writer.onWritable = {
            relayLoop.execute {
                hop.value.isWritable = true
                hop.value.onWritable?()
            }
        }
        writer.onGone = {
            relayLoop.execute {
                hop.value.isGone = true
                hop.value.onGone?()
            }
        }
    }

    func head(_ response: HTTPResponse) { onClient { $0.head(response) } }

    func body(_ buffer: ByteBuffer) { onClient { $0.body(buffer) } }

    func flush() { onClient { $0.flush() } }

    func end() { onClient { $0.end() } }

    func complete(_ response: HTTPResponse, body: ByteBuffer) { onClient { $0.complete(response, body: body) } }

    func closeConnection() { onClient { $0.closeConnection() } }

    /// Runs `write` on the client's loop, then tells the relay when the client stopped taking more.
    private func onClient(_ write: @escaping (any RelayClient) -> Void) {
        let (writer, relayLoop) = (self.writer, self.relayLoop)
        let hop = Handed(self)
        clientLoop.execute {
            write(writer.value)
            if !writer.value.isWritable, writer.value.hasHead {
                relayLoop.execute { hop.value.isWritable = false }
            }
        }
    }
}

/// A value handed from one event loop to another and used only there from then on (which
/// `NIOLoopBound` would check at every use, and cannot at the hand-over itself).
struct Handed<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
