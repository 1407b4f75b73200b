import Foundation
import Testing
import TestSupport

/// End-to-end tests with real processes: hub + workers + the real llama-server.
/// Serialized: each test runs its own cluster, and the CI machine has two cores.
@Suite("Cluster end to end", .serialized)
struct ClusterTests {
    @Test("plain and streamed chat completions flow through the hub, spread over both workers")
    func completions() async throws {
        try await TestCluster.start().using { cluster in
            let models = try await cluster.request("GET", "/v1/models")
            #expect(models.status == 200)
            let ids = (models.json?["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
            #expect(ids == ["tiny"])

            // From a web page's origin: llama-server echoes the Origin as allowed; the hub
            // has no cors_origins here, so the answer must carry no CORS header at all.
            let plain = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 8),
                                                  headers: [("Origin", "https://evil.example")])
            #expect(plain.status == 200, "\(plain.body)")
            #expect(!plain.headers.contains { $0.name.lowercased().hasPrefix("access-control-") }, "\(plain.headers)")
            #expect(plain.json?["object"] as? String == "chat.completion")
            let choice = (plain.json?["choices"] as? [[String: Any]])?.first
            let content = (choice?["message"] as? [String: Any])?["content"] as? String
            #expect((content ?? "").count > 0, "the model produced text: \(plain.body)")
            let usage = plain.json?["usage"] as? [String: Any]
            #expect(usage?["completion_tokens"] as? Int == 8)

            let streamed = try await cluster.request("POST", "/v1/chat/completions",
                                                     body: chatBody(model: "tiny-chat", maxTokens: 6, stream: true))
            #expect(streamed.status == 200)
            #expect(streamed.contentType?.hasPrefix("text/event-stream") == true)
            let events = streamed.body.components(separatedBy: "\n\n").filter { $0.hasPrefix("data: ") }
            #expect(events.count >= 6, "several data: events: \(streamed.body)")
            #expect(events.last == "data: [DONE]")
            for event in events.dropLast() {
                let json = try JSONSerialization.jsonObject(with: Data(event.dropFirst(6).utf8)) as? [String: Any]
                #expect(json?["object"] as? String == "chat.completion.chunk")
            }

            let completion = try await cluster.request(
                "POST", "/v1/completions", body: #"{"model":"tiny","prompt":"Once","max_tokens":4}"#)
            #expect(completion.status == 200, "\(completion.body)")
            #expect(completion.json?["object"] as? String == "text_completion")

            let embedding = try await cluster.request("POST", "/v1/embeddings", body: #"{"model":"tiny","input":"hello"}"#)
            #expect(embedding.status == 200, "\(embedding.body)")
            let vector = ((embedding.json?["data"] as? [[String: Any]])?.first?["embedding"] as? [Double]) ?? []
            #expect(vector.count == 64, "the tiny model embeds into 64 dimensions")

            // Concurrent requests: every worker starts at most one llama-server, whatever the
            // interleaving (the hub prefers a worker whose model is already loaded).
            try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<6 {
                    group.addTask {
                        try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 1)).status
                    }
                }
                for try await status in group { #expect(status == 200) }
            }
            let engines = cluster.workers.mapValues { children(of: $0.pid, matching: "llama-server").count }
            #expect(engines.values.allSatisfy { $0 <= 1 }, "\(engines)")
            #expect(engines.values.reduce(0, +) >= 1)
        }
    }

