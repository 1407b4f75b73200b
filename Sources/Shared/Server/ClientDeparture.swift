import NIOCore
import Synchronization

/// Tells a request handler when its client has gone away (closed its side of the
/// connection), so work done on the client's behalf, like waiting in a queue, can stop at once.
///
/// Hummingbird enables remote half-closure, so a client's FIN never closes the channel and
/// only shows up as an `inputClosed` event; and its own inbound-close helper cannot be used
/// once the body was read (it trips a NIO precondition). This handler, installed through
/// HTTP/1's `additionalChannelHandlers`, turns that event (or the channel going inactive)
/// into a ``ClientDeparture`` that handlers look up by channel.
public final class ClientDepartureHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = NIOAny

    private static let registry = Mutex<[ObjectIdentifier: ClientDeparture]>([:])
    private var departure: ClientDeparture?

    public init() {}

    /// The departure of the client of `channel`; nil if none is tracked.
    public static func departure(of channel: any Channel) -> ClientDeparture? {
        registry.withLock { $0[ObjectIdentifier(channel)] }
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        let departure = ClientDeparture(channel: context.channel)
        self.departure = departure
        let key = ObjectIdentifier(context.channel)
        Self.registry.withLock { $0[key] = departure }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        depart(context)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        depart(context)
        context.fireChannelInactive()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(.inputClosed) = event as? ChannelEvent { depart(context) }
        context.fireUserInboundEventTriggered(event)
    }

    private func depart(_ context: ChannelHandlerContext) {
        guard let departure else { return }
        self.departure = nil
        let key = ObjectIdentifier(context.channel)
        Self.registry.withLock { _ = $0.removeValue(forKey: key) }
        departure.depart()
    }
}

/// One client connection's departure. Requests on a keep-alive connection add a callback
/// while they wait and remove it when done, so a long-lived connection does not pile up
/// callbacks (a future's `whenComplete` cannot be taken back).
public final class ClientDeparture: Sendable {
    private struct State {
        var departed = false
        var nextKey = 0
        var callbacks: [Int: @Sendable () -> Void] = [:]
    }

    private let state = Mutex(State())
    /// The client's connection, so a request can end it (a client that stops reading, or
    /// trickles its body).
    private let channel: (any Channel)?

    public init(channel: (any Channel)? = nil) { self.channel = channel }

    /// Closes the client's connection: pending writes to it fail, so a request blocked on a
    /// client that stopped reading gets its write back with an error.
    public func closeConnection() {
        channel?.close(promise: nil)
    }

    /// Stops reading from the client: the connection ends once the answer in progress has
    /// been written (it cannot carry another request after an unread body).
    public func stopReading() {
        channel?.close(mode: .input, promise: nil)
    }

    /// The event loop of the client's connection, for timers that belong to it.
    public var eventLoop: (any EventLoop)? { channel?.eventLoop }

    public var hasDeparted: Bool { state.withLock { $0.departed } }

    /// Callbacks waiting for the departure (for tests: requests must take theirs back).
    var pendingCallbacks: Int { state.withLock { $0.callbacks.count } }

    /// Calls `callback` once when the client leaves, at once if it already has (then the
    /// result is nil). Pass the result to ``cancel(_:)`` when the callback is no longer wanted.
    @discardableResult
    public func onDeparture(_ callback: @escaping @Sendable () -> Void) -> Int? {
        let key = state.withLock { state -> Int? in
            guard !state.departed else { return nil }
            state.nextKey += 1
            state.callbacks[state.nextKey] = callback
            return state.nextKey
        }
        if key == nil { callback() }
        return key
    }

    public func cancel(_ key: Int?) {
        guard let key else { return }
        state.withLock { _ = $0.callbacks.removeValue(forKey: key) }
    }

    /// Returns when the client leaves or the calling task is cancelled.
    public func wait() async {
        let gate = ResumeOnce()
        var key: Int?
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                gate.install(continuation)
                key = onDeparture { gate.resume() }
            }
        } onCancel: {
            gate.resume()
        }
        cancel(key)
    }

    func depart() {
        let callbacks = state.withLock { state -> [@Sendable () -> Void] in
            guard !state.departed else { return [] }
            state.departed = true
            defer { state.callbacks = [:] }
            return Array(state.callbacks.values)
        }
        for callback in callbacks { callback() }
    }
}

/// A continuation resumed exactly once, whichever comes first: completion or cancellation
/// (even cancellation that arrives before the continuation is installed).
final class ResumeOnce: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<Void, Never>?, done: Bool)>((nil, false))

    func install(_ continuation: CheckedContinuation<Void, Never>) {
        let resumeNow = state.withLock { state -> Bool in
            if state.done { return true }
            state.continuation = continuation
            return false
        }
        if resumeNow { continuation.resume() }
    }

    func resume() {
        let continuation = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.done else { return nil }
            state.done = true
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume()
    }
}
