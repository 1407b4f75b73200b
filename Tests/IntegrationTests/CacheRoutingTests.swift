import Foundation
import Testing
import TestSupport

/// Cache-aware routing against the real llama-server: the engines' own `timings.cache_n`
/// says whether a conversation's next turn found its prefix (the policy's units are in
/// `HubTests/CacheAwareTests`).
@Suite("Cache-aware routing", .serialized)
struct CacheRoutingTests {
    /// Workers whose engine has room for a long conversation (2 slots of 2,048 tokens).
    static func specs(_ names: [String]) -> [TestCluster.WorkerSpec] {
        names.map { name in
            TestCluster.WorkerSpec(name: name, models: """
                - name: tiny
                  path: $MODEL
                  args: ["-c", "4096", "--parallel", "2", "-t", "1"]
                """)
        }
    }

    /// One conversation: a system prompt of its own, then the turns so far.
    struct Conversation {
        let id: Int
        var messages: [[String: String]]

        init(_ id: Int) {
            self.id = id
            messages = [["role": "system", "content": "You are assistant \(id). " + String(repeating: "Keep answers short \(id). ", count: 40)]]
        }

        /// The next turn's body (a question appended to everything so far).
        mutating func next() -> String {
            messages.append(["role": "user", "content": "Question \(messages.count) for \(id)?"])
            let body: [String: Any] = ["model": "tiny", "messages": messages, "max_tokens": 4]
            return String(decoding: try! JSONSerialization.data(withJSONObject: body, options: [.sortedKeys]), as: UTF8.self)
        }

