import ServiceLifecycle
import Foundation
import Synchronization
import Auth
import Config
import Wire

/// Asks for a heartbeat now rather than at the next interval (a model crashed, loaded,
/// unloaded): the hub should not route to an engine that is gone.
final class ReportTrigger: Sendable {
    private let generation = Atomic<Int>(0)
    func fire() { generation.add(1, ordering: .relaxed) }
    var current: Int { generation.load(ordering: .relaxed) }

    /// Sleeps for `interval`, or less once `fire()` is called after `seen` (checked every 20 ms).
    func wait(_ interval: Duration, since seen: Int) async {
        let deadline = ContinuousClock.now + interval
        while ContinuousClock.now < deadline && current == seen && !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await Task.sleep(for: min(.milliseconds(20), deadline - ContinuousClock.now))
        }
    }
}
