import Foundation
import HTTPTypes
import Logging
import NIOCore
import Auth
import Config
import Proxy
import Server
import Wire

/// The worker's engine front on the raw data plane: forwards `/v1/*` and llama.cpp's own
/// endpoints to the llama-server of the requested model (the hub's model header, or the
/// body's `model`), starting it on first use, and relays the answer. Only the hub may call
/// it: a `role: hub` JWT for this worker.
struct WorkerDataPlane: DataPlane {

    let supervisor: EngineSupervisor
    let forwarder: UpstreamForwarder
    let verifier: TokenVerifier
    let inFlight: InFlightCounter
    let maxBodyBytes: Int
    let bodyTimeout: Duration
    let options: UpstreamForwarder.Options
    let logger: Logger
    /// An admin's drain: new requests are refused (the hub retries them elsewhere).
    let drain: DrainSwitch
    var metrics: WorkerMetrics?

    func claims(_ head: HTTPRequest) -> Bool {
        let path = ClientExchange.requestPath(head.path)
        switch head.method {
        case .post where path.hasPrefix("/v1/") || EngineEndpoints.llamaCpp.contains(path): return true
        case .get where path == "/props": return true  // read-only engine facts, routed by the hub's model header
        default: return EngineEndpoints.isPassThrough(path, head.method)
        }
    }

    /// Checks the hub's token (a task only the first time it is seen), then forwards.
    func answer(_ exchange: ClientExchange) {
        let authorization = exchange.request.headerFields[.authorization]
        do {
            if try HubAuthMiddleware<WorkerRequestContext>.checkCached(authorization, with: verifier) { return forward(exchange) }
        } catch {
            return exchange.fail(error)
        }
        let verifier = self.verifier
        exchange.run { try await HubAuthMiddleware<WorkerRequestContext>.check(authorization, with: verifier) }
            .assumeIsolated().whenComplete { result in
                switch result {
                case .success: forward(exchange)
                case .failure(let error): exchange.fail(error)
                }
            }
    }

