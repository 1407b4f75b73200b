import Wire
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import Auth
import Config
import TestSupport

/// The operator's view and controls: Prometheus metrics read by a real parser, drain and
/// unload with the event stream, hub reload, graceful shutdown, JSON logs with request ids,
/// and the dashboard in a real browser.
@Suite("Operate", .serialized)
struct OperateTests {
    struct Sample: Sendable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    /// Parses an exposition with PyPI's prometheus_client (scripts/lib/parse-metrics.py).
    static func parse(_ text: String) throws -> [Sample] {
        let output = try runProcess(["python3", repositoryRoot.appendingPathComponent("scripts/lib/parse-metrics.py").path],
                                    input: text)
        guard let rows = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]] else {
            throw TestFailure("parser output: \(output)")
        }
        return rows.map { Sample(name: $0["name"] as! String, labels: $0["labels"] as? [String: String] ?? [:],
                                 value: ($0["value"] as? NSNumber)?.doubleValue ?? .nan) }
    }

    static func sum(_ samples: [Sample], _ name: String, where match: [String: String] = [:]) -> Double {
        samples.filter { sample in sample.name == name && match.allSatisfy { key, value in sample.labels[key] == value } }
            .map(\.value)
            .reduce(0, +)
    }

    /// Runs `body`, naming `what` in the failure.
    static func phase<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch { throw TestFailure("\(what): \(error)") }
    }

    /// Reads a whole (streamed) answer.
    static func stream(_ cluster: TestCluster, _ body: String, headers: [(String, String)] = []) async throws
        -> (status: Int, headers: HTTPHeaders, text: String)
    {
        var request = HTTPClientRequest(url: cluster.hubURL + "/v1/chat/completions")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(cluster.clientToken)")
        request.headers.add(name: "Content-Type", value: "application/json")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await cluster.client.execute(request, timeout: .seconds(60))
        var text = ""
        for try await chunk in response.body { text += String(buffer: chunk) }
        return (Int(response.status.code), response.headers, text)
    }

    @Test("Hub and worker /metrics after real traffic: a real parser reads them, the counts match the traffic")
    func metrics() async throws {
        let open = #"metrics: {public: true, listen: "127.0.0.1:0"}"#
        let specs = [TestCluster.WorkerSpec(name: "a", extra: open), TestCluster.WorkerSpec(name: "b")]
        try await TestCluster.start(specs: specs, hubSettings: open).using { cluster in
            var completion = 0.0
            var prompt = 0.0
            for _ in 0..<4 {
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 4))
                #expect(reply.status == 200)
                let usage = try #require(reply.json?["usage"] as? [String: Any])
                completion += (usage["completion_tokens"] as? Double) ?? 0
                prompt += (usage["prompt_tokens"] as? Double) ?? 0
            }
            for _ in 0..<2 {
                let body = #"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":6,"stream":true,"stream_options":{"include_usage":true}}"#
                let (status, _, text) = try await Self.stream(cluster, body)
                #expect(status == 200)
                let usageLine = try #require(text.split(separator: "\n").last { $0.contains(#""usage":{"#) })
                let event = try #require(try JSONSerialization.jsonObject(with: Data(usageLine.dropFirst(6).utf8)) as? [String: Any])
                let usage = try #require(event["usage"] as? [String: Any])
                completion += (usage["completion_tokens"] as? Double) ?? 0
                prompt += (usage["prompt_tokens"] as? Double) ?? 0
            }
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), token: .some("not-a-token")).status == 401)
            let unknown = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "no-such-model-x1"))
            #expect(unknown.status == 404)

            // Admin credential by default.
            #expect(try await cluster.request("GET", "/metrics", token: .some(nil)).status == 401)
            #expect(try await cluster.request("GET", "/metrics").status == 403)
            let hubText = try await cluster.request("GET", "/metrics", token: .some(cluster.adminToken))
            #expect(hubText.contentType?.hasPrefix("text/plain") == true)
            #expect(!hubText.body.contains("no-such-model-x1"), "a client's model name must not become a label")
            let hub = try Self.parse(hubText.body)
            #expect(Self.sum(hub, "caravan_hub_requests_total", where: ["outcome": "ok"]) == 6)
            #expect(Self.sum(hub, "caravan_hub_requests_total", where: ["outcome": "rejected_auth", "model": "unknown"]) == 1)
            #expect(Self.sum(hub, "caravan_hub_requests_total", where: ["outcome": "client_error", "model": "unknown", "code": "404"]) == 1)
            #expect(Self.sum(hub, "caravan_hub_request_duration_seconds_count", where: ["model": "tiny"]) == 6)
            #expect(Self.sum(hub, "caravan_hub_ttft_seconds_count", where: ["model": "tiny"]) == 2)
            #expect(Self.sum(hub, "caravan_hub_completion_tokens_total", where: ["model": "tiny"]) == completion)
            #expect(Self.sum(hub, "caravan_hub_prompt_tokens_total", where: ["model": "tiny"]) == prompt)
            #expect(completion > 0)
            #expect(Self.sum(hub, "caravan_hub_build_info") == 1)
            #expect(Set(hub.filter { $0.name == "caravan_worker_heartbeat_age_seconds" }.compactMap { $0.labels["worker"] }) == ["a", "b"])
            #expect(Self.sum(hub, "caravan_model_state", where: ["state": "ready"]) >= 1)
            #expect(Self.sum(hub, "caravan_hub_breaker_state") == 0)
            #expect(Self.sum(hub, "caravan_hub_in_flight") == 0)
            #expect(Self.sum(hub, "process_resident_memory_bytes") > 1_000_000)
            #expect(Self.sum(hub, "process_open_fds") > 3)
            #expect(Self.sum(hub, "process_cpu_seconds_total") > 0)

            // Each worker's series and its engine's own, through the hub with the admin credential.
            var engineTokens = 0.0
            var starts = 0.0
            for name in ["a", "b"] {
                let reply = try await cluster.request("GET", "/admin/workers/\(name)/metrics", token: .some(cluster.adminToken))
                #expect(reply.status == 200)
                let worker = try Self.parse(reply.body)
                starts += Self.sum(worker, "caravan_worker_engine_starts_total", where: ["model": "tiny"])
                engineTokens += Self.sum(worker, "llamacpp:tokens_predicted_total", where: ["model": "tiny"])
                #expect(Self.sum(worker, "caravan_worker_draining") == 0)
                #expect(Self.sum(worker, "process_resident_memory_bytes") > 1_000_000)
            }
            #expect(starts >= 1)
            #expect(engineTokens == completion, "the engines' own token counters, re-exported with a model label")

            // `metrics.public`: the same expositions on their own addresses, without a credential.
            for (process, label) in [(cluster.hub, "caravan-hub metrics on "), (try #require(cluster.workers["a"]), "caravan-worker metrics on ")] {
                let line = try await process.waitForLine(containing: label)
                let url = String(line.split(separator: " ").last!)
                let response = try await cluster.client.execute(HTTPClientRequest(url: url), timeout: .seconds(10))
                #expect(response.status == .ok)
                let text = String(buffer: try await response.body.collect(upTo: 4 << 20))
                #expect(!(try Self.parse(text)).isEmpty)
                let other = try await cluster.client.execute(HTTPClientRequest(url: url.replacingOccurrences(of: "/metrics", with: "/v1/models")),
                                                             timeout: .seconds(10))
                #expect(other.status == .notFound, "the open listener serves /metrics only")
            }
        }
    }

    /// What an event stream sent up to its first `data:` line, or after 10 s what it sent by then.
    static func firstEvent(of body: HTTPClientResponse.Body) async throws -> String {
        try await withThrowingTaskGroup(of: String.self) { group in
            group.addTask {
                var text = ""
                for try await chunk in body {
                    text += String(buffer: chunk)
                    if text.contains("data:") { break }
                }
                return text
            }
            group.addTask {
                try await Task.sleep(for: .seconds(10))
                return "(no event within 10 s)"
            }
            defer { group.cancelAll() }
            return try await group.next() ?? ""
        }
    }

    /// Workers reached the way `connect` says: `inbound` (the hub dials them) or `outbound`
    /// (behind NAT: they dial the hub's `tunnel_listen`, and every admin call rides their tunnel).
    static func cluster(_ connect: String, _ specs: [TestCluster.WorkerSpec], hubSettings: String = "") async throws -> TestCluster {
        guard connect == "outbound" else { return try await TestCluster.start(specs: specs, hubSettings: hubSettings) }
        let port = try freePort()
        let outbound = specs.map { spec -> TestCluster.WorkerSpec in
            var spec = spec
            spec.extra += (spec.extra.isEmpty ? "" : "\n") + "connect: outbound"
            return spec
        }
        return try await TestCluster.start(specs: outbound, hubSettings: "tunnel_listen: \"127.0.0.1:\(port)\"\n" + hubSettings)
    }

    @Test("Drain: in-flight streams finish, new requests go elsewhere, state visible everywhere; metrics, a log follow, unload, load and events",
          arguments: ["inbound", "outbound"])
    func drainUnloadEvents(connect: String) async throws {
        let specs = ["a", "b"].map { TestCluster.WorkerSpec(name: $0, fake: true, env: ["FAKE_TOKEN_MS": "40"]) }
        try await Self.cluster(connect, specs).using { cluster in
            if connect == "outbound" { #expect(try await cluster.admin().allSatisfy { ($0["url"] as? String)?.hasPrefix("tunnel://") == true }) }
            // The event stream, read in the background.
            let events = TextCollector()
            var request = HTTPClientRequest(url: cluster.hubURL + "/admin/events")
            request.headers.add(name: "Authorization", value: "Bearer \(cluster.adminToken)")
            let response = try await cluster.client.execute(request, timeout: .seconds(120))
            #expect(response.headers.first(name: "content-type") == "text/event-stream")
            let reader = Task {
                for try await chunk in response.body { events.append(String(buffer: chunk)) }
            }
            defer { reader.cancel() }
            try await cluster.waitUntil("the first snapshot") { events.text.contains("event: snapshot") }

            // A 2-second stream in flight on one worker while it is drained.
            let long = Task { try await Self.stream(cluster, #"{"model":"tiny","messages":[],"stream":true,"fake_tokens":50}"#) }
            try await cluster.waitUntil("the stream to start") { try await cluster.hubInFlight() == 1 }
            let busy = try #require(try await cluster.admin().first { worker in
                ((worker["models"] as? [[String: Any]]) ?? []).contains { $0["hub_in_flight"] as? Int == 1 }
            }?["name"] as? String)
            let other = busy == "a" ? "b" : "a"
            let drained = try await cluster.request("POST", "/admin/workers/\(busy)/drain", token: .some(cluster.adminToken))
            #expect(drained.status == 200)
            #expect(drained.json?["worker_acknowledged"] as? Bool == true)
            for _ in 0..<6 {
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody())
                #expect(reply.status == 200)
                #expect(reply.servedBy == other)
            }
            let (status, headers, text) = try await long.value
            #expect(status == 200)
            #expect(headers.first(name: "x-served-by") == busy)
            #expect(text.contains("data: [DONE]") && text.contains("t49") && !text.contains("error"))
            // Visible in the admin view, the worker's own metrics and its reports to the hub.
            #expect(try await cluster.admin().first { $0["name"] as? String == busy }?["draining"] as? Bool == true)
            let workerMetrics = try await cluster.request("GET", "/admin/workers/\(busy)/metrics", token: .some(cluster.adminToken))
            #expect(Self.sum(try Self.parse(workerMetrics.body), "caravan_worker_draining") == 1)
            let models = try await cluster.request("GET", "/v1/models")
            let entry = try #require((models.json?["data"] as? [[String: Any]])?.first)
            #expect((entry["caravan"] as? [String: Any])?["workers"] as? Int == 2)
            #expect(((entry["caravan"] as? [String: Any])?["states"] as? [String: Int])?["draining"] == 1)

            // A log follow through the hub: the engine's lines so far, then it stays open.
            var follow = HTTPClientRequest(url: cluster.hubURL + "/admin/workers/\(busy)/logs?model=tiny&follow=true")
            follow.headers.add(name: "Authorization", value: "Bearer \(cluster.adminToken)")
            let followed = try await cluster.client.execute(follow, timeout: .seconds(30))
            #expect(followed.status == .ok && followed.headers.first(name: "content-type") == "text/event-stream")
            let firstEvent = try await Self.firstEvent(of: followed.body)
            #expect(firstEvent.contains("data:"), "\(firstEvent)")

            #expect(try await cluster.request("POST", "/admin/workers/\(busy)/undrain", token: .some(cluster.adminToken)).status == 200)
            try await cluster.waitUntil("both workers to serve again") {
                var served: Set<String> = []
                for _ in 0..<6 { served.insert(try await cluster.request("POST", "/v1/chat/completions", body: chatBody()).servedBy ?? "") }
                return served == ["a", "b"]
            }

            // Unload, then load, one model on one worker.
            let unload = try await cluster.request("POST", "/admin/workers/\(other)/models/tiny/unload", token: .some(cluster.adminToken))
            #expect(unload.status == 200)
            try await cluster.waitForModel(other) { $0["state"] as? String == "not-loaded" }
            #expect(try await cluster.request("POST", "/admin/workers/\(other)/models/tiny/load", token: .some(cluster.adminToken)).status == 200)
            try await cluster.waitForModel(other) { $0["state"] as? String == "ready" }
            #expect(try await cluster.request("POST", "/admin/workers/nobody/drain", token: .some(cluster.adminToken)).errorCode
                == "worker_not_found")
            #expect(try await cluster.request("POST", "/admin/workers/\(other)/drain").status == 403)

            try await cluster.waitUntil("the events") {
                let text = events.text
                return text.contains("event: worker_draining") && text.contains("event: worker_undrained")
                    && text.contains(#""to":"not-loaded""#) && text.contains(#""to":"ready""#)
            }
            // One event per change, whichever side (hub or worker report) saw it first.
            #expect(events.text.components(separatedBy: "event: worker_draining").count == 2)
        }
    }

    @Test("Hub reload (POST /admin/reload and SIGHUP): a new worker registers, a removed API key gets 401, a broken file changes nothing")
    func reload() async throws {
        let key = "sk-reload-\(UUID().uuidString)"
        let digest = sha256Hex(key)
        let auth = "api_keys:\n  - {name: ci, sha256: \"\(digest)\"}"
        try await TestCluster.start(specs: [TestCluster.WorkerSpec(name: "a", fake: true)], authSettings: auth).using { cluster in
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), token: .some(key)).status == 200)
            let original = try String(contentsOfFile: cluster.configPath, encoding: .utf8)

            // Add a worker entry (a copy of a's with another name and engine ports), reload, start it.
            let lines = original.components(separatedBy: "\n")
            let start = try #require(lines.firstIndex { $0.hasPrefix("  - name: a") })
            let end = lines[(start + 1)...].firstIndex { $0.hasPrefix("  - name: ") } ?? lines.count
            let entry = lines[start..<end].map { line -> String in
                line.replacingOccurrences(of: "- name: a", with: "- name: c")
                    .replacingOccurrences(of: "credential_file: a.credential", with: "credential_file: c.credential")
                    .replacingOccurrences(of: "FAKE_NAME: \"a\"", with: "FAKE_NAME: \"c\"")
                    .replacingOccurrences(of: "a.json", with: "c.json")
            }.map { line in
                guard line.contains("ports:"), let range = line.range(of: #"\d+-\d+"#, options: .regularExpression) else { return line }
                return line.replacingCharacters(in: range, with: "29000-29099")
            }
            try (lines + entry).joined(separator: "\n").write(toFile: cluster.configPath, atomically: true, encoding: .utf8)
            try FileManager.default.copyItem(at: cluster.directory.appendingPathComponent("a.credential"),
                                             to: cluster.directory.appendingPathComponent("c.credential"))
            // c's own credential: the hub derives it from the cluster key and c's name.
            let workerKey = Secret(cluster.secrets.worker)
            try WorkerKey.derive(clusterKey: workerKey, worker: "c").value
                .write(to: cluster.directory.appendingPathComponent("c.credential"), atomically: true, encoding: .utf8)
            let c = try TestCluster.startWorker("c", configPath: cluster.configPath, hubURL: cluster.hubURL)
            defer { Task { await c.stop() } }
            // It tried to register, and the hub refused it: not in the file the hub runs with yet.
            let refused = try await c.waitForLine(containing: "cannot reach hub", timeout: .seconds(10))
            #expect(refused.contains("status=403"), "\(refused)")
            #expect(try await cluster.admin().count == 1)
            let reloaded = try await cluster.request("POST", "/admin/reload", token: .some(cluster.adminToken))
            #expect(reloaded.status == 200)
            #expect(reloaded.json?["workers_added"] as? [String] == ["c"])
            try await cluster.waitForLiveWorkers(2)

            // A weight changed in the file: the hub routes by it from the worker's next report.
            #expect(try await cluster.admin().first { $0["name"] as? String == "a" }?["weight"] as? Double == 1)
            let weighted = try String(contentsOfFile: cluster.configPath, encoding: .utf8)
                .replacingOccurrences(of: "weight: 1.0", with: "weight: 5.0")
            try weighted.write(toFile: cluster.configPath, atomically: true, encoding: .utf8)
            #expect(try await cluster.request("POST", "/admin/reload", token: .some(cluster.adminToken)).status == 200)
            try await cluster.waitUntil("the new weight") {
                try await cluster.admin().first { $0["name"] as? String == "a" }?["weight"] as? Double == 5
            }

            // Remove the API key; reload with SIGHUP.
            let withoutKey = try String(contentsOfFile: cluster.configPath, encoding: .utf8)
                .replacingOccurrences(of: "  - {name: ci, sha256: \"\(digest)\"}", with: "  []")
                .replacingOccurrences(of: "api_keys:\n", with: "api_keys:")
            try withoutKey.write(toFile: cluster.configPath, atomically: true, encoding: .utf8)
            kill(cluster.hub.pid, SIGHUP)
            try await cluster.waitUntil("the key to be refused") {
                try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), token: .some(key)).status == 401
            }
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody()).status == 200)

            // A broken file: the one-line error, nothing changes.
            try (withoutKey + "\nhub: {retries: 99}\n").write(toFile: cluster.configPath, atomically: true, encoding: .utf8)
            let broken = try await cluster.request("POST", "/admin/reload", token: .some(cluster.adminToken))
            #expect(broken.status == 400)
            #expect(broken.errorCode == "reload_failed")
            #expect(broken.json.flatMap { ($0["error"] as? [String: Any])?["message"] as? String }?.contains("\n") == false)
            try await cluster.waitForLiveWorkers(2)
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody()).status == 200)
            #expect(cluster.hub.output.contains { $0.contains("reload failed") })
        }
    }

    @Test("SIGTERM: the worker deregisters first and its stream finishes; the hub lets short streams finish and ends long ones with an SSE error")
    func gracefulShutdown() async throws {
        let specs = ["a", "b"].map { TestCluster.WorkerSpec(name: $0, fake: true, env: ["FAKE_TOKEN_MS": "50"]) }
        try await TestCluster.start(specs: specs, hubSettings: "shutdown_grace: 2s").using { cluster in
            // Worker side: a 1.5 s stream on the worker that is stopped.
            let first = Task { try await Self.stream(cluster, #"{"model":"tiny","messages":[],"stream":true,"fake_tokens":30}"#) }
            try await cluster.waitUntil("the stream to start") { try await cluster.hubInFlight() == 1 }
            let busy = try #require(try await cluster.admin().first { worker in
                ((worker["models"] as? [[String: Any]]) ?? []).contains { $0["hub_in_flight"] as? Int == 1 }
            }?["name"] as? String)
            let worker = try #require(cluster.workers[busy])
            kill(worker.pid, SIGTERM)
            try await cluster.waitUntil("the worker to deregister", timeout: .seconds(1)) {
                try await !cluster.admin().contains { $0["name"] as? String == busy }
            }
            let (status, _, text) = try await Self.phase("worker stream") { try await first.value }
            #expect(status == 200)
            #expect(text.contains("t29") && text.contains("data: [DONE]") && !text.contains("error"))
            try await cluster.waitUntil("the worker to exit") { !worker.isRunning }

            // Hub side: a short and a long stream in flight at SIGTERM.
            let short = Task { try await Self.stream(cluster, #"{"model":"tiny","messages":[],"stream":true,"fake_tokens":10}"#) }
            let long = Task { try await Self.stream(cluster, #"{"model":"tiny","messages":[],"stream":true,"fake_tokens":400}"#) }
            try await cluster.waitUntil("both streams to start") { try await cluster.hubInFlight() == 2 }
            let signalled = ContinuousClock.now
            kill(cluster.hub.pid, SIGTERM)
            let shortAnswer = try await Self.phase("short stream") { try await short.value }
            #expect(shortAnswer.text.contains("t9") && shortAnswer.text.contains("data: [DONE]") && !shortAnswer.text.contains("error"))
            let longAnswer = try await Self.phase("long stream") {
                do { return try await long.value } catch {
                    print(cluster.hub.output.suffix(15).joined(separator: "\n"))
                    throw error
                }
            }
            #expect(longAnswer.text.contains("server_shutting_down"))
            #expect(!longAnswer.text.contains("t399"))
            try await cluster.waitUntil("the hub to exit", timeout: .seconds(10)) { !cluster.hub.isRunning }
            #expect(ContinuousClock.now - signalled < .seconds(10))
            // Access lines are written in batches: none is lost, the three streams' lines are all
            // there, the last one ended by the shutdown included.
            try await cluster.waitUntil("every access line", timeout: .seconds(3)) {
                cluster.hub.output.filter { $0.contains("caravan.access") && $0.contains("POST /v1/chat/completions") }.count == 3
            }
        }
    }

    @Test("SIGTERM: an answer still awaited and a request still queued when the grace ends get 503 server_shutting_down; the hub exits")
    func shutdownEndsWaiting() async throws {
        // One slot, no requests sent ahead: the first request holds it (its answer takes 20 s),
        // the second waits in the hub's queue.
        let spec = TestCluster.WorkerSpec(name: "a", fake: true, env: ["FAKE_SLOTS": "1", "FAKE_TTFB_MS": "20000"], preload: true)
        try await TestCluster.start(specs: [spec], hubSettings: "shutdown_grace: 1s\nqueue: {ahead_per_slot: 0, timeout: 60s}").using { cluster in
            try await cluster.waitForModel("a") { $0["state"] as? String == "ready" && $0["slots_total"] as? Int == 1 }
            let held = Task { try await cluster.request("POST", "/v1/chat/completions", body: chatBody()) }
            try await cluster.waitUntil("the slot to be taken") { try await cluster.hubInFlight() == 1 }
            let queued = Task { try await cluster.request("POST", "/v1/chat/completions", body: chatBody()) }
            try await cluster.waitUntil("the second request to queue") { try await cluster.queued() == 1 }
            let signalled = ContinuousClock.now
            kill(cluster.hub.pid, SIGTERM)
            for (what, task) in [("awaited answer", held), ("queued request", queued)] {
                let reply = try await Self.phase(what) { try await task.value }
                #expect(reply.status == 503, "\(what): \(reply.body)")
                #expect(reply.errorCode == "server_shutting_down", "\(what)")
            }
            try await cluster.waitUntil("the hub to exit", timeout: .seconds(10)) { !cluster.hub.isRunning }
            #expect(ContinuousClock.now - signalled < .seconds(8), "ended by the grace, not by the 20 s answer or the 60 s queue timeout")
        }
    }
}
