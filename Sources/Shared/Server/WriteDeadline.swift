import Foundation
import NIOCore
import Synchronization

/// Closes a client connection whose pending write has waited longer than `timeout`: for
/// event streams Hummingbird serves (the admin event stream). The data plane's relay has
/// its own stall timeout, on its connection's one timer.
///
/// One repeated timer per stream on the client's event loop checks a timestamp that the
/// writer sets before each write and clears after it; no timer is scheduled per chunk.
public final class WriteDeadline: Sendable {
    /// When the pending write began (NIO uptime nanoseconds), 0 when none waits.
    private final class Stamp: Sendable {
        let value = Atomic<Int64>(0)
    }

    private let pendingSince = Stamp()
    private let task: RepeatedTask

    /// Nil when there is no limit or no client connection to close.
    public init?(timeout: Duration?, departure: ClientDeparture?, onExpire: @escaping @Sendable () -> Void) {
        guard let timeout, let departure, let loop = departure.eventLoop else { return nil }
        let limit = TimeAmount(timeout)
        let stamp = pendingSince
        let period = TimeAmount.nanoseconds(max(limit.nanoseconds / 4, 1_000_000))
        task = loop.scheduleRepeatedTask(initialDelay: period, delay: period) { task in
            let since = stamp.value.load(ordering: .relaxed)
            guard since != 0, Int64(NIODeadline.now().uptimeNanoseconds) - since >= limit.nanoseconds else { return }
            task.cancel()
            departure.closeConnection()
            onExpire()
        }
    }

    public func begin() { pendingSince.value.store(Int64(NIODeadline.now().uptimeNanoseconds), ordering: .relaxed) }
    public func end() { pendingSince.value.store(0, ordering: .relaxed) }
    public func stop() { task.cancel() }
}
