import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import Glibc
import TestSupport

@Suite("Worker supervision with a fault-injecting engine", .serialized)
struct SupervisionFaultTests {
    @Test("a quiet log follow through the hub carries keepalive comments (every idle_timeout / 3, at most 15 s) and no error")
    func quietLogFollow() async throws {
        let spec = TestCluster.WorkerSpec(name: "q", fake: true, preload: true)
        try await TestCluster.start(specs: [spec], hubSettings: "idle_timeout: 1s").using { cluster in
            try await cluster.waitUntil("engine ready") { try await cluster.state(of: "tiny", on: "q") == "ready" }
            var follow = HTTPClientRequest(url: cluster.hubURL + "/admin/workers/q/logs?model=tiny&lines=0&follow=true")
            follow.headers.add(name: "Authorization", value: "Bearer \(cluster.adminToken)")
            let response = try await cluster.client.execute(follow, timeout: .seconds(30))
            #expect(response.status == .ok)
            // 2.5 s of silence from the engine: keepalives every 333 ms.
            let collected = TextCollector()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { for try await chunk in response.body { collected.append(String(buffer: chunk)) } }
                group.addTask { try await Task.sleep(for: .milliseconds(2500)) }
                _ = try? await group.next()
                group.cancelAll()
            }
            let received = collected.text
            #expect(received.contains(": keepalive"), "\(received.prefix(300))")
            #expect(!received.contains("error"), "the hub must not end a quiet follow: \(received.prefix(300))")
        }
    }

    @Test("a load beyond load_timeout fails with the reason; an engine ignoring SIGTERM is killed after stop_grace")
    func slowLoadAndStubbornStop() async throws {
        let spec = TestCluster.WorkerSpec(
            name: "f", fake: true, extra: "load_timeout: 1s\nstop_grace: 1s",
            models: """
                - {name: slow, path: /models/slow.gguf, env: {FAKE_HEALTH_DELAY_MS: "30000"}}
                - {name: stubborn, path: /models/stubborn.gguf, ttl: 1s, env: {FAKE_IGNORE_SIGTERM: "1"}}
                """)
        try await TestCluster.start(specs: [spec]).using { cluster in
            let slow = try await cluster.chat("slow")
            #expect(slow.status == 503 && slow.errorCode == "model_unavailable", "\(slow.body)")
            #expect(slow.body.contains("did not become ready within 1"), "\(slow.body)")
            #expect(!slow.body.contains("listening"), "no engine output reaches the client: \(slow.body)")
            try await cluster.waitUntil("failed state reported") { try await cluster.state(of: "slow", on: "f") == "failed" }
            #expect(cluster.engines(of: "f", model: "slow").isEmpty, "the slow engine was stopped")

            #expect(try await cluster.chat("stubborn").status == 200)
            let stubborn = try #require(cluster.engines(of: "f", model: "stubborn").first)
            try await cluster.waitUntil("ttl stop with SIGKILL", timeout: .seconds(10)) {
                !cluster.workerLines("f", "ignored SIGTERM; killed after the grace period", "model=stubborn").isEmpty
            }
            #expect(!isRunning(stubborn))
        }
    }

    @Test("a crash loop ends in failed with the reason and no restart storm; an admin reset allows starts again")
    func crashLoop() async throws {
        let spec = TestCluster.WorkerSpec(
            name: "f", fake: true, extra: "crash_limit: 3\ncrash_window: 60s\nrestart_backoff: 100ms",
            models: "- {name: crashy, path: /models/crashy.gguf, env: {FAKE_EXIT_AFTER_MS: \"300\"}}")
        // The hub's breaker would (rightly) open on the 503s; keep it out of this test.
        try await TestCluster.start(specs: [spec], hubSettings: "breaker:\n  min_samples: 1000\n  consecutive_failures: 0").using { cluster in
            let starts = { cluster.workerLines("f", "starting llama-server", "model=crashy").count }
            try await cluster.waitUntil("crash loop", timeout: .seconds(20)) {
                _ = try await cluster.chat("crashy")
                try await Task.sleep(for: .milliseconds(400))
                return try await cluster.state(of: "crashy", on: "f") == "failed"
            }
            let reason = try await cluster.model("crashy", on: "f")?["reason"] as? String ?? ""
            #expect(reason.contains("crash loop: 3 exits within"), "\(reason)")
            #expect(reason.contains("exit status 3"), "\(reason)")
            #expect(starts() == 3)
            for _ in 0..<5 {
                let reply = try await cluster.chat("crashy")
                #expect(reply.status == 503 && reply.body.contains("crash loop"), "\(reply.body)")
                // The engine's output (its exit status, its log lines) stays in the admin API.
                #expect(!reply.body.contains("exit status") && !reply.body.contains("fake engine"), "\(reply.body)")
            }
            try await Task.sleep(for: .seconds(1))
            #expect(starts() == 3, "no restart storm")

            let reset = try await cluster.request("POST", "/admin/workers/f/models/crashy/reset", token: .some(cluster.adminToken))
            #expect(reset.status == 200, "\(reset.body)")
            #expect(try await cluster.chat("crashy").status == 200)
            #expect(starts() == 4)
        }
    }

    @Test("reload (SIGHUP, then the admin call) keeps unchanged models running, restarts changed ones, adds and removes")
    func reload() async throws {
        let spec = TestCluster.WorkerSpec(
            name: "f", fake: true,
            models: """
                - {name: keep, path: /models/keep.gguf}
                - {name: change, path: /models/change.gguf}
                - {name: drop, path: /models/drop.gguf}
                """)
        try await TestCluster.start(specs: [spec]).using { cluster in
            for name in ["keep", "change", "drop"] { #expect(try await cluster.chat(name).status == 200) }
            let before = Dictionary(uniqueKeysWithValues: ["keep", "change", "drop"].map { ($0, cluster.engines(of: "f", model: $0)) })
            let yaml = try String(contentsOfFile: cluster.configPath, encoding: .utf8)
            try yaml.replacingOccurrences(of: "{name: change, path: /models/change.gguf}",
                                          with: "{name: change, path: /models/change.gguf, args: [--flag]}")
                .replacingOccurrences(of: "- {name: drop, path: /models/drop.gguf}", with: "- {name: added, path: /models/added.gguf}")
                .write(toFile: cluster.configPath, atomically: true, encoding: .utf8)
            kill(try #require(cluster.workers["f"]).pid, SIGHUP)
            try await cluster.waitUntil("reload applied", timeout: .seconds(10)) {
                try await cluster.model("added", on: "f") != nil && cluster.engines(of: "f", model: "change").isEmpty
                    && cluster.engines(of: "f", model: "drop").isEmpty
            }
            #expect(cluster.engines(of: "f", model: "keep") == before["keep"], "an unchanged model keeps its engine")
            #expect(try await cluster.model("drop", on: "f") == nil)
            #expect(try await cluster.chat("change").status == 200)
            let changed = cluster.engines(of: "f", model: "change")
            #expect(changed.count == 1 && changed != before["change"])
            #expect(try await cluster.chat("added").status == 200)

            // The admin call through the hub: nothing changed, everything stays.
            let reply = try await cluster.request("POST", "/admin/workers/f/reload", token: .some(cluster.adminToken))
            #expect(reply.status == 200, "\(reply.body)")
            #expect((reply.json?["unchanged"] as? [String])?.sorted() == ["added", "change", "keep"])
            #expect(cluster.engines(of: "f", model: "keep") == before["keep"])
            #expect(cluster.engines(of: "f", model: "change") == changed)
        }
    }

    @Test("a reload that changes a busy model lets its stream finish; a request arriving meanwhile is served by the new engine")
    func reloadUnderLoad() async throws {
        let spec = TestCluster.WorkerSpec(
            name: "f", fake: true, extra: "stop_grace: 500ms",
            models: "- {name: busy, path: /models/busy.gguf, env: {FAKE_TOKEN_MS: \"100\", FAKE_TOKENS: \"15\", FAKE_IGNORE_SIGTERM: \"1\"}}")
        // A request that arrives while the old engine drains waits for the new one. The old engine
        // ignores SIGTERM, so its stop takes the whole grace period: the waiting request is
        // parked on the stop when it ends (that once livelocked the supervisor, and a drain
        // waiting for "no request holds it" must not also wait for the requests waiting for it).
        try await TestCluster.start(specs: [spec]).using { cluster in
            #expect(try await cluster.chat("busy").status == 200)
            let before = cluster.engines(of: "f", model: "busy")
            var request = HTTPClientRequest(url: cluster.hubURL + "/v1/chat/completions")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(cluster.clientToken)")
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: chatBody(model: "busy", stream: true)))
            let stream = try await cluster.client.execute(request, timeout: .seconds(30))
            let yaml = try String(contentsOfFile: cluster.configPath, encoding: .utf8)
            try yaml.replacingOccurrences(of: "FAKE_IGNORE_SIGTERM: \"1\"}", with: "FAKE_IGNORE_SIGTERM: \"1\"}, args: [--changed]")
                .write(toFile: cluster.configPath, atomically: true, encoding: .utf8)
            let clock = ContinuousClock()
            kill(try #require(cluster.workers["f"]).pid, SIGHUP)
            _ = try await cluster.workers["f"]!.waitForLine(containing: "configuration reloaded", timeout: .seconds(5))
            // While the old engine drains, the hub sees it as draining, not ready with free slots.
            try await cluster.waitForModel("f", timeout: .seconds(3)) { $0["state"] as? String == "draining" }
            let started = clock.now
            async let next = cluster.chat("busy")
            var text = ""
            for try await chunk in stream.body { text += String(buffer: chunk) }
            let reply = try await next
            let waited = clock.now - started
            #expect(text.contains("data: [DONE]") && !text.contains(#""error""#), "the old engine's stream ran to its end")
            #expect(reply.status == 200, "\(reply.body)")
            #expect(waited < .seconds(10), "the waiting request did not stall the drain")
            let after = cluster.engines(of: "f", model: "busy")
            #expect(after.count == 1 && after != before, "served by the restarted engine")
        }
    }
}