    @Test("a killed worker takes its llama-server along, expires, and requests keep succeeding")
    func killedWorker() async throws {
        try await TestCluster.start().using { cluster in
            for _ in 0..<2 {
                #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 1)).status == 200)
            }
            // The victim is a worker that runs a llama-server (the one that served).
            let (victimName, victim) = try #require(cluster.workers.first {
                !children(of: $0.value.pid, matching: "llama-server").isEmpty
            })
            let engines = children(of: victim.pid, matching: "llama-server")
            #expect(engines.count == 1)
            victim.kill9()
            // Requests right after the kill succeed: the hub skips the unreachable worker.
            for _ in 0..<4 {
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 1))
                #expect(reply.status == 200, "\(reply.body)")
            }
            try await cluster.waitForLiveWorkers(1, timeout: .seconds(5))
            let expired = try await cluster.hub.waitForLine(containing: "worker expired", timeout: .seconds(2))
            #expect(expired.contains("worker=\(victimName)"))
            for _ in 0..<4 {
                #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 1)).status == 200)
            }
            // The killed worker's llama-server died with it (no orphan).
            let deadline = ContinuousClock.now + .seconds(5)
            while engines.contains(where: isRunning) && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(!engines.contains(where: isRunning), "llama-server \(engines) outlived its worker")
        }
    }

    @Test("workers re-register after a hub restart (the new hub raises a low open-file limit); graceful worker stop leaves no llama-server")
    func hubRestart() async throws {
        let cluster = try await TestCluster.start(workers: ["a"])
        var newHub: ManagedProcess?
        do {
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 1)).status == 200)
            // The new hub takes over the exact port the old one held (workers keep that URL).
            let port = try #require(URL(string: cluster.hubURL)?.port)
            await cluster.hub.stop()
            // Started with a soft open-file limit of 256, as a shell might leave it: the hub
            // raises it to the hard limit (each proxied stream holds two descriptors).
            let hub = try ManagedProcess(name: "hub2", executable: URL(fileURLWithPath: "/bin/sh"),
                                         arguments: ["-c", #"ulimit -Sn 256 && exec "$0" "$@""#,
                                                     TestCluster.binDirectory.appendingPathComponent("caravan-hub").path,
                                                     "--config", cluster.configPath],
                                         environment: ["CARAVAN_HUB_LISTEN": "127.0.0.1:\(port)"])
            newHub = hub
            _ = try await hub.waitForLine(containing: "listening on")
            let limits = try String(contentsOfFile: "/proc/\(hub.pid)/limits", encoding: .utf8)
            let files = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max open files") })
            let numbers = files.split(separator: " ").compactMap { Int($0) }
            #expect(numbers.count == 2 && numbers[0] == numbers[1] && numbers[0] > 256, "\(files)")
            _ = try await hub.waitForLine(containing: "worker registered", timeout: .seconds(10))
            let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 2))
            #expect(reply.status == 200, "\(reply.body)")

            let worker = try #require(cluster.workers["a"])
            let engines = children(of: worker.pid, matching: "llama-server")
            #expect(engines.count == 1)
            await worker.stop()
            #expect(!worker.isRunning)
            #expect(!engines.contains(where: isRunning), "graceful stop terminates llama-server")
            _ = try await hub.waitForLine(containing: "worker deregistered", timeout: .seconds(5))
        } catch {
            await newHub?.stop()
            await cluster.shutdown()
            throw error
        }
        await newHub?.stop()
        await cluster.shutdown()
    }

    @Test("the official openai Python SDK works against the hub, plain and streamed")
    func openAISDK() async throws {
        try await TestCluster.start(workers: ["a"]).using { cluster in
            let script = """
                import json, sys
                from openai import OpenAI
                client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2])
                chat = client.chat.completions.create(model="tiny", max_tokens=5,
                    messages=[{"role": "user", "content": "hi"}])
                chunks = [c for c in client.chat.completions.create(model="tiny", max_tokens=5, stream=True,
                    messages=[{"role": "user", "content": "hi"}])]
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                models = [m.id for m in client.models.list()]
                try:
                    client.chat.completions.create(model="nope", messages=[])
                    missing = "no error"
                except Exception as e:
                    missing = type(e).__name__ + ":" + str(getattr(e, "status_code", ""))
                print(json.dumps({"content": chat.choices[0].message.content, "chunks": len(chunks),
                                  "streamed": text, "models": models, "missing": missing}))
                """
            let python = try ManagedProcess(name: "openai", executable: URL(fileURLWithPath: "/usr/bin/env"),
                                            arguments: ["python3", "-c", script, cluster.hubURL, cluster.clientToken])
            let line = try await python.waitForLine(containing: "{\"content\"", timeout: .seconds(60))
            let result = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect((result["content"] as? String)?.isEmpty == false)
            #expect((result["chunks"] as? Int ?? 0) >= 5)
            #expect((result["streamed"] as? String)?.isEmpty == false)
            #expect(result["models"] as? [String] == ["tiny"])
            #expect(result["missing"] as? String == "NotFoundError:404")
        }
    }
}