        mutating func answered(_ reply: TestCluster.Reply) {
            let message = ((reply.json?["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String
            messages.append(["role": "assistant", "content": message ?? ""])
        }
    }

    /// Requests the hub dispatched to each worker, from the admin view.
    static func dispatched(_ cluster: TestCluster) async throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for worker in try await cluster.admin() {
            let models = worker["models"] as? [[String: Any]] ?? []
            counts[worker["name"] as? String ?? "?"] = models.map { $0["dispatched"] as? Int ?? 0 }.reduce(0, +)
        }
        return counts
    }

    /// Sends one turn; returns who served it (of the workers it was sent to, the one not in
    /// `dead`) and the engine's `cache_n`.
    static func turn(_ cluster: TestCluster, _ conversation: inout Conversation, dead: Set<String> = [])
        async throws -> (worker: String, cached: Int)
    {
        let before = try await dispatched(cluster)
        let reply = try await cluster.request("POST", "/v1/chat/completions", body: conversation.next())
        guard reply.status == 200 else { throw TestFailure("turn failed: \(reply.status) \(reply.body)") }
        conversation.answered(reply)
        let after = try await dispatched(cluster)
        let worker = after.first { $0.value > (before[$0.key] ?? 0) && !dead.contains($0.key) }?.key ?? "?"
        let cached = (reply.json?["timings"] as? [String: Any])?["cache_n"] as? Int ?? -1
        return (worker, cached)
    }

    @Test("two workers, four conversations x 4 turns: every turn after the first stays on the conversation's worker and its engine reuses the prompt (cache_n > 0); the cached tokens show in /metrics")
    func conversationsStick() async throws {
        try await TestCluster.start(specs: Self.specs(["a", "b"])).using { cluster in
            try await cluster.waitForLiveWorkers(2)
            var conversations = (0..<4).map { Conversation($0) }
            var homes: [Int: String] = [:]
            for turn in 1...4 {
                for index in conversations.indices {
                    let (worker, cached) = try await Self.turn(cluster, &conversations[index])
                    if turn == 1 {
                        homes[index] = worker
                    } else {
                        #expect(worker == homes[index], "conversation \(index), turn \(turn)")
                        #expect(cached > 300, "conversation \(index), turn \(turn): cache_n \(cached)")
                    }
                }
            }
            let metrics = try await cluster.request("GET", "/metrics", token: .some(cluster.adminToken)).body
            let cached = metrics.split(separator: "\n").filter { $0.hasPrefix("caravan_hub_prompt_tokens_cached_total") }
                .compactMap { Double($0.split(separator: " ").last ?? "") }.reduce(0, +)
            #expect(cached > 12 * 300, "\(cached)")
            #expect(metrics.contains(#"caravan_hub_routing_decisions_total{model="tiny",reason="prefix"} 12"#))
            // The admin view (and the dashboard's "Cache reuse" column) shows the engines' reuse.
            let reuse = try await cluster.admin().compactMap { ($0["models"] as? [[String: Any]])?.first?["cache_reuse"] as? Double }
            #expect(!reuse.isEmpty && reuse.allSatisfy { $0 > 0.4 }, "\(reuse)")
        }
    }

    @Test("a conversation's worker killed: the next turn is served elsewhere and the turn after sticks there; a drained worker's conversation moves the same way")
    func moves() async throws {
        try await TestCluster.start(specs: Self.specs(["a", "b", "c"])).using { cluster in
            try await cluster.waitForLiveWorkers(3)
            var conversation = Conversation(7)
            let home = try await Self.turn(cluster, &conversation).worker
            #expect(try await Self.turn(cluster, &conversation).worker == home)
            cluster.workers[home]!.kill9()
            // Sent at once: the hub may still try the dead worker (refused) and retries elsewhere.
            let moved = try await Self.turn(cluster, &conversation, dead: [home])
            #expect(moved.worker != home && moved.worker != "?")
            try await cluster.waitForLiveWorkers(2)
            let after = try await Self.turn(cluster, &conversation)
            #expect(after.worker == moved.worker && after.cached > 300, "\(after)")

            // Drain the worker it is on now: the conversation moves to the last one, and sticks.
            let drained = try await cluster.request("POST", "/admin/workers/\(moved.worker)/drain", token: .some(cluster.adminToken))
            #expect(drained.status == 200, "\(drained.body)")
            let third = try await Self.turn(cluster, &conversation)
            #expect(third.worker != moved.worker && third.worker != home)
            let last = try await Self.turn(cluster, &conversation)
            #expect(last.worker == third.worker && last.cached > 300, "\(last)")
        }
    }

    @Test("bodies the fingerprint does not expect (no messages, wrong types, 2,000 messages, 300 KB of content) are routed by load and answered as before")
    func oddBodies() async throws {
        try await TestCluster.start(specs: Self.specs(["a", "b"])).using { cluster in
            try await cluster.waitForLiveWorkers(2)
            let many = (0..<2_000).map { _ in #"{"role":"user","content":"x"}"# }.joined(separator: ",")
            let huge = String(repeating: "y", count: 300 * 1024)  // over the 256 KiB the fingerprint reads
            let bodies = [
                #"{"model":"tiny","prompt":"\#(String(repeating: "p", count: 600))","max_tokens":2}"#,
                #"{"model":"tiny","messages":[{"role":"user","content":[{"type":"text","text":"\#(String(repeating: "t", count: 600))"}]}],"max_tokens":2}"#,
                #"{"model":"tiny","messages":[\#(many)],"max_tokens":2}"#,  // longer than the context
                #"{"model":"tiny","messages":[{"role":"user","content":"\#(huge)"}],"max_tokens":2}"#,
                #"{"model":"tiny","messages":{"role":"user"},"max_tokens":2}"#,
                #"{"model":"tiny","max_tokens":2}"#,
            ]
            for body in bodies {
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: body)
                #expect(reply.status < 500, "\(reply.status) \(reply.body.prefix(200))")
                #expect(reply.status == 200 || reply.errorType != nil, "\(reply.status) \(reply.body.prefix(200))")
            }
            // Nothing of it opened a breaker; a normal request is served.
            for worker in try await cluster.admin() {
                #expect((worker["models"] as? [[String: Any]])?.first?["breaker"] as? String == "closed")
            }
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody()).status == 200)
        }
    }
}
