import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TestSupport

/// Hub-managed models against real processes: a hub, workers with the real llama-server, and
/// `scripts/lib/hf-mirror.py` serving generated GGUFs in Hugging Face's layout.
@Suite(.serialized) struct ModelsTests {
    /// A cluster whose workers take their models from the hub: each has its own download
    /// cache and a declared 4 GiB GPU (a VRAM budget placement can judge).
    static func cluster(_ names: [String], mirror: HFMirror, hubs: Int = 1, cacheMiB: Int? = nil) async throws -> TestCluster {
        let specs = names.map { name in
            TestCluster.WorkerSpec(name: name, extra: """
                model_cache_dir: $DIR/cache-\(name)
                gpus: [{name: test, vram_mb: 4096}]
                """ + (cacheMiB.map { "\nmodel_cache_max_mb: \($0)" } ?? ""), models: "")
        }
        return try await TestCluster.start(specs: specs, hubs: hubs, hubSettings: """
            model_sources: {hf_endpoint: "\(mirror.url)", allow_local: true, replace_after: 3s}
            queue: {timeout: 3s}
            """)
    }

    /// A generated model: 256 dims x 4 layers is about 5.5 MB, big enough to watch a throttled
    /// download; 192 x 2 is 1.6 MB and 160 x 2 is 1.2 MB.
    static func generatedModel(dim: Int = 256, layers: Int = 4, seed: Int = 7) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-gen-\(UUID().uuidString.prefix(6)).gguf").path
        _ = try runProcess(["python3", repositoryRoot.appendingPathComponent("scripts/make-tiny-model.py").path, path,
                            "--dim", String(dim), "--layers", String(layers), "--seed", String(seed)], input: "")
        return path
    }

    static func sha256(_ path: String) throws -> String {
        try runProcess(["sha256sum", path], input: "").split(separator: " ").first.map(String.init) ?? ""
    }

    /// The hub's view of one managed model.
    static func view(_ cluster: TestCluster, _ name: String, hub: String? = nil) async throws -> [String: Any]? {
        let reply = try await cluster.request("GET", "/admin/models", token: .some(cluster.adminToken))
        return (reply.json?["models"] as? [[String: Any]])?.first { $0["name"] as? String == name }
    }

    static func replicas(_ view: [String: Any]?) -> [[String: Any]] { view?["placement"] as? [[String: Any]] ?? [] }

    @Test func replicasLandOnTwoOfThreeWorkersServeAndLeaveOnRemoval() async throws {
        let first = try Self.generatedModel(dim: 192, layers: 2)
        let second = try Self.generatedModel(dim: 160, layers: 2)
        defer { for path in [first, second] { try? FileManager.default.removeItem(atPath: path) } }
        let mirror = try await HFMirror.start(files: ["caravan/small-GGUF/small-q8.gguf": first, "caravan/other-GGUF/other.gguf": second])
        defer { Task { await mirror.stop() } }
        // A 2 MiB cache: room for one of the two models, so the second needs the first's space.
        try await Self.cluster(["a", "b", "c"], mirror: mirror, cacheMiB: 2).using { cluster in
            // The README's one command.
            let out = try cluster.hubCommand(["models", "add", "small", "--config", cluster.configPath,
                                              "--source", "hf://caravan/small-GGUF/small-q8.gguf", "--replicas", "2",
                                              "--ctx", "256", "--parallel", "2", "--args", "-t 1"])
            let placedOn = out.split(separator: "\n").compactMap { $0.split(separator: "\t").first.map(String.init) }
            #expect(placedOn.count == 2, "models add printed: \(out)")
            #expect(Set(placedOn).isSubset(of: ["a", "b", "c"]))
            try await cluster.waitUntil("two replicas ready", timeout: .seconds(30)) {
                let states = Self.replicas(try await Self.view(cluster, "small")).compactMap { $0["state"] as? String }
                return states.count == 2 && states.allSatisfy { $0 == "not-loaded" || $0 == "ready" }
            }
            let view = try await Self.view(cluster, "small")
            let estimate = try #require(view?["estimate"] as? [String: Any])
            #expect((estimate["kv_tokens"] as? Int) == 512, "ctx 256 x parallel 2: \(estimate)")
            #expect((estimate["total_mib"] as? Int ?? 0) >= 64)
            #expect(Self.replicas(view).allSatisfy { !($0["reason"] as? String ?? "").isEmpty })
            // Served, by the two placed workers only.
            for _ in 0..<6 {
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "small"))
                #expect(reply.status == 200, "\(reply.body)")
            }
            var dispatched: [String: Int] = [:]
            for worker in try await cluster.admin() {
                for model in worker["models"] as? [[String: Any]] ?? [] where model["name"] as? String == "small" {
                    dispatched[worker["name"] as? String ?? "?"] = model["dispatched"] as? Int ?? 0
                }
            }
            #expect(Set(dispatched.keys) == Set(placedOn) && dispatched.values.reduce(0, +) == 6, "dispatched: \(dispatched)")
            // The verified file is in each placed worker's cache under its sha256, nowhere else.
            let blob = "blobs/sha256-\(try Self.sha256(first))"
            for name in ["a", "b", "c"] {
                let path = cluster.directory.appendingPathComponent("cache-\(name)/\(blob)").path
                #expect(FileManager.default.fileExists(atPath: path) == placedOn.contains(name), "\(name): \(path)")
            }
            let models = try await cluster.request("GET", "/v1/models")
            #expect(models.body.contains("\"small\""))

            // A worker leaves for good: after replace_after (3 s here) its replica moves to the third worker, which serves it.
            let third = try #require(Set(["a", "b", "c"]).subtracting(placedOn).first)
            await cluster.workers[placedOn[1]]!.stop()
            try await cluster.waitUntil("the replica re-placed on \(third)", timeout: .seconds(30)) {
                let replicas = Self.replicas(try await Self.view(cluster, "small"))
                return Set(replicas.compactMap { $0["worker"] as? String }) == [placedOn[0], third]
                    && replicas.allSatisfy { ["not-loaded", "ready"].contains($0["state"] as? String ?? "") }
            }

            // Removed: traffic stops.
            _ = try cluster.hubCommand(["models", "rm", "small", "--config", cluster.configPath])
            try await cluster.waitUntil("the model gone from every worker", timeout: .seconds(20)) {
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "small"))
                return reply.status == 404 && reply.errorCode == "model_not_found"
            }
            // Its file stays as a cache while the budget allows; a model that needs the room frees it.
            #expect(FileManager.default.fileExists(atPath: cluster.directory.appendingPathComponent("cache-\(placedOn[0])/\(blob)").path))
            _ = try cluster.hubCommand(["models", "add", "other", "--config", cluster.configPath, "--source",
                                        "hf://caravan/other-GGUF/other.gguf", "--workers", placedOn[0], "--args", "-t 1"])
            try await cluster.waitUntil("the first file freed for the second", timeout: .seconds(20)) {
                !FileManager.default.fileExists(atPath: cluster.directory.appendingPathComponent("cache-\(placedOn[0])/\(blob)").path)
            }
            try await cluster.waitUntil("the second model served", timeout: .seconds(30)) {
                try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "other")).status == 200
            }
        }
    }

    @Test func aDownloadResumesAfterTheWorkerIsKilledOrItsConnectionDropsAndACorruptFileIsNeverServed() async throws {
        let medium = try Self.generatedModel()
        let other = try Self.generatedModel(dim: 160, layers: 2, seed: 8)
        defer { for path in [medium, other] { try? FileManager.default.removeItem(atPath: path) } }
        let size = try #require(try FileManager.default.attributesOfItem(atPath: medium)[.size] as? Int)
        let mirror = try await HFMirror.start(files: ["caravan/medium-GGUF/medium.gguf": medium, "caravan/other-GGUF/other.gguf": other])
        defer { Task { await mirror.stop() } }
        try await Self.cluster(["a"], mirror: mirror).using { cluster in
            try await mirror.control("rate=\(size / 6)")  // about 6 s for the whole file
            let add = try await cluster.request("POST", "/admin/models", body: """
                {"name": "medium", "source": "hf://caravan/medium-GGUF/medium.gguf", "workers": ["a"], "args": ["-t", "1"]}
                """, token: .some(cluster.adminToken))
            #expect(add.status == 201, "\(add.body)")
            // A request while it downloads waits, then gets 503 model_downloading with progress.
            let early = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "medium"))
            #expect(early.status == 503 && early.errorCode == "model_downloading", "\(early.status) \(early.body)")
            #expect(early.headers.first(name: "retry-after").flatMap(Int.init) != nil)
            #expect(early.body.contains("MiB"), "\(early.body)")
            try await cluster.waitUntil("a third downloaded", timeout: .seconds(20)) {
                let download = Self.replicas(try await Self.view(cluster, "medium")).first?["download"] as? [String: Any]
                return (download?["bytes"] as? Int ?? 0) > size / 3
            }
            // kill -9 mid-download, then the same worker again: it resumes from its partial file.
            cluster.workers["a"]!.kill9()
            try await Task.sleep(for: .milliseconds(300))
            let restarted = try TestCluster.startWorker("a", configPath: cluster.configPath, hubURL: cluster.hubURL)
            do {
                try await mirror.control("rate=0")
                try await cluster.waitUntil("the model ready after the restart", timeout: .seconds(30)) {
                    Self.replicas(try await Self.view(cluster, "medium")).first?["state"] as? String == "not-loaded"
                }
                let stats = try await mirror.stats()
                let fetched = stats.bytes["caravan/medium-GGUF/medium.gguf"] ?? 0
                // The header read (1 MiB) counts too: it is the hub's, but the same file.
                let downloaded = fetched - (1 << 20)
                print("caravan-models: a worker killed mid-download fetched \(downloaded) bytes in all for a \(size)-byte file "
                      + "(\(String(format: "%.3f", Double(downloaded) / Double(size)))x); ranges \(stats.ranges)")
                #expect(downloaded >= size && Double(downloaded) < 1.2 * Double(size),
                        "fetched \(downloaded) bytes by the worker for a \(size)-byte file")
                #expect(stats.ranges.contains { ($0[1] as? Int ?? 0) > 0 }, "no resumed Range request: \(stats.ranges)")
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "medium"))
                #expect(reply.status == 200, "\(reply.body)")

                // A corrupt copy on the server: the download is discarded and reported, never served.
                try await mirror.control("corrupt=1")
                let corrupt = try await cluster.request("POST", "/admin/models", body: """
                    {"name": "medium-2", "source": "hf://caravan/other-GGUF/other.gguf", "workers": ["a"],
                     "sha256": "\(try Self.sha256(other))", "args": ["-t", "1"]}
                    """, token: .some(cluster.adminToken))
                #expect(corrupt.status == 201, "\(corrupt.body)")
                try await cluster.waitUntil("the checksum mismatch reported", timeout: .seconds(20)) {
                    let download = Self.replicas(try await Self.view(cluster, "medium-2")).first?["download"] as? [String: Any]
                    return (download?["error"] as? String ?? "").contains("checksum mismatch")
                }
                let refused = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "medium-2"))
                #expect(refused.status == 503 && refused.errorCode == "model_downloading" && refused.body.contains("checksum"),
                        "\(refused.status) \(refused.body)")
                let partials = (try? FileManager.default.contentsOfDirectory(atPath: cluster.directory.appendingPathComponent("cache-a/partial").path)) ?? []
                #expect(partials.isEmpty, "the corrupt download was kept: \(partials)")
                // The server mended, but its connections drop every 256 KiB: the next try resumes after each drop.
                try await mirror.control("corrupt=0&drop_after=262144")
                try await cluster.waitUntil("the model ready through dropped connections", timeout: .seconds(60)) {
                    Self.replicas(try await Self.view(cluster, "medium-2")).first?["state"] as? String == "not-loaded"
                }
                let resumed = try await mirror.stats().ranges.filter { $0.first as? String == "caravan/other-GGUF/other.gguf" && ($0[1] as? Int ?? 0) > 0 }
                #expect(resumed.count >= 3, "resumed ranges: \(resumed)")
                try await mirror.control("drop_after=0")
                let served = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "medium-2"))
                #expect(served.status == 200, "\(served.body)")
            } catch {
                await restarted.stop()
                throw error
            }
            await restarted.stop()
        }
    }

    @Test func aModelThatFitsNowhereIsRefusedWithBothNumbers() async throws {
        let (_, model) = try TestCluster.engine()
        let mirror = try await HFMirror.start(files: ["caravan/tiny-GGUF/tiny-q8.gguf": model, "caravan/private-GGUF/tiny.gguf": model],
                                              arguments: ["--private", "caravan/private-GGUF", "--token", "hf_secret"])
        defer { Task { await mirror.stop() } }
        try await Self.cluster(["a"], mirror: mirror).using { cluster in
            // 10M tokens of KV cache: far beyond a 4 GiB worker.
            let reply = try await cluster.request("POST", "/admin/models", body: """
                {"name": "huge", "source": "hf://caravan/tiny-GGUF/tiny-q8.gguf", "ctx": 10000000}
                """, token: .some(cluster.adminToken))
            #expect(reply.status == 409 && reply.errorCode == "model_does_not_place", "\(reply.status) \(reply.body)")
            #expect(reply.body.contains("4096") && reply.body.contains("needs"), "\(reply.body)")
            let missing = try await cluster.request("POST", "/admin/models", body: """
                {"name": "missing", "source": "hf://caravan/tiny-GGUF/nope.gguf"}
                """, token: .some(cluster.adminToken))
            #expect(missing.status == 400 && missing.errorCode == "invalid_source" && missing.body.contains("404"), "\(missing.body)")
            let private_ = try await cluster.request("POST", "/admin/models", body: """
                {"name": "private", "source": "hf://caravan/private-GGUF/tiny.gguf"}
                """, token: .some(cluster.adminToken))
            #expect(private_.status == 400 && private_.errorCode == "invalid_source" && private_.body.contains("401")
                    && private_.body.contains("HF_TOKEN"), "\(private_.body)")
            // Bad input: each refusal in its envelope with its status (and nothing stored).
            let admin: String?? = .some(cluster.adminToken)
            for (method, path, body, status, code) in [
                ("POST", "/admin/models", "{not json", 400, "invalid_json"),
                ("POST", "/admin/models", #"{"name": "a b", "source": "hf://o/r/m.gguf"}"#, 400, "invalid_request_body"),
                ("POST", "/admin/models", #"{"name": "m", "source": "hf://o/r/m.gguf", "replicas": 0}"#, 400, "invalid_request_body"),
                ("POST", "/admin/models", #"{"name": "m", "source": "hf://o/r/m.gguf", "args": ["--port", "1"]}"#, 400, "invalid_request_body"),
                ("POST", "/admin/models", #"{"name": "m", "source": "ftp://x/m.gguf"}"#, 400, "invalid_request_body"),
                ("PATCH", "/admin/models/nope", #"{"replicas": 2}"#, 404, "not_found"),
                ("DELETE", "/admin/models/nope", nil, 404, "not_found"),
            ] as [(String, String, String?, Int, String)] {
                let reply = try await cluster.request(method, path, body: body, token: admin)
                #expect(reply.status == status && reply.errorCode == code, "\(method) \(path) \(body ?? ""): \(reply.status) \(reply.body)")
            }
            let client = try await cluster.request("GET", "/admin/models")
            #expect(client.status == 403, "a client token: \(client.status)")
            let listed = try await cluster.request("GET", "/admin/models", token: .some(cluster.adminToken))
            #expect((listed.json?["models"] as? [Any])?.isEmpty == true, "a refused model was stored: \(listed.body)")
            // The CLI refuses the same way (the running hub's verdict), and keeps nothing.
            #expect(throws: (any Error).self) {
                try cluster.hubCommand(["models", "add", "huge", "--config", cluster.configPath, "--source",
                                        "hf://caravan/tiny-GGUF/tiny-q8.gguf", "--ctx", "10000000"])
            }
            let after = try await cluster.request("GET", "/admin/models", token: .some(cluster.adminToken))
            #expect((after.json?["models"] as? [Any])?.isEmpty == true, "\(after.body)")
        }
    }

    @Test func twoHubsSeeTheSameDesiredState() async throws {
        let (_, model) = try TestCluster.engine()
        let mirror = try await HFMirror.start(files: ["caravan/tiny-GGUF/tiny-q8.gguf": model])
        defer { Task { await mirror.stop() } }
        try await Self.cluster(["a", "b"], mirror: mirror, hubs: 2).using { cluster in
            let other = try #require(cluster.otherHubs.first?.url)
            let add = try await cluster.request("POST", "/admin/models", body: """
                {"name": "shared", "source": "hf://caravan/tiny-GGUF/tiny-q8.gguf", "replicas": 1, "args": ["-t", "1"]}
                """, token: .some(cluster.adminToken))
            #expect(add.status == 201, "\(add.body)")
            let placed = Self.replicas(add.json).compactMap { $0["worker"] as? String }
            #expect(placed.count == 1)
            // The second hub reads the same store: same model, same placement, and it serves it.
            try await cluster.waitUntil("the second hub serving it", timeout: .seconds(30)) {
                try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "shared"), hub: other).status == 200
            }
            let otherView = try await cluster.request("GET", "/admin/models", token: .some(cluster.adminToken), hub: other)
            let models = otherView.json?["models"] as? [[String: Any]] ?? []
            #expect(models.count == 1 && Self.replicas(models.first).compactMap { $0["worker"] as? String } == placed, "\(otherView.body)")
            // A change on the second hub is seen by the first.
            let change = try await cluster.request("PATCH", "/admin/models/shared", body: #"{"replicas": 2}"#,
                                                   token: .some(cluster.adminToken), hub: other)
            #expect(change.status == 200, "\(change.body)")
            try await cluster.waitUntil("both hubs placing two replicas", timeout: .seconds(10)) {
                Self.replicas(try await Self.view(cluster, "shared")).count == 2
            }
        }
    }
}

