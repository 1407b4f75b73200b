import Routing
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Proxy
import Operations
import Server
import Wire

/// Operator API (admin token): `GET /admin/workers`, the cluster view, and per-worker
/// calls relayed to the worker's own endpoints with the hub's credential:
///
/// | hub endpoint | worker endpoint |
/// |---|---|
/// | `GET /admin/workers/{name}/logs?model=M[&lines=N][&follow=true]` | `GET /logs?...` |
/// | `POST /admin/workers/{name}/reload` | `POST /admin/reload` |
/// | `POST /admin/workers/{name}/models/{model}/reset` | `POST /admin/models/{model}/reset` |
/// | `POST /admin/workers/{name}/models/{model}/unload` | `POST /admin/models/{model}/unload` |
/// | `POST /admin/workers/{name}/models/{model}/load` | `POST /admin/models/{model}/load` |
/// | `POST /admin/workers/{name}/models/{model}/wipe-caches` | `POST /admin/models/{model}/wipe-caches` (its saved prompt caches) |
/// | `POST /admin/workers/{name}/drain`, `/undrain` | `POST /admin/drain`, `/admin/undrain` (and at once on this hub) |
/// | `GET /admin/workers/{name}/metrics` | `GET /metrics` |
///
/// and the hub's own: `GET /admin/events` (SSE of state changes), `POST /admin/reload`,
/// `GET /metrics`.
struct AdminRoutes {
    let state: HubState
    /// The data plane's client, for calls relayed to workers: the same pool, and the same
    /// tunnels to workers behind NAT, as inference.
    let upstream: UpstreamClient
    let keys: WorkerKeys
    let logger: Logger
    var metrics: HubMetrics?
    var reloader: HubReloader?
    /// The client limits, for the clients held back for poison requests.
    var limiter: RateLimiter?
    /// How long a write to an event-stream reader may wait (`hub.client_write_timeout`).
    var writeTimeout: Duration = .seconds(30)

    /// One worker as the admin API shows it.
    struct WorkerView: Encodable {
        var name: String
        var url: String
        var version: String
        var heartbeatAgeMs: Int
        var weight: Double
        var inFlight: Int
        /// Takes no new requests (drained on this hub or on the worker).
        var draining: Bool
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
        /// Share of the prompt tokens of this hub's answers that the engine reused from its
        /// cache (`cache_n`), when engines report it.
        var cacheReuse: Double?
        /// Prompt caches the worker saved at a planned stop, restored at the model's next start.
        var promptCaches: Int?
        var promptCacheBytes: Int?
        var promptCacheRestored: Int?
        /// A hub-placed model's download while its state is `downloading`.
        var download: DownloadProgress?
    }

    struct Snapshot: Encodable {
        var workers: [WorkerView]
        var queued: [String: Int]
        /// Clients (credentials, or addresses without authentication) held back now with 429
        /// for sending requests that fail alike on every worker (``Blame``).
        var poisonThrottled = 0
    }

    func addRoutes(to group: RouterGroup<HubRequestContext>) {
        group.get("/admin/workers") { _, _ in try jsonResponse(snapshot()) }
        group.get("/admin/workers/{name}/logs") { request, context in
            try await relay(request, worker: context.parameters.get("name"), path: "/logs", streaming: true)
        }
        group.post("/admin/workers/{name}/reload") { request, context in
            try await relay(request, worker: context.parameters.get("name"), path: "/admin/reload", streaming: false)
        }
        for action in ControlPath.modelActions {
            group.post(RouterPath("/admin/workers/{name}/models/{model}/\(action)")) { request, context in
                let model = context.parameters.get("model") ?? ""
                let escaped = model.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? model
                return try await relay(request, worker: context.parameters.get("name"),
                                       path: "/admin/models/\(escaped)/\(action)", streaming: false)
            }
        }
        group.get("/admin/workers/{name}/metrics") { request, context in
            try await relay(request, worker: context.parameters.get("name"), path: "/metrics", streaming: false)
        }
        for (action, drained) in [("drain", true), ("undrain", false)] {
            group.post(RouterPath("/admin/workers/{name}/\(action)")) { request, context in
                let name = context.parameters.get("name") ?? ""
                // Here at once; on the worker so every hub (and its next report) agrees.
                guard state.setDrained(name, drained) else {
                    throw OpenAIError(.workerNotFound, message: "No live worker named '\(name)'")
                }
                logger.notice(drained ? "worker drained by an admin" : "worker undrained by an admin", metadata: ["worker": "\(name)"])
                let answer = try? await relay(request, worker: name, path: "/admin/\(action)", streaming: false)
                if answer?.status == .ok { _ = state.setDrained(name, drained, onWorker: true) }
                return try jsonResponse(DrainAnswer(worker: name, draining: drained, workerAcknowledged: answer?.status == .ok,
                                                    inFlight: state.liveWorkers().first { $0.name == name }?.report.inFlight ?? 0))
            }
        }
        group.get("/admin/events") { _, context in events(departure: context.clientDeparture) }
        if let reloader {
            group.post("/admin/reload") { _, _ in
                do {
                    return try jsonResponse(try await reloader.reload())
                } catch {
                    logger.error("reload failed; the running configuration is unchanged", metadata: ["reason": "\(error)"])
                    throw OpenAIError(.reloadFailed, message: "reload failed, nothing changed: \(error)")
                }
            }
        }
        if let metrics {
            group.get("/metrics") { _, _ in metricsResponse(metrics) }
        }
    }

