import NIOCore
import Synchronization

/// A connection in the pool, with its handler (usable only on the connection's loop).
struct PooledConnection: Sendable {
    var channel: any Channel
    var handler: NIOLoopBound<UpstreamConnection>
}

/// Idle connections per upstream and event loop, most recently used first out (the least
/// likely to be stale). A client connection only takes connections on its own loop, so the
/// relay between the two never hops threads.
final class ConnectionPool: Sendable {
    struct Key: Hashable, Sendable {
        var upstream: String
        var loop: ObjectIdentifier

        init(upstream: String, loop: any EventLoop) {
            self.upstream = upstream
            self.loop = ObjectIdentifier(loop)
        }
    }

    private struct Parked {
        var connection: PooledConnection
        var since: NIODeadline
    }

    /// More idle connections than this to one upstream on one loop are closed instead of kept.
    static let maxIdlePerKey = 512

    private let idle = Mutex<[Key: [Parked]]>([:])
    /// Connections being opened ahead of need, per key.
    private let warming = Mutex<[Key: Int]>([:])

    /// Reserves one connection to open ahead of need when fewer than `target` are idle or
    /// being opened for `key`; ``warmed(_:)`` ends the reservation.
    func reserveWarm(_ key: Key, target: Int) -> Bool {
        let idleCount = count(key)
        return warming.withLock { warming in
            guard idleCount + warming[key, default: 0] < target else { return false }
            warming[key, default: 0] += 1
            return true
        }
    }

    func warmed(_ key: Key) { warming.withLock { $0[key, default: 1] -= 1 } }

    /// Connects in progress per key, and the requests waiting for one to finish. A burst of
    /// thousands of new streams would otherwise send thousands of SYNs at once and overflow
    /// the upstream's accept queue (connect timeouts, then an open breaker).
    private let gates = Mutex<[Key: NIOLoopBound<ConnectGate>]>([:])

    /// The connect gate of `key`, on its loop.
    func gate(_ key: Key, on loop: any EventLoop) -> ConnectGate {
        if let gate = gates.withLock({ $0[key] }) { return gate.value }
        let made = NIOLoopBound(ConnectGate(), eventLoop: loop)
        let gate = gates.withLock { gates -> NIOLoopBound<ConnectGate> in
            if let existing = gates[key] { return existing }
            gates[key] = made
            return made
        }
        return gate.value
    }

    func take(_ key: Key, maxIdle: TimeAmount) -> PooledConnection? {
        let now = NIODeadline.now()
        var stale: [PooledConnection] = []
        let found = idle.withLock { idle -> PooledConnection? in
            while let parked = idle[key]?.popLast() {
                if now - parked.since < maxIdle, parked.connection.channel.isActive { return parked.connection }
                stale.append(parked.connection)
            }
            return nil
        }
        for connection in stale { connection.channel.close(promise: nil) }
        return found
    }

    func park(_ key: Key, _ connection: PooledConnection) {
        let kept = idle.withLock { idle -> Bool in
            guard idle[key, default: []].count < Self.maxIdlePerKey else { return false }
            idle[key, default: []].append(Parked(connection: connection, since: .now()))
            return true
        }
        if !kept { connection.channel.close(promise: nil) }
    }

    func forget(_ key: Key, _ channel: any Channel) {
        idle.withLock { idle in idle[key]?.removeAll { $0.connection.channel === channel } }
    }

    /// Idle connections to `upstream` on any loop.
    func count(upstream: String) -> Int {
        idle.withLock { idle in idle.filter { $0.key.upstream == upstream }.values.reduce(0) { $0 + $1.count } }
    }

    func count(_ key: Key) -> Int { idle.withLock { $0[key]?.count ?? 0 } }

    func drain() -> [PooledConnection] {
        idle.withLock { idle in
            defer { idle = [:] }
            return idle.values.flatMap { $0.map(\.connection) }
        }
    }
}

/// Connects in progress to one upstream from one event loop, at most ``limit`` at a time;
/// the rest wait in order. Used only on its loop.
final class ConnectGate {
    static let limit = 64
    private var inProgress = 0
    private var waiting = CircularBuffer<() -> Void>()

    /// Runs `connect` now if a slot is free, else when one is.
    func enter(_ connect: @escaping () -> Void) {
        guard inProgress < Self.limit else { return waiting.append(connect) }
        inProgress += 1
        connect()
    }

    /// A connect finished (either way): the next waiting one takes its slot.
    func leave() {
        if let next = waiting.popFirst() { return next() }
        inProgress -= 1
    }
}
