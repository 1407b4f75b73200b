import Foundation
import Store
import Wire

/// Hub-managed models in the store, as ``ManagedModel`` documents: what the CLI and the
/// admin API change, and what every hub's ``ModelPlacer`` reads.
struct ModelBook: Sendable {
    let store: any HubStore

    struct NotFound: Error, CustomStringConvertible {
        var name: String
        var description: String { "no hub-managed model named '\(name)'" }
    }

    /// The settings an admin gives when adding a model and may change after (`models set`,
    /// `PATCH /admin/models/{name}`'s body); nil keeps the value.
    struct Changes: Decodable, Sendable {
        var replicas: Int?
        var workers: [String]?
        var ctx: Int?
        var parallel: Int?
        var args: [String]?
        var aliases: [String]?

        /// Whether the VRAM estimate must be computed again.
        var changesEstimate: Bool { ctx != nil || parallel != nil || args != nil }
    }

    static func decode(_ stored: StoredModel) -> ManagedModel? {
        try? WireCoding.decoder().decode(ManagedModel.self, from: Data(stored.document.utf8))
    }

    static func encode(_ model: ManagedModel) throws -> String {
        let encoder = WireCoding.encoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(model), as: UTF8.self)
    }

    /// Every model with its stored revision (a document this hub cannot read is skipped).
    func list() async throws -> [(model: ManagedModel, revision: Int64)] {
        try await store.models().compactMap { stored in Self.decode(stored).map { ($0, stored.revision) } }
    }

    func find(_ name: String) async throws -> (model: ManagedModel, revision: Int64) {
        guard let found = try await list().first(where: { $0.model.name == name }) else { throw NotFound(name: name) }
        return found
    }

    /// Stores a new model; false when the name is taken.
    func add(_ model: ManagedModel) async throws -> Bool {
        try await store.put(StoredModel(name: model.name, document: try Self.encode(model)), expected: nil)
    }

    /// Writes `model` if nobody else changed it since `revision`.
    func replace(_ model: ManagedModel, revision: Int64) async throws -> Bool {
        try await store.put(StoredModel(name: model.name, document: try Self.encode(model)), expected: revision)
    }

    func remove(_ name: String) async throws {
        guard try await store.removeModel(named: name) else { throw NotFound(name: name) }
    }
}
