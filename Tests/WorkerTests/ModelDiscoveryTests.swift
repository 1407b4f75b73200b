import Foundation
import Logging
import Testing

@testable import Worker
@testable import Config

@Suite("Model discovery")
struct ModelDiscoveryTests {
    /// A folder tree with nested, split and projector files, removed afterwards.
    func withTree(_ files: [String: Int], _ body: (String) throws -> Void) throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-disc-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        for (path, size) in files {
            let full = (root as NSString).appendingPathComponent(path)
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: full, contents: Data(repeating: 7, count: size))
        }
        try body(root)
    }

    @Test("nested files are found; split models count once; mmproj and other files are not models")
    func tree() throws {
        try withTree([
            "llama-3b.gguf": 10,
            "family/qwen/qwen-7b-q4.GGUF": 10,
            "family/qwen/mmproj-qwen-7b-f16.gguf": 10,
            "vision/llava-mmproj.gguf": 10,
            "big/deepseek-00001-of-00003.gguf": 100,
            "big/deepseek-00002-of-00003.gguf": 200,
            "big/deepseek-00003-of-00003.gguf": 300,
            "notes/readme.txt": 10,
            "deep/a/b/c/tiny.gguf": 10,
        ]) { root in
            let result = ModelDiscovery.discover(in: [root])
            #expect(result.models.map(\.name).sorted() == ["deepseek", "llama-3b", "qwen-7b-q4", "tiny"])
            let deepseek = try #require(result.models.first { $0.name == "deepseek" })
            #expect(deepseek.path.hasSuffix("big/deepseek-00001-of-00003.gguf"))
            #expect(ModelDiscovery.modelBytes(path: deepseek.path) == 600)
            #expect(result.skipped.isEmpty)
            // The projector beside a model is attached to it; models without one get none.
            let qwen = try #require(result.models.first { $0.name == "qwen-7b-q4" })
            #expect(qwen.args == ["--mmproj", root + "/family/qwen/mmproj-qwen-7b-f16.gguf"])
            #expect(result.models.filter { $0.name != "qwen-7b-q4" }.allSatisfy { $0.args.isEmpty })
        }
    }

    @Test("several projectors in a folder: each model takes the one named after it, else none (reported)")
    func projectors() throws {
        try withTree([
            "v/alpha.gguf": 10, "v/beta.gguf": 10,
            "v/mmproj-alpha-f16.gguf": 10, "v/mmproj-other-f16.gguf": 10,
        ]) { root in
            let result = ModelDiscovery.discover(in: [root])
            #expect(result.models.first { $0.name == "alpha" }?.args == ["--mmproj", root + "/v/mmproj-alpha-f16.gguf"])
            #expect(result.models.first { $0.name == "beta" }?.args == [])
            #expect(result.skipped.count == 1 && result.skipped[0].contains("beta.gguf: several projectors"), "\(result.skipped)")
        }
    }

    @Test("the same name twice: the first path wins and the other is reported")
    func duplicates() throws {
        try withTree(["a/m.gguf": 1, "b/m.gguf": 1]) { root in
            let result = ModelDiscovery.discover(in: [root])
            #expect(result.models.map(\.path) == [(root as NSString).appendingPathComponent("a/m.gguf")])
            #expect(result.skipped.count == 1 && result.skipped[0].contains("b/m.gguf"))
        }
    }

    @Test("a missing folder is reported, not fatal")
    func missing() {
        let result = ModelDiscovery.discover(in: ["/nonexistent/caravan"])
        #expect(result.models.isEmpty && result.skipped.count == 1)
    }

    @Test("split-part names", arguments: [
        ("m-00001-of-00002", "m", 1), ("my-model-q4-00002-of-00002", "my-model-q4", 2),
    ])
    func splitNames(stem: String, base: String, part: Int) {
        let split = ModelDiscovery.splitPart(stem)
        #expect(split?.base == base && split?.part == part)
    }

    @Test("not split parts", arguments: ["m-1-of-2", "m-00003-of-00002", "model-of-00002", "plain"])
    func notSplit(stem: String) {
        #expect(ModelDiscovery.splitPart(stem) == nil)
    }

    @Test("declared entries override discovered ones by name, alias or file; VRAM = declared or size + 20 %")
    func overrides() throws {
        try withTree(["x.gguf": 1_048_576, "y.gguf": 10 * 1_048_576, "z.gguf": 1, "w.gguf": 1]) { root in
            let yaml = """
                workers:
                  - name: w1
                    hubs: ["http://127.0.0.1:1"]
                    models_dir: \(root)
                    models:
                      - {name: x, path: /elsewhere/x.gguf, vram_mb: 5000, pin: true}
                      - {name: renamed, path: \(root)/y.gguf}
                      - {name: other, path: /o.gguf, aliases: [z]}
                """
            let path = (root as NSString).appendingPathComponent("c.yaml")
            try yaml.write(toFile: path, atomically: true, encoding: .utf8)
            let worker = try ClusterConfig.load(path: path).worker(named: "w1")
            let specs = ModelCatalog.resolve(worker).specs
            #expect(specs.map(\.name) == ["x", "renamed", "other", "w"])
            #expect(specs[0].vramMiB == 5000 && specs[0].config.pin)
            #expect(specs[1].vramMiB == 12)  // 10 MiB + 20 %
        }
    }

    @Test("a multimodal projector counts towards the VRAM estimate, declared or discovered")
    func projectorEstimate() throws {
        try withTree(["m.gguf": 10 * 1_048_576, "plain.gguf": 10 * 1_048_576, "vision/v.gguf": 10 * 1_048_576,
                      "vision/mmproj-v.gguf": 5 * 1_048_576]) { root in
            let yaml = """
                workers:
                  - name: w1
                    hubs: ["http://127.0.0.1:1"]
                    models_dir: \(root)/vision
                    models:
                      - {name: m, path: \(root)/m.gguf, args: [--mmproj, \(root)/vision/mmproj-v.gguf]}
                      - {name: eq, path: \(root)/m.gguf, args: ["--mmproj=\(root)/vision/mmproj-v.gguf"]}
                      - {name: plain, path: \(root)/plain.gguf}
                """
            let path = (root as NSString).appendingPathComponent("c.yaml")
            try yaml.write(toFile: path, atomically: true, encoding: .utf8)
            let specs = ModelCatalog.resolve(try ClusterConfig.load(path: path).worker(named: "w1")).specs
            #expect(specs.map(\.name) == ["m", "eq", "plain", "v"])
            #expect(specs.map(\.vramMiB) == [18, 18, 12, 18])  // (10 + 5) MiB + 20 %; 10 MiB + 20 %
        }
    }
}

