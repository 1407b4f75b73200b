import Foundation
import Testing
import TestSupport

/// Prompt caches per conversation, with the real llama-server: checkpoints keep more
/// conversations than slots within the byte budget, the next start restores the most
/// recent ones; a drain, an unload and a load keep a conversation; the worker's shutdown
/// saves and `caravan-worker --wipe-caches` deletes.
@Suite("Prompt caches per conversation", .serialized)
struct PromptCacheConversationTests {
    /// Two slots of 1,024 tokens.
    static let model = TestCluster.tinyModel("conv", args: #"["-c", "2048", "--parallel", "2", "-t", "1"]"#)
    static let system = String(repeating: "Keep short notes. ", count: 6)

    /// Conversation `id` at turn `turns`: a long first message of its own after a shared system prompt.
    static func body(_ id: String, turns: Int) -> String {
        var messages = [#"{"role":"system","content":"\#(system)"}"#,
                        #"{"role":"user","content":"\#(String(repeating: "conversation \(id) opens with this. ", count: 7))"}"#]
        for turn in 1..<max(1, turns) {
            messages.append(#"{"role":"assistant","content":"noted \#(turn)"}"#)
            messages.append(#"{"role":"user","content":"note \#(turn)"}"#)
        }
        return #"{"model":"conv","max_tokens":2,"messages":[\#(messages.joined(separator: ","))]}"#
    }

    static func cached(_ cluster: TestCluster, _ id: String, turns: Int) async throws -> Int {
        let reply = try await cluster.request("POST", "/v1/chat/completions", body: body(id, turns: turns))
        #expect(reply.status == 200, "\(reply.body)")
        return ((reply.json?["timings"] as? [String: Any])?["cache_n"] as? Int) ?? -1
    }

    @Test("kv_cache_checkpoint saves each conversation apart; the budget deletes the oldest; the next start restores the two newest into the two slots")
    func moreConversationsThanSlots() async throws {
        let spec = TestCluster.WorkerSpec(name: "k", extra: "kv_cache_checkpoint: 1s\nkv_cache_max_mb: 1", models: Self.model)
        try await TestCluster.start(specs: [spec]).using { cluster in
            // Four conversations, one after another; each is saved by the checkpoint after it.
            for (index, id) in ["A", "B", "C", "D"].enumerated() {
                _ = try await Self.cached(cluster, id, turns: 1)
                try await cluster.waitForModel("k", timeout: .seconds(15)) { model in
                    (model["prompt_caches"] as? Int ?? 0) == min(index + 1, 3)
                        && (index < 3 || !cluster.workerLines("k", "pruned_files=1").isEmpty)
                }
            }
            let view = try #require(try await cluster.adminModel("k"))
            let bytes = view["prompt_cache_bytes"] as? Int ?? 0
            #expect(bytes > 0 && bytes <= 1_048_576, "the store keeps its 1 MiB budget: \(bytes)")
            print("caravan-measure: 4 conversations, 3 kept in 1 MiB: \(bytes) bytes")

            let unload = try await cluster.request("POST", "/admin/workers/k/models/conv/unload", token: .some(cluster.adminToken))
            #expect(unload.status == 200, "\(unload.body)")
            try await cluster.waitForModel("k") { $0["state"] as? String == "not-loaded" }
            // The next start restores D and C (newest) into the two slots; B stays on disk, A is gone.
            let d = try await Self.cached(cluster, "D", turns: 2)
            try await cluster.waitForModel("k") { $0["prompt_cache_restored"] as? Int == 2 }
            let c = try await Self.cached(cluster, "C", turns: 2)
            let a = try await Self.cached(cluster, "A", turns: 2)
            print("caravan-measure: after a restart, cache_n D \(d), C \(c) (restored), A \(a) (pruned)")
            #expect(d >= 300 && c >= 300, "the two newest conversations resume from their caches: D \(d), C \(c)")
            #expect(a < d - 150, "the pruned conversation shares only the system prompt: A \(a), D \(d)")
        }
    }

    @Test("drain, unload, load, undrain: the conversation resumes from its cache; the worker's shutdown saves it; --wipe-caches deletes it")
    func drainUnloadLoad() async throws {
        try await TestCluster.start(specs: [.init(name: "k", models: Self.model)]).using { cluster in
            _ = try await Self.cached(cluster, "A", turns: 1)
            let admin = String?.some(cluster.adminToken)
            for (path, what) in [("/admin/workers/k/drain", "drain"), ("/admin/workers/k/models/conv/unload", "unload")] {
                let answer = try await cluster.request("POST", path, token: admin)
                #expect(answer.status == 200, "\(what): \(answer.body)")
            }
            try await cluster.waitForModel("k") { $0["state"] as? String == "not-loaded" && $0["prompt_caches"] as? Int == 1 }
            #expect(try await cluster.request("POST", "/admin/workers/k/models/conv/load", token: admin).status == 200)
            try await cluster.waitForModel("k") { $0["state"] as? String == "ready" && $0["prompt_cache_restored"] as? Int == 1 }
            #expect(try await cluster.request("POST", "/admin/workers/k/undrain", token: admin).status == 200)
            let resumed = try await Self.cached(cluster, "A", turns: 2)
            #expect(resumed >= 300, "cache_n \(resumed)")

            // The worker's shutdown saves the new turn; the command deletes every file.
            let worker = try #require(cluster.workers["k"])
            await worker.stop()
            let root = cluster.directory.appendingPathComponent("kv-cache").path
            let files = { (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? []).filter { $0.hasSuffix(".bin") } }
            let saves = worker.output.filter { $0.contains("prompt caches saved") }.count
            #expect(saves == 2 && files().count == 1, "saved at the unload and at the shutdown, superseding: \(files()), \(worker.output.suffix(20).joined(separator: "\n"))")
            let wiped = try runCommand(TestCluster.binDirectory.appendingPathComponent("caravan-worker").path,
                                       ["--config", cluster.configPath, "--name", "k", "--wipe-caches"])
            #expect(files().isEmpty, "\(files()) after: \(wiped)")
        }
    }
}