    struct DrainAnswer: Encodable {
        var worker: String
        var draining: Bool
        /// The worker itself took the drain (so its reports to every hub say so).
        var workerAcknowledged: Bool
        var inFlight: Int
    }

    /// The Prometheus exposition (also served by the open metrics listener).
    func metricsResponse(_ metrics: HubMetrics) -> Response {
        Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                 body: .init(byteBuffer: ByteBuffer(string: metrics.render(snapshot()))))
    }

    /// `GET /admin/events`: the recent events, the current snapshot, then changes as they
    /// happen and a snapshot every second. Ends when the client leaves or the hub stops; a
    /// reader that stops reading has its connection closed after `client_write_timeout`, so
    /// it holds no task or buffer (nor the hub's shutdown).
    private func events(departure: ClientDeparture?) -> Response {
        let (id, frames) = state.events.subscribe()
        let events = state.events
        let now = snapshot()
        let first = (try? WireCoding.encoder().encode(EventTicker.Snapshot(workers: now.workers, queued: now.queued, rates: [:],
                                                                                      poisonThrottled: now.poisonThrottled)))
            .map { ClusterEvents.frame(type: "snapshot", data: $0) }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                        body: ResponseBody { writer in
                            let deadline = WriteDeadline(timeout: writeTimeout, departure: departure) {
                                events.unsubscribe(id)
                            }
                            defer {
                                deadline?.stop()
                                events.unsubscribe(id)
                            }
                            if let first { try await writer.write(first) }
                            for await frame in frames.cancelOnGracefulShutdown() {
                                deadline?.begin()
                                try await writer.write(frame)
                                deadline?.end()
                            }
                            try await writer.finish(nil)
                        })
    }

    /// Sends the call to a live worker with the hub's credential and relays its answer
    /// (log streams chunk by chunk).
    private func relay(_ request: Request, worker name: String?, path: String, streaming: Bool) async throws -> Response {
        guard let name, let worker = state.liveWorkers().first(where: { $0.name == name }) else {
            throw OpenAIError(.workerNotFound, message: "No live worker named '\(name ?? "")'")
        }
        let body = try await request.body.collect(upTo: 1 << 20)
        let call = UpstreamRequest(url: worker.report.url + path + (request.uri.query.map { "?\($0)" } ?? ""),
                                   method: .init(rawValue: request.method.rawValue),
                                   headers: [("Authorization", try await keys.header(for: worker.name))], body: body)
        // A followed log stream lasts as long as the admin reads it; the worker sends a comment
        // at least every 15 s, so a minute of silence means it is gone.
        let options = UpstreamForwarder.Options(headTimeout: .seconds(30), idleTimeout: streaming ? .seconds(60) : .seconds(30),
                                                maxBufferedBody: 64 << 20)
        let answer: UpstreamAnswer
        do {
            answer = try await upstream.call(call, options: options, logger: logger)
        } catch let error as UpstreamError {
            throw OpenAIError(.workerUnreachable, message: "worker \(name) did not answer: \(error.description)")
        }
        var headers = answer.headers
        headers[.connection] = nil
        headers[.transferEncoding] = nil
        return Response(status: answer.status, headers: headers,
                        body: ResponseBody { writer in
                            for try await chunk in answer.body { try await writer.write(chunk) }
                            try await writer.finish(nil)
                        })
    }

    func snapshot() -> Snapshot {
        let now = state.now()
        let workers = state.liveWorkerStates().map { worker, pairs in
            WorkerView(
                name: worker.name, url: worker.report.url, version: worker.report.version,
                heartbeatAgeMs: Int((now - worker.lastSeen) / .milliseconds(1)), weight: worker.report.weight,
                inFlight: worker.report.inFlight, draining: worker.isDraining, gpus: worker.report.gpus,
                models: zip(worker.report.models, pairs).map { model, state in
                    let (pair, breaker) = state
                    return ModelView(
                        name: model.name, aliases: model.aliases, state: model.state, reason: model.reason,
                        slotsTotal: model.slotsTotal, slotsBusy: model.slotsBusy, slotsStale: model.slotsStale,
                        hubInFlight: pair.inFlight,
                        dispatched: pair.dispatched, routingWeight: Registry.weight(pair),
                        ttftMs: pair.ttft > 0 ? (pair.ttft / 1e6 * 10).rounded() / 10 : nil, breaker: breaker.stateName,
                        idleSeconds: model.idleSeconds, pinned: model.pinned, recentCrashes: model.recentCrashes,
                        vramEstimateMiB: model.vramEstimateMiB,
                        cacheReuse: pair.promptTokens > 0 ? (Double(pair.cachedTokens) / Double(pair.promptTokens) * 1000).rounded() / 1000 : nil,
                        promptCaches: model.promptCaches, promptCacheBytes: model.promptCacheBytes,
                        promptCacheRestored: model.promptCacheRestored, download: model.download)
                })
        }
        return Snapshot(workers: workers, queued: state.queueLengths(), poisonThrottled: limiter?.poisonThrottled ?? 0)
    }
}
