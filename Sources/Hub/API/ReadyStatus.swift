import Foundation
import Routing
import Wire

/// `GET /health/ready`: ready (200) while at least one live worker that is not draining
/// serves a model, so a load balancer's check and a client's next request agree. Draining
/// workers are counted apart; a cluster whose every live worker drains answers 503 `draining`.
struct ReadyStatus: Encodable {
    var status: String
    var liveWorkers: Int
    var drainingWorkers: Int

    init(_ workers: [Registry.Worker]) {
        liveWorkers = workers.count
        drainingWorkers = workers.filter(\.isDraining).count
        let serving = workers.contains { !$0.isDraining && !$0.report.models.isEmpty }
        status = serving ? "ready" : liveWorkers == 0 ? "no_live_workers" : drainingWorkers == liveWorkers ? "draining" : "no_models"
    }

    var isReady: Bool { status == "ready" }
}
