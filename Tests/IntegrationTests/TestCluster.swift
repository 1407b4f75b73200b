import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Shared

/// A real cluster for one test: a hub and workers as separate processes, each worker
/// running the real llama-server on the tiny model. Built binaries come from the same
/// build folder as the test bundle; llama-server and the model from `scripts/test.sh`.
final class TestCluster: Sendable {
    let directory: URL
    let hub: ManagedProcess
    let hubURL: String
    let workers: [String: ManagedProcess]
    let clientToken: String
    let configPath: String

    static let binDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()

    /// llama-server and the tiny model, or a failure that says how to get them.
    static func engine() throws -> (server: String, model: String) {
        let env = ProcessInfo.processInfo.environment
        guard let server = env["CARAVAN_TEST_LLAMA_SERVER"], FileManager.default.isExecutableFile(atPath: server),
            let model = env["CARAVAN_TEST_MODEL"], FileManager.default.fileExists(atPath: model)
        else {
            throw TestFailure("integration tests need CARAVAN_TEST_LLAMA_SERVER and CARAVAN_TEST_MODEL: run scripts/test.sh")
        }
        return (server, model)
    }

    private init(directory: URL, hub: ManagedProcess, hubURL: String, workers: [String: ManagedProcess],
                 clientToken: String, configPath: String) {
        self.directory = directory
        self.hub = hub
        self.hubURL = hubURL
        self.workers = workers
        self.clientToken = clientToken
        self.configPath = configPath
    }

    /// Starts a hub and the named workers (each serving `tiny`, alias `tiny-chat`) and
    /// waits until every worker is live. `offline` workers are declared but never started.
    static func start(workers names: [String] = ["a", "b"], hubPort: Int = 0) async throws -> TestCluster {
        let (server, model) = try engine()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-it-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let clientSecret = randomSecret()
        try clientSecret.write(to: directory.appendingPathComponent("client.secret"), atomically: true, encoding: .utf8)
        try randomSecret().write(to: directory.appendingPathComponent("worker.secret"), atomically: true, encoding: .utf8)
        var yaml = """
            hub:
              listen: "127.0.0.1:\(hubPort)"
              heartbeat_interval: 200ms
              expire_after: 3
              auth:
                client_secret_file: client.secret
                worker_secret_file: worker.secret
            workers:

            """
        for name in names + ["offline"] {
            let base = Int.random(in: 300...580) * 100
            yaml += """
                  - name: \(name)
                    hubs: ["http://127.0.0.1:1"]
                    listen: "127.0.0.1:0"
                    llama_server: \(server)
                    ports: "\(base)-\(base + 99)"
                    models:
                      - name: \(name == "offline" ? "ghost" : "tiny")
                        path: \(model)
                        aliases: [\(name == "offline" ? "ghost-alias" : "tiny-chat")]
                        args: ["-c", "512", "--parallel", "2", "-t", "1", "--embeddings", "--pooling", "mean"]

                """
        }
        let configPath = directory.appendingPathComponent("cluster.yaml").path
        try yaml.write(toFile: configPath, atomically: true, encoding: .utf8)

        let hub = try ManagedProcess(name: "hub", executable: binDirectory.appendingPathComponent("caravan-hub"),
                                     arguments: ["--config", configPath])
        let line = try await hub.waitForLine(containing: "caravan-hub listening on ")
        let hubURL = String(line.split(separator: " ").last!)
        var workers: [String: ManagedProcess] = [:]
        for name in names {
            workers[name] = try startWorker(name, configPath: configPath, hubURL: hubURL)
        }
        let verifier = await TokenVerifier(secret: Secret(clientSecret))
        let token = try await verifier.sign(CaravanClaims(sub: "tests", expires: Date().addingTimeInterval(3600)))
        let cluster = TestCluster(directory: directory, hub: hub, hubURL: hubURL, workers: workers,
                                  clientToken: token, configPath: configPath)
        try await cluster.waitForLiveWorkers(names.count)
        return cluster
    }

    static func startWorker(_ name: String, configPath: String, hubURL: String) throws -> ManagedProcess {
        try ManagedProcess(name: "worker-\(name)", executable: binDirectory.appendingPathComponent("caravan-worker"),
                           arguments: ["--config", configPath, "--name", name],
                           environment: ["CARAVAN_HUB_URL": hubURL])
    }

    /// Stops every process (workers first, so they deregister) and removes the folder.
    func shutdown() async {
        for worker in workers.values { await worker.stop() }
        await hub.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Polls `/health/ready` until it reports `count` live workers.
    func waitForLiveWorkers(_ count: Int, timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        var last = ""
        while ContinuousClock.now < deadline {
            if let response = try? await request("GET", "/health/ready", token: nil) {
                last = response.body
                if let json = response.json, json["live_workers"] as? Int == count { return }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestFailure("expected \(count) live workers; last /health/ready: \(last)\nhub output:\n"
            + hub.output.suffix(20).joined(separator: "\n"))
    }

    struct Reply: Sendable {
        let status: Int
        let headers: HTTPHeaders
        let body: String
        var json: [String: Any]? {
            (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
        }
        /// `error.code` of an OpenAI envelope.
        var contentType: String? { headers.first(name: "content-type") }
        var errorCode: String? { (json?["error"] as? [String: Any])?["code"] as? String }
        var errorType: String? { (json?["error"] as? [String: Any])?["type"] as? String }
    }

    /// Sends a request to the hub and reads the whole answer.
    func request(_ method: String, _ path: String, body: String? = nil, token: String?? = .none) async throws -> Reply {
        var request = HTTPClientRequest(url: hubURL + path)
        request.method = HTTPMethod(rawValue: method)
        let bearer: String? = switch token { case .none: clientToken; case .some(let value): value }
        if let bearer { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        let bytes = try await response.body.collect(upTo: 16 * 1024 * 1024)
        return Reply(status: Int(response.status.code), headers: response.headers, body: String(buffer: bytes))
    }

    private static func randomSecret() -> String {
        (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    }
}

/// A chat request body for the tiny model.
func chatBody(model: String = "tiny", maxTokens: Int = 8, stream: Bool = false) -> String {
    #"{"model":"\#(model)","messages":[{"role":"user","content":"Say hello"}],"max_tokens":\#(maxTokens),"stream":\#(stream)}"#
}
