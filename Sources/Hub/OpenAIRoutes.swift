import Foundation
import Hummingbird
import Logging
import Shared

/// The OpenAI-compatible API: model listing and the routed inference endpoints.
struct OpenAIRoutes {
    /// Inference endpoints routed by their `model` field.
    static let routedPaths = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]

    let state: HubState
    let forwarder: UpstreamForwarder
    let credential: WorkerCredential
    let maxBodyBytes: Int
    let firstByteTimeout: Duration
    let logger: Logger

    func addRoutes<Context: RequestContext>(to group: RouterGroup<Context>) {
        group.get("/v1/models") { _, _ in
            let created = Int(Date().timeIntervalSince1970)
            let data = state.servedModels().map { ["id": $0, "object": "model", "created": created, "owned_by": "caravan"] as [String: Any] }
            let json = try JSONSerialization.data(withJSONObject: ["object": "list", "data": data], options: [.sortedKeys])
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(bytes: json)))
        }
        for path in Self.routedPaths {
            group.post(RouterPath(path)) { request, context in
                try await route(request, path: path, context: context)
            }
        }
    }

    /// Reads the body, picks a worker for its model and forwards. A worker that cannot be
    /// reached (before any response byte) is skipped for the next candidate.
    func route(_ request: Request, path: String, context: some RequestContext) async throws -> Response {
        let body = try await request.body.collect(upTo: maxBodyBytes)
        let fields = try RoutingFields.parse(body)
        let candidates: [Registry.Candidate]
        switch state.route(fields.model) {
        case .unknownModel: throw OpenAIError.modelNotFound(fields.model)
        case .noLiveWorker: throw OpenAIError.noWorker(fields.model)
        case .candidates(let healthy, let lastResort): candidates = healthy + lastResort
        }
        var headers = HTTPForwarding.requestHeaders(request.headers)
        headers.append(("Authorization", try await credential.header()))
        let target = path + (request.uri.query.map { "?\($0)" } ?? "")
        var lastError: (any Error)?
        for candidate in candidates {
            do {
                return try await forwarder.forward(
                    url: candidate.url + target, method: request.method,
                    headers: headers + [(modelHeaderName, candidate.model)], body: body,
                    headTimeout: firstByteTimeout, logger: logger)
            } catch {
                lastError = error
                logger.warning("worker unreachable, trying the next one",
                               metadata: ["worker": "\(candidate.worker)", "error": "\(UpstreamForwarder.describe(error))"])
            }
        }
        throw OpenAIError.upstream(
            "No worker for '\(fields.model)' answered: \(lastError.map(UpstreamForwarder.describe) ?? "unknown error")",
            code: "worker_unreachable")
    }
}
