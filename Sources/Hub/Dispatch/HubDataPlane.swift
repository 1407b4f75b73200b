import Routing
import Foundation
import HTTPTypes
import Logging
import NIOCore
import Config
import Proxy
import Server
import Wire

/// The hub's inference API on the raw data plane: the routed endpoints (OpenAI's and
/// llama.cpp's own, by the `model` of their body), `GET /props?model=`, and the raw
/// pass-through `/upstream/{model}/...`. Each request is authenticated, limited, routed to a
/// worker (waiting in the model's queue when all are busy), retried elsewhere before its
/// first byte, and relayed.
struct HubDataPlane: DataPlane {
    /// Endpoints routed by the `model` field of their JSON body: OpenAI's, and llama.cpp's
    /// own (which llama-server serves for its one model; the hub picks the engine by `model`).
    static let routedPaths: Set<Substring> = [
        "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/reranking",
        "/completion", "/completions", "/infill", "/embedding", "/embeddings", "/rerank", "/reranking",
        "/tokenize", "/detokenize", "/apply-template",
    ]

    /// `GET` endpoints routed by a `model` query parameter.
    static let routedQueryPaths: Set<Substring> = ["/props"]

    static let passThroughMethods: Set<HTTPRequest.Method> = [.get, .post, .put, .delete]

    let state: HubState
    let forwarder: UpstreamForwarder
    let keys: WorkerKeys
    let settings: HubSettings
    let limiter: RateLimiter
    /// The rules of `--no-auth` (nil with authentication).
    let local: LocalOnlyAccess?
    let logger: Logger
    /// Ends streams still running when the shutdown grace is over.
    let shutdown: ShutdownGrace?

    /// The hub section in force (a reload replaces it between requests).
    var config: HubConfig { settings.hub }
    var maxBodyBytes: Int { config.maxBodyBytes }
    var bodyTimeout: Duration { config.clientBodyTimeout }

    func claims(_ head: HTTPRequest) -> Bool {
        let path = ClientExchange.requestPath(head.path)
        switch head.method {
        case .post where Self.routedPaths.contains(path): return true
        case .get where Self.routedQueryPaths.contains(path): return true
        default: return path.hasPrefix("/upstream/") && Self.passThroughMethods.contains(head.method)
        }
    }

    func answer(_ exchange: ClientExchange) async {
        exchange.access.update { $0.isAPI = true }
        let headers = exchange.request.headerFields
        if let origin = headers[.origin], config.corsOrigins.contains(origin) {
            exchange.addResponseHeader(.accessControlAllowOrigin, origin)
            exchange.addResponseHeader(.vary, "Origin")
        }
        do {
            var identity: Identity?
            var permit: RateLimiter.Permit?
            if let authenticator = settings.authenticator {
                let caller = try await ClientAuthMiddleware.identify(headers[.authorization], with: authenticator,
                                                                     roles: [.client, .admin])
                exchange.access.update { $0.subject = caller.subject }
                permit = try ClientAuthMiddleware.admit(caller, limiter: limiter)
                identity = caller
            } else {
                try local?.check(authority: exchange.request.authority, origin: headers[.origin], admin: false)
            }
            try await route(exchange, identity: identity, permit: permit)
        } catch is CancellationError {
            // The client left; its connection is closed and its record written.
        } catch {
            exchange.respond(OpenAIError.from(error))
        }
    }

