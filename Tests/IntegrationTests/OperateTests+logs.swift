import Wire
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import Auth
import Config
import TestSupport

/// What operators read and click: JSON logs with request ids and no secrets, and the
/// dashboard in headless Chromium (over inbound and outbound workers).
extension OperateTests {
    @Test("JSON logs: one object per line; request ids answered and carried hub -> worker; no secret in any log")
    func jsonLogsRequestIDsSecrets() async throws {
        let key = "sk-logs-\(UUID().uuidString)"
        let auth = "api_keys:\n  - {name: ci, sha256: \"\(sha256Hex(key))\"}"
        try await TestCluster.start(specs: [TestCluster.WorkerSpec(name: "a")], authSettings: auth,
                                    environment: ["CARAVAN_LOG_FORMAT": "json", "CARAVAN_LOG_LEVEL": "trace"]).using { cluster in
            let traced = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), headers: [("X-Request-Id", "trace-42.a:b_c")])
            #expect(traced.status == 200)
            #expect(traced.headers.first(name: "x-request-id") == "trace-42.a:b_c")
            let hostile = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(),
                                                    headers: [("X-Request-Id", "evil\" id {injected}")])
            let generated = try #require(hostile.headers.first(name: "x-request-id"))
            #expect(generated.count == 16 && generated.allSatisfy(\.isHexDigit))
            let streamed = try await Self.stream(cluster, chatBody(stream: true), headers: [("X-Request-Id", "stream-7")])
            #expect(streamed.headers.first(name: "x-request-id") == "stream-7")
            let failed = try await cluster.request("POST", "/v1/chat/completions", body: "{", headers: [("X-Request-Id", "bad-9")])
            #expect(failed.status == 400 && failed.headers.first(name: "x-request-id") == "bad-9")

            // A small security table, so the logs see every kind of credential.
            let forged = try await TokenVerifier(secret: Secret(String(repeating: "f", count: 64))).sign(
                CaravanClaims(sub: "mallory", expires: Date().addingTimeInterval(60), role: .admin))
            #expect(try await cluster.request("GET", "/admin/workers", token: .some(forged)).status == 401)
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), token: .some(key)).status == 200)
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), token: .some(key + "x")).status == 401)
            #expect(try await cluster.request("GET", "/admin/workers", token: .some(cluster.clientToken)).status == 403)
            #expect(try await cluster.request("GET", "/metrics", token: .some(cluster.adminToken)).status == 200)
            let worker = try #require(cluster.workers["a"])
            // The access lines of the streamed request are written when its last byte went out,
            // in the next batch of access lines (within 50 ms).
            for (process, id) in [(cluster.hub, "stream-7"), (cluster.hub, "bad-9"), (worker, "stream-7")] {
                try await cluster.waitUntil("the access line of \(id)") {
                    process.output.contains { $0.contains(#""logger":"caravan.access""#) && $0.contains(#""request_id":"\#(id)""#) }
                }
            }
            var objects: [(source: String, object: [String: Any])] = []
            for (source, lines) in [("hub", cluster.hub.output), ("worker", worker.output)] {
                for line in lines where !line.isEmpty && !line.hasPrefix("caravan-") {
                    let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                    #expect(object != nil, "not one JSON object: \(line)")
                    if let object {
                        #expect(object["time"] is String && object["level"] is String && object["logger"] is String
                            && object["message"] is String)
                        objects.append((source, object))
                    }
                }
            }
            func accessLine(_ source: String, _ id: String) -> [String: Any]? {
                objects.first { $0.source == source && $0.object["logger"] as? String == "caravan.access"
                    && ($0.object["metadata"] as? [String: Any])?["request_id"] as? String == id }
                    .flatMap { $0.object["metadata"] as? [String: Any] }
            }
            let hubLine = try #require(accessLine("hub", "trace-42.a:b_c"))
            #expect(hubLine["worker"] as? String == "a" && hubLine["model"] as? String == "tiny" && hubLine["status"] as? String == "200")
            #expect(hubLine["subject"] as? String == "tests" && hubLine["outcome"] as? String == "ok")
            #expect(hubLine["tokens_out"] != nil && hubLine["duration_ms"] != nil)
            #expect(accessLine("worker", "trace-42.a:b_c") != nil, "the hub's id, carried to the worker")
            #expect(accessLine("hub", "stream-7")?["ttft_ms"] != nil)
            #expect(accessLine("worker", "stream-7") != nil)
            #expect(accessLine("hub", "bad-9")?["code"] as? String == "invalid_json" && accessLine("hub", "bad-9")?["status"] as? String == "400")

            let credential = try String(contentsOf: cluster.directory.appendingPathComponent("a.credential"), encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let everything = (cluster.hub.output + worker.output).joined(separator: "\n")
            for (what, secret) in [("client secret", cluster.secrets.client), ("worker secret", cluster.secrets.worker),
                                   ("client token", cluster.clientToken), ("admin token", cluster.adminToken),
                                   ("forged token", forged), ("API key", key), ("worker credential", credential)] {
                #expect(!everything.contains(secret), "the \(what) appears in a log")
            }
        }
    }

    @Test("Dashboard in headless Chromium: signs in, lists both workers, a drain clicked in the page shows in /admin/workers, the log tail shows the engine's output; a managed key's usage and budget show, and its Revoke button revokes it; a model added with the form downloads to a worker and its Remove button removes it",
          arguments: ["inbound", "outbound"])
    func dashboard(connect: String) async throws {
        // A hub-managed model to add and remove in the page (its file from a local mirror).
        let (_, model) = try TestCluster.engine()
        let mirror = try await HFMirror.start(files: ["caravan/tiny-GGUF/tiny-q8.gguf": model])
        defer { Task { await mirror.stop() } }
        let caches = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-ui-\(UUID().uuidString.prefix(6))").path
        defer { try? FileManager.default.removeItem(atPath: caches) }
        let specs = ["a", "b"].map {
            TestCluster.WorkerSpec(name: $0, fake: true, env: ["FAKE_TTFB_MS": "30", "FAKE_TOKEN_MS": "5", "FAKE_TOKENS": "20",
                                                               "FAKE_USAGE": "1"], extra: "model_cache_dir: \(caches)/\($0)")
        }
        try await Self.cluster(connect, specs, hubSettings: "model_sources: {hf_endpoint: \"\(mirror.url)\", allow_local: true}").using { cluster in
            // Traffic while the page is open, so its sparklines have something to draw.
            let traffic = Task {
                while !Task.isCancelled {
                    _ = try? await cluster.request("POST", "/v1/chat/completions", body: #"{"model":"tiny","messages":[],"stream":true}"#)
                    try? await Task.sleep(for: .milliseconds(50))
                }
            }
            defer { traffic.cancel() }
            // A managed key with a budget and three requests of its own.
            let made = try await cluster.request("POST", "/admin/keys", body: #"{"name":"ui-team","budget":"100k/month"}"#,
                                                 token: .some(cluster.adminToken))
            let key = try #require(made.json?["key"] as? String, "\(made.body)")
            try await cluster.waitUntil("the hub accepts the new key", timeout: .seconds(5)) {
                try await cluster.request("POST", "/v1/chat/completions", body: #"{"model":"tiny","messages":[]}"#, token: .some(key)).status == 200
            }
            for _ in 0..<2 {
                #expect(try await cluster.request("POST", "/v1/chat/completions", body: #"{"model":"tiny","messages":[]}"#, token: .some(key)).status == 200)
            }
            var arguments = ["CARAVAN_UI_KEY=ui-team", "CARAVAN_UI_MODEL=tiny-hf hf://caravan/tiny-GGUF/tiny-q8.gguf", "python3", repositoryRoot.appendingPathComponent("scripts/ui-check.py").path,
                             cluster.hubURL, cluster.adminToken, "a"]
            if let shot = ProcessInfo.processInfo.environment["CARAVAN_UI_SCREENSHOT"] { arguments.append(shot) }
            let output = try runProcess(arguments, input: "")
            let result = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any], "ui-check: \(output)")
            #expect(Set(result["workers"] as? [String] ?? []) == ["a", "b"])
            #expect(result["drained_in_page"] as? Bool == true)
            #expect((result["log_lines"] as? Int ?? 0) > 0, "the engine log tail shows the engine's output")
            #expect(try await cluster.admin().first { $0["name"] as? String == "a" }?["draining"] as? Bool == true)
            #expect(try await cluster.admin().first { $0["name"] as? String == "b" }?["draining"] as? Bool == false)
            let row = try #require(result["key"] as? [String: Any], "ui-check: \(output)")
            #expect(row["requests"] as? Int == 3)
            #expect((row["tokens"] as? Int ?? 0) > 0)
            #expect((row["budget_bar"] as? String)?.hasSuffix("%") == true)
            #expect(result["revoked_in_page"] as? Bool == true)
            let shown = try await cluster.request("GET", "/admin/keys/ui-team", token: .some(cluster.adminToken))
            #expect(shown.json?["status"] as? String == "revoked", "\(shown.body)")
            // The model added with the page's form was downloaded (over the tunnel's placement call too) and removed with its button.
            let added = try #require(result["model"] as? [String: Any], "ui-check: \(output)")
            #expect((added["estimate"] as? String)?.contains("MiB") == true && (added["replicas"] as? [String])?.count == 1, "\(added)")
            #expect(result["model_removed_in_page"] as? Bool == true)
            let left = try await cluster.request("GET", "/admin/models", token: .some(cluster.adminToken))
            #expect((left.json?["models"] as? [Any])?.isEmpty == true, "\(left.body)")
        }
    }
}
