import Wire
import NIOCore
import Synchronization

/// The chunks of an event stream as they arrive; reading slowly slows the upstream down
/// (reads pause above a few chunks), leaving the loop stops the upstream (its connection closes).
public struct UpstreamEventStream: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    typealias Producer = NIOThrowingAsyncSequenceProducer<
        ByteBuffer, any Error, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, StreamDelegate
    >

    let producer: Producer
    let timingBox: TimingBox
    let delegate: StreamDelegate

    /// First-byte time and the longest silence; final once the loop has ended.
    public var timing: UpstreamForwarder.Timing { timingBox.value }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: producer.makeAsyncIterator()) }

    /// Ends the stream now with `error` (the reader's next chunk throws it) and closes the
    /// upstream connection: a process shutting down ends the streams its grace did not cover
    /// (an answer not begun yet is ended by ``UpstreamClient/execute(_:headTimeout:idleTimeout:maxBufferedBody:departure:onFirstByte:readUsage:shutdown:)``).
    public func abort(_ error: UpstreamError) {
        let delegate = self.delegate
        delegate.handler.eventLoop.execute { delegate.handler.value.abort(delegate.id, error) }
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: Producer.AsyncIterator
        public mutating func next() async throws -> ByteBuffer? { try await base.next() }
    }
}

/// Timing written by the event loop when a stream ends, read by the relay after it.
final class TimingBox: Sendable {
    private let state = Mutex(UpstreamForwarder.Timing())
    var value: UpstreamForwarder.Timing {
        get { state.withLock { $0 } }
        set { state.withLock { $0 = newValue } }
    }
}

/// Wakes the connection when the stream's reader wants more, or closes it when the reader left.
struct StreamDelegate: NIOAsyncSequenceProducerDelegate {
    let handler: NIOLoopBound<UpstreamConnection>
    let id: Int

    func produceMore() {
        let (handler, id) = (handler, id)
        handler.eventLoop.execute { handler.value.resumeReads(id) }
    }

    func didTerminate() {
        let (handler, id) = (handler, id)
        handler.eventLoop.execute { handler.value.readerLeft(id) }
    }
}
