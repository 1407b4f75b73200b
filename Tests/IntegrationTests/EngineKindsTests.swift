import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import Glibc
import TestSupport

@Suite("Engine health checks", .serialized)
struct EngineHealthTests {
    @Test("an engine that is alive but stops answering /health leaves routing and is restarted")
    func hungEngine() async throws {
        let spec = TestCluster.WorkerSpec(name: "f", fake: true, preload: true,
                                          extra: "health_interval: 200ms\nhealth_failures: 3\nrestart_backoff: 200ms\nstop_grace: 1s")
        try await TestCluster.start(specs: [spec]).using { cluster in
            try await cluster.waitForModel("f") { $0["state"] as? String == "ready" }
            let before = cluster.engines(of: "f")
            #expect(before.count == 1)
            try cluster.control("f", #"{"health_hang": true}"#)
            try await cluster.waitUntil("the hung engine restarted", timeout: .seconds(20)) {
                !cluster.workerLines("f", "engine unhealthy; restarting").isEmpty
            }
            try await cluster.waitUntil("the hung process stopped", timeout: .seconds(10)) { before.allSatisfy { !isRunning($0) } }
            try cluster.control("f", "{}")
            try await cluster.waitForModel("f", timeout: .seconds(20)) {
                $0["state"] as? String == "ready" && ($0["recent_crashes"] as? Int ?? 0) >= 1
            }
            let after = cluster.engines(of: "f")
            #expect(after.count == 1 && after != before, "a new engine serves")
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody()).status == 200)
        }
    }
}

@Suite("Engines beyond llama-server", .serialized)
struct CommandEngineTests {
    /// A small OpenAI-compatible server, as vLLM or SGLang would be: its own readiness path
    /// and status, no `/slots`, and the API key it was given on its command line.
    static let engine = #"""
        import http.server, json, sys
        port, key = int(sys.argv[1]), sys.argv[2]
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *args): pass
            def answer(self, status, body, kind="application/json"):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            def do_GET(self):
                if self.path == "/ping": return self.answer(204, "")
                self.answer(404, "{}")
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("Authorization") != "Bearer " + key:
                    return self.answer(401, '{"error":{"message":"bad key","type":"auth","code":401}}')
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for word in ["python", "engine"]:
                        chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": word}}]}
                        self.wfile.write(("data: " + json.dumps(chunk) + "\n\n").encode())
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.close_connection = True
                    return
                self.answer(200, json.dumps({"object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "python engine"}, "finish_reason": "stop"}]}))
        http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
        """#

    @Test("a cmd engine (an OpenAI-compatible Python server) is started on demand, supervised and served like llama-server")
    func pythonEngine() async throws {
        let spec = TestCluster.WorkerSpec(name: "w", models: """
            - {name: py, path: /dev/null, cmd: [python3, "$DIR/engine.py", "${PORT}", "${API_KEY}"], health_path: /ping, ready_status: 204, slots: 2}
            """)
        try await TestCluster.start(specs: [spec], prepare: { directory in
            try Self.engine.write(to: directory.appendingPathComponent("engine.py"), atomically: true, encoding: .utf8)
        }).using { cluster in
            let plain = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "py"))
            #expect(plain.status == 200 && plain.body.contains("python engine"), "\(plain.body)")
            let streamed = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "py", stream: true))
            #expect(streamed.status == 200 && streamed.body.contains("data: [DONE]") && streamed.body.contains("python"), "\(streamed.body)")
            try await cluster.waitForModel("w") { $0["state"] as? String == "ready" && $0["slots_total"] as? Int == 2 }
            // Supervised like llama-server: kill it and the next request starts a new one.
            let python = children(of: try #require(cluster.workers["w"]).pid, matching: "engine.py")
            #expect(python.count == 1)
            for pid in python { kill(pid, SIGKILL) }
            try await cluster.waitUntil("the engine's exit reported", timeout: .seconds(10)) {
                try await cluster.adminModel("w")?["state"] as? String != "ready"
            }
            let again = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "py"))
            #expect(again.status == 200, "\(again.body)")
            let restarted = children(of: try #require(cluster.workers["w"]).pid, matching: "engine.py")
            #expect(restarted.count == 1 && restarted != python)
        }
    }
}

extension CommandEngineTests {
    @Test("a remote OpenAI-compatible upstream is routed like any worker; its key stays on the worker")
    func remoteUpstream() async throws {
        let key = "sk-remote-" + UUID().uuidString
        let port = try freePort()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-remote-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try Self.engine.write(to: directory.appendingPathComponent("remote.py"), atomically: true, encoding: .utf8)
        let remote = try ManagedProcess(name: "remote", executable: URL(fileURLWithPath: "/usr/bin/env"),
                                        arguments: ["python3", directory.appendingPathComponent("remote.py").path, String(port), key])
        defer { kill(remote.pid, SIGKILL) }
        let spec = TestCluster.WorkerSpec(name: "w", models: """
            - {name: cloud, upstream: "http://127.0.0.1:\(port)/v1", api_key_file: cloud.key, slots: 3}
            """)
        try await TestCluster.start(specs: [spec], prepare: { directory in
            try key.write(to: directory.appendingPathComponent("cloud.key"), atomically: true, encoding: .utf8)
        }).using { cluster in
            try await cluster.waitForModel("w") { $0["state"] as? String == "ready" && $0["slots_total"] as? Int == 3 }
            try await cluster.waitUntil("the remote server", timeout: .seconds(10)) {
                (try? rawConnection(to: "http://127.0.0.1:\(port)")).map { close($0); return true } ?? false
            }
            let plain = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "cloud"))
            #expect(plain.status == 200 && plain.body.contains("python engine"), "\(plain.body)")
            let streamed = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "cloud", stream: true))
            #expect(streamed.status == 200 && streamed.body.contains("data: [DONE]"), "\(streamed.body)")
            #expect(!plain.body.contains(key) && !streamed.body.contains(key))
            let logs = (cluster.hub.output + (cluster.workers["w"]?.output ?? [])).joined(separator: "\n")
            #expect(!logs.contains(key), "the remote key never appears in logs")
            let admin = try await cluster.request("GET", "/admin/workers", token: .some(cluster.adminToken))
            #expect(!admin.body.contains(key))
        }
    }
}
