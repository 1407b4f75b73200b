import Routing
import HTTPTypes
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import Config
import Proxy
import Server
import Wire

/// The OpenAI-compatible API: model listing and the routed inference endpoints.
struct OpenAIRoutes {
    /// Endpoints routed by the `model` field of their JSON body: OpenAI's, and llama.cpp's
    /// own (which llama-server serves for its one model; the hub picks the engine by `model`).
    static let routedPaths = [
        "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/reranking",
        "/completion", "/completions", "/infill", "/embedding", "/embeddings", "/rerank", "/reranking",
        "/tokenize", "/detokenize", "/apply-template",
    ]

    /// `GET` endpoints routed by a `model` query parameter.
    static let routedQueryPaths = ["/props"]

    let state: HubState
    let forwarder: UpstreamForwarder
    let keys: WorkerKeys
    let settings: HubSettings
    let logger: Logger
    /// Ends streams still running when the shutdown grace is over.
    var shutdown: ShutdownGrace?

    /// The hub section in force (a reload replaces it between requests).
    var config: HubConfig { settings.hub }

    func addRoutes(to group: RouterGroup<HubRequestContext>) {
        group.get("/v1/models") { _, context in
            let created = Int(Date().timeIntervalSince1970)
            // Only what this credential may use: a token limited to some models learns nothing of the others.
            // `caravan`: where each model runs (the SDK ignores unknown fields).
            let placement = state.modelPlacement()
            let data = state.servedModels().filter { context.identity?.allows($0) ?? true }.map { id -> [String: Any] in
                let states = placement[id] ?? [:]
                return ["id": id, "object": "model", "created": created, "owned_by": "caravan",
                        "caravan": ["workers": states.values.reduce(0, +), "states": states]]
            }
            let json = try JSONSerialization.data(withJSONObject: ["object": "list", "data": data], options: [.sortedKeys])
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(bytes: json)))
        }
        group.get("/v1/models/{id}") { _, context in
            let id = context.parameters.get("id") ?? ""
            guard state.servedModels().contains(id), context.identity?.allows(id) ?? true else {
                throw OpenAIError.modelNotFound(id)
            }
            let json = try JSONSerialization.data(withJSONObject: [
                "id": id, "object": "model", "created": Int(Date().timeIntervalSince1970), "owned_by": "caravan",
            ] as [String: Any], options: [.sortedKeys])
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: json)))
        }
        for path in Self.routedPaths {
            group.post(RouterPath(path)) { request, context in
                try await route(request, path: path, context: context)
            }
        }
        // The raw pass-through to one model's engine (llama-swap's /upstream): any method and
        // path, forwarded untouched; admins, or tokens with the `upstream` claim.
        for method in [HTTPRequest.Method.get, .post, .put, .delete] {
            group.on("/upstream/{model}/**", method: method) { request, context in
                guard context.identity?.upstream ?? true else {
                    throw OpenAIError(.forbidden, type: "permission_error", code: "upstream_not_allowed",
                                      message: "The /upstream pass-through needs an admin credential or the upstream claim")
                }
                let model = context.parameters.get("model") ?? ""
                let rest = context.parameters.getCatchAll().joined(separator: "/")
                let body = try await request.collectBody(upTo: config.maxBodyBytes, within: config.clientBodyTimeout,
                                                         departure: context.clientDeparture)
                let stream = (try? RoutingFields.parse(body))?.stream ?? false
                return try await route(request, path: "/upstream/\(model)/\(rest)", context: context,
                                       known: (RoutingFields(model: model, stream: stream), body))
            }
        }
        for path in Self.routedQueryPaths {
            group.get(RouterPath(path)) { request, context in
                guard let model = request.uri.queryParameters.get("model"), !model.isEmpty else {
                    throw OpenAIError.invalidRequest("GET \(path) needs ?model=NAME to choose the engine", code: "missing_model",
                                                     param: "model")
                }
                return try await route(request, path: path, context: context,
                                       known: (RoutingFields(model: model, stream: false), ByteBuffer()))
            }
        }
    }

    /// Reads the body, picks a worker for its model and forwards.
    ///
    /// Before any byte reaches the client, a transport error, a 5xx or a 429 from a worker
    /// is retried on another worker (up to `retries` times, with a short jittered pause
    /// after 429/503); when no attempt succeeds the client gets the last worker's own error
    /// answer, or a 502 for transport errors. When every worker is at capacity the request
    /// waits in the model's FIFO queue, holding no response headers, so the outcome can
    /// still be 429 or 503.
    /// - Parameter known: the routing fields and body when they do not come from a JSON body
    ///   (a `GET` routed by its query).
    func route(_ request: Request, path: String, context: HubRequestContext,
               known: (fields: RoutingFields, body: ByteBuffer)? = nil) async throws -> Response {
        let body: ByteBuffer
        let fields: RoutingFields
        if let known {
            (fields, body) = known
        } else {
            body = try await request.collectBody(upTo: config.maxBodyBytes, within: config.clientBodyTimeout,
                                                 departure: context.clientDeparture)
            fields = try RoutingFields.parse(body)
        }
        // The `models` claim names canonical models: an alias is resolved first, so an alias
        // that matches a pattern cannot reach a model outside it. (The pick is checked again:
        // an alias may name different models on different workers.)
        if let identity = context.identity, identity.models != nil {  // no claim: every model, nothing to resolve
            let canonical = state.canonicalModels(for: fields.model)
            guard canonical.isEmpty ? identity.allows(fields.model) : canonical.allSatisfy(identity.allows) else {
                throw Self.notAllowed(fields.model)
            }
        }
        let config = self.config
        let access = context.access
        var logger = self.logger
        var headers = HTTPForwarding.requestHeaders(request.headers)
        if let access {
            logger[metadataKey: "request_id"] = "\(access.id)"
            headers.append((RequestIDHeader.header, access.id))
        }
        // The metrics label of a request that ends before a pick: the name as asked, once the
        // registry has shown it is a known model or alias (never a client's arbitrary text).
        let labelKnownModel = { access?.update { $0.model = $0.model ?? fields.model } }
        let target = path + (request.uri.query.map { "?\($0)" } ?? "")
        let queueDeadline = ContinuousClock.now + config.queue.timeout
        var attempts = AttemptPolicy(retries: config.retries, breaker: config.breaker)

        while true {
            let pick: Registry.Pick
            switch state.pick(fields.model, excluding: attempts.tried) {
            case .picked(let chosen):
                pick = chosen
            case .saturated:
                labelKnownModel()
                // Waiting ends the moment the client leaves (its place goes to the next in line).
                let waitStart = ContinuousClock.now
                defer {
                    let waited = ContinuousClock.now - waitStart
                    access?.update { $0.queueWait = ($0.queueWait ?? .zero) + waited }
                    if let model = access?.current.model { state.metrics?.queueWait(model: model, waited) }
                }
                pick = try await state.waitForCapacity(fields.model, deadline: queueDeadline,
                                                       clientDeparture: context.clientDeparture, shutdown: shutdown)
            case .unknownModel:
                throw OpenAIError.modelNotFound(fields.model)
            case .noLiveWorker:
                // Also answered for any name while a `models_dir` worker is away: only a name
                // the cluster knows becomes a label.
                if !state.canonicalModels(for: fields.model).isEmpty { labelKnownModel() }
                throw OpenAIError.noWorker(fields.model)
            case .doesNotFit(let reason):
                labelKnownModel()
                throw OpenAIError(.serviceUnavailable, type: "server_error", code: "model_does_not_fit",
                                  message: "No live worker can load the model '\(fields.model)': it \(reason)", param: "model")
            case .exhausted:
                labelKnownModel()
                if attempts.madeAttempts { return try attempts.exhausted(model: fields.model).get().response }
                throw OpenAIError(.serviceUnavailable, type: "server_error", code: "no_healthy_worker",
                                  message: "Every worker serving '\(fields.model)' is failing (circuit open); try again shortly",
                                  headers: [.retryAfter: "5"])
            }
            let lease = Lease(pick, state: state)
            access?.update { fields in
                fields.model = pick.model
                fields.worker = pick.worker
            }
            if let identity = context.identity, identity.models != nil, !identity.allows(pick.model) {
                lease.release(.neutral)
                throw Self.notAllowed(fields.model)
            }
            // A request sent ahead waits for a slot in the engine's queue: its first byte is late by design.
            if fields.stream && !pick.isAhead {
                lease.watchFirstByte(config.breaker.slowTTFB,
                                     on: context.clientDeparture?.eventLoop ?? MultiThreadedEventLoopGroup.singleton.any())
            }
            let options = UpstreamForwarder.Options(
                headTimeout: fields.stream ? config.firstByteTimeout : config.requestTimeout,
                idleTimeout: config.idleTimeout, interceptRetryable: attempts.mayRetry,
                clientWriteTimeout: config.clientWriteTimeout, readUsage: true, shutdown: shutdown)
            let breaker = config.breaker
            let result = await forwarder.forward(
                url: pick.url + target, method: request.method,
                headers: headers + [("Authorization", try await keys.header(for: pick.worker)), (modelHeaderName, pick.model),
                                    (streamHeaderName, String(fields.stream))],
                body: body, options: options, logger: logger, clientDeparture: context.clientDeparture,
                onFirstByte: { lease.firstByteArrived() }
            ) { finish in
                access?.finished(finish)
                lease.release(AttemptPolicy.sample(finish, policy: breaker, waitedInEngineQueue: pick.isAhead,
                                                   firstByteJudged: lease.firstByteJudged),
                              ttft: finish.timing?.firstByte)
            }
            switch result {
            case .response(let response):
                return response
            case .clientGone:
                lease.release(.neutral)
                throw CancellationError()
            case .shuttingDown:
                lease.release(.neutral)
                throw OpenAIError.shuttingDown
            case .failed(let reply, let error):
                let verdict = attempts.failed(slot: pick.slot, worker: pick.worker, reply: reply, error: error,
                                              firstByteJudged: lease.firstByteJudged, jitterMilliseconds: Int.random(in: 50...250))
                lease.release(verdict.sample)
                logger.warning("attempt failed before the first byte", metadata: [
                    "worker": "\(pick.worker)", "model": "\(pick.model)", "attempt": "\(attempts.attempts)",
                    "reason": "\(error)", "kind": "\(error.kind.rawValue)",
                ])
                guard verdict.retry else { return try attempts.exhausted(model: fields.model).get().response }
                access?.update { $0.retries += 1 }
                state.metrics?.retry(model: pick.model, worker: pick.worker)
                if let pause = verdict.pause { try await Task.sleep(for: pause) }
            }
        }
    }

    static func notAllowed(_ model: String) -> OpenAIError {
        OpenAIError(.forbidden, type: "permission_error", code: "model_not_allowed",
                    message: "This credential may not use the model '\(model)'", param: "model")
    }
}
