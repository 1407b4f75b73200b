import NIOCore
import NIOHTTP1
import Wire

/// The life of one upstream connection, without I/O: which exchange it serves, whether the
/// answer is being collected or streamed, when reads pause for a slow reader, which deadline
/// applies, and whether the connection can be parked for reuse afterwards.
///
/// Every event takes the time it happened (`now`) and returns the one ``Action`` the
/// connection's handler must perform, so every decision is unit-tested without sockets (the
/// shape of async-http-client's `HTTP1ConnectionStateMachine`). ``UpstreamConnection``
/// owns the I/O: the channel, the exchange's promise, the stream's producer and the timers.
///
///     idle ──begin──▶ awaitingHead ──head (JSON)──▶ collecting ──end──▶ idle (parked) | closed
///                          │
///                          └──head (event stream)──▶ streaming ──end──▶ idle (parked) | closed
///     any failure, a departed client, a stalled reader or a closed channel ──▶ closed
struct UpstreamConnectionStateMachine {
    /// What the machine needs to know about one exchange (the rest stays in the handler).
    struct Limits: Equatable {
        var id: Int
        /// When the head must have arrived (one deadline across a retry on a new connection).
        var headDeadline: NIODeadline
        /// The caller's head timeout, for the error.
        var headTimeout: Duration
        /// Longest silence of a stream.
        var idleTimeout: TimeAmount
        /// Longest the client may take nothing while reads are paused for it (its write timeout).
        var stallTimeout: TimeAmount
        var maxBufferedBody: Int
        /// When the caller began (a retry on a new connection keeps the first start).
        var start: NIODeadline
        /// The request allows the connection to be kept (it did not say `Connection: close`).
        var keepAlive: Bool
        /// Keep a stream's last bytes and read its token usage at the end.
        var readUsage: Bool
    }

    enum State {
        case idle
        case awaitingHead(Limits)
        case collecting(Limits, HTTPResponseHead, ByteBuffer)
        case streaming(Limits)
        case closed
    }

    /// Why the exchange in progress ended without an answer.
    enum Failure: Equatable {
        case upstream(UpstreamError)
        /// The caller's client left before the answer was handed over.
        case clientDeparted
    }

    /// After a clean end: keep the connection for the next exchange, or close it.
    enum After: Equatable {
        /// Park it in the pool; `read` when a read was held back while paused.
        case park(read: Bool)
        case close
    }

    enum Action: Equatable {
        case none
        /// Write the request (head, body, end) and arm the head deadline.
        case sendRequest(headDeadline: NIODeadline)
        /// The connection cannot take this exchange: fail its promise, keep the connection as it is.
        case refuse(UpstreamError)
        /// The answer is an event stream: hand it over, stop the head deadline, arm the silence check.
        case beginStream(HTTPResponseHead, silenceCheck: NIODeadline)
        /// Relay a chunk to the client (`first`: its first body byte).
        case yield(ByteBuffer, first: Bool)
        /// Hand over the whole answer, then park or close.
        case succeed(HTTPResponseHead, ByteBuffer, After)
        /// End the stream cleanly with its final timing, then park or close.
        case finishStream(UpstreamForwarder.Timing, After)
        /// Fail the awaited answer's promise, stop the timer, close the connection.
        case failAnswer(Failure)
        /// End the stream with `error` and its final timing, stop the timer, close the connection.
        case failStream(UpstreamError, UpstreamForwarder.Timing)
        /// The stream's reader left: record the final timing, stop the timer, close (no one to tell).
        case abandonStream(UpstreamForwarder.Timing)
        /// Nothing is in progress: close the connection.
        case close
        /// Ask the channel for more bytes.
        case read
        /// Check the stream's silence again at this time.
        case scheduleSilenceCheck(NIODeadline)
    }

    private(set) var state = State.idle
    private var reusable = true
    private var readsPaused = false
    private var pausedSince = NIODeadline.uptimeNanoseconds(0)
    private var readPending = false
    private var timing = UpstreamForwarder.Timing()
    private var lastChunk = NIODeadline.uptimeNanoseconds(0)
    /// The stream's last bytes, when its exchange reads usage.
    private var tail: ResponseTail?

    /// Whether the connection has ended (nothing more will happen on it).
    var isClosed: Bool {
        if case .closed = state { return true }
        return false
    }

    // MARK: the caller

    mutating func begin(_ limits: Limits, channelActive: Bool) -> Action {
        guard case .idle = state, channelActive else { return .refuse(.resetBeforeHead) }
        state = .awaitingHead(limits)
        reusable = limits.keepAlive
        timing = .init()
        tail = limits.readUsage ? ResponseTail() : nil
        return .sendRequest(headDeadline: limits.headDeadline)
    }

    /// The caller's client left: drop the exchange unless its answer is already handed over.
    mutating func clientDeparted(_ id: Int) -> Action {
        switch state {
        case .awaitingHead(let limits) where limits.id == id, .collecting(let limits, _, _) where limits.id == id:
            fail(.clientDeparted)
        default:
            .none
        }
    }

    /// Ends the exchange `id` with `error`, whatever stage it is at (a shutdown's grace is over).
    mutating func abort(_ id: Int, _ error: UpstreamError) -> Action {
        switch state {
        case .awaitingHead(let limits) where limits.id == id, .collecting(let limits, _, _) where limits.id == id,
            .streaming(let limits) where limits.id == id:
            fail(.upstream(error))
        default:
            .none
        }
    }

    // MARK: the stream's reader