@Suite("Engine log and PID record")
struct EngineLogTests {
    @Test("the ring keeps the newest lines in order")
    func ring() {
        let log = EngineLog(capacity: 3)
        for index in 1...5 { log.append("line \(index)") }
        #expect(log.last(10) == ["line 3", "line 4", "line 5"])
        #expect(log.last(2) == ["line 4", "line 5"])
        #expect(log.summary(2) == "line 4 | line 5")
    }

    @Test("a follower gets the backlog, then new lines")
    func follow() async {
        let log = EngineLog(capacity: 10)
        log.append("old")
        let stream = log.follow(backlog: 5)
        log.append("new")
        var iterator = stream.makeAsyncIterator()
        #expect(await iterator.next() == "old")
        #expect(await iterator.next() == "new")
    }

    @Test("stale engines from a previous run are killed; a PID now used by another process is not")
    func staleEngines() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-rec-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let stale = try await ChildProcess.launch(executable: "sleep", arguments: ["60"]) { _ in }
        let bystander = try await ChildProcess.launch(executable: "sleep", arguments: ["60"]) { _ in }
        defer { bystander.signalGroup(SIGKILL) }
        let record = EngineRecord(directory: folder, worker: "t", cluster: "http://hub:8080")
        let staleStart = try #require(EngineRecord.startTime(of: stale.pid))
        let bystanderStart = try #require(EngineRecord.startTime(of: bystander.pid))
        record.save([.init(pid: stale.pid, startTime: staleStart, model: "m"),
                     .init(pid: bystander.pid, startTime: bystanderStart + 1, model: "reused pid")])
        let killed = record.killStale(logger: Logger(label: "test"))
        #expect(killed.map(\.pid) == [stale.pid])
        #expect(await stale.waitForExit(timeout: .seconds(5)))
        #expect(!bystander.hasExited)
        #expect(record.load().isEmpty)
    }

    @Test("the record refuses PIDs 0 and 1 (kill(-1) would signal every process) and is named per cluster")
    func recordRefusesLowPIDs() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-rec-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let record = EngineRecord(directory: folder, worker: "t", cluster: "http://hub-a:8080")
        let start1 = try #require(EngineRecord.startTime(of: 1))
        record.save([.init(pid: 1, startTime: start1, model: "init"), .init(pid: 0, startTime: 0, model: "zero")])
        #expect(record.killStale(logger: Logger(label: "test")).isEmpty)
        let other = EngineRecord(directory: folder, worker: "t", cluster: "http://hub-b:8080")
        #expect(record.path != other.path)
        #expect(record.path.hasSuffix("-t.engines.json"))
    }

    @Test("a record another user could have written is ignored, not acted on")
    func recordMustBePrivate() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-rec-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let victim = try await ChildProcess.launch(executable: "sleep", arguments: ["60"]) { _ in }
        defer { victim.signalGroup(SIGKILL) }
        let record = EngineRecord(directory: folder, worker: "t", cluster: "c")
        let start = try #require(EngineRecord.startTime(of: victim.pid))
        record.save([.init(pid: victim.pid, startTime: start, model: "planted")])
        #expect(record.load().count == 1)
        // World-writable file: anyone could have put that PID there.
        chmod(record.path, 0o666)
        #expect(record.killStale(logger: Logger(label: "test")).isEmpty)
        #expect(!victim.hasExited)
        // A private file in a world-writable folder (the shared temp dir case): ignored too.
        chmod(record.path, 0o600)
        chmod(folder, 0o777)
        #expect(record.load().isEmpty)
        #expect(record.killStale(logger: Logger(label: "test")).isEmpty)
        #expect(!victim.hasExited)
        // The default folder is private to this user, not the shared temp directory.
        #expect(!EngineRecord.defaultDirectory().hasPrefix(FileManager.default.temporaryDirectory.path))
    }
}