/// A full disk under a download, for real: the worker's cache on a small tmpfs.
@Suite(.serialized) struct ModelsDiskTests {
    /// Root, and a tmpfs can be mounted here (a container without CAP_SYS_ADMIN cannot).
    static let canMount: Bool = {
        guard geteuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/mount") else { return false }
        let probe = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-mount-\(UUID().uuidString.prefix(6))").path
        guard (try? FileManager.default.createDirectory(atPath: probe, withIntermediateDirectories: true)) != nil else { return false }
        defer { try? FileManager.default.removeItem(atPath: probe) }
        guard (try? runProcess(["/usr/bin/mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", probe], input: "")) != nil else { return false }
        _ = try? runProcess(["/usr/bin/umount", probe], input: "")
        return true
    }()

    @Test("a disk that fills during a download: a clear error, the partial file removed, the rest served; room again and it completes",
          .enabled(if: canMount, "needs root to mount a small tmpfs"))
    func fullDisk() async throws {
        let medium = try ModelsTests.generatedModel()
        defer { try? FileManager.default.removeItem(atPath: medium) }
        let size = try #require(try FileManager.default.attributesOfItem(atPath: medium)[.size] as? Int)
        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-disk-\(UUID().uuidString.prefix(6))").path
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        _ = try runProcess(["/usr/bin/mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", cache], input: "")
        defer {
            _ = try? runProcess(["/usr/bin/umount", "-l", cache], input: "")
            try? FileManager.default.removeItem(atPath: cache)
        }
        let mirror = try await HFMirror.start(files: ["caravan/medium-GGUF/medium.gguf": medium])
        defer { Task { await mirror.stop() } }
        let spec = TestCluster.WorkerSpec(name: "a", extra: "model_cache_dir: \(cache)\ngpus: [{name: test, vram_mb: 4096}]",
                                          models: TestCluster.tinyModel("tiny"))
        try await TestCluster.start(specs: [spec], hubSettings: """
            model_sources: {hf_endpoint: "\(mirror.url)", allow_local: true}
            queue: {timeout: 3s}
            """).using { cluster in
            try await mirror.control("rate=\(size / 4)")
            let add = try await cluster.request("POST", "/admin/models", body: """
                {"name": "medium", "source": "hf://caravan/medium-GGUF/medium.gguf", "workers": ["a"], "args": ["-t", "1"]}
                """, token: .some(cluster.adminToken))
            #expect(add.status == 201, "\(add.body)")
            try await cluster.waitUntil("the download under way", timeout: .seconds(20)) {
                let download = ModelsTests.replicas(try await ModelsTests.view(cluster, "medium")).first?["download"] as? [String: Any]
                return (download?["bytes"] as? Int ?? 0) > 1 << 20
            }
            // Something else takes the disk.
            _ = try? runProcess(["/bin/sh", "-c", "head -c 7340032 /dev/zero > \(cache)/filler"], input: "")
            try await cluster.waitUntil("the full disk reported", timeout: .seconds(20)) {
                let download = ModelsTests.replicas(try await ModelsTests.view(cluster, "medium")).first?["download"] as? [String: Any]
                return (download?["error"] as? String ?? "").contains("the disk is full")
            }
            let partials = (try? FileManager.default.contentsOfDirectory(atPath: cache + "/partial")) ?? []
            #expect(partials.isEmpty, "the partial file was kept: \(partials)")
            // ... and an event on /admin/events (a new reader gets the recent ones first).
            let events = TextCollector()
            var request = HTTPClientRequest(url: cluster.hubURL + "/admin/events")
            request.headers.add(name: "Authorization", value: "Bearer \(cluster.adminToken)")
            let response = try await cluster.client.execute(request, timeout: .seconds(60))
            let reader = Task { for try await chunk in response.body { events.append(String(buffer: chunk)) } }
            defer { reader.cancel() }
            try await cluster.waitUntil("the download_failed event", timeout: .seconds(10)) {
                events.text.contains("event: download_failed") && events.text.contains("the disk is full")
            }
            // The worker serves its other model meanwhile.
            let other = try await cluster.request("POST", "/v1/chat/completions", body: chatBody())
            #expect(other.status == 200, "\(other.body)")
            // Room again: the next try completes.
            try FileManager.default.removeItem(atPath: cache + "/filler")
            try await mirror.control("rate=0")
            try await cluster.waitUntil("the model ready once there is room", timeout: .seconds(40)) {
                ModelsTests.replicas(try await ModelsTests.view(cluster, "medium")).first?["state"] as? String == "not-loaded"
            }
        }
    }
}
