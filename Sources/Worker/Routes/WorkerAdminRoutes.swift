import Foundation
import Hummingbird
import ServiceLifecycle
import Config
import Operations
import Server
import Wire

/// The worker's operator endpoints, for the hub only (its `role: hub` token); operators
/// reach them through the hub's `/admin/workers/{name}/...` with an admin token.
///
/// | endpoint | what it does |
/// |---|---|
/// | `GET /logs?model=M&lines=N` | the newest N (default 200) engine output lines, text |
/// | `GET /logs?model=M&follow=true` | the same, then new lines as they come (SSE `data:` events) |
/// | `POST /admin/reload` | re-reads the cluster file and applies this worker's entry |
/// | `POST /admin/models/{model}/reset` | clears a crash loop so the model starts again |
/// | `POST /admin/models/{model}/unload` | drains the model's engine and stops it |
/// | `POST /admin/models/{model}/load` | starts the model's engine now |
/// | `POST /admin/drain`, `/admin/undrain` | stops (resumes) taking new requests; reported to every hub |
/// | `GET /metrics` | the worker's Prometheus series and its engines' own |
struct WorkerAdminRoutes: Sendable {
    let supervisor: EngineSupervisor
    let drain: DrainSwitch
    let metrics: WorkerMetrics
    let inFlight: InFlightCounter
    /// Sends a heartbeat now (a drain must reach every hub at once).
    let trigger: ReportTrigger
    /// Longest silence on a log follow: an SSE comment is sent then, so proxies in front of
    /// the hub keep a quiet engine's follow open, and a client that left is noticed by the
    /// failed write (its follower released) instead of at the engine's next line.
    let keepalive: Duration

    func addRoutes<Context: RequestContext>(to group: RouterGroup<Context>) {
        group.get("/logs") { request, _ in try await logs(request) }
        group.post("/admin/reload") { _, _ in
            do {
                return try jsonResponse(try await supervisor.reload())
            } catch {
                throw OpenAIError(.reloadFailed, message: "reload failed, nothing changed: \(error)")
            }
        }
        for action in ControlPath.modelActions {
            group.post(RouterPath("/admin/models/{model}/\(action)")) { _, context in
                let model = context.parameters.get("model") ?? ""
                guard let name = supervisor.canonicalName(model) else { throw OpenAIError.modelNotFound(model) }
                switch action {
                case "reset": try await supervisor.reset(name)
                case "unload": try await supervisor.unload(name)
                case "wipe-caches": await supervisor.wipeCaches(name)
                default: try await supervisor.load(name)
                }
                return try jsonResponse([action: name])
            }
        }
        for (action, draining) in [("drain", true), ("undrain", false)] {
            group.post(RouterPath("/admin/\(action)")) { _, _ in
                drain.set(draining)
                trigger.fire()
                return try jsonResponse(["draining": draining])
            }
        }
        group.get("/metrics") { _, _ in await metricsResponse() }
    }

    /// The Prometheus exposition (also served by the open metrics listener).
    func metricsResponse() async -> Response {
        let text = metrics.render(models: await supervisor.report(), engines: await supervisor.engineMetrics(),
                                  draining: drain.isDraining, inFlight: inFlight.value,
                                  admissions: supervisor.admissions())
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    private func logs(_ request: Request) async throws -> Response {
        guard let model = request.uri.queryParameters.get("model"), !model.isEmpty else {
            throw OpenAIError(.missingModel, message: "the model query parameter is required (GET /logs?model=NAME)", param: "model")
        }
        guard let log = await supervisor.log(for: model) else { throw OpenAIError.modelNotFound(model) }
        let lines = request.uri.queryParameters.get("lines").map { Int($0) } ?? 200
        guard let lines, lines >= 0 else {
            throw OpenAIError(.invalidLines, message: "lines must be a non-negative integer", param: "lines")
        }
        let follow = ["true", "1", "yes"].contains(request.uri.queryParameters.get("follow")?.lowercased() ?? "")
        guard follow else {
            let text = log.last(lines).map { $0 + "\n" }.joined()
            return Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        let stream = log.follow(backlog: lines)
        let keepalive = self.keepalive
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                        body: ResponseBody { writer in
                            // Lines, or nil for a keepalive comment after `keepalive` of silence.
                            let (events, feed) = AsyncStream.makeStream(of: String?.self)
                            try await withThrowingTaskGroup(of: Void.self) { group in
                                group.addTask {
                                    for await line in stream.cancelOnGracefulShutdown() { feed.yield(line) }
                                    feed.finish()
                                }
                                group.addTask {
                                    while true {
                                        try await Task.sleep(for: keepalive)
                                        feed.yield(nil)
                                    }
                                }
                                defer { group.cancelAll() }
                                // Ends when the client leaves (a write fails) or the worker shuts down.
                                for await event in events {
                                    try await writer.write(ByteBuffer(string: event.map { "data: \($0)\n\n" } ?? ": keepalive\n\n"))
                                }
                            }
                            try await writer.finish(nil)
                        })
    }
}