    /// Finds the model and its engine (starting it in a task when it is not running) and
    /// relays the request to it.
    func forward(_ exchange: ClientExchange) {
        let model: String
        let stream: Bool
        do {
            (model, stream) = try requestedModel(exchange)
        } catch {
            return exchange.fail(error)
        }
        exchange.access.update { $0.model = model }
        if let remote = supervisor.remote(model) {
            // A remote OpenAI-compatible endpoint: its `/v1` base replaces ours; its key stays here.
            supervisor.leaseRemote(model)
            return relay(exchange, model: model, stream: stream, base: remote.url, key: remote.apiKey?.value, remote: true)
        }
        switch supervisor.acquireReady(model) {
        case .engine(let engine):
            return relay(exchange, model: model, stream: stream, base: engine.baseURL, key: engine.apiKey, remote: false)
        case .full(let limit):
            return full(exchange, model: model, limit: limit)
        case .notReady:
            break
        }
        let supervisor = self.supervisor
        exchange.run {
            do {
                return try await supervisor.acquire(model)
            } catch let error as EngineSupervisor.AdmissionFull {
                throw error
            } catch let error as EngineError where error.kind == .notServed {
                throw OpenAIError.modelNotFound(model)  // removed by a reload while it waited
            } catch {
                // The reason, not the engine's output: that stays in the logs and the admin API.
                let reason = (error as? EngineError)?.publicReason ?? "it failed to load (see the worker's logs for model \(model))"
                throw OpenAIError(.modelUnavailable, message: "Model '\(model)' could not be started: \(reason)")
            }
        }.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let engine):
                relay(exchange, model: model, stream: stream, base: engine.baseURL, key: engine.apiKey, remote: false)
            case .failure(let error as EngineSupervisor.AdmissionFull):
                full(exchange, model: model, limit: error.limit)
            case .failure(let error):
                exchange.fail(error)
            }
        }
    }

    /// The worker's own admission: its engine already holds `limit` requests (`slots x (1 +
    /// ahead_per_slot)`), so this one is refused before any byte with a 429 the hub knows by
    /// its ``admissionHeader``: the hub sends it elsewhere or queues it, and its breaker
    /// counts nothing. However many hubs share this worker, the engine never holds more.
    private func full(_ exchange: ClientExchange, model: String, limit: Int) {
        metrics?.admissionFull(model)
        exchange.respond(OpenAIError(.workerFull, message: "This worker holds \(limit) requests for '\(model)' already (its admission bound)",
                                     headers: [admissionHeader: admissionFull, .retryAfter: "1"]))
    }

    /// The canonical model and whether the answer streams: from the hub's headers, else the body.
    private func requestedModel(_ exchange: ClientExchange) throws -> (model: String, stream: Bool) {
        guard !drain.isDraining else {
            throw OpenAIError(.workerDraining, message: "This worker is drained by an admin and takes no new requests",
                              headers: [.retryAfter: "1"])
        }
        let headerFields = exchange.request.headerFields
        let requested: String
        let stream: Bool
        if let header = headerFields[modelHeader] {
            requested = header
            stream = headerFields[streamHeader] == "true"
        } else {
            let fields = try RoutingFields.parse(exchange.body)
            (requested, stream) = (fields.model, fields.stream)
        }
        guard let model = supervisor.canonicalName(requested) else { throw OpenAIError.modelNotFound(requested) }
        return (model, stream)
    }

    /// Relays the request to the engine at `base`; the model's lease (taken by the caller)
    /// ends with the answer.
    private func relay(_ exchange: ClientExchange, model: String, stream: Bool, base: String, key: String?, remote: Bool) {
        let access = exchange.access
        var logger = self.logger
        logger[metadataKey: "request_id"] = "\(access.id)"
        // The hub's raw pass-through: the rest of the path goes to the engine as it is, unrewritten.
        let path = exchange.path
        let passThrough = path.hasPrefix("/upstream/")
        let enginePath = passThrough ? String(path.dropFirst("/upstream/".count).drop { $0 != "/" }) : String(path)
        // The model's rewriting: only the named members change; other bodies pass as they came.
        let body = passThrough ? exchange.body : supervisor.rewrite(for: model).apply(to: exchange.body)
        var headers = HTTPForwarding.requestHeaders(exchange.request.headerFields)
        if let key { headers.append(("Authorization", "Bearer \(key)")) }
        headers.append((RequestIDHeader.header, access.id))
        // llama-server closes the connection after every streamed response. Pooled, such a
        // connection could be picked for the next request in the instant before its close
        // is seen, and that request fails (18 % of streams at 16 connections before this).
        // Saying so up front keeps it out of the pool.
        if stream { headers.append(("Connection", "close")) }
        let target = Self.url(base: base, path: RequestTarget.normalised(enginePath), remote: remote)
            + (exchange.query.map { "?" + RequestTarget.normalised($0) } ?? "")
        // The lease keeps the model from being evicted or unloaded until the last byte.
        inFlight.add(1)
        let release: @Sendable () -> Void = { [inFlight, supervisor] in
            inFlight.add(-1)
            supervisor.release(model)
        }
        // A pooled connection that llama-server closed as it was reused is retried inside the
        // client; any other failure here is the engine's.
        forwarder.forward(url: target, method: exchange.request.method, headers: headers, body: body, options: options,
                          to: exchange, logger: logger, onFinish: { finish in
                              access.finished(finish)
                              release()
                          }).assumeIsolated().whenSuccess { result in
            switch result {
            case .relayed:
                return
            case .clientGone:
                release()
            case .shuttingDown:
                release()
                exchange.respond(OpenAIError.shuttingDown)
            case .failed(_, let reason):
                release()
                exchange.respond(OpenAIError(.engineError, message: "the engine for '\(model)' failed: \(reason)"))
            }
        }
    }

    /// A remote upstream's URL ends in its API root (`https://api.example.com/v1`): an OpenAI
    /// path's `/v1` is that root, so `/v1/chat/completions` becomes `<root>/chat/completions`.
    static func url(base: String, path: String, remote: Bool) -> String {
        guard remote else { return base + path }
        let root = base.hasSuffix("/") ? String(base.dropLast()) : base
        return root + (path.hasPrefix("/v1/") ? String(path.dropFirst(3)) : path)
    }
}
