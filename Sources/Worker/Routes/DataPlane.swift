import Foundation
import Hummingbird
import Logging
import Config
import Proxy
import Server
import Wire

/// The worker's HTTP front: forwards `/v1/*` and llama.cpp's own endpoints to the
/// llama-server of the requested model, starting it on first use, streaming the answer.
struct DataPlane: Sendable {
    let supervisor: EngineSupervisor
    let forwarder: UpstreamForwarder
    let inFlight: InFlightCounter
    let maxBodyBytes: Int
    /// Longest time to receive a request body (``Request/collectBody(upTo:within:departure:)``).
    let bodyTimeout: Duration
    let options: UpstreamForwarder.Options
    let logger: Logger
    /// An admin's drain: new requests are refused (the hub retries them elsewhere).
    let drain: DrainSwitch

    func addRoutes(to group: RouterGroup<WorkerRequestContext>) {
        for path in ["/v1/**", "/completion", "/completions", "/infill", "/embedding", "/embeddings", "/rerank", "/reranking",
                     "/tokenize", "/detokenize", "/apply-template"] {
            group.post(RouterPath(path)) { request, context in try await forward(request, context: context) }
        }
        // Read-only engine facts, routed by the hub's model header.
        group.get("/props") { request, context in try await forward(request, context: context) }
        // The hub's raw pass-through: the rest of the path goes to the engine as it is, unrewritten.
        for method in [HTTPRequest.Method.get, .post, .put, .delete] {
            group.on("/upstream/{model}/**", method: method) { request, context in
                let rest = "/" + context.parameters.getCatchAll().joined(separator: "/")
                return try await forward(request, context: context, enginePath: rest, rewrite: false)
            }
        }
    }

    /// - Parameters:
    ///   - enginePath: the engine's path (default: the request's own).
    ///   - rewrite: apply the model's request rewriting (not for the raw pass-through).
    func forward(_ request: Request, context: WorkerRequestContext, enginePath: String? = nil, rewrite: Bool = true)
        async throws -> Response
    {
        guard !drain.isDraining else {
            throw OpenAIError(.serviceUnavailable, type: "server_error", code: "worker_draining",
                              message: "This worker is drained by an admin and takes no new requests",
                              headers: [.retryAfter: "1"])
        }
        let received = try await request.collectBody(upTo: maxBodyBytes, within: bodyTimeout, departure: context.clientDeparture)
        let requested: String
        let stream: Bool
        if let header = request.headers[modelHeader] {
            requested = header
            stream = request.headers[streamHeader] == "true"
        } else {
            let fields = try RoutingFields.parse(received)
            (requested, stream) = (fields.model, fields.stream)
        }
        guard let model = supervisor.canonicalName(requested) else { throw OpenAIError.modelNotFound(requested) }
        let access = context.access
        access?.update { $0.model = model }
        var logger = self.logger
        if let access { logger[metadataKey: "request_id"] = "\(access.id)" }
        let path = enginePath ?? request.uri.path
        let base: String
        let key: String?
        if let remote = supervisor.remote(model) {
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
        var headers = HTTPForwarding.requestHeaders(request.headers)
        if let key { headers.append(("Authorization", "Bearer \(key)")) }
        if let access { headers.append((RequestIDHeader.header, access.id)) }
        // llama-server closes the connection after every streamed response. Pooled, such a
        // connection could be picked for the next request in the instant before its close
        // is seen, and that request fails (18 % of streams at 16 connections before this).
        // Saying so up front keeps it out of the pool.
        if stream { headers.append(("Connection", "close")) }
        let target = Self.url(base: base, path: path, remote: supervisor.remote(model) != nil)
            + (request.uri.query.map { "?\($0)" } ?? "")
        // The lease keeps the model from being evicted or unloaded until the last byte.
        inFlight.add(1)
        let finish: @Sendable (UpstreamForwarder.Finish) -> Void = { [inFlight, supervisor] finish in
            access?.finished(finish)
            inFlight.add(-1)
            supervisor.release(model)
        }
        // A pooled connection that llama-server closed as it was reused is retried inside the
        // client; any other failure here is the engine's.
        let result = await forwarder.forward(url: target, method: request.method, headers: headers, body: body,
                                             options: options, logger: logger, clientDeparture: context.clientDeparture,
                                             onFinish: finish)
        switch result {
        case .response(let response):
            return response
        case .clientGone:
            inFlight.add(-1)
            supervisor.release(model)
            throw CancellationError()
        case .shuttingDown:
            inFlight.add(-1)
            supervisor.release(model)
            throw OpenAIError.shuttingDown
        case .failed(_, let reason):
            inFlight.add(-1)
            supervisor.release(model)
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
