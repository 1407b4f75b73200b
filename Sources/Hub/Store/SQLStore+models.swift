import Foundation

/// Hub-managed models in the store: one row per model, written by compare-and-set.
extension SQLStore {
    public func models() async throws -> [StoredModel] {
        try await gate.run {
            try await self.driver.execute("SELECT name, document, revision FROM models ORDER BY name", []).map {
                StoredModel(name: $0.string("name") ?? "", document: $0.string("document") ?? "{}", revision: Int64($0.int("revision") ?? 0))
            }
        }
    }

    public func modelsGeneration() async throws -> Int64 {
        try await gate.run {
            Int64(try await self.driver.execute("SELECT value FROM meta WHERE name = 'models_generation'", []).first?.int("value") ?? 0)
        }
    }

    public func put(_ model: StoredModel, expected: Int64?) async throws -> Bool {
        try await gate.run {
            var written = false
            try await self.transaction {
                // The condition is in the statement itself, so two hubs racing on PostgreSQL
                // (read committed) cannot both win.
                let rows = if let expected {
                    try await self.driver.execute("UPDATE models SET document = ?, revision = ? WHERE name = ? AND revision = ? RETURNING name",
                                                  [.text(model.document), .integer(Int(expected + 1)), .text(model.name), .integer(Int(expected))])
                } else {
                    try await self.driver.execute("INSERT INTO models (name, document, revision) VALUES (?, ?, 1) ON CONFLICT (name) DO NOTHING RETURNING name",
                                                  [.text(model.name), .text(model.document)])
                }
                guard !rows.isEmpty else { return }
                _ = try await self.driver.execute("UPDATE meta SET value = value + 1 WHERE name = 'models_generation'", [])
                written = true
            }
            return written
        }
    }

    public func removeModel(named name: String) async throws -> Bool {
        try await gate.run {
            var removed = false
            try await self.transaction {
                removed = try await self.driver.execute("SELECT name FROM models WHERE name = ?", [.text(name)]).first != nil
                guard removed else { return }
                _ = try await self.driver.execute("DELETE FROM models WHERE name = ?", [.text(name)])
                _ = try await self.driver.execute("UPDATE meta SET value = value + 1 WHERE name = 'models_generation'", [])
            }
            return removed
        }
    }
}
