import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import Glibc
import TestSupport

#if canImport(Glibc)
#endif

extension TestCluster {
    /// The admin view of one model on one worker.
    func model(_ name: String, on worker: String) async throws -> [String: Any]? {
        try await admin().first { $0["name"] as? String == worker }
            .flatMap { ($0["models"] as? [[String: Any]])?.first { $0["name"] as? String == name } }
    }

    func state(of name: String, on worker: String) async throws -> String? {
        try await model(name, on: worker)?["state"] as? String
    }

    /// llama-server (or fake engine) processes a worker runs for `model` (matched by `--alias`).
    func engines(of worker: String, model: String? = nil) -> [Int32] {
        guard let process = workers[worker] else { return [] }
        // /proc/PID/cmdline separates arguments with NUL.
        return children(of: process.pid, matching: model.map { "--alias\u{0}\($0)\u{0}" } ?? "--alias")
    }

    /// Lines of a worker's output that contain every one of `texts`.
    func workerLines(_ worker: String, _ texts: String...) -> [String] {
        (workers[worker]?.output ?? []).filter { line in texts.allSatisfy { line.contains($0) } }
    }

    func chat(_ model: String, maxTokens: Int = 4) async throws -> Reply {
        try await request("POST", "/v1/chat/completions", body: chatBody(model: model, maxTokens: maxTokens))
    }
}

