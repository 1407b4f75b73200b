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
