import Foundation
import Testing
import TestSupport

/// What an operator meets in the first hour, run the way users run it: the example config
/// as copied, engines killed, clients that stop reading or trickle their bodies, GPUs too small.
@Suite("The operator's first hour", .serialized)
struct FirstHourTests {
    @Test("cluster.example.yaml as copied: a CPU worker loads the model on the first request and restarts it after kill -9")
    func exampleConfig() async throws {
        try await TestCluster.startExample().using { cluster in
            // Nothing is loaded yet (preload: false): the first request starts an engine.
            for worker in ["gpu-a", "gpu-b"] {
                #expect(try await cluster.adminModel(worker)?["state"] as? String == "not-loaded")
            }
            let first = try await cluster.request("POST", "/v1/chat/completions", body: chatBody())
            #expect(first.status == 200, "\(first.body)")
            let engines = cluster.workers.values.flatMap { children(of: $0.pid, matching: "llama-server") }
            #expect(!engines.isEmpty)
            // The engine's environment holds none of the worker's CARAVAN_* settings (the worker
            // runs with CARAVAN_HUB_URL, the tests with CARAVAN_TEST_*) and only its own API key.
            for pid in engines {
                let environ = String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/environ") ?? Data(), as: UTF8.self)
                    .split(separator: "\0")
                #expect(!environ.isEmpty && !environ.contains { $0.hasPrefix("CARAVAN_") }, "\(environ.filter { $0.hasPrefix("CARAVAN") })")
                #expect(environ.filter { $0.hasPrefix("LLAMA_API_KEY=") }.count == 1)
            }
            // kill -9 every engine: the next requests are served by new ones.
            for pid in engines { kill(pid, SIGKILL) }
            for _ in 0..<3 {
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "tiny-chat"))
                #expect(reply.status == 200, "\(reply.body)")
            }
            let restarted = cluster.workers.values.flatMap { children(of: $0.pid, matching: "llama-server") }
            #expect(!restarted.isEmpty && Set(restarted).isDisjoint(with: engines))
            // The admin JSON names MiB fields as *_mib.
            let admin = try await cluster.request("GET", "/admin/workers", token: .some(cluster.adminToken))
            #expect(admin.body.contains(#""vram_estimate_mib""#) && !admin.body.contains("mi_b"), "\(admin.body)")
        }
    }

    @Test("caravan-hub init's output, edited as it asks: the worker holds only its own credential, and the cluster serves")
    func initOutput() async throws {
        try await TestCluster.startInit().using { cluster in
            let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "my-model"))
            #expect(reply.status == 200, "\(reply.body)")
            // The worker logged no warning about holding the cluster's worker key.
            #expect(!(cluster.workers["gpu-a"]?.output ?? []).contains { $0.contains("was given the cluster's worker key") })
            let mode = try FileManager.default.attributesOfItem(atPath: cluster.directory.appendingPathComponent("gpu-a.credential").path)[.posixPermissions] as? Int
            #expect(mode == 0o600)
        }
    }

    @Test("a preloaded model whose engine is killed comes back by itself, before any request")
    func preloadedRestarts() async throws {
        let spec = TestCluster.WorkerSpec(name: "w", fake: true, preload: true, extra: "restart_backoff: 200ms")
        try await TestCluster.start(specs: [spec]).using { cluster in
            try await cluster.waitForModel("w") { $0["state"] as? String == "ready" }
            let before = cluster.engines(of: "w")
            #expect(before.count == 1)
            for pid in before { kill(pid, SIGKILL) }
            try await cluster.waitUntil("a new engine", timeout: .seconds(15)) {
                let now = cluster.engines(of: "w")
                return now.count == 1 && now != before
            }
            try await cluster.waitForModel("w") { $0["state"] as? String == "ready" }
        }
    }

    @Test("a model larger than the worker's VRAM gets 503 model_does_not_fit at once, not a queue timeout")
    func doesNotFit() async throws {
        let spec = TestCluster.WorkerSpec(name: "small-gpu", fake: true, extra: "gpus: [{name: g, vram_mb: 1000}]",
                                          models: "- {name: huge, path: /models/huge.gguf, vram_mb: 5000}")
        try await TestCluster.start(specs: [spec], hubSettings: "queue: {timeout: 20s}").using { cluster in
            let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "huge"))
            #expect(reply.status == 503)
            #expect(reply.errorCode == "model_does_not_fit", "\(reply.body)")
            #expect(reply.body.contains("5000 MiB") && reply.body.contains("1000 MiB"))
        }
    }

    @Test("clients that stop reading their streams lose their connection; the worker's slots, the hub's leases and the concurrency limit come back")
    func stalledReaders() async throws {
        let spec = TestCluster.WorkerSpec(name: "w", fake: true,
                                          env: ["FAKE_TOKENS": "200000", "FAKE_PAD": "2000", "FAKE_TOKEN_MS": "1"])
        // Long enough for all eight to be in flight at once, short for the test.
        let hub = """
            client_write_timeout: 3s
            idle_timeout: 5s
            limits: {concurrent: 8}
            """
        try await TestCluster.start(specs: [spec], hubSettings: hub, heartbeat: "500ms").using { cluster in
            // Eight streams against 4 slots (+4 ahead), from sockets with a tiny receive buffer
            // that are never read.
            var sockets: [Int32] = []
            defer { for fd in sockets { close(fd) } }
            for _ in 0..<8 {
                sockets.append(try rawRequest(hubURL: cluster.hubURL, token: cluster.clientToken,
                                              body: chatBody(stream: true), receiveBuffer: 1024))
            }
            do {
                try await cluster.waitUntil("8 streams in flight", timeout: .seconds(20)) { try await cluster.hubInFlight() == 8 }
            } catch {
                let admin = try await cluster.request("GET", "/admin/workers", token: .some(cluster.adminToken))
                Issue.record("\(error): \(admin.body)\n\(cluster.hub.output.suffix(20).joined(separator: "\n"))")
                return
            }
            // The write deadline closes them and gives everything back.
            try await cluster.waitUntil("the hub's leases released", timeout: .seconds(15)) { try await cluster.hubInFlight() == 0 }
            try await cluster.waitUntil("the worker's requests ended", timeout: .seconds(15)) {
                try await cluster.admin().first?["in_flight"] as? Int == 0
            }
            for fd in sockets { #expect(isClosedByPeer(fd), "the stalled client's connection is closed") }
            // A normal client is served at once: no lost lease, no lost concurrency slot.
            try cluster.control("w", #"{"tokens": 5}"#)
            let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody())
            #expect(reply.status == 200, "\(reply.body)")
            let output = cluster.hub.output.joined(separator: "\n")
            #expect(output.contains("client stopped reading a stream"))
        }
    }

    @Test("a request body trickled one byte at a time gets 408 and its connection closed")
    func trickledBody() async throws {
        let spec = TestCluster.WorkerSpec(name: "w", fake: true)
        try await TestCluster.start(specs: [spec], hubSettings: "client_body_timeout: 1s").using { cluster in
            let fd = try rawConnection(to: cluster.hubURL)
            defer { close(fd) }
            let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(cluster.clientToken)\r\n"
                + "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            _ = head.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            var answer: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            let deadline = ContinuousClock.now + .seconds(10)
            var closed = false
            while ContinuousClock.now < deadline && !closed {
                _ = send(fd, " ", 1, Int32(MSG_NOSIGNAL))  // one byte per 200 ms: never idle
                try await Task.sleep(for: .milliseconds(200))
                while true {
                    let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                    if n > 0 { answer += buffer[0..<n]; continue }
                    if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) { closed = true }
                    break
                }
            }
            let text = String(decoding: answer, as: UTF8.self)
            #expect(text.hasPrefix("HTTP/1.1 408"), "\(text.prefix(300)) hub: \(cluster.hub.output.suffix(10))")
            #expect(text.contains(#""code":"request_body_timeout""#))
            #expect(closed, "the connection was closed after the 408")
        }
    }

    @Test("an engine too busy to answer /slots keeps its last slot counts, flagged stale, instead of zeros")
    func staleSlots() async throws {
        let spec = TestCluster.WorkerSpec(name: "w", fake: true)
        try await TestCluster.start(specs: [spec]).using { cluster in
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody()).status == 200)
            try await cluster.waitForModel("w") { $0["slots_total"] as? Int == 4 }
            try cluster.control("w", #"{"slots_delay_ms": 5000}"#)
            try await cluster.waitForModel("w", timeout: .seconds(15)) { $0["slots_stale"] as? Bool == true }
            let model = try #require(try await cluster.adminModel("w"))
            #expect(model["slots_total"] as? Int == 4, "\(model)")
            try cluster.control("w", "{}")
            try await cluster.waitForModel("w", timeout: .seconds(15)) { $0["slots_stale"] == nil }
        }
    }
}
