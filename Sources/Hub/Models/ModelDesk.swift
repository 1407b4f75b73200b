import Foundation
import Operations
import Server
import Wire

/// Adding, changing and removing hub-managed models: the one implementation behind the admin
/// API and `caravan-hub models`. A hub's desk places at once with its live view of the workers
/// (and refuses a model that fits nowhere before storing it); the CLI's has no placer, stores
/// the model, and a running hub places it.
struct ModelDesk: Sendable {
    let book: ModelBook
    let reader: SourceReader
    let placer: ModelPlacer?

    struct Refusal: Error, CustomStringConvertible {
        var code: ErrorCode
        var description: String
    }

    func add(_ request: ModelRequest, served: Set<String> = []) async throws -> ManagedModel {
        var model = try request.validated()
        let existing = try await book.list()
        if existing.contains(where: { $0.model.name == model.name }) {
            throw Refusal(code: .modelExists, description: "a hub-managed model named '\(model.name)' exists already (change it with models set)")
        }
        let managed = Set(existing.flatMap { [$0.model.name] + $0.model.aliases })
        if let taken = ([model.name] + model.aliases).first(where: { served.contains($0) && !managed.contains($0) }) {
            throw Refusal(code: .modelExists, description: "'\(taken)' is already served by a model from a worker's configuration")
        }
        try await resolve(&model)
        if let placer {
            let decision = await placer.decide(model)
            guard !decision.placement.isEmpty else {
                throw Refusal(code: .modelDoesNotPlace, description: "refused: \(decision.problem ?? "no worker can take it")")
            }
            model.placement = decision.placement
            model.problem = decision.problem
        }
        guard try await book.add(model) else {
            throw Refusal(code: .modelExists, description: "a hub-managed model named '\(model.name)' exists already")
        }
        try await placer?.pass(reload: true)
        return model
    }

    func set(_ name: String, _ changes: ModelBook.Changes) async throws -> ManagedModel {
        try ModelRequest.check(changes)
        for attempt in 0..<5 {
            var (model, revision) = try await book.find(name)
            if let replicas = changes.replicas {
                model.replicas = replicas
                model.workers = nil
            }
            if let workers = changes.workers {
                model.workers = workers
                model.replicas = workers.count
            }
            model.ctx = changes.ctx ?? model.ctx
            model.parallel = changes.parallel ?? model.parallel
            model.args = changes.args ?? model.args
            model.aliases = changes.aliases ?? model.aliases
            model.updatedAt = Date()
            if changes.changesEstimate { try await resolve(&model) }
            if let placer {
                let decision = await placer.decide(model)
                (model.placement, model.problem) = (decision.placement, decision.problem)
            }
            if try await book.replace(model, revision: revision) {
                try await placer?.pass(reload: true)
                return model
            }
            if attempt < 4 { try await Task.sleep(for: .milliseconds(20)) }  // another hub wrote first: apply to its version
        }
        throw Refusal(code: .modelExists, description: "'\(name)' kept changing under this change; try again")
    }

    func remove(_ name: String) async throws {
        try await book.remove(name)
        try await placer?.pass(reload: true)
    }

    func views(reports: [String: [String: ModelReport]]) async throws -> [ModelView] {
        try await book.list().map { ModelView($0.model, reports: reports[$0.model.name] ?? [:]) }
    }

    private func resolve(_ model: inout ManagedModel) async throws {
        do {
            try await reader.resolve(&model)
        } catch let error as SourceRequest.Failure {
            throw Refusal(code: .invalidSource, description: "cannot read the source: \(error.description)")
        } catch let error as ModelSource.Invalid {
            throw Refusal(code: .invalidSource, description: error.description)
        }
    }
}
