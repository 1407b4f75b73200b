import Foundation
import Testing
import Glibc
import TestSupport

/// Prompt caches across planned stops, with the real llama-server: saved at a ttl unload,
/// restored at the next start (the engine's own `cache_n` says so), never restored across a
/// changed command line, and a bad file or an unwritable folder never stops anything.
@Suite("Prompt caches", .serialized)
struct PromptCacheTests {
    /// One slot of 1,024 tokens: a conversation of ~450 tokens fits with room for its next turn.
    static let model = TestCluster.tinyModel("conv", args: #"["-c", "1024", "--parallel", "1", "-t", "1"]"#)
    static let system = String(repeating: "You keep notes for a long conversation. ", count: 10)

    /// A turn of the conversation: `turns` user messages after the system prompt.
    static func body(turns: Int) -> String {
        var messages = [#"{"role":"system","content":"\#(system)"}"#]
        for turn in 0..<turns {
            if turn > 0 { messages.append(#"{"role":"assistant","content":"noted \#(turn)"}"#) }
            messages.append(#"{"role":"user","content":"note \#(turn)"}"#)
        }
        return #"{"model":"conv","max_tokens":2,"messages":[\#(messages.joined(separator: ","))]}"#
    }

    /// The engine's own count of prompt tokens it reused (`timings.cache_n`).
    static func cached(_ reply: TestCluster.Reply) -> Int {
        ((reply.json?["timings"] as? [String: Any])?["cache_n"] as? Int) ?? -1
    }

    /// The model's cache folders (one per validity key) and their files.
    static func saved(_ cluster: TestCluster) -> [String: [String]] {
        let root = cluster.directory.appendingPathComponent("kv-cache/model-conv").path
        var folders: [String: [String]] = [:]
        for key in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] {
            folders[key] = (try? FileManager.default.contentsOfDirectory(atPath: root + "/" + key))?.filter { $0.hasSuffix(".bin") } ?? []
        }
        return folders
    }

    func unloaded(_ cluster: TestCluster) async throws {
        try await cluster.waitUntil("ttl unload", timeout: .seconds(20)) {
            try await cluster.state(of: "conv", on: "k") == "not-loaded" && cluster.engines(of: "k", model: "conv").isEmpty
        }
    }

    @Test("a conversation resumed after a ttl unload reuses its prompt from the saved cache; a truncated file is refused and deleted")
    func resumeAfterUnload() async throws {
        try await TestCluster.start(specs: [.init(name: "k", extra: "ttl: 1s", models: Self.model)]).using { cluster in
            let first = try await cluster.request("POST", "/v1/chat/completions", body: Self.body(turns: 1))
            #expect(first.status == 200, "\(first.body)")
            try await unloaded(cluster)
            #expect(!cluster.workerLines("k", "prompt caches saved", "model=conv").isEmpty)
            // The hub learns it from the next report (it keeps routing the conversation here).
            try await cluster.waitForModel("k") { $0["prompt_caches"] as? Int == 1 }
            let files = Self.saved(cluster)
            #expect(files.count == 1 && files.values.first?.count == 1, "\(files)")
            let folder = cluster.directory.appendingPathComponent("kv-cache/model-conv/\(files.keys.first ?? "")").path
            let mode = (try FileManager.default.attributesOfItem(atPath: folder)[.posixPermissions] as? Int) ?? 0
            #expect(mode == 0o700, "the caches are private to the worker's user")

            // The next turn: restored before the engine took it, so its prefix is not computed again.
            let second = try await cluster.request("POST", "/v1/chat/completions", body: Self.body(turns: 2))
            #expect(second.status == 200, "\(second.body)")
            #expect(Self.cached(second) >= 400, "cache_n \(Self.cached(second)): \(second.body.prefix(400))")
            print("caravan-measure: resumed after a ttl unload: cache_n \(Self.cached(second)) (restored)")
            #expect(!cluster.workerLines("k", "prompt caches restored", "model=conv").isEmpty)

            // Saved again at the next unload; then the file is truncated on disk.
            try await unloaded(cluster)
            let resaved = Self.saved(cluster).values.first ?? []
            #expect(resaved.count == 1, "the new save of the conversation supersedes the restored file: \(resaved)")
            let name = try #require(resaved.first)
            let handle = try #require(FileHandle(forWritingAtPath: folder + "/" + name))
            try handle.truncate(atOffset: 100)
            try handle.close()
            let third = try await cluster.request("POST", "/v1/chat/completions", body: Self.body(turns: 3))
            #expect(third.status == 200, "\(third.body)")
            #expect(!cluster.workerLines("k", "refused by the engine and deleted", "model=conv").isEmpty)
            #expect(Self.saved(cluster).values.first?.isEmpty == true, "the truncated file is gone")
        }
    }

    @Test("a changed command line (ctx) never restores the old caches, which are deleted; an unwritable folder fails the save, not the stop")
    func invalidatedAndUnwritable() async throws {
        try await TestCluster.start(specs: [.init(name: "k", extra: "ttl: 1s", models: Self.model)]).using { cluster in
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: Self.body(turns: 1)).status == 200)
            try await unloaded(cluster)
            let before = Self.saved(cluster)
            #expect(before.count == 1 && before.values.first?.count == 1, "\(before)")

            let yaml = try String(contentsOfFile: cluster.configPath, encoding: .utf8)
            try yaml.replacingOccurrences(of: #""-c", "1024""#, with: #""-c", "2048""#)
                .write(toFile: cluster.configPath, atomically: true, encoding: .utf8)
            kill(try #require(cluster.workers["k"]).pid, SIGHUP)
            _ = try await cluster.workers["k"]!.waitForLine(containing: "configuration reloaded", timeout: .seconds(5))
            let after = try await cluster.request("POST", "/v1/chat/completions", body: Self.body(turns: 2))
            #expect(after.status == 200, "\(after.body)")
            #expect(Self.cached(after) < 100, "cache_n \(Self.cached(after)): a cache of another context was restored")
            print("caravan-measure: resumed after a ctx change: cache_n \(Self.cached(after)) (not restored)")
            #expect(cluster.workerLines("k", "prompt caches restored").isEmpty)
            let keys = Self.saved(cluster)
            #expect(keys.count == 1 && keys.keys.first != before.keys.first, "the old key's folder is deleted: \(keys)")

            // Saved at the next unload, then wiped by an admin through the hub.
            try await unloaded(cluster)
            #expect(Self.saved(cluster).values.first?.count == 1)
            let wiped = try await cluster.request("POST", "/admin/workers/k/models/conv/wipe-caches", token: .some(cluster.adminToken))
            #expect(wiped.status == 200, "\(wiped.body)")
            let left = Self.saved(cluster)
            #expect(left.values.allSatisfy { $0.isEmpty }, "\(left)")
            try await cluster.waitForModel("k") { $0["prompt_caches"] as? Int == 0 }
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: Self.body(turns: 3)).status == 200)

            // The folder becomes unusable while the engine runs (a file where it was): the save
            // fails, the unload goes ahead, the next request is served.
            let folder = cluster.directory.appendingPathComponent("kv-cache/model-conv/\(keys.keys.first ?? "")").path
            try FileManager.default.removeItem(atPath: folder)
            FileManager.default.createFile(atPath: folder, contents: Data("not a folder".utf8))
            try await unloaded(cluster)
            #expect(!cluster.workerLines("k", "prompt cache of a slot not saved", "model=conv").isEmpty)
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: Self.body(turns: 4)).status == 200)
        }
    }
}