@Suite("Worker supervision", .serialized)
struct SupervisionTests {
    @Test("lazy start via models_dir discovery; concurrent first requests start one engine; unlisted; logs via the hub")
    func lazyStartAndLogs() async throws {
        let spec = TestCluster.WorkerSpec(
            name: "a", extra: "models_dir: $DIR/models\nengine_log_level: info",
            models: TestCluster.tinyModel("hidden", "unlisted: true"))
        try await TestCluster.start(specs: [spec], prepare: { directory in
            let (_, model) = try TestCluster.engine()
            let nested = directory.appendingPathComponent("models/family/small")
            try FileManager.default.createDirectory(at: nested, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: model, toPath: nested.appendingPathComponent("tiny.gguf").path)
            // A projector in a folder of its own: not a model, and attached to none.
            let projectors = directory.appendingPathComponent("models/projectors")
            try FileManager.default.createDirectory(at: projectors, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: model, toPath: projectors.appendingPathComponent("mmproj-tiny-f16.gguf").path)
        }).using { cluster in
            try await cluster.waitUntil("discovered model reported") { try await cluster.state(of: "tiny", on: "a") == "not-loaded" }
            #expect(try await cluster.model("mmproj-tiny-f16", on: "a") == nil, "a projector file is not a model")
            #expect(cluster.engines(of: "a").isEmpty, "nothing starts before the first request")

            // Two concurrent first requests: both answered, one engine started.
            let clock = ContinuousClock()
            let start = clock.now
            try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<2 { group.addTask { try await cluster.chat("tiny").status } }
                for try await status in group { #expect(status == 200) }
            }
            let first = clock.now - start
            #expect(cluster.engines(of: "a", model: "tiny").count == 1)
            #expect(cluster.workerLines("a", "starting llama-server", "model=tiny").count == 1)
            var warm: [Duration] = []
            for _ in 0..<5 {
                let began = clock.now
                #expect(try await cluster.chat("tiny").status == 200)
                warm.append(clock.now - began)
            }
            print("MEASURED lazy start through the hub: first request \(first), warm requests \(warm)")

            // Unlisted: served, but not in /v1/models.
            #expect(try await cluster.chat("hidden").status == 200)
            let listed = try await cluster.request("GET", "/v1/models").json?["data"] as? [[String: Any]] ?? []
            #expect(listed.compactMap { $0["id"] as? String } == ["tiny"])

            // Engine output through the hub: a plain tail, then a live follow.
            let tail = try await cluster.request("GET", "/admin/workers/a/logs?model=tiny&lines=500", token: .some(cluster.adminToken))
            #expect(tail.status == 200 && tail.contentType?.hasPrefix("text/plain") == true)
            #expect(tail.body.contains("llama") && tail.body.split(separator: "\n").count > 5, "\(tail.body.prefix(300))")
            #expect(!cluster.workerLines("a", "[tiny]").isEmpty, "engine_log_level: info forwards engine lines to the worker's log, with the model name")
            let noModel = try await cluster.request("GET", "/admin/workers/a/logs", token: .some(cluster.adminToken))
            #expect(noModel.status == 400 && noModel.errorCode == "missing_model")
            let unknown = try await cluster.request("GET", "/admin/workers/nobody/logs?model=tiny", token: .some(cluster.adminToken))
            #expect(unknown.status == 404 && unknown.errorCode == "worker_not_found")
            let forbidden = try await cluster.request("GET", "/admin/workers/a/logs?model=tiny")
            #expect(forbidden.status == 403)

            var follow = HTTPClientRequest(url: cluster.hubURL + "/admin/workers/a/logs?model=tiny&lines=0&follow=true")
            follow.headers.add(name: "Authorization", value: "Bearer \(cluster.adminToken)")
            let response = try await cluster.client.execute(follow, timeout: .seconds(30))
            #expect(response.headers.first(name: "content-type") == "text/event-stream")
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await Task.sleep(for: .milliseconds(300))
                    _ = try await cluster.chat("tiny")
                }
                var received = ""
                for try await chunk in response.body {
                    received += String(buffer: chunk)
                    if received.contains("data: ") { break }
                }
                #expect(received.hasPrefix("data: "), "a new engine line arrives on the stream: \(received.prefix(200))")
                try await group.waitForAll()
            }
        }
    }

    @Test("ttl unloads an idle model, a pinned one stays; max_loaded and the VRAM budget evict the least recently used idle model")
    func ttlPinAndEviction() async throws {
        let ttlWorker = TestCluster.WorkerSpec(
            name: "t", extra: "ttl: 1s",
            models: [TestCluster.tinyModel("brief"), TestCluster.tinyModel("kept", "pin: true")].joined(separator: "\n"))
        let lru = TestCluster.WorkerSpec(
            name: "l", extra: "max_loaded: 1",
            models: [TestCluster.tinyModel("m1"), TestCluster.tinyModel("m2")].joined(separator: "\n"))
        let vram = TestCluster.WorkerSpec(
            name: "v", extra: "vram_budget_mb: 100",
            models: ["v1", "v2", "v3"].map { TestCluster.tinyModel($0, "vram_mb: 45") }.joined(separator: "\n"))
        try await TestCluster.start(specs: [ttlWorker, lru, vram]).using { cluster in
            // pin: started with the worker, no request needed.
            try await cluster.waitUntil("pinned model ready") { try await cluster.state(of: "kept", on: "t") == "ready" }
            #expect(try await cluster.chat("brief").status == 200)
            #expect(cluster.engines(of: "t", model: "brief").count == 1)
            try await cluster.waitUntil("ttl unload", timeout: .seconds(10)) {
                try await cluster.state(of: "brief", on: "t") == "not-loaded" && cluster.engines(of: "t", model: "brief").isEmpty
            }
            #expect(!cluster.workerLines("t", "stopping llama-server", "model=brief", "ttl").isEmpty)
            #expect(cluster.workerLines("t", "[brief]").isEmpty, "by default engine lines stay in the ring buffer")
            try await Task.sleep(for: .seconds(1))
            #expect(try await cluster.state(of: "kept", on: "t") == "ready", "a pinned model ignores the ttl")
            #expect(cluster.engines(of: "t", model: "kept").count == 1)

            // max_loaded 1: m2 evicts m1.
            #expect(try await cluster.chat("m1").status == 200)
            let m1 = cluster.engines(of: "l", model: "m1")
            #expect(m1.count == 1)
            #expect(try await cluster.chat("m2").status == 200)
            #expect(!m1.contains(where: isRunning), "m1 was evicted")
            #expect(cluster.engines(of: "l").count == 1)
            #expect(!cluster.workerLines("l", "evicted (least recently used) to make room for m2").isEmpty)

            // VRAM budget 100 MiB, 45 MiB each: two fit; the third evicts the least recently used (v1).
            for name in ["v1", "v2"] { #expect(try await cluster.chat(name).status == 200) }
            #expect(try await cluster.chat("v1").status == 200)  // v1 is now more recent than v2
            #expect(cluster.engines(of: "v").count == 2)
            #expect(try await cluster.chat("v3").status == 200)
            #expect(cluster.engines(of: "v", model: "v2").isEmpty, "v2 (least recently used) made room")
            #expect(cluster.engines(of: "v", model: "v1").count == 1 && cluster.engines(of: "v", model: "v3").count == 1)
            #expect(!cluster.workerLines("v", "to make room for v3", "VRAM budget").isEmpty)
        }
    }

    @Test("an eviction waits for the in-flight stream of the model it evicts")
    func evictionWaitsForInFlight() async throws {
        let args = #"["-c", "32768", "--parallel", "1", "-t", "1"]"#
        let lru = TestCluster.WorkerSpec(
            name: "l", extra: "max_loaded: 1",
            models: [TestCluster.tinyModel("m1", args: args), TestCluster.tinyModel("m2", args: args)].joined(separator: "\n"))
        try await TestCluster.start(specs: [lru]).using { cluster in
            #expect(try await cluster.chat("m1").status == 200)
            var request = HTTPClientRequest(url: cluster.hubURL + "/v1/chat/completions")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(cluster.clientToken)")
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: chatBody(model: "m1", maxTokens: 20000, stream: true)))
            let response = try await cluster.client.execute(request, timeout: .seconds(120))
            #expect(response.status == .ok)
            let clock = ContinuousClock()
            let (streamEnd, secondEnd, text, secondStatus) = try await withThrowingTaskGroup(
                of: (ContinuousClock.Instant?, ContinuousClock.Instant?, String, Int).self
            ) { group in
                group.addTask {
                    var text = ""
                    for try await chunk in response.body { text += String(buffer: chunk) }
                    return (clock.now, nil, text, 0)
                }
                group.addTask {
                    try await cluster.waitUntil("the stream to run") { try await cluster.hubInFlight() == 1 }
                    let status = try await cluster.chat("m2").status
                    return (nil, clock.now, "", status)
                }
                var results: (ContinuousClock.Instant?, ContinuousClock.Instant?, String, Int) = (nil, nil, "", 0)
                for try await result in group {
                    if let end = result.0 { (results.0, results.2) = (end, result.2) }
                    if let end = result.1 { (results.1, results.3) = (end, result.3) }
                }
                return results
            }
            #expect(text.contains("data: [DONE]"), "the stream ran to its end")
            #expect(!text.contains(#""error""#), "the stream was not cut")
            #expect(text.components(separatedBy: "data: ").count > 1000)
            #expect(secondStatus == 200)
            let (ended, served) = (try #require(streamEnd), try #require(secondEnd))
            #expect(served >= ended, "m2 was served only after m1's stream finished")
            print("MEASURED eviction wait: m2 answered \(served - ended) after m1's stream ended")
        }
    }

    @Test("concurrent streams never hit a connection llama-server closed (no retry on a new connection); llama-server inherits no descriptor of the worker")
    func noStaleEngineConnections() async throws {
        // llama-server closes the connection after every stream; before streamed engine
        // requests said `Connection: close`, ~18 % of them at this concurrency found a pooled
        // connection already closed and were retried (logged at debug level).
        try await TestCluster.start(specs: [.init(name: "a", logLevel: "debug")]).using { cluster in
            #expect(try await cluster.chat("tiny").status == 200)
            let worker = try #require(cluster.workers["a"]).pid
            let engine = try #require(cluster.engines(of: "a", model: "tiny").first)
            // Sockets and pipes are identified by inode; the engine may share one pipe with the
            // worker (its output) and no socket (the worker's listening one was inherited).
            let shared = openFiles(of: engine).intersection(openFiles(of: worker))
            #expect(shared.filter { $0.hasPrefix("socket:") }.isEmpty, "\(shared.sorted())")
            #expect(shared.filter { $0.hasPrefix("pipe:") }.count == 1, "\(shared.sorted())")

            for _ in 0..<4 {
                try await withThrowingTaskGroup(of: Int.self) { group in
                    for _ in 0..<8 {
                        group.addTask {
                            try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 16, stream: true)).status
                        }
                    }
                    for try await status in group { #expect(status == 200) }
                }
            }
            #expect(!cluster.workerLines("a", "starting llama-server").isEmpty, "the worker logs at debug level")
            let retries = cluster.workerLines("a", "retrying on a new one")
            #expect(retries.isEmpty, "\(retries.prefix(3))")
        }
    }

    @Test("SIGKILL of llama-server is reported at once (not at the next heartbeat) and it restarts on the next request")
    func engineKilled() async throws {
        try await TestCluster.start(specs: [.init(name: "a")], heartbeat: "5s").using { cluster in
            #expect(try await cluster.chat("tiny").status == 200)
            let engine = try #require(cluster.engines(of: "a", model: "tiny").first)
            try await cluster.waitUntil("ready reported") { try await cluster.state(of: "tiny", on: "a") == "ready" }
            let killed = ContinuousClock.now
            kill(engine, SIGKILL)
            try await cluster.waitUntil("crash reported", timeout: .seconds(3)) {
                try await cluster.state(of: "tiny", on: "a") == "not-loaded"
            }
            print("MEASURED crash reported to the hub after \(ContinuousClock.now - killed) (heartbeat interval 5 s)")
            let reason = try await cluster.model("tiny", on: "a")?["reason"] as? String
            #expect(reason?.contains("killed by signal 9") == true, "\(reason ?? "no reason")")
            #expect(try await cluster.chat("tiny").status == 200)
            let restarted = cluster.engines(of: "a", model: "tiny")
            #expect(restarted.count == 1 && restarted.first != engine)
        }
    }
}
