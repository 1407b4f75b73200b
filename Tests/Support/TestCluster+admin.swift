import Foundation

/// The admin view of a test cluster (`GET /admin/workers`) and a fake engine's controls.
extension TestCluster {
    /// Changes a fake engine's behaviour while it runs (its `FAKE_CONTROL` file).
    package func control(_ worker: String, _ json: String) throws {
        try json.write(to: directory.appendingPathComponent("\(worker).json"), atomically: true, encoding: .utf8)
    }

    /// `GET /admin/workers`, as JSON.
    package func admin() async throws -> [[String: Any]] {
        let reply = try await request("GET", "/admin/workers", token: .some(adminToken))
        guard reply.status == 200 else { throw TestFailure("admin: \(reply.status) \(reply.body)") }
        return reply.json?["workers"] as? [[String: Any]] ?? []
    }

    /// Requests waiting in the hub's queue for `model`.
    package func queued(_ model: String = "tiny") async throws -> Int {
        let reply = try await request("GET", "/admin/workers", token: .some(adminToken))
        return (reply.json?["queued"] as? [String: Int])?[model] ?? 0
    }

    /// Requests the hub has in flight, over all workers.
    package func hubInFlight() async throws -> Int {
        try await admin().flatMap { ($0["models"] as? [[String: Any]]) ?? [] }.map { $0["hub_in_flight"] as? Int ?? 0 }
            .reduce(0, +)
    }

    /// The `tiny` model entry of `worker` in the admin view.
    package func adminModel(_ worker: String) async throws -> [String: Any]? {
        try await admin().first { $0["name"] as? String == worker }.flatMap { ($0["models"] as? [[String: Any]])?.first }
    }

    /// Polls the admin view until `condition` holds for the worker's model entry.
    package func waitForModel(_ worker: String, timeout: Duration = .seconds(10),
                      _ condition: ([String: Any]) -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let model = try await adminModel(worker), condition(model) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestFailure("worker \(worker) never reached the expected state: \(String(describing: try await adminModel(worker)))")
    }
}
