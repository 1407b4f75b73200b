import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TestSupport

/// Two hubs sharing one PostgreSQL store (a real server the test starts): keys, budgets and
/// the ledger across hubs, and the store's outage under load.
@Suite("Two hubs, one PostgreSQL store", .serialized)
struct SharedStoreTests {
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 16
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    static func call(_ url: String, token: String, body: String? = nil) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        if let body {
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await client.execute(request, timeout: .seconds(30))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 20)))
    }

    /// Sends chats through `hub` until one is refused; the statuses.
    static func spend(_ hub: String, token: String) async throws -> [Int] {
        var statuses: [Int] = []
        while statuses.count < 5_000 {
            let status = try await call(hub + "/v1/chat/completions", token: token, body: chatBody(maxTokens: 20)).status
            statuses.append(status)
            if status != 200 { break }
        }
        return statuses
    }

    /// Four clients spending one key's budget, two through each hub; every status.
    static func hammer(_ hubs: [String], token: String) async throws -> [Int] {
        try await withThrowingTaskGroup(of: [Int].self) { group in
            for hub in hubs + hubs { group.addTask { try await spend(hub, token: token) } }
            var all: [Int] = []
            for try await statuses in group { all += statuses }
            return all
        }
    }

    static func usage(_ hub: String, admin: String, key: String) async throws -> [String: Any]? {
        let answer = try await call(hub + "/admin/usage?group_by=key", token: admin)
        let lines = (try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])?["usage"] as? [[String: Any]]
        return lines?.first { $0["key"] as? String == key }
    }

    @Test("a key made on hub A serves on hub B and its revocation holds there; one budget holds across two hubs hammered at once (overshoot measured); PostgreSQL stopped and started under load: no request fails or hangs (a budgeted key is refused while it is away, with store_unavailable: refuse), and the ledger catches up with every one",
          .timeLimit(.minutes(4)))
    func twoHubsOneStore() async throws {
        let postgres = try PostgresServer.start()
        defer { postgres.stop() }
        let specs = [TestCluster.WorkerSpec(name: "a", fake: true, env: ["FAKE_TOKENS": "20", "FAKE_SLOTS": "32"])]
        try await TestCluster.start(specs: specs, hubs: 2,
                                   hubSettings: "store: \(postgres.url)\nstore_unavailable: refuse").using { cluster in
            let (a, b) = (cluster.hubURL, cluster.otherHubs[0].url)
            // Made on A; B reads it from the store.
            let made = try await Self.call(a + "/admin/keys", token: cluster.adminToken, body: #"{"name":"shared","budget":"20k/day"}"#)
            #expect(made.status == 201, "\(made.body)")
            let key = try #require((try JSONSerialization.jsonObject(with: Data(made.body.utf8)) as? [String: Any])?["key"] as? String)
            let madeAt = ContinuousClock.now
            try await cluster.waitUntil("hub B accepts the key made on hub A", timeout: .seconds(5)) {
                try await Self.call(b + "/v1/chat/completions", token: key, body: chatBody(maxTokens: 20)).status == 200
            }
            print("caravan-shared-store: hub B served the key \(ContinuousClock.now - madeAt) after hub A made it")

            // One rate limit, both hubs: each holds half of it (60 a minute, a burst of 60 in all).
            let pacedAnswer = try await Self.call(a + "/admin/keys", token: cluster.adminToken, body: #"{"name":"paced","rpm":60}"#)
            let paced = try #require((try JSONSerialization.jsonObject(with: Data(pacedAnswer.body.utf8)) as? [String: Any])?["key"] as? String)
            try await cluster.waitUntil("hub B accepts the rate-limited key", timeout: .seconds(5)) {
                try await Self.call(b + "/v1/models", token: paced).status == 200
            }
            var servedAtRate = 1
            var refused: Set<String> = []
            while refused.count < 2, servedAtRate < 200 {
                for hub in [a, b] where !refused.contains(hub) {
                    let status = try await Self.call(hub + "/v1/chat/completions", token: paced, body: chatBody(maxTokens: 1)).status
                    if status == 200 { servedAtRate += 1 } else { refused.insert(hub) }
                }
            }
            print("caravan-shared-store: rpm 60 through two hubs: \(servedAtRate) requests served before both refused")
            #expect(servedAtRate >= 55 && servedAtRate <= 66, "\(servedAtRate) requests served under rpm 60 through two hubs")

            // One budget, both hubs at once.
            let statuses = try await Self.hammer([a, b], token: key)
            #expect(statuses.filter { $0 != 200 }.allSatisfy { $0 == 429 }, "\(Set(statuses))")
            try await Task.sleep(for: .seconds(1))  // every hub's last rows written
            let spent = try #require(try await Self.usage(a, admin: cluster.adminToken, key: "key:shared"))
            let tokens = (spent["prompt_tokens"] as? Int ?? 0) + (spent["completion_tokens"] as? Int ?? 0)
            let served = statuses.filter { $0 == 200 }.count
            print("caravan-shared-store: budget 20000 tokens, two hubs × two clients: \(served + 1) requests served, "
                  + "\(tokens) tokens counted, overshoot \(tokens - 20_000) (\(String(format: "%.1f", Double(tokens - 20_000) / 200)) %)")
            // Each hub alone would have let the whole budget through: together they hold it.
            #expect(tokens >= 20_000 - 60 && tokens < 30_000, "\(tokens) tokens for a 20k budget")

            // The store goes away under load and comes back: nothing fails, no row is lost.
            let revoke = try await Self.call(a + "/admin/keys/shared/revoke", token: cluster.adminToken, body: "")
            #expect(revoke.status == 200)
            try await cluster.waitUntil("hub B refuses the key revoked on hub A", timeout: .seconds(5)) {
                try await Self.call(b + "/v1/chat/completions", token: key, body: chatBody(maxTokens: 1)).status == 401
            }
            // With store_unavailable: refuse, a budgeted key is refused while the store is away.
            let fencedAnswer = try await Self.call(a + "/admin/keys", token: cluster.adminToken, body: #"{"name":"fenced","budget":"1M/day"}"#)
            let fenced = try #require((try JSONSerialization.jsonObject(with: Data(fencedAnswer.body.utf8)) as? [String: Any])?["key"] as? String)
            try await cluster.waitUntil("hub A serves the budgeted key", timeout: .seconds(5)) {
                try await Self.call(a + "/v1/chat/completions", token: fenced, body: chatBody(maxTokens: 1)).status == 200
            }
            let before = try await Self.usage(a, admin: cluster.adminToken, key: "tests")?["requests"] as? Int ?? 0
            var sent = 0, failed = 0
            try postgres.stopServer()
            try await cluster.waitUntil("the budgeted key is refused while the store is away", timeout: .seconds(10)) {
                let answer = try await Self.call(a + "/v1/chat/completions", token: fenced, body: chatBody(maxTokens: 1))
                return answer.status == 503 && answer.body.contains("store_unavailable")
            }
            for round in 0..<60 {
                for hub in [a, b] {
                    let status = try await Self.call(hub + "/v1/chat/completions", token: cluster.clientToken, body: chatBody(maxTokens: 1)).status
                    sent += 1
                    if status != 200 { failed += 1 }
                }
                if round == 30 { try postgres.startServer() }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(failed == 0, "\(failed) of \(sent) requests failed while the store was away")
            try await cluster.waitUntil("the budgeted key is served again", timeout: .seconds(10)) {
                try await Self.call(a + "/v1/chat/completions", token: fenced, body: chatBody(maxTokens: 1)).status == 200
            }
            try await cluster.waitUntil("the ledger catches up after the store's return", timeout: .seconds(20)) {
                let now = try await Self.usage(a, admin: cluster.adminToken, key: "tests")?["requests"] as? Int
                return now == before + sent
            }
        }
    }
}
