import NIOCore
import Synchronization

/// Tells a request handler when its client has gone away (closed its side of the
/// connection), so work done on the client's behalf, like waiting in a queue, can stop at once.
///
/// Hummingbird enables remote half-closure, so a client's FIN never closes the channel and
/// only shows up as an `inputClosed` event; and its own inbound-close helper cannot be used
/// once the body was read (it trips a NIO precondition). This handler, installed through
/// HTTP/1's `additionalChannelHandlers`, turns that event (or the channel going inactive)
/// into a future that handlers look up by channel.
public final class ClientDepartureHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = NIOAny

    private static let registry = Mutex<[ObjectIdentifier: EventLoopPromise<Void>]>([:])
    private var promise: EventLoopPromise<Void>?

    public init() {}

    /// A future that completes when the client of `channel` leaves; nil if none is tracked.
    public static func departure(of channel: any Channel) -> EventLoopFuture<Void>? {
        registry.withLock { $0[ObjectIdentifier(channel)]?.futureResult }
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        let promise = context.eventLoop.makePromise(of: Void.self)
        self.promise = promise
        let key = ObjectIdentifier(context.channel)
        Self.registry.withLock { $0[key] = promise }
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
        guard let promise else { return }
        self.promise = nil
        let key = ObjectIdentifier(context.channel)
        Self.registry.withLock { _ = $0.removeValue(forKey: key) }
        promise.succeed(())
    }
}

extension EventLoopFuture where Value == Void {
    /// Waits for the future, but returns early when the task is cancelled
    /// (`get()` alone would hold a task group open until the future completes).
    public func cancellableWait() async {
        let gate = ResumeOnce()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                gate.install(continuation)
                whenComplete { _ in gate.resume() }
            }
        } onCancel: {
            gate.resume()
        }
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