    /// Reads the routing fields, picks a worker for the model and forwards.
    ///
    /// Before any byte reaches the client, a transport error, a 5xx or a 429 from a worker
    /// is retried on another worker (up to `retries` times, with a short jittered pause
    /// after 429/503); when no attempt succeeds the client gets the last worker's own error
    /// answer, or a 502 for transport errors. When every worker is at capacity the request
    /// waits in the model's FIFO queue, holding no response headers, so the outcome can
    /// still be 429 or 503.
    /// - Parameter permit: the caller's concurrency slot, given back at the answer's last byte.
    func route(_ exchange: ClientExchange, identity: Identity?, permit: RateLimiter.Permit?) async throws {
        defer { permit?.release() }  // kept by a relayed answer until its end (below)
        let (fields, path) = try routing(exchange, identity: identity)
        // The `models` claim names canonical models: an alias is resolved first, so an alias
        // that matches a pattern cannot reach a model outside it. (The pick is checked again:
        // an alias may name different models on different workers.)
        if let identity, identity.models != nil {  // no claim: every model, nothing to resolve
            let canonical = state.canonicalModels(for: fields.model)
            guard canonical.isEmpty ? identity.allows(fields.model) : canonical.allSatisfy(identity.allows) else {
                throw Self.notAllowed(fields.model)
            }
        }
        let config = self.config
        let access = exchange.access
        var logger = self.logger
        logger[metadataKey: "request_id"] = "\(access.id)"
        var headers = HTTPForwarding.requestHeaders(exchange.request.headerFields)
        headers.append((RequestIDHeader.header, access.id))
        // The metrics label of a request that ends before a pick: the name as asked, once the
        // registry has shown it is a known model or alias (never a client's arbitrary text).
        let labelKnownModel = { access.update { $0.model = $0.model ?? fields.model } }
        let target = path + (exchange.query.map { "?\($0)" } ?? "")
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
                    access.update { $0.queueWait = ($0.queueWait ?? .zero) + waited }
                    if let model = access.current.model { state.metrics?.queueWait(model: model, waited) }
                }
                pick = try await state.waitForCapacity(fields.model, deadline: queueDeadline,
                                                       clientDeparture: exchange.departure, shutdown: shutdown)
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
                if attempts.madeAttempts { return try pass(attempts.exhausted(model: fields.model), to: exchange) }
                throw OpenAIError(.serviceUnavailable, type: "server_error", code: "no_healthy_worker",
                                  message: "Every worker serving '\(fields.model)' is failing (circuit open); try again shortly",
                                  headers: [.retryAfter: "5"])
            }
            let lease = Lease(pick, state: state)
            access.update { fields in
                fields.model = pick.model
                fields.worker = pick.worker
            }
            if let identity, identity.models != nil, !identity.allows(pick.model) {
                lease.release(.neutral)
                throw Self.notAllowed(fields.model)
            }
            // A request sent ahead waits for a slot in the engine's queue: its first byte is late by design.
            if fields.stream && !pick.isAhead { lease.watchFirstByte(config.breaker.slowTTFB, on: exchange.eventLoop) }
            let options = UpstreamForwarder.Options(
                headTimeout: fields.stream ? config.firstByteTimeout : config.requestTimeout,
                idleTimeout: config.idleTimeout, interceptRetryable: attempts.mayRetry,
                clientWriteTimeout: config.clientWriteTimeout, readUsage: true, shutdown: shutdown)
            let breaker = config.breaker
            let result = await forwarder.forward(
                url: pick.url + target, method: exchange.request.method,
                headers: headers + [("Authorization", try await keys.header(for: pick.worker)), (modelHeaderName, pick.model),
                                    (streamHeaderName, String(fields.stream))],
                body: exchange.body, options: options, to: exchange, logger: logger,
                onFirstByte: { lease.firstByteArrived() }
            ) { finish in
                access.finished(finish)
                lease.release(AttemptPolicy.sample(finish, policy: breaker, waitedInEngineQueue: pick.isAhead,
                                                   firstByteJudged: lease.firstByteJudged),
                              ttft: finish.timing?.firstByte)
                permit?.release()
            }
            switch result {
            case .relayed:
                return
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
                guard verdict.retry else { return try pass(attempts.exhausted(model: fields.model), to: exchange) }
                access.update { $0.retries += 1 }
                state.metrics?.retry(model: pick.model, worker: pick.worker)
                if let pause = verdict.pause { try await Task.sleep(for: pause) }
            }
        }
    }

    /// The routing fields and the worker's path: from the JSON body, the pass-through's path
    /// (`/upstream/{model}/...`), or the `model` query of a routed `GET`.
    private func routing(_ exchange: ClientExchange, identity: Identity?) throws -> (RoutingFields, String) {
        let path = exchange.path
        if path.hasPrefix("/upstream/") {
            // The raw pass-through to one model's engine (llama-swap's /upstream): any method and
            // path, forwarded untouched; admins, or tokens with the `upstream` claim.
            guard identity?.upstream ?? true else {
                throw OpenAIError(.forbidden, type: "permission_error", code: "upstream_not_allowed",
                                  message: "The /upstream pass-through needs an admin credential or the upstream claim")
            }
            let rest = path.dropFirst("/upstream/".count)
            let model = rest.prefix { $0 != "/" }
            guard !model.isEmpty, model.count < rest.count else {
                throw OpenAIError(.notFound, type: "invalid_request_error", code: "not_found",
                                  message: "The pass-through is /upstream/{model}/{path}")
            }
            let stream = (try? RoutingFields.parse(exchange.body))?.stream ?? false
            return (RoutingFields(model: String(model.removingPercentEncoding ?? String(model)), stream: stream), String(path))
        }
        if exchange.request.method == .get {
            let model = exchange.query.flatMap { query in
                URLComponents(string: "?" + query)?.queryItems?.first { $0.name == "model" }?.value
            }
            guard let model, !model.isEmpty else {
                throw OpenAIError.invalidRequest("GET \(path) needs ?model=NAME to choose the engine", code: "missing_model",
                                                 param: "model")
            }
            return (RoutingFields(model: model, stream: false), String(path))
        }
        return (try RoutingFields.parse(exchange.body), String(path))
    }

    /// Passes on the last worker's own error answer, or throws the hub's 502.
    private func pass(_ exhausted: Result<UpstreamForwarder.ErrorReply, OpenAIError>, to exchange: ClientExchange) throws {
        let reply = try exhausted.get()
        exchange.respond(status: reply.status, headers: reply.headers, body: reply.body)
    }

    static func notAllowed(_ model: String) -> OpenAIError {
        OpenAIError(.forbidden, type: "permission_error", code: "model_not_allowed",
                    message: "This credential may not use the model '\(model)'", param: "model")
    }
}
