import ServiceLifecycle
import Synchronization

/// Bounds a graceful shutdown: the server stops accepting and lets requests in flight
/// finish, and whatever still runs when `grace` is over is ended (a stream with a final SSE
/// error event, see ``UpstreamForwarder``) so the process exits in bounded time.
public final class ShutdownGrace: Sendable {
    public let grace: Duration
    private struct State {
        var expired = false
        var nextID = 0
        var callbacks: [Int: @Sendable () -> Void] = [:]
    }
    private let state = Mutex(State())

    public init(grace: Duration) { self.grace = grace }

    /// Calls `callback` when the grace is over (at once if it already is); nil then, else an
    /// id for ``cancel(_:)``.
    public func onExpiry(_ callback: @escaping @Sendable () -> Void) -> Int? {
        let id: Int? = state.withLock { state in
            guard !state.expired else { return nil }
            state.nextID += 1
            state.callbacks[state.nextID] = callback
            return state.nextID
        }
        if id == nil { callback() }
        return id
    }

    public func cancel(_ id: Int?) {
        guard let id else { return }
        _ = state.withLock { $0.callbacks.removeValue(forKey: id) }
    }

    /// Returns when the grace is over (at once if it is), or when the calling task is cancelled.
    public func waitForExpiry() async {
        let (expired, signal) = AsyncStream.makeStream(of: Void.self)
        let id = onExpiry { signal.finish() }
        await withTaskCancellationHandler {
            for await _ in expired {}
        } onCancel: {
            signal.finish()
        }
        cancel(id)
    }

    /// Ends everything registered, now.
    public func expire() {
        let callbacks = state.withLock { state in
            state.expired = true
            defer { state.callbacks = [:] }
            return Array(state.callbacks.values)
        }
        for callback in callbacks { callback() }
    }

    /// Runs `server` (which drains on graceful shutdown) and, once graceful shutdown has
    /// begun, expires after `grace`.
    public func run(_ server: some Service) async throws {
        try await withThrowingTaskGroup(of: GraceChild.self) { group in
            group.addTask {
                try await server.run()
                return .server
            }
            group.addTask {
                try await gracefulShutdown()
                try await Task.sleep(for: self.grace)
                self.expire()
                return .timer
            }
            defer { group.cancelAll() }
            // The timer ending is not the end: the server still writes the final events.
            while let child = try await group.next(), child != .server {}
        }
    }
}
