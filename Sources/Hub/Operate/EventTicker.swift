import Foundation
import ServiceLifecycle
import Wire

/// Sends the dashboard's periodic `snapshot` event (workers, queues, rates) while anyone
/// listens on `GET /admin/events`: one push per second, not a poll per browser.
struct EventTicker: Service {
    struct Snapshot: Encodable {
        var workers: [AdminRoutes.WorkerView]
        var queued: [String: Int]
        var rates: [String: LiveStats.Rates]
        var poisonThrottled: Int
    }

    let events: ClusterEvents
    let stats: LiveStats
    let snapshot: @Sendable () -> AdminRoutes.Snapshot
    var interval: Duration = .seconds(1)

    func run() async throws {
        // Cancelled (the server failed to start, say), the sleep returns at once: without the
        // check this loop would spin and the process never exit.
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await Task.sleep(for: interval)
            let rates = stats.take()
            guard events.subscriberCount > 0 else { continue }
            let current = snapshot()
            if let data = try? WireCoding.encoder().encode(Snapshot(workers: current.workers, queued: current.queued, rates: rates,
                                                               poisonThrottled: current.poisonThrottled)) {
                events.broadcast(type: "snapshot", data: data)
            }
        }
        events.finishAll()
    }
}
