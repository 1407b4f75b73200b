import HTTPTypes
import Logging
import NIOCore
import NIOPosix
import Wire

/// An answer to ``UpstreamClient/call(_:options:logger:)``: its head, and its body as it
/// arrives (a log follow's events one by one).
public struct UpstreamAnswer: Sendable {
    public var status: HTTPResponse.Status
    public var headers: HTTPFields
    public var body: UpstreamBody
}

/// The body of an ``UpstreamAnswer``. Reading it is the back-pressure: the relay holds its
/// reads from the upstream while ``CallSink/window`` parts wait unread; ending the
/// iteration early (the caller's own client left) cancels the upstream request.
public struct UpstreamBody: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    let parts: AsyncThrowingStream<CallSink.Part, any Error>
    let consumed: @Sendable () -> Void

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<CallSink.Part, any Error>.AsyncIterator
        let consumed: @Sendable () -> Void

        public mutating func next() async throws -> ByteBuffer? {
            while let part = try await base.next() {
                consumed()
                if case .body(let buffer) = part { return buffer }
            }
            return nil
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: parts.makeAsyncIterator(), consumed: consumed) }
}

extension UpstreamClient {
    /// Sends `request` and returns its answer to this process's own code: the same relay,
    /// pool and tunnels as the data plane's forwarding (so an admin call reaches a worker
    /// behind NAT exactly as inference does). Throws the ``UpstreamError`` of a request
    /// that got no answer.
    public func call(_ request: UpstreamRequest, options: UpstreamForwarder.Options, logger: Logger) async throws -> UpstreamAnswer {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let (parts, continuation) = AsyncThrowingStream<CallSink.Part, any Error>.makeStream()
        let sink = try await loop.submit { Handed(CallSink(eventLoop: loop, continuation: continuation)) }.get()
        let outcome = try await loop.flatSubmit {
            self.relay(request, to: sink.value, options: options, logger: logger, onFirstByte: nil, onFinish: { _ in })
        }.get()
        switch outcome {
        case .relayed: break
        case .clientGone: throw UpstreamError.closedMidStream
        case .failed(_, let error): throw error
        }
        var iterator = parts.makeAsyncIterator()
        guard case .head(let head)? = try await iterator.next() else { throw UpstreamError.resetBeforeHead }
        let consumed: @Sendable () -> Void = { loop.execute { sink.value.consumed() } }
        consumed()
        return UpstreamAnswer(status: head.status, headers: head.headerFields, body: UpstreamBody(parts: parts, consumed: consumed))
    }
}

/// A ``RelayClient`` that hands the answer to async code: parts go into a stream the caller
/// reads. Lives on one event loop, like a client's connection.
final class CallSink: RelayClient {
    enum Part: Sendable {
        case head(HTTPResponse)
        case body(ByteBuffer)
    }

    /// Parts the caller may leave unread before the relay holds its reads.
    static let window = 16

    let eventLoop: any EventLoop
    private let continuation: AsyncThrowingStream<Part, any Error>.Continuation
    private var unread = 0
    private var gone = false
    private(set) var hasHead = false
    var onWritable: (() -> Void)?
    var onGone: (() -> Void)?

    init(eventLoop: any EventLoop, continuation: AsyncThrowingStream<Part, any Error>.Continuation) {
        self.eventLoop = eventLoop
        self.continuation = continuation
        let sink = Handed(self)
        // The caller stopped reading before the end: the relay cancels the upstream request.
        continuation.onTermination = { reason in
            guard case .cancelled = reason else { return }
            eventLoop.execute {
                guard !sink.value.gone else { return }
                sink.value.gone = true
                sink.value.onGone?()
            }
        }
    }

    var isWaiting: Bool { !hasHead && !gone }
    var isWritable: Bool { unread < Self.window }

    /// The caller read a part.
    func consumed() {
        let wasWritable = isWritable
        unread = max(0, unread - 1)
        if !wasWritable && isWritable { onWritable?() }
    }

    func head(_ response: HTTPResponse) {
        guard !hasHead else { return }
        hasHead = true
        yield(.head(response))
    }

    func body(_ buffer: ByteBuffer) { yield(.body(buffer)) }

    func flush() {}

    func end() {
        onWritable = nil
        onGone = nil
        continuation.finish()
    }

    func complete(_ response: HTTPResponse, body: ByteBuffer) {
        head(response)
        if body.readableBytes > 0 { self.body(body) }
        end()
    }

    func closeConnection() {
        gone = true
        continuation.finish(throwing: UpstreamError.closedMidStream)
    }

    private func yield(_ part: Part) {
        unread += 1
        continuation.yield(part)
    }
}
