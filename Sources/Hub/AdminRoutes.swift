import Foundation
import Hummingbird
import Logging
import Shared

/// Operator API (admin token): `GET /admin/workers`, the cluster view, and per-worker
/// calls relayed to the worker's own endpoints with the hub's credential:
///
/// | hub endpoint | worker endpoint |
/// |---|---|
/// | `GET /admin/workers/{name}/logs?model=M[&lines=N][&follow=true]` | `GET /logs?...` |
/// | `POST /admin/workers/{name}/reload` | `POST /admin/reload` |
/// | `POST /admin/workers/{name}/models/{model}/reset` | `POST /admin/models/{model}/reset` |
struct AdminRoutes {
    let state: HubState
    let forwarder: UpstreamForwarder
    let keys: WorkerKeys
    let logger: Logger

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
        /// The engine's `/slots` was too slow to answer; the counts are its last good reading.
        var slotsStale: Bool?
        /// Requests this hub has in flight on this (worker, model).
        var hubInFlight: Int
        /// Requests this hub has sent to this (worker, model) since it registered.
        var dispatched: Int
        /// Current routing weight (static weight x free slots).
        var routingWeight: Double
        /// Peak-EWMA of the streamed time to first byte, in milliseconds (the latency factor's input).
        var ttftMs: Double?
        var breaker: String
        var idleSeconds: Double?
        var pinned: Bool?
        var recentCrashes: Int?
        var vramEstimateMiB: Int?
    }

    struct Snapshot: Encodable {
        var workers: [WorkerView]
        var queued: [String: Int]
    }

    func addRoutes<Context: RequestContext>(to group: RouterGroup<Context>) {
        group.get("/admin/workers") { _, _ in try jsonResponse(snapshot()) }
        group.get("/admin/workers/{name}/logs") { request, context in
            try await relay(request, worker: context.parameters.get("name"), path: "/logs", streaming: true)
        }
        group.post("/admin/workers/{name}/reload") { request, context in
            try await relay(request, worker: context.parameters.get("name"), path: "/admin/reload", streaming: false)
        }
        group.post("/admin/workers/{name}/models/{model}/reset") { request, context in
            let model = context.parameters.get("model") ?? ""
            let escaped = model.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? model
            return try await relay(request, worker: context.parameters.get("name"),
                                   path: "/admin/models/\(escaped)/reset", streaming: false)
        }
    }

    /// Sends the call to a live worker with the hub's credential and relays its answer
    /// (log streams chunk by chunk).
    private func relay(_ request: Request, worker name: String?, path: String, streaming: Bool) async throws -> Response {
        guard let name, let worker = state.liveWorkers().first(where: { $0.name == name }) else {
            throw OpenAIError(.notFound, type: "invalid_request_error", code: "worker_not_found",
                              message: "No live worker named '\(name ?? "")'")
        }
        let url = worker.report.url + path + (request.uri.query.map { "?\($0)" } ?? "")
        let options = UpstreamForwarder.Options(headTimeout: .seconds(30),
                                                idleTimeout: streaming ? .seconds(24 * 3600) : .seconds(30))
        let result = await forwarder.forward(url: url, method: request.method,
                                             headers: [("Authorization", try await keys.header(for: worker.name))],
                                             body: ByteBuffer(), options: options, logger: logger)
        switch result {
        case .response(let response): return response
        case .failed(_, let reason): throw OpenAIError.upstream("worker \(name) did not answer: \(reason)", code: "worker_unreachable")
        case .clientGone: throw CancellationError()
        }
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
                    return ModelView(
                        name: model.name, aliases: model.aliases, state: model.state, reason: model.reason,
                        slotsTotal: model.slotsTotal, slotsBusy: model.slotsBusy, slotsStale: model.slotsStale,
                        hubInFlight: pair.inFlight,
                        dispatched: pair.dispatched, routingWeight: Registry.weight(pair),
                        ttftMs: pair.ttft > 0 ? (pair.ttft / 1e6 * 10).rounded() / 10 : nil, breaker: breaker.stateName,
                        idleSeconds: model.idleSeconds, pinned: model.pinned, recentCrashes: model.recentCrashes,
                        vramEstimateMiB: model.vramEstimateMiB)
                })
        }
        return Snapshot(workers: workers, queued: state.queueLengths())
    }
}
