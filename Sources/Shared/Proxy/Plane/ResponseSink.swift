import HTTPTypes
import NIOCore

/// Where a relay writes its answer, on the relay's event loop: the client's own
/// ``ClientWriter`` when both connections share a loop (HTTP/1 to a worker), or a
/// ``WriterHop`` to it when the upstream lives on another loop (a tunnel's HTTP/2 stream).
protocol ResponseSink: AnyObject {
    /// Whether the client can take more now; the relay holds upstream reads while it cannot.
    var isWritable: Bool { get }
    /// Called when the client can take writes again.
    var onWritable: (() -> Void)? { get set }
    /// Called once when the client's connection closes before the end.
    var onGone: (() -> Void)? { get set }
    func head(_ response: HTTPResponse)
    func body(_ buffer: ByteBuffer)
    func flush()
    func end()
    /// A whole answer at once: head, body (with its length) and end.
    func complete(_ response: HTTPResponse, body: ByteBuffer)
    /// Closes the client's connection (a client that stopped reading).
    func closeConnection()
}

/// The client a relay answers, on its own event loop: the data plane's ``ClientWriter``, or
/// an in-process caller's ``CallSink`` (``UpstreamClient/call(_:options:logger:)``).
protocol RelayClient: ResponseSink {
    var eventLoop: any EventLoop { get }
    /// Nothing was answered yet and the client still waits (it has not left).
    var isWaiting: Bool { get }
    /// The head of the answer is out.
    var hasHead: Bool { get }
}

extension ClientWriter: RelayClient {
    var isWaiting: Bool { state == .awaitingHead }
}
