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
/// pass-through `/upstream/{model}/...`. Each request is a ``RoutedRequest``: authenticated,
/// limited, routed to a worker (waiting in the model's queue when all are busy), retried
/// elsewhere before its first byte, and relayed.
struct HubDataPlane: DataPlane {
    /// Endpoints routed by the `model` field of their JSON body: OpenAI's, and llama.cpp's
    /// own (which llama-server serves for its one model; the hub picks the engine by `model`).
    static let routedPaths = EngineEndpoints.openAI.union(EngineEndpoints.llamaCpp)

    /// Endpoints whose `messages` are checked before an engine sees them (llama-server answers
    /// a message without a `role` with a 500, which looked like the worker failing).
    static let chatPaths: Set<Substring> = ["/v1/chat/completions", "/chat/completions", "/apply-template"]

    /// Endpoints whose prompt places the request by its cached prefix (the cache-aware policy):
    /// generation, whose prefill a cached prefix saves. Embeddings and the rest go by load.
    static let promptPaths: Set<Substring> = [
        "/v1/chat/completions", "/chat/completions", "/v1/completions", "/completion", "/completions", "/infill",
    ]

    /// `GET` endpoints routed by a `model` query parameter.
    static let routedQueryPaths: Set<Substring> = ["/props"]

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
        default: return EngineEndpoints.isPassThrough(path, head.method)
        }
    }

    func answer(_ exchange: ClientExchange) {
        RoutedRequest(plane: self, exchange: exchange).start()
    }

    /// The routing fields, the worker's path and where the prompt lies in the body: from the
    /// JSON body, the pass-through's path (`/upstream/{model}/...`), or the `model` query of a
    /// routed `GET`.
    func routing(_ exchange: ClientExchange, identity: Identity?) throws -> (RoutingFields, String, Range<Int>?) {
        let path = exchange.path
        if path.hasPrefix("/upstream/") {
            // The raw pass-through to one model's engine (llama-swap's /upstream): any method and
            // path, forwarded untouched; admins, or tokens with the `upstream` claim.
            guard identity?.upstream ?? true else {
                throw OpenAIError(.upstreamNotAllowed, message: "The /upstream pass-through needs an admin credential or the upstream claim")
            }
            let rest = path.dropFirst("/upstream/".count)
            let model = rest.prefix { $0 != "/" }
            guard !model.isEmpty, model.count < rest.count else {
                throw OpenAIError(.notFound, message: "The pass-through is /upstream/{model}/{path}")
            }
            let stream = (try? RoutingFields.parse(exchange.body))?.stream ?? false
            return (RoutingFields(model: String(model.removingPercentEncoding ?? String(model)), stream: stream), String(path), nil)
        }
        if exchange.request.method == .get {
            let model = exchange.query.flatMap { query in
                URLComponents(string: "?" + query)?.queryItems?.first { $0.name == "model" }?.value
            }
            guard let model, !model.isEmpty else {
                throw OpenAIError(.missingModel, message: "GET \(path) needs ?model=NAME to choose the engine",
                                                 param: "model")
            }
            return (RoutingFields(model: model, stream: false), String(path), nil)
        }
        let (fields, prompt) = try RoutingFields.scan(exchange.body, messages: Self.chatPaths.contains(path))
        return (fields, String(path), Self.promptPaths.contains(path) ? prompt : nil)
    }

    static func notAllowed(_ model: String) -> OpenAIError {
        OpenAIError(.modelNotAllowed, message: "This credential may not use the model '\(model)'", param: "model")
    }
}
