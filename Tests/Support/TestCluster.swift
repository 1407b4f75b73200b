import Wire
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import Auth
import Config

/// A real cluster for one test: a hub and workers as separate processes, each worker
/// running the real llama-server on the tiny model. Built binaries come from the same
/// build folder as the test bundle; llama-server and the model from `scripts/test.sh`.
package final class TestCluster: Sendable {
    package let directory: URL
    package let hub: ManagedProcess
    package let hubURL: String
    package let workers: [String: ManagedProcess]
    package let clientToken: String
    package let adminToken: String
    package let configPath: String
    /// Further hubs sharing the cluster file (``start(specs:hubs:...)`` with `hubs` > 1): every
    /// worker registers with all of them.
    package let otherHubs: [(process: ManagedProcess, url: String)]

    package static let binDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()

    /// llama-server and the tiny model, or a failure that says how to get them.
    package static func engine() throws -> (server: String, model: String) {
        let env = ProcessInfo.processInfo.environment
        guard let server = env["CARAVAN_TEST_LLAMA_SERVER"], FileManager.default.isExecutableFile(atPath: server),
            let model = env["CARAVAN_TEST_MODEL"], FileManager.default.fileExists(atPath: model)
        else {
            throw TestFailure("integration tests need CARAVAN_TEST_LLAMA_SERVER and CARAVAN_TEST_MODEL: run scripts/test.sh")
        }
        return (server, model)
    }

    /// The client and worker secrets (to mint tokens, and to check they never leak).
    package let secrets: (client: String, worker: String)

    /// The client tests talk to the hub with (trusts the test CA in TLS tests).
    package let client: HTTPClient

    private init(directory: URL, hub: ManagedProcess, hubURL: String, otherHubs: [(process: ManagedProcess, url: String)],
                 workers: [String: ManagedProcess], clientToken: String, adminToken: String, configPath: String,
                 secrets: (client: String, worker: String), client: HTTPClient) {
        self.otherHubs = otherHubs
        self.client = client
        self.adminToken = adminToken
        self.secrets = secrets
        self.directory = directory
        self.hub = hub
        self.hubURL = hubURL
        self.workers = workers
        self.clientToken = clientToken
        self.configPath = configPath
    }

    /// One worker of a test cluster.
    package struct WorkerSpec: Sendable {
        package var name: String
        /// Use the fault-injection engine instead of the real llama-server.
        package var fake = false
        /// `FAKE_*` settings for the fake engine.
        package var env: [String: String] = [:]
        package var weight: Double = 1
        package var preload = false
        /// Extra YAML lines for this worker's entry.
        package var extra = ""
        /// YAML for the `models:` list items instead of the default `tiny` entry. `$DIR` is the
        /// cluster folder, `$MODEL` the tiny GGUF, `$ARGS` the usual llama-server args, `$ENV`
        /// the fake engine's settings.
        package var models: String? = nil
        /// The worker's `CARAVAN_LOG_LEVEL` (default: info).
        package var logLevel: String? = nil
        /// A command the worker runs under (e.g. `ip netns exec NAME`).
        package var wrapper: [String] = []

        package init(name: String, fake: Bool = false, env: [String: String] = [:], weight: Double = 1, preload: Bool = false,
                     extra: String = "", models: String? = nil, logLevel: String? = nil, wrapper: [String] = []) {
            self.wrapper = wrapper
            self.name = name
            self.fake = fake
            self.env = env
            self.weight = weight
            self.preload = preload
            self.extra = extra
            self.models = models
            self.logLevel = logLevel
        }
    }

    /// A `models:` list item serving the tiny model under `name` with the real llama-server.
    package static func tinyModel(_ name: String, _ extra: String = "", args: String = "$ARGS") -> String {
        "- {name: \(name), path: $MODEL, args: \(args)\(extra.isEmpty ? "" : ", " + extra)}"
    }

    /// Starts a hub and the named workers (each serving `tiny`, alias `tiny-chat`, with the
    /// real llama-server) and waits until every worker is live.
    package static func start(workers names: [String] = ["a", "b"], hubPort: Int = 0) async throws -> TestCluster {
        try await start(specs: names.map { WorkerSpec(name: $0) }, hubPort: hubPort)
    }

    /// Starts a hub with `hubSettings` (extra YAML under `hub:`) and the given workers.
    /// A worker `offline` serving `ghost` is declared but never started. With `hubs` > 1, more
    /// hubs run on the same cluster file (``otherHubs``) and every worker reports to all.
    package static func start(specs: [WorkerSpec], hubs: Int = 1, hubSettings: String = "", authSettings: String = "", hubPort: Int = 0,
                      hubHost: String = "127.0.0.1",
                      heartbeat: String = "200ms", trusting caFile: String? = nil, hubArguments: [String] = [],
                      environment: [String: String] = [:],
                      prepare: (URL) throws -> Void = { _ in }) async throws -> TestCluster {
        let (server, model) = try engine()
        let fakeEngine = binDirectory.appendingPathComponent("FakeEngine").path
        let (directory, clientSecret, _) = try secretsFolder()
        var yaml = hubSection(listen: "\(hubHost):\(hubPort)", heartbeat: heartbeat, hubSettings: "expire_after: 3\n" + hubSettings,
                              authSettings: authSettings) + "workers:\n"
        // Disjoint engine port ranges per worker: two workers sharing a range could both pick
        // the same still-unbound port.
        let firstBase = Int.random(in: 300...560) * 100
        for (index, spec) in (specs + [WorkerSpec(name: "offline")]).enumerated() {
            let base = firstBase + index * 100
            let offline = spec.name == "offline"
            var env = spec.env
            if spec.fake {
                env["FAKE_NAME"] = spec.name
                env["FAKE_CONTROL"] = directory.appendingPathComponent("\(spec.name).json").path
            }
            let envYAML = env.isEmpty ? "{}" : "{" + env.map { "\($0.key): \"\($0.value)\"" }.joined(separator: ", ") + "}"
            let args = spec.fake ? "[]" : #"["-c", "512", "--parallel", "2", "-t", "1", "--embeddings", "--pooling", "mean"]"#
            yaml += """
                  - name: \(spec.name)
                    hubs: ["http://127.0.0.1:1"]
                    listen: "127.0.0.1:0"
                    llama_server: \(spec.fake ? fakeEngine : server)
                    ports: "\(base)-\(base + 99)"
                    weight: \(spec.weight)
                    preload: \(spec.preload)
                    state_dir: \(directory.path)
                    credential_file: \(spec.name).credential
                \(spec.extra.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
                    models:

                """
            if let models = spec.models {
                yaml += models.split(separator: "\n").map { "      " + $0 }.joined(separator: "\n") + "\n"
                yaml = yaml.replacingOccurrences(of: "$ARGS", with: args).replacingOccurrences(of: "$MODEL", with: model)
                    .replacingOccurrences(of: "$DIR", with: directory.path).replacingOccurrences(of: "$ENV", with: envYAML)
                continue
            }
            yaml += """
                      - name: \(offline ? "ghost" : "tiny")
                        path: \(model)
                        aliases: [\(offline ? "ghost-alias" : "tiny-chat")]
                        args: \(args)
                        env: \(envYAML)

                """
        }
        let configPath = directory.appendingPathComponent("cluster.yaml").path
        try yaml.write(toFile: configPath, atomically: true, encoding: .utf8)
        try writeCredentials(directory, workers: (specs + [WorkerSpec(name: "offline")]).map(\.name))
        try prepare(directory)
        return try await launch(directory: directory, configPath: configPath, workers: specs.map { ($0.name, $0.logLevel, $0.wrapper) },
                                clientSecret: clientSecret, trusting: caFile, hubArguments: hubArguments,
                                environment: environment, hubs: hubs)
    }

    /// Starts a hub and workers from the repository's `cluster.example.yaml` exactly as a user
    /// would copy it, with only machine-specific values substituted: loopback addresses and
    /// free ports, the llama-server binary, the tiny model, and engine port ranges.
    package static func startExample(workers names: [String] = ["gpu-a", "gpu-b"]) async throws -> TestCluster {
        let (server, model) = try engine()
        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../cluster.example.yaml").standardized.path
        var yaml = try String(contentsOfFile: example, encoding: .utf8)
        let base = Int.random(in: 300...560) * 100
        let substitutions = [
            (#"listen: "0.0.0.0:8080""#, #"listen: "127.0.0.1:0""#),
            (#"listen: "127.0.0.1:9101""#, #"listen: "127.0.0.1:0""#),
            (#"listen: "127.0.0.1:9102""#, #"listen: "127.0.0.1:0""#),
            ("llama_server: llama-server", "llama_server: \(server)"),
            (#"ports: "20000-20099""#, #"ports: "\#(base)-\#(base + 99)""#),
            (#"ports: "20100-20199""#, #"ports: "\#(base + 100)-\#(base + 199)""#),
            ("path: models/tiny.gguf", "path: \(model)"),
        ]
        for (from, to) in substitutions {
            guard yaml.contains(from) else { throw TestFailure("cluster.example.yaml no longer contains \(from)") }
            yaml = yaml.replacingOccurrences(of: from, with: to)
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-ex-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let clientSecret = randomSecret()
        try clientSecret.write(to: directory.appendingPathComponent("client.secret"), atomically: true, encoding: .utf8)
        try randomSecret().write(to: directory.appendingPathComponent("worker.secret"), atomically: true, encoding: .utf8)
        let configPath = directory.appendingPathComponent("cluster.yaml").path
        try yaml.write(toFile: configPath, atomically: true, encoding: .utf8)
        try writeCredentials(directory, workers: names)
        return try await launch(directory: directory, configPath: configPath, workers: names.map { ($0, nil, []) },
                                clientSecret: clientSecret, trusting: nil)
    }

    /// Starts a hub and its one worker from what `caravan-hub init` writes, as a user would
    /// after the edit it asks for: the model path and llama-server substituted, loopback
    /// addresses with free ports.
    package static func startInit() async throws -> TestCluster {
        let (server, model) = try engine()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-init-\(UUID().uuidString.prefix(8))")
        _ = try runCommand(binDirectory.appendingPathComponent("caravan-hub").path, ["init", "--dir", directory.path])
        let configPath = directory.appendingPathComponent("cluster.yaml").path
        var yaml = try String(contentsOfFile: configPath, encoding: .utf8)
        let base = Int.random(in: 300...560) * 100
        for (from, to) in [
            (#"listen: "0.0.0.0:8080""#, #"listen: "127.0.0.1:0""#), (#"listen: "127.0.0.1:9101""#, #"listen: "127.0.0.1:0""#),
            ("llama_server: llama-server", "llama_server: \(server)"), (#"ports: "20000-20099""#, #"ports: "\#(base)-\#(base + 99)""#),
            ("path: /models/my-model.gguf", "path: \(model)"),
        ] {
            guard yaml.contains(from) else { throw TestFailure("caravan-hub init output no longer contains \(from)") }
            yaml = yaml.replacingOccurrences(of: from, with: to)
        }
        try yaml.write(toFile: configPath, atomically: true, encoding: .utf8)
        let clientSecret = try String(contentsOf: directory.appendingPathComponent("client.secret"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return try await launch(directory: directory, configPath: configPath, workers: [("gpu-a", nil, [])],
                                clientSecret: clientSecret, trusting: nil)
    }

    /// Writes `NAME.credential` for each worker: its own credential, derived from the
    /// cluster's `worker.secret` as `caravan-hub worker-secret` would.
    package static func writeCredentials(_ directory: URL, workers names: [String]) throws {
        let clusterKey = Secret(try String(contentsOf: directory.appendingPathComponent("worker.secret"), encoding: .utf8))
        for name in names {
            try WorkerKey.derive(clusterKey: clusterKey, worker: name).value
                .write(to: directory.appendingPathComponent("\(name).credential"), atomically: true, encoding: .utf8)
        }
    }

    /// Starts the hub and `workers` from a written config file and waits until all are live.
    private static func launch(directory: URL, configPath: String, workers names: [(String, String?, [String])],
                               clientSecret: String, trusting caFile: String?, hubArguments: [String] = [],
                               environment: [String: String] = [:], hubs count: Int = 1)
        async throws -> TestCluster
    {
        var hubs: [(process: ManagedProcess, url: String)] = []
        for index in 0..<count {
            // The cluster's own state folder (its hubs share the store), unless the test names one.
            var hubEnvironment = environment
            if hubEnvironment["XDG_STATE_HOME"] == nil && hubEnvironment["STATE_DIRECTORY"] == nil {
                hubEnvironment["XDG_STATE_HOME"] = directory.appendingPathComponent("state").path
            }
            let hub = try ManagedProcess(name: index == 0 ? "hub" : "hub\(index + 1)",
                                         executable: binDirectory.appendingPathComponent("caravan-hub"),
                                         arguments: ["--config", configPath] + hubArguments, environment: hubEnvironment)
            hubs.append((hub, ""))
            do {
                let line = try await hub.waitForLine(containing: "caravan-hub listening on ")
                hubs[index].url = String(line.split(separator: " ").last!)
            } catch {
                for started in hubs { await started.process.stop() }
                throw error
            }
        }
        let (hub, hubURL) = hubs[0]
        var workers: [String: ManagedProcess] = [:]
        for (name, logLevel, wrapper) in names {
            workers[name] = try startWorker(name, configPath: configPath, hubURL: hubs.map(\.url).joined(separator: ","),
                                            logLevel: logLevel, environment: environment, wrapper: wrapper)
        }
        let workerSecret = try String(contentsOf: directory.appendingPathComponent("worker.secret"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let verifier = await TokenVerifier(secret: Secret(clientSecret))
        let token = try await verifier.sign(CaravanClaims(sub: "tests", expires: Date().addingTimeInterval(3600)))
        let admin = try await verifier.sign(CaravanClaims(sub: "ops", expires: Date().addingTimeInterval(3600), role: .admin))
        let client: HTTPClient
        if let caFile {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(directory.appendingPathComponent(caFile).path)
            client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        } else {
            client = HTTPClient.shared
        }
        let cluster = TestCluster(directory: directory, hub: hub, hubURL: hubURL, otherHubs: Array(hubs.dropFirst()), workers: workers,
                                  clientToken: token, adminToken: admin, configPath: configPath,
                                  secrets: (clientSecret, workerSecret), client: client)
        do {
            try await cluster.waitForLiveWorkers(names.count)
        } catch {
            await cluster.shutdown()
            throw error
        }
        return cluster
    }

    /// Polls until `condition` holds (every 20 ms, up to `timeout`).
    package func waitUntil(_ what: String, timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while try await !condition() {
            guard ContinuousClock.now < deadline else { throw TestFailure("timed out waiting for \(what)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    package static func startWorker(_ name: String, configPath: String, hubURL: String, logLevel: String? = nil,
                            environment: [String: String] = [:], wrapper: [String] = []) throws -> ManagedProcess {
        let binary = binDirectory.appendingPathComponent("caravan-worker")
        return try ManagedProcess(name: "worker-\(name)", executable: wrapper.isEmpty ? binary : URL(fileURLWithPath: wrapper[0]),
                           arguments: Array(wrapper.dropFirst()) + (wrapper.isEmpty ? [] : [binary.path]) + ["--config", configPath, "--name", name],
                           environment: environment.merging(["CARAVAN_HUB_URL": hubURL]) { $1 }
                               .merging(logLevel.map { ["CARAVAN_LOG_LEVEL": $0] } ?? [:]) { $1 })
    }

    /// Runs `body` against this cluster and always shuts it down, pass or fail.
    package func using(_ body: (TestCluster) async throws -> Void) async throws {
        do {
            try await body(self)
        } catch {
            await shutdown()
            throw error
        }
        await shutdown()
    }

    /// Stops every process (workers first, so they deregister) and removes the folder.
    package func shutdown() async {
        // The test's own connections go first, so no server waits for them to go idle.
        if client !== HTTPClient.shared { try? await client.shutdown() }
        // Workers are independent processes: they stop (deregister, drain, stop their engines)
        // side by side, then the hub.
        await withDiscardingTaskGroup { group in
            for worker in workers.values { group.addTask { await worker.stop() } }
        }
        await hub.stop()
        for other in otherHubs { await other.process.stop() }
        try? FileManager.default.removeItem(at: directory)
    }

    /// The state folder this cluster's hubs keep their store in (``launch``'s `XDG_STATE_HOME`).
    package var stateHome: String { directory.appendingPathComponent("state").path }

    /// Runs `caravan-hub ARGUMENTS` against this cluster's store; its standard output.
    package func hubCommand(_ arguments: [String]) throws -> String {
        try runProcess(["XDG_STATE_HOME=\(stateHome)", Self.binDirectory.appendingPathComponent("caravan-hub").path] + arguments,
                       input: "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Starts another hub process on this cluster's file and store (a restart, after ``hub``
    /// stopped); its URL. The caller stops it.
    package func startHub(name: String) async throws -> (process: ManagedProcess, url: String) {
        let process = try ManagedProcess(name: name, executable: Self.binDirectory.appendingPathComponent("caravan-hub"),
                                         arguments: ["--config", configPath], environment: ["XDG_STATE_HOME": stateHome])
        let line = try await process.waitForLine(containing: "caravan-hub listening on ")
        return (process, String(line.split(separator: " ").last!))
    }

    /// Polls `/health/ready` until it reports `count` live workers.
    package func waitForLiveWorkers(_ count: Int, timeout: Duration = .seconds(20)) async throws {
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

    package struct Reply: Sendable {
        package let status: Int
        package let headers: HTTPHeaders
        package let body: String
        package var json: [String: Any]? {
            (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
        }
        /// `error.code` of an OpenAI envelope.
        package var contentType: String? { headers.first(name: "content-type") }
        package var servedBy: String? { headers.first(name: "x-served-by") }
        package var errorCode: String? { (json?["error"] as? [String: Any])?["code"] as? String }
        package var errorType: String? { (json?["error"] as? [String: Any])?["type"] as? String }
    }

    /// Sends a request to the hub (or the one at `hub`, one of ``otherHubs``) and reads the whole answer.
    package func request(_ method: String, _ path: String, body: String? = nil, token: String?? = .none,
                 headers extra: [(String, String)] = [], rawBody: [UInt8]? = nil, hub: String? = nil) async throws -> Reply {
        var request = HTTPClientRequest(url: (hub ?? hubURL) + path)
        request.method = HTTPMethod(rawValue: method)
        for (name, value) in extra { request.headers.add(name: name, value: value) }
        if let rawBody { request.body = .bytes(ByteBuffer(bytes: rawBody)) }
        let bearer: String? = switch token { case .none: clientToken; case .some(let value): value }
        if let bearer { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await client.execute(request, timeout: .seconds(60))
        let bytes = try await response.body.collect(upTo: 16 * 1024 * 1024)
        return Reply(status: Int(response.status.code), headers: response.headers, body: String(buffer: bytes))
    }

    /// A new temporary folder holding a random `client.secret` and `worker.secret` (the cluster key).
    package static func secretsFolder() throws -> (directory: URL, clientSecret: String, workerSecret: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-it-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let (clientSecret, workerSecret) = (randomSecret(), randomSecret())
        try clientSecret.write(to: directory.appendingPathComponent("client.secret"), atomically: true, encoding: .utf8)
        try workerSecret.write(to: directory.appendingPathComponent("worker.secret"), atomically: true, encoding: .utf8)
        return (directory, clientSecret, workerSecret)
    }

    /// The `hub:` section of a test cluster file using those secrets: `hubSettings` is more
    /// YAML under `hub:`, `authSettings` under `hub.auth:`.
    package static func hubSection(listen: String, heartbeat: String, hubSettings: String = "", authSettings: String = "") -> String {
        """
        hub:
          listen: "\(listen)"
          heartbeat_interval: \(heartbeat)
        \(hubSettings.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
          auth:
            client_secret_file: client.secret
            worker_secret_file: worker.secret
        \(authSettings.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))

        """
    }

    private static func randomSecret() -> String {
        (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    }
}

/// A chat request body for the tiny model.
package func chatBody(model: String = "tiny", maxTokens: Int = 8, stream: Bool = false) -> String {
    #"{"model":"\#(model)","messages":[{"role":"user","content":"Say hello"}],"max_tokens":\#(maxTokens),"stream":\#(stream)}"#
}