    /// The client's connection is full: hold reads until it can take more.
    mutating func readerFull(now: NIODeadline) -> Action {
        guard case .streaming(let limits) = state, !readsPaused else { return .none }
        readsPaused = true
        pausedSince = now
        return .scheduleSilenceCheck(now + limits.stallTimeout)
    }

    /// The client's connection can take more.
    mutating func readerWantsMore(_ id: Int, now: NIODeadline) -> Action {
        guard case .streaming(let limits) = state, limits.id == id, readsPaused else { return .none }
        readsPaused = false
        lastChunk = now  // the pause was the reader's, not upstream silence
        guard readPending else { return .none }
        readPending = false
        return .read
    }

    /// The client left before the end: the upstream must stop.
    mutating func readerLeft(_ id: Int) -> Action {
        guard case .streaming(let limits) = state, limits.id == id else { return .none }
        state = .closed
        return .abandonStream(finalTiming())
    }

    // MARK: the channel

    /// The pipeline asks for a read.
    mutating func read() -> Action {
        guard !readsPaused else {
            readPending = true
            return .none
        }
        return .read
    }

    mutating func head(_ head: HTTPResponseHead, now: NIODeadline) -> Action {
        guard case .awaitingHead(let limits) = state, head.status.code >= 200 else { return .none }
        reusable = reusable && head.isKeepAlive
        // Only a successful event stream is relayed as it comes; an error answer is read whole,
        // so it can still be retried elsewhere or passed on with its length.
        guard (200..<300).contains(head.status.code),
              head.headers.first(name: "content-type")?.hasPrefix("text/event-stream") ?? false else {
            state = .collecting(limits, head, ByteBuffer())
            return .none
        }
        state = .streaming(limits)
        lastChunk = now
        return .beginStream(head, silenceCheck: now + limits.idleTimeout)
    }

    mutating func body(_ chunk: ByteBuffer, now: NIODeadline) -> Action {
        switch state {
        case .collecting(let limits, let head, var collected):
            guard collected.readableBytes + chunk.readableBytes <= limits.maxBufferedBody else {
                return fail(.upstream(.tooLarge(limits.maxBufferedBody)))
            }
            state = .idle  // keeps `collected` uniquely referenced while it grows
            var chunk = chunk
            collected.writeBuffer(&chunk)
            state = .collecting(limits, head, collected)
            return .none
        case .streaming(let limits):
            let first = timing.firstByte == nil
            if first {
                timing.firstByte = .nanoseconds((now - limits.start).nanoseconds)
            } else {
                timing.maxGap = max(timing.maxGap, .nanoseconds((now - lastChunk).nanoseconds))
            }
            lastChunk = now
            timing.chunks += 1
            timing.lastByte = .nanoseconds((now - limits.start).nanoseconds)
            tail?.append(chunk)
            return .yield(chunk, first: first)
        default:
            return .none
        }
    }

    mutating func end() -> Action {
        switch state {
        case .collecting(_, let head, let collected):
            return .succeed(head, collected, finished())
        case .streaming:
            let final = finalTiming()
            return .finishStream(final, finished())
        default:
            return .none
        }
    }

    mutating func channelInactive() -> Action {
        if case .awaitingHead = state { return fail(.upstream(.resetBeforeHead)) }
        return fail(.upstream(.closedMidStream))
    }

    /// An error on the channel: `error` already classified (``UpstreamError/transport(_:)``).
    /// A reset while the head is awaited means the upstream closed the connection unanswered.
    mutating func errorCaught(_ error: UpstreamError, isReset: Bool) -> Action {
        if case .awaitingHead = state, isReset { return fail(.upstream(.resetBeforeHead)) }
        return fail(.upstream(error))
    }

    // MARK: timers

    mutating func headDeadlinePassed() -> Action {
        switch state {
        case .awaitingHead(let limits), .collecting(let limits, _, _): fail(.upstream(.headTimeout(limits.headTimeout)))
        default: .none
        }
    }

    /// Fails the stream when the upstream stayed silent for the idle timeout, or when its
    /// client took nothing for the stall timeout while reads were paused for it; else says
    /// when to look again.
    mutating func silenceCheck(now: NIODeadline) -> Action {
        guard case .streaming(let limits) = state else { return .none }
        if readsPaused, now - pausedSince >= limits.stallTimeout {
            return fail(.upstream(.readerStalled(.nanoseconds(limits.stallTimeout.nanoseconds))))
        }
        if !readsPaused, now - lastChunk >= limits.idleTimeout {
            return fail(.upstream(.gapTimeout(.nanoseconds(limits.idleTimeout.nanoseconds))))
        }
        return .scheduleSilenceCheck(readsPaused ? pausedSince + limits.stallTimeout : lastChunk + limits.idleTimeout)
    }

    // MARK: private

    /// The exchange ended cleanly: park the connection for the next one, or close it.
    private mutating func finished() -> After {
        readsPaused = false
        guard reusable else {
            state = .closed
            return .close
        }
        state = .idle
        defer { readPending = false }
        return .park(read: readPending)
    }

    private mutating func fail(_ failure: Failure) -> Action {
        let previous = state
        state = .closed
        switch previous {
        case .awaitingHead, .collecting:
            return .failAnswer(failure)
        case .streaming:
            guard case .upstream(let error) = failure else { return .abandonStream(finalTiming()) }
            return .failStream(error, finalTiming())
        case .idle, .closed:
            return .close
        }
    }

    /// The stream's timing with the usage read from its tail.
    private func finalTiming() -> UpstreamForwarder.Timing {
        var final = timing
        final.usage = tail?.usage()
        return final
    }
}
