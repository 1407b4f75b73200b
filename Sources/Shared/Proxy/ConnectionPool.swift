import NIOCore
import Synchronization

/// A connection in the pool, with its handler (usable only on the connection's loop).
struct PooledConnection: Sendable {
    var channel: any Channel
    var handler: NIOLoopBound<UpstreamConnection>
}

/// Idle connections per upstream, most recently used first out (the least likely to be stale).
final class ConnectionPool: Sendable {
    private struct Parked {
        var connection: PooledConnection
        var since: NIODeadline
    }

    /// More idle connections than this to one upstream are closed instead of kept.
    static let maxIdlePerUpstream = 512

    private let idle = Mutex<[String: [Parked]]>([:])

    func take(_ key: String, maxIdle: TimeAmount) -> PooledConnection? {
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

    func park(_ key: String, _ connection: PooledConnection) {
        let kept = idle.withLock { idle -> Bool in
            guard idle[key, default: []].count < Self.maxIdlePerUpstream else { return false }
            idle[key, default: []].append(Parked(connection: connection, since: .now()))
            return true
        }
        if !kept { connection.channel.close(promise: nil) }
    }

    func forget(_ key: String, _ channel: any Channel) {
        idle.withLock { idle in idle[key]?.removeAll { $0.connection.channel === channel } }
    }

    func count(_ key: String) -> Int { idle.withLock { $0[key]?.count ?? 0 } }

    func drain() -> [PooledConnection] {
        idle.withLock { idle in
            defer { idle = [:] }
            return idle.values.flatMap { $0.map(\.connection) }
        }
    }
}
