import Hummingbird
import Shared

/// Operator view of the cluster: `GET /admin/workers` (requires an admin token).
struct AdminRoutes {
    let state: HubState

    /// One worker as the admin API shows it.
    struct WorkerView: Encodable {
        var name: String
        var url: String
        var version: String
        var heartbeatAgeMs: Int
        var weight: Double
        var inFlight: Int
        var gpus: [GPUReport]
        var models: [ModelView]
    }

    struct ModelView: Encodable {
        var name: String
        var aliases: [String]
        var state: ModelState
        var reason: String?
        var slotsTotal: Int
        var slotsBusy: Int
        /// Requests this hub has in flight on this (worker, model).
        var hubInFlight: Int
        /// Requests this hub has sent to this (worker, model) since it registered.
        var dispatched: Int
        /// Current routing weight (static weight x free slots).
        var routingWeight: Double
        var breaker: String
    }

    struct Snapshot: Encodable {
        var workers: [WorkerView]
        var queued: [String: Int]
    }

    func addRoutes<Context: RequestContext>(to group: RouterGroup<Context>) {
        group.get("/admin/workers") { _, _ in try jsonResponse(snapshot()) }
    }

    func snapshot() -> Snapshot {
        let now = state.now()
        let workers = state.liveWorkerStates().map { worker, pairs in
            WorkerView(
                name: worker.name, url: worker.report.url, version: worker.report.version,
                heartbeatAgeMs: Int((now - worker.lastSeen) / .milliseconds(1)), weight: worker.report.weight,
                inFlight: worker.report.inFlight, gpus: worker.report.gpus,
                models: zip(worker.report.models, pairs).map { model, state in
                    let (pair, breaker) = state
                    return
                    ModelView(
                        name: model.name, aliases: model.aliases, state: model.state, reason: model.reason,
                        slotsTotal: model.slotsTotal, slotsBusy: model.slotsBusy, hubInFlight: pair.inFlight,
                        dispatched: pair.dispatched, routingWeight: Registry.weight(pair), breaker: breaker.stateName)
                })
        }
        return Snapshot(workers: workers, queued: state.queueLengths())
    }
}
