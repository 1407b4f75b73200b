import Foundation
import Testing
import Config

@testable import Worker

/// The prompt-cache folder's rules, on real files: validity keys, privacy, order, budget, wipe.
@Suite("Prompt cache store")
struct PromptCacheStoreTests {
    /// A worker with two models on real (tiny) files, caches under its state folder.
    static func store(args: String = #"["-c", "1024"]"#, budgetMiB: Int = 1) throws -> (PromptCacheStore, [ModelSpec], URL) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-kv-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for name in ["a", "b"] {
            try Data(repeating: name.utf8.first!, count: 1000).write(to: directory.appendingPathComponent("\(name).gguf"))
        }
        let file = try WorkerFixture.clusterFile(
            credential: String(repeating: "w", count: 40),
            models: "- {name: a, path: \(directory.path)/a.gguf, args: \(args)}\n- {name: b, path: \(directory.path)/b.gguf}",
            extra: "kv_cache_dir: \(directory.path)/kv-cache\nkv_cache_max_mb: \(budgetMiB)")
        let worker = try ClusterConfig.loadWorker(path: file.path, name: "a", environment: [:]).worker
        return (PromptCacheStore(config: worker), ModelCatalog.resolve(worker).specs, directory)
    }

    static func write(_ bytes: Int, _ name: String, in folder: String, age seconds: Double) throws {
        let path = (folder as NSString).appendingPathComponent(name)
        try Data(count: bytes).write(to: URL(fileURLWithPath: path))
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-seconds)], ofItemAtPath: path)
    }

    @Test("a changed command line or model file is another key; preparing a key deletes the model's other keys, not other models'")
    func validityKeys() throws {
        let (store, specs, directory) = try Self.store()
        defer { try? FileManager.default.removeItem(at: directory) }
        let old = store.folder(for: specs[0], llamaServer: "/bin/true")
        #expect(old.hasPrefix(directory.path + "/kv-cache/model-a/"))
        #expect(store.folder(for: specs[0], llamaServer: "/bin/true") == old, "stable")
        let (_, otherArgs, otherDirectory) = try Self.store(args: #"["-c", "2048"]"#)
        defer { try? FileManager.default.removeItem(at: otherDirectory) }
        #expect((store.folder(for: otherArgs[0], llamaServer: "/bin/true") as NSString).lastPathComponent
            != (old as NSString).lastPathComponent, "another ctx, another key")
        try store.prepare(old)
        let other = store.folder(for: specs[1], llamaServer: "/bin/true")
        try store.prepare(other)
        try Self.write(10, "1-slot0.bin", in: old, age: 0)
        // The model file changes: a new key; preparing it deletes the old one.
        try Data(repeating: 1, count: 2000).write(to: directory.appendingPathComponent("a.gguf"))
        let new = store.folder(for: specs[0], llamaServer: "/bin/true")
        #expect(new != old)
        try store.prepare(new)
        #expect(!FileManager.default.fileExists(atPath: old) && FileManager.default.fileExists(atPath: other))
        for folder in [new, directory.path + "/kv-cache", directory.path + "/kv-cache/model-a"] {
            #expect((try FileManager.default.attributesOfItem(atPath: folder)[.posixPermissions] as? Int) == 0o700, "\(folder)")
        }
    }

    @Test("saved files list newest first; the budget deletes the oldest across models; a wipe empties one model or all")
    func budgetAndWipe() throws {
        let (store, specs, directory) = try Self.store(budgetMiB: 1)
        defer { try? FileManager.default.removeItem(at: directory) }
        let a = store.folder(for: specs[0], llamaServer: "/bin/true"), b = store.folder(for: specs[1], llamaServer: "/bin/true")
        try store.prepare(a)
        try store.prepare(b)
        try Self.write(400_000, "old.bin", in: a, age: 300)
        try Self.write(400_000, "mid.bin", in: b, age: 200)
        try Self.write(400_000, "new.bin", in: a, age: 100)
        #expect(store.saved(in: a).map(\.name) == ["new.bin", "old.bin"])
        #expect(store.prune() == 1, "1.2 MB over a 1 MiB budget: the oldest goes")
        #expect(store.saved(in: a).map(\.name) == ["new.bin"] && store.saved(in: b).map(\.name) == ["mid.bin"])
        #expect(PromptCacheStore.fileName(slot: 1, at: Date(timeIntervalSince1970: 2)) > PromptCacheStore.fileName(slot: 0, at: Date(timeIntervalSince1970: 1)))
        store.wipe(model: "a")
        #expect(store.saved(in: a).isEmpty && store.saved(in: b).count == 1)
        store.wipe()
        #expect(store.saved(in: b).isEmpty)
    }

    /// A saved cache as llama-server writes it: `ggsq`, version, the token block (its own
    /// layout `-1, 1, n, tokens…, 0` when `server`), then state bytes.
    static func cacheFile(tokens: [Int32], server: Bool) -> Data {
        let block = server ? [-1, 1, Int32(tokens.count)] + tokens + [0] : tokens
        var words: [UInt32] = [0x6767_7371, 4, UInt32(block.count)] + block.map { UInt32(bitPattern: $0) }
        words += [7, 7, 7]
        return words.withUnsafeBytes { Data($0) }
    }

    @Test("a file's tokens are read from its header; a new save of the same conversation supersedes the older ones, not other conversations sharing a system prompt")
    func conversations() throws {
        let (store, specs, directory) = try Self.store()
        defer { try? FileManager.default.removeItem(at: directory) }
        let folder = store.folder(for: specs[0], llamaServer: "/bin/true")
        try store.prepare(folder)
        let system = Array(Int32(1)...300)
        let first = system + Array(1000...1050)  // conversation A, turn 1 (and its reply)
        let other = system + Array(2000...2050)  // conversation B: the same system prompt
        let second = system + Array(1000...1046) + Array(3000...3100)  // A, turn 2: the reply sent back differs at its end
        for (name, tokens, age) in [("1-a.bin", first, 30.0), ("2-b.bin", other, 20)] {
            try Self.cacheFile(tokens: tokens, server: true).write(to: URL(fileURLWithPath: folder + "/" + name))
            try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-age)], ofItemAtPath: folder + "/" + name)
        }
        try Self.cacheFile(tokens: second, server: false).write(to: URL(fileURLWithPath: folder + "/3-a.bin"))
        #expect(PromptCacheStore.tokens(ofFile: folder + "/1-a.bin") == first)
        #expect(PromptCacheStore.tokens(ofFile: folder + "/3-a.bin") == second, "a plain token block reads as is")
        try Data("not a cache".utf8).write(to: URL(fileURLWithPath: folder + "/4-x.bin"))
        #expect(PromptCacheStore.tokens(ofFile: folder + "/4-x.bin") == nil)
        #expect(store.supersede(by: "3-a.bin", in: folder) == 1)
        #expect(store.saved(in: folder).map(\.name).sorted() == ["2-b.bin", "3-a.bin", "4-x.bin"])
    }
}
