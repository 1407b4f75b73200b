import Foundation
import Hummingbird
import Logging
import Routing
import Server
import Store
import Wire

/// The admin API of hub-managed models (the same operations as `caravan-hub models`):
///
/// | endpoint | what it does |
/// |---|---|
/// | `GET /admin/models` | every model: estimate, replicas with their reasons and download progress |
/// | `POST /admin/models` | adds one (``ModelRequest``): its source is read, it is placed, then stored; 409 `model_does_not_place` when no worker can take it |
/// | `PATCH /admin/models/{name}` | replicas, workers, ctx, parallel, args, aliases |
/// | `DELETE /admin/models/{name}` | removes it: its workers stop it and free its files under their budget |
struct ModelRoutes {
    let desk: ModelDesk
    let state: HubState
    let logger: Logger

    func addRoutes(to group: RouterGroup<HubRequestContext>) {
        group.get("/admin/models") { _, _ in
            try jsonResponse(["models": try await desk.views(reports: reports())])
        }
        group.post("/admin/models") { request, _ in
            let body = try await request.body.collect(upTo: 64 << 10)
            let add: ModelRequest
            do {
                add = try WireCoding.decoder().decode(ModelRequest.self, from: Data(body.readableBytesView))
            } catch {
                throw OpenAIError(.invalidJSON, message: "expected {\"name\": ..., \"source\": \"hf://ORG/REPO/FILE.gguf\", \"replicas\": 2, "
                                  + "\"ctx\": ..., \"parallel\": ..., \"args\": [...], \"aliases\": [...]}")
            }
            let model = try await call { try await desk.add(add, served: Set(state.servedModels())) }
            logger.notice("hub-managed model added", metadata: ["model": "\(model.name)", "workers": "\(model.placement.map(\.worker))"])
            return try jsonResponse(ModelView(model, reports: reports()[model.name] ?? [:]), status: .created)
        }
        group.patch("/admin/models/{name}") { request, context in
            let body = try await request.body.collect(upTo: 64 << 10)
            let changes: ModelBook.Changes
            do {
                changes = try WireCoding.decoder().decode(ModelBook.Changes.self, from: Data(body.readableBytesView))
            } catch {
                throw OpenAIError(.invalidJSON, message: "expected {\"replicas\": ..., \"workers\": [...], \"ctx\": ..., \"parallel\": ..., \"args\": [...], \"aliases\": [...]}")
            }
            let model = try await call { try await desk.set(context.parameters.get("name") ?? "", changes) }
            logger.notice("hub-managed model changed", metadata: ["model": "\(model.name)"])
            return try jsonResponse(ModelView(model, reports: reports()[model.name] ?? [:]))
        }
        group.delete("/admin/models/{name}") { _, context in
            let name = context.parameters.get("name") ?? ""
            try await call { try await desk.remove(name) }
            logger.notice("hub-managed model removed", metadata: ["model": "\(name)"])
            return try jsonResponse(["removed": name])
        }
    }

    /// Per model, per worker: the worker's report of it.
    private func reports() -> [String: [String: ModelReport]] {
        var reports: [String: [String: ModelReport]] = [:]
        for worker in state.liveWorkers() {
            for model in worker.report.models { reports[model.name, default: [:]][worker.name] = model }
        }
        return reports
    }

    /// The desk's refusals as OpenAI errors.
    private func call<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as ModelBook.NotFound {
            throw OpenAIError(.notFound, message: error.description)
        } catch let error as ModelRequest.Invalid {
            throw OpenAIError(.invalidRequestBody, message: error.description, param: error.param)
        } catch let error as ModelDesk.Refusal {
            throw OpenAIError(error.code, message: error.description)
        } catch let error as StoreError {
            throw OpenAIError(.storeUnavailable, message: error.description)
        }
    }
}
