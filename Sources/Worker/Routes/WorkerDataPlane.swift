import Foundation
import HTTPTypes
import Logging
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
    /// llama.cpp's own endpoints, besides everything under `/v1/`.
    static let enginePaths: Set<Substring> = [
        "/completion", "/completions", "/infill", "/embedding", "/embeddings", "/rerank", "/reranking",
        "/tokenize", "/detokenize", "/apply-template",
    ]
    static let passThroughMethods: Set<HTTPRequest.Method> = [.get, .post, .put, .delete]

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

    func claims(_ head: HTTPRequest) -> Bool {
        let path = ClientExchange.requestPath(head.path)
        switch head.method {
        case .post where path.hasPrefix("/v1/") || Self.enginePaths.contains(path): return true
        case .get where path == "/props": return true  // read-only engine facts, routed by the hub's model header
        default: return path.hasPrefix("/upstream/") && Self.passThroughMethods.contains(head.method)
        }
    }

    func answer(_ exchange: ClientExchange) async {
        do {
            try await HubAuthMiddleware<WorkerRequestContext>.check(exchange.request.headerFields[.authorization], with: verifier)
            let path = exchange.path
            if path.hasPrefix("/upstream/") {
                // The hub's raw pass-through: the rest of the path goes to the engine as it is, unrewritten.
                let rest = path.dropFirst("/upstream/".count).drop { $0 != "/" }
                guard !rest.isEmpty else {
                    throw OpenAIError(.notFound, type: "invalid_request_error", code: "not_found",
                                      message: "The pass-through is /upstream/{model}/{path}")
                }
                try await forward(exchange, enginePath: String(rest), rewrite: false)
            } else {
                try await forward(exchange, enginePath: String(path), rewrite: true)
            }
        } catch is CancellationError {
            // The client left; its connection is closed and its record written.
        } catch {
            exchange.respond(OpenAIError.from(error))
        }
    }

    /// - Parameters:
    ///   - enginePath: the engine's path.
    ///   - rewrite: apply the model's request rewriting (not for the raw pass-through).
    func forward(_ exchange: ClientExchange, enginePath path: String, rewrite: Bool) async throws {
        guard !drain.isDraining else {
            throw OpenAIError(.serviceUnavailable, type: "server_error", code: "worker_draining",
                              message: "This worker is drained by an admin and takes no new requests",
                              headers: [.retryAfter: "1"])
        }
        let received = exchange.body
        let headerFields = exchange.request.headerFields
        let requested: String
        let stream: Bool
        if let header = headerFields[modelHeader] {
            requested = header
            stream = headerFields[streamHeader] == "true"
        } else {
            let fields = try RoutingFields.parse(received)
            (requested, stream) = (fields.model, fields.stream)
        }
        guard let model = supervisor.canonicalName(requested) else { throw OpenAIError.modelNotFound(requested) }
        let access = exchange.access
        access.update { $0.model = model }
        var logger = self.logger
        logger[metadataKey: "request_id"] = "\(access.id)"
        let base: String
        let key: String?
        let remote = supervisor.remote(model)
        if let remote {
            // A remote OpenAI-compatible endpoint: its `/v1` base replaces ours; its key stays here.
            supervisor.leaseRemote(model)
            base = remote.url
            key = remote.apiKey?.value
        } else {
            let engine: Engine
            do {
                engine = try await supervisor.acquire(model)
            } catch {
                // The reason, not the engine's output: that stays in the logs and the admin API.
                let reason = (error as? EngineError)?.publicReason
                    ?? "it failed to load (see the worker's logs for model \(model))"
                throw OpenAIError(.serviceUnavailable, type: "server_error", code: "model_unavailable",
                                  message: "Model '\(model)' could not be started: \(reason)")
            }
            base = engine.baseURL
            key = engine.apiKey
        }
        // The model's rewriting: only the named members change; other bodies pass as they came.
        let body = rewrite ? supervisor.rewrite(for: model).apply(to: received) : received
        var headers = HTTPForwarding.requestHeaders(headerFields)
        if let key { headers.append(("Authorization", "Bearer \(key)")) }
        headers.append((RequestIDHeader.header, access.id))
        // llama-server closes the connection after every streamed response. Pooled, such a
        // connection could be picked for the next request in the instant before its close
        // is seen, and that request fails (18 % of streams at 16 connections before this).
        // Saying so up front keeps it out of the pool.
        if stream { headers.append(("Connection", "close")) }
        let target = Self.url(base: base, path: path, remote: remote != nil) + (exchange.query.map { "?\($0)" } ?? "")
        // The lease keeps the model from being evicted or unloaded until the last byte.
        inFlight.add(1)
        let release: @Sendable () -> Void = { [inFlight, supervisor] in
            inFlight.add(-1)
            supervisor.release(model)
        }
        // A pooled connection that llama-server closed as it was reused is retried inside the
        // client; any other failure here is the engine's.
        let result = await forwarder.forward(url: target, method: exchange.request.method, headers: headers, body: body,
                                             options: options, to: exchange, logger: logger, onFinish: { finish in
            access.finished(finish)
            release()
        })
        switch result {
        case .relayed:
            return
        case .clientGone:
            release()
            throw CancellationError()
        case .shuttingDown:
            release()
            throw OpenAIError.shuttingDown
        case .failed(_, let reason):
            release()
            throw OpenAIError.upstream("the engine for '\(model)' failed: \(reason)", code: "engine_error")
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
