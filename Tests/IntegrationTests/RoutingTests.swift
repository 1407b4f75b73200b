import Foundation
import NIOHTTP1
import Testing
import TestSupport

/// Routing under faults, with real hub and worker processes in front of the fault-injection
/// engine. Timing thresholds are generous on purpose: these assert behaviour, not speed.
@Suite("Routing under faults", .serialized)
struct RoutingTests {
    /// Breaker thresholds small enough for a test to trip and heal them in seconds.
    static let fastBreaker = """
        retries: 2
        breaker:
          window: 20s
          min_samples: 3
          failure_rate: 0.5
          slow_ttfb: 300ms
          slow_gap: 1s
          open_for: 1s
          max_open_for: 4s
          close_after: 1
        """

    func withCluster(_ specs: [TestCluster.WorkerSpec], hub: String = fastBreaker,
                     _ body: (TestCluster) async throws -> Void) async throws {
        try await TestCluster.start(specs: specs, hubSettings: hub).using(body)
    }

    @Test("a slow worker's breaker opens, traffic moves to the other, and it recovers through half-open")
    func slowWorker() async throws {
        // Preloaded: loaded models are preferred, so a lazily started pair could leave one unloaded.
        try await withCluster([.init(name: "slow", fake: true, preload: true),
                               .init(name: "fast", fake: true, preload: true)]) { cluster in
            for name in ["slow", "fast"] { try await cluster.waitForModel(name) { $0["state"] as? String == "ready" } }
            for _ in 0..<4 {  // both healthy: both serve
                #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody()).status == 200)
            }
            try cluster.control("slow", #"{"ttfb_ms": 700}"#)
            let slowedAt = ContinuousClock.now
            var servedBy: [String] = []
            var opened = false
            while !opened && servedBy.count < 40 {
                // Streams: their first byte is the first token, which is what slow_ttfb judges.
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(stream: true))
                #expect(reply.status == 200)  // slow answers still succeed; they only count as failures
                servedBy.append(reply.servedBy ?? "?")
                opened = try await cluster.adminModel("slow")?["breaker"] as? String == "open"
            }
            let leftAfter = ContinuousClock.now - slowedAt
            #expect(opened, "the slow worker's breaker opened: \(servedBy)")
            // Capacity weighting already favours the less busy worker; the breaker needs
            // min_samples (3) failures in its window.
            #expect(servedBy.filter { $0 == "slow" }.count <= 5, "\(servedBy)")
            for _ in 0..<8 {
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(stream: true))
                #expect(reply.servedBy == "fast")
            }
            #expect(cluster.hub.output.contains { $0.contains("circuit breaker closed -> open") && $0.contains("first byte slower than") })
            print("caravan-measure: slowed worker got \(servedBy.filter { $0 == "slow" }.count) of \(servedBy.count) requests "
                + "before its breaker opened, \(leftAfter) after the slowdown")

            // The delay goes away: after open_for, one probe succeeds and the breaker closes.
            try cluster.control("slow", #"{"ttfb_ms": 0}"#)
            try await Task.sleep(for: .milliseconds(1200))
            var recovered: [String] = []
            for _ in 0..<8 {
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody())
                #expect(reply.status == 200)
                recovered.append(reply.servedBy ?? "?")
            }
            #expect(recovered.contains("slow"), "the healed worker gets traffic again: \(recovered)")
            try await cluster.waitForModel("slow") { $0["breaker"] as? String == "closed" }
            #expect(cluster.hub.output.contains { $0.contains("circuit breaker half-open -> closed") })
        }
    }

    @Test("a worker killed mid-stream ends the stream with an error event; later requests all succeed")
    func killedMidStream() async throws {
        try await withCluster([
            .init(name: "a", fake: true, env: ["FAKE_TOKENS": "40", "FAKE_TOKEN_MS": "50"]),
            .init(name: "b", fake: true, env: ["FAKE_TOKENS": "40", "FAKE_TOKEN_MS": "50"]),
        ]) { cluster in
            // Start a stream, find out who serves it, kill that worker while it streams.
            async let streamed = cluster.request("POST", "/v1/chat/completions", body: chatBody(stream: true))
            try await cluster.waitUntil("the stream to start") { try await cluster.hubInFlight() == 1 }
            try await Task.sleep(for: .milliseconds(400))  // a few tokens (one per 50 ms) reach the client
            let busy = try await cluster.admin().first { (($0["models"] as? [[String: Any]])?.first?["hub_in_flight"] as? Int ?? 0) > 0 }
            let victim = try #require(busy?["name"] as? String)
            cluster.workers[victim]!.kill9()
            let reply = try await streamed
            #expect(reply.status == 200)
            let events = reply.body.components(separatedBy: "\n\n").filter { $0.hasPrefix("data: ") }
            #expect(events.count >= 3, "some tokens arrived before the kill: \(events.count)")
            let last = try #require(events.last)
            #expect(last.contains(#""error""#) && last.contains("upstream_stream_error"), "final event: \(last)")
            #expect(!reply.body.contains("[DONE]"))
            for _ in 0..<6 {
                let after = try await cluster.request("POST", "/v1/chat/completions", body: chatBody())
                #expect(after.status == 200, "\(after.body)")
                #expect(after.servedBy != victim)
            }
        }
    }

    @Test("a worker that answers 500 is retried on the other: every request succeeds")
    func retriesOn500() async throws {
        try await withCluster([.init(name: "broken", fake: true, env: ["FAKE_STATUS": "500"]),
                               .init(name: "good", fake: true)]) { cluster in
            for _ in 0..<10 {
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody())
                #expect(reply.status == 200, "\(reply.body)")
                #expect(reply.servedBy == "good")
            }
            #expect(cluster.hub.output.contains { $0.contains("attempt failed before the first byte") && $0.contains("HTTP 500") })
            // The repeated 500s also opened the broken worker's breaker.
            try await cluster.waitForModel("broken") { $0["breaker"] as? String == "open" }
        }
    }

    @Test("when every attempt fails, the client gets the last worker's own error answer")
    func allFail() async throws {
        try await withCluster([.init(name: "x", fake: true, env: ["FAKE_STATUS": "503"])], hub: "retries: 1") { cluster in
            let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody())
            #expect(reply.status == 503)
            #expect(reply.body.contains("injected failure"))
        }
    }

    @Test("a saturated cluster queues requests and serves them in arrival order; overflow gets 429")
    func queueing() async throws {
        let hub = """
            queue:
              size: 2
              timeout: 20s
              ahead_per_slot: 0
            """
        try await withCluster([.init(name: "one", fake: true, env: ["FAKE_SLOTS": "1", "FAKE_TTFB_MS": "400"],
                                     preload: true)], hub: hub) { cluster in
            try await cluster.waitForModel("one") { $0["state"] as? String == "ready" && $0["slots_total"] as? Int == 1 }
            let finished = ArrivalLog()
            let overflow = try await withThrowingTaskGroup(of: Int?.self) { group in
                for index in 0..<4 {
                    group.addTask {
                        let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody())
                        if reply.status == 200 { finished.append(index) }
                        return reply.status == 429 ? index : (reply.status == 200 ? nil : -reply.status)
                    }
                    // Arrive in a known order: the first runs, the next two wait in the queue.
                    if index == 0 {
                        try await cluster.waitUntil("the first request to run") { try await cluster.hubInFlight() == 1 }
                    } else if index < 3 {
                        try await cluster.waitUntil("request \(index) to queue") { try await cluster.queued() == index }
                    }
                }
                var overflowed: [Int] = []
                for try await result in group { if let result { overflowed.append(result) } }
                return overflowed
            }
            // One request runs, two wait (queue size 2), the fourth overflows.
            #expect(overflow == [3])
            #expect(finished.values == [0, 1, 2])
            let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody())
            #expect(reply.status == 200)
        }
    }

    @Test("with every slot busy, one request per slot is sent ahead to wait in the engine; the next ones wait in the hub's queue")
    func aheadOfFreeSlot() async throws {
        let hub = """
            queue:
              size: 1
              timeout: 20s
              ahead_per_slot: 1
            """
        try await withCluster([.init(name: "one", fake: true, env: ["FAKE_SLOTS": "1", "FAKE_TTFB_MS": "1500"],
                                     preload: true)], hub: hub) { cluster in
            try await cluster.waitForModel("one") { $0["state"] as? String == "ready" && $0["slots_total"] as? Int == 1 }
            async let first = cluster.request("POST", "/v1/chat/completions", body: chatBody())
            try await cluster.waitUntil("the first request to run") { try await cluster.hubInFlight() == 1 }
            // The only slot is busy: the second goes to the worker anyway, ahead of the slot.
            async let second = cluster.request("POST", "/v1/chat/completions", body: chatBody())
            try await cluster.waitUntil("the second request to be sent ahead") { try await cluster.hubInFlight() == 2 }
            #expect(try await cluster.queued() == 0)
            // The slot and its one place ahead are taken: the third waits in the hub, the fourth overflows.
            async let third = cluster.request("POST", "/v1/chat/completions", body: chatBody())
            try await cluster.waitUntil("the third request to queue") { try await cluster.queued() == 1 }
            #expect(try await cluster.hubInFlight() == 2)
            let fourth = try await cluster.request("POST", "/v1/chat/completions", body: chatBody())
            #expect(fourth.status == 429)
            #expect(try await first.status == 200)
            #expect(try await second.status == 200)
            #expect(try await third.status == 200)
            #expect(try await cluster.hubInFlight() == 0)
        }
    }

    @Test("a client that disconnects while queued leaves the queue at once, and the hub keeps serving")
    func queuedClientLeaves() async throws {
        let hub = """
            queue:
              size: 4
              timeout: 30s
              ahead_per_slot: 0
            """
        try await withCluster([.init(name: "one", fake: true, env: ["FAKE_SLOTS": "1", "FAKE_TTFB_MS": "1500"],
                                     preload: true)], hub: hub) { cluster in
            try await cluster.waitForModel("one") { $0["state"] as? String == "ready" && $0["slots_total"] as? Int == 1 }
            async let first = cluster.request("POST", "/v1/chat/completions", body: chatBody())
            try await cluster.waitUntil("the first request to run") { try await cluster.hubInFlight() == 1 }
            // A raw client sends a whole request, gets queued, then hangs up.
            let fd = try rawRequest(hubURL: cluster.hubURL, token: cluster.clientToken, body: chatBody())
            try await cluster.waitUntil("the raw request to queue") { try await cluster.queued() == 1 }
            close(fd)
            try await cluster.waitUntil("the departed client to leave the queue", timeout: .seconds(3)) {
                try await cluster.queued() == 0
            }
            #expect(try await first.status == 200)
            // Its place was not leaked: the next request is served.
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody()).status == 200)
            #expect(try await cluster.hubInFlight() == 0)
        }
    }

    @Test("a client that leaves before the answer began cancels the request on both hops (the engine stops working for nobody)")
    func clientLeavesBeforeAnswer() async throws {
        try await withCluster([.init(name: "one", fake: true, env: ["FAKE_TTFB_MS": "8000"], preload: true)]) { cluster in
            try await cluster.waitForModel("one") { $0["state"] as? String == "ready" }
            // A non-streamed request: nothing comes back until the engine is done (8 s here).
            let fd = try rawRequest(hubURL: cluster.hubURL, token: cluster.clientToken, body: chatBody())
            try await cluster.waitUntil("the request to reach the worker") {
                try await cluster.admin().contains { $0["in_flight"] as? Int == 1 }
            }
            close(fd)
            // Well before the engine would answer, the hub and then the worker have let go.
            try await cluster.waitUntil("the hub to drop the request", timeout: .seconds(3)) {
                try await cluster.hubInFlight() == 0
            }
            try await cluster.waitUntil("the worker to drop the request", timeout: .seconds(3)) {
                try await cluster.admin().allSatisfy { $0["in_flight"] as? Int == 0 }
            }
            // Nothing leaked: the next request is served.
            try cluster.control("one", #"{"ttfb_ms": 0}"#)
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody()).status == 200)
        }
    }

    @Test("a stream whose worker goes silent past idle_timeout ends: a final error event, then the end of the response")
    func silentStreamEnds() async throws {
        try await withCluster([.init(name: "one", fake: true, env: ["FAKE_TOKEN_MS": "60000", "FAKE_TOKENS": "3"], preload: true,
                                     extra: "stop_grace: 1s")],
                              hub: "idle_timeout: 1s") { cluster in
            try await cluster.waitForModel("one") { $0["state"] as? String == "ready" }
            // The whole response must end on its own; 20 s is only a guard against a hang.
            let reply = try await withThrowingTaskGroup(of: TestCluster.Reply?.self) { group in
                group.addTask { try await cluster.request("POST", "/v1/chat/completions", body: chatBody(stream: true)) }
                group.addTask {
                    try await Task.sleep(for: .seconds(20))
                    return nil
                }
                let first = try await group.next()!
                group.cancelAll()
                return first
            }
            let ended = try #require(reply, "the stream did not end after its error event")
            let last = ended.body.components(separatedBy: "\n\n").filter { $0.hasPrefix("data: ") }.last ?? ""
            #expect(last.contains("upstream_stream_error") && last.contains("no data for"), "final event: \(last)")
            #expect(try await cluster.hubInFlight() == 0)
        }
    }

    @Test("a request that waits past the queue timeout gets 503 with Retry-After")
    func queueTimeout() async throws {
        let hub = """
            queue:
              size: 4
              timeout: 300ms
              ahead_per_slot: 0
            """
        try await withCluster([.init(name: "one", fake: true, env: ["FAKE_SLOTS": "1", "FAKE_TTFB_MS": "1500"],
                                     preload: true)], hub: hub) { cluster in
            try await cluster.waitForModel("one") { $0["state"] as? String == "ready" && $0["slots_total"] as? Int == 1 }
            async let first = cluster.request("POST", "/v1/chat/completions", body: chatBody())
            try await cluster.waitUntil("the first request to run") { try await cluster.hubInFlight() == 1 }
            let second = try await cluster.request("POST", "/v1/chat/completions", body: chatBody())
            #expect(second.status == 503)
            #expect(second.errorCode == "queue_timeout")
            #expect(second.headers.first(name: "retry-after") != nil)
            #expect(try await first.status == 200)
        }
    }

    @Test("1,000 requests over workers weighted 1:2:4 split in that ratio")
    func weightedDistribution() async throws {
        try await withCluster([
            .init(name: "w1", fake: true, env: ["FAKE_SLOTS": "64"], weight: 1, preload: true),
            .init(name: "w2", fake: true, env: ["FAKE_SLOTS": "64"], weight: 2, preload: true),
            .init(name: "w4", fake: true, env: ["FAKE_SLOTS": "64"], weight: 4, preload: true),
        ]) { cluster in
            for name in ["w1", "w2", "w4"] {
                try await cluster.waitForModel(name) { $0["state"] as? String == "ready" && $0["slots_total"] as? Int == 64 }
            }
            var counts: [String: Int] = [:]
            for _ in 0..<1000 {
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 1))
                counts[reply.servedBy ?? "?", default: 0] += 1
            }
            print("caravan-measure: 1000 requests over weights 1:2:4 -> w1=\(counts["w1"] ?? 0) w2=\(counts["w2"] ?? 0) w4=\(counts["w4"] ?? 0)")
            #expect(counts.values.reduce(0, +) == 1000 && counts["?"] == nil)
            // Exact split is 143:286:571; heartbeats that catch a request in flight move a few.
            #expect(abs((counts["w1"] ?? 0) - 143) <= 15)
            #expect(abs((counts["w2"] ?? 0) - 286) <= 20)
            #expect(abs((counts["w4"] ?? 0) - 571) <= 25)
        }
    }
}
