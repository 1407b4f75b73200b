import Foundation
import Testing
@testable import Config
@testable import Wire


/// A minimal valid worker entry to build invalid variants from.
private let validWorker = """
    workers:
      - name: a
        hubs: ["http://127.0.0.1:8080"]
        models:
          - name: tiny
            path: /m/tiny.gguf
    """

@Suite("Cluster configuration")
struct ClusterConfigTests {
    @Test("the commented example parses with every key")
    func exampleParses() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../cluster.example.yaml").standardized.path
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let config = try ClusterConfig.parse(text)
        #expect(config.hub.listen == ListenAddress(host: "0.0.0.0", port: 8080))
        #expect(config.hub.heartbeatInterval == .seconds(2))
        #expect(config.hub.expireAfter == 3)
        #expect(config.hub.expiry == .seconds(6))
        #expect(config.hub.maxBodyBytes == 32 * 1024 * 1024)
        #expect(config.hub.retries == 2 && config.hub.queue == QueueConfig())
        #expect(config.hub.breaker == BreakerConfig())  // the example documents the defaults
        #expect(config.hub.idleTimeout == .seconds(60) && config.hub.connectTimeout == .seconds(2))
        #expect(config.workers[0].weight == nil)  // auto
        #expect(config.workers[1].weight == nil)  // auto by default
        #expect(config.hub.clientWriteTimeout == .seconds(30) && config.hub.clientBodyTimeout == .seconds(60))
        #expect(config.hub.limits == LimitsConfig() && config.hub.corsOrigins.isEmpty && config.hub.maxHeaderKB == 32)
        #expect(config.hub.auth.clientSecretFile == "client.secret")
        #expect(config.workers.map(\.name) == ["gpu-a", "gpu-b"])
        let a = config.workers[0]
        #expect(a.ports == PortRange(20000, 20099))
        #expect(a.models[0].aliases == ["tiny-chat"])
        #expect(a.models[0].engineArguments == ["-c", "2048", "--parallel", "4"])
        #expect(a.gpus.first?.vramMB == 0)
        #expect(config.declaredModels == ["tiny": "tiny", "tiny-chat": "tiny"])
    }

    @Test("the docker-compose cluster file parses and names the compose services")
    func composeClusterParses() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../deploy/cluster.compose.yaml").standardized.path
        let config = try ClusterConfig.parse(try String(contentsOfFile: path, encoding: .utf8))
        #expect(config.workers.map(\.name) == ["worker-a", "worker-b"])
        #expect(config.workers.allSatisfy { $0.advertise == "http://\($0.name):9101" && $0.hubs == ["http://hub:8080"] })
    }

    @Test("defaults apply when keys are absent")
    func defaults() throws {
        let config = try ClusterConfig.parse(validWorker)
        #expect(config.hub.heartbeatInterval == .seconds(2))
        #expect(config.hub.auth.leeway == .seconds(30))
        #expect(config.workers[0].listen == ListenAddress(host: "127.0.0.1", port: 9090))
        #expect(config.workers[0].llamaServer == "llama-server")
        #expect(config.workers[0].loadTimeout == .seconds(120))
        #expect(config.workers[0].preload == false)
    }

    @Test("durations", arguments: [
        ("500ms", Duration.milliseconds(500)), ("2s", .seconds(2)), ("1.5s", .milliseconds(1500)),
        ("1m", .seconds(60)), ("1h", .seconds(3600)), ("3", .seconds(3)),
    ])
    func durations(text: String, expected: Duration) throws {
        let config = try ClusterConfig.parse("hub:\n  heartbeat_interval: \(text)\n")
        #expect(config.hub.heartbeatInterval == expected)
    }

    /// Each class of invalid input, with the key the error must name and a phrase it must contain.
    static let invalid: [(String, String, String)] = [
        ("hub:\n  lisen: 1.2.3.4:80\n", "hub.lisen", "unknown key"),
        ("hub:\n  listen: nowhere\n", "hub.listen", "expected host:port"),
        ("hub:\n  listen: \"h:70000\"\n", "hub.listen", "expected host:port"),
        ("hub:\n  heartbeat_interval: soon\n", "hub.heartbeat_interval", "expected a duration"),
        ("hub:\n  heartbeat_interval: 0s\n", "hub.heartbeat_interval", "greater than 0"),
        ("hub:\n  expire_after: 0\n", "hub.expire_after", "at least 1"),
        ("hub:\n  expire_after: many\n", "hub.expire_after", "expected an integer"),
        ("hub:\n  auth:\n    secret: x\n", "hub.auth.secret", "unknown key"),
        ("workers:\n  - hubs: []\n    models: []\n", "workers[0].name", "required key is missing"),
        ("workers:\n  - name: a b\n    models: []\n", "workers[0].name", "letters, digits"),
        ("workers:\n  - name: a\n", "workers[0].models", "at least one model (or a models_dir)"),
        ("workers:\n  - name: a\n    max_loaded: 0\n    models_dir: /m\n", "workers[0].max_loaded", "at least 1"),
        ("workers:\n  - name: a\n    engine_log_level: loud\n    models_dir: [/m]\n", "workers[0].engine_log_level", "expected one of"),
        ("workers:\n  - name: a\n    models: [{name: m, path: p, ctx: 512, args: [-c, '1024']}]\n", "workers[0].models[0].args", "conflicts with ctx"),
        ("workers:\n  - name: a\n    models: [{name: m, path: p, ttl: 0s}]\n", "workers[0].models[0].ttl", "greater than 0"),
        ("workers:\n  - name: a\n    models: []\n", "workers[0].models", "at least one model"),
        ("workers:\n  - name: a\n    hubs: [\"ftp://x\"]\n    models: []\n", "workers[0].hubs[0]", "http://"),
        ("workers:\n  - name: a\n    hubs: \"http://x\"\n    models: []\n", "workers[0].hubs", "expected a list"),
        ("workers:\n  - name: a\n    ports: 9000-8000\n    models: [{name: m, path: p}]\n", "workers[0].ports", "port range"),
        ("workers:\n  - name: a\n    ports: 9000-9000\n    models: [{name: m, path: p}, {name: n, path: p}]\n", "workers[0].ports", "2 models"),
        ("workers:\n  - name: a\n    models: [{name: m}]\n", "workers[0].models[0].path", "required key is missing"),
        ("workers:\n  - name: a\n    models: [{name: m, path: p, args: [--port, \"1\"]}]\n", "workers[0].models[0].args", "--port is set by the worker"),
        ("workers:\n  - name: a\n    models: [{name: m, path: p}, {name: n, path: p, aliases: [m]}]\n", "workers[0].models[1]", "used twice"),
        ("workers:\n  - name: a\n    models: [{name: m, path: p}]\n  - name: a\n    models: [{name: m, path: p}]\n", "workers[1].name", "used twice"),
        ("workers:\n  - name: a\n    gpus: [{name: g}]\n    models: [{name: m, path: p}]\n", "workers[0].gpus[0].vram_mb", "required key is missing"),
        ("hub:\n  retries: 11\n", "hub.retries", "between 0 and 10"),
        ("hub:\n  queue:\n    size: -1\n", "hub.queue.size", "must not be negative"),
        ("hub:\n  queue:\n    ahead_per_slot: 17\n", "hub.queue.ahead_per_slot", "between 0 and 16"),
        ("hub:\n  breaker:\n    failure_rate: 1.5\n", "hub.breaker.failure_rate", "below 1"),
        ("hub:\n  breaker:\n    open_for: 10s\n    max_open_for: 5s\n", "hub.breaker.max_open_for", "shorter than open_for"),
        ("hub:\n  breaker:\n    slow_ttfb: 0s\n", "hub.breaker.slow_ttfb", "greater than 0"),
        ("workers:\n  - name: a\n    weight: 0\n    models: [{name: m, path: p}]\n", "workers[0].weight", "greater than 0"),
        ("workers:\n  - name: a\n    weight: heavy\n    models: [{name: m, path: p}]\n", "workers[0].weight", "expected auto or a number"),
        ("hub:\n  breaker: {consecutive_failures: -1}\n", "hub.breaker.consecutive_failures", "0 (off) or more"),
        ("hub:\n  auth:\n    keys: [{kid: k, alg: none, secret_file: s}]\n", "hub.auth.keys[0].alg", "never \"none\""),
        ("hub:\n  auth:\n    keys: [{kid: k, alg: RS256, secret_file: s}]\n", "hub.auth.keys[0].public_key_file", "required for RS256"),
        ("hub:\n  auth:\n    client_secret_file: c\n    keys: [{alg: HS512, secret_file: s}]\n", "hub.auth.keys[0].kid", "more than one"),
        ("hub:\n  auth:\n    api_keys: [{name: ci, sha256: abc}]\n", "hub.auth.api_keys[0].sha256", "64 hex digits"),
        ("hub:\n  cors_origins: [\"*\"]\n", "hub.cors_origins[0]", "expected an origin"),
        ("hub:\n  tls: {cert_file: c}\n", "hub.tls.key_file", "required key is missing"),
        ("hub: [1, 2\n", "", "invalid YAML"),
        ("   \n", "", "empty"),
    ]

    @Test("invalid configs fail with one line naming the key", arguments: invalid)
    func invalidConfig(yaml: String, key: String, problem: String) {
        do {
            _ = try ClusterConfig.parse(yaml)
            Issue.record("expected an error for \(key)")
        } catch {
            #expect(error.key == key)
            #expect(error.description.contains(problem), "\(error.description)")
            #expect(!error.description.contains("\n"))
        }
    }

    @Test("secrets and addresses come from the environment; secrets never print")
    func environmentOverrides() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-config-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let workerSecret = String(repeating: "w", count: 40)
        try workerSecret.write(to: directory.appendingPathComponent("worker.secret"), atomically: true, encoding: .utf8)
        let file = directory.appendingPathComponent("cluster.yaml")
        try ("hub:\n  auth:\n    worker_secret_file: worker.secret\n" + validWorker)
            .write(to: file, atomically: true, encoding: .utf8)
        let clientSecret = String(repeating: "c", count: 32)
        let env = ["CARAVAN_CLIENT_SECRET": clientSecret, "CARAVAN_HUB_LISTEN": "127.0.0.1:0",
                   "CARAVAN_HUB_URL": "http://h1:1, http://h2:2", "CARAVAN_WORKER_LISTEN": "0.0.0.0:7000",
                   "CARAVAN_LLAMA_SERVER": "/opt/llama-server"]
        let config = try ClusterConfig.load(path: file.path, environment: env)
        #expect(config.hub.listen == ListenAddress(host: "127.0.0.1", port: 0))
        #expect(config.hub.auth.clientSecret?.value == clientSecret)
        #expect(config.hub.auth.workerSecret?.value == workerSecret)
        #expect("\(config.hub.auth.clientSecret!)" == "<redacted>")
        #expect(!String(describing: config.hub.auth).contains(clientSecret))
        let worker = try config.worker(named: "a", environment: env)
        #expect(worker.hubs == ["http://h1:1", "http://h2:2"])
        #expect(worker.listen == ListenAddress(host: "0.0.0.0", port: 7000))
        #expect(worker.llamaServer == "/opt/llama-server")
        #expect(worker.advertisedURL(boundPort: 7000) == "http://127.0.0.1:7000")

        #expect(throws: ConfigError(key: "CARAVAN_CLIENT_SECRET",
                                    "secret must be at least 32 bytes (try: openssl rand -hex 32)")) {
            _ = try ClusterConfig.load(path: file.path, environment: ["CARAVAN_CLIENT_SECRET": "short"])
        }
        #expect(throws: ConfigError.self) { _ = try config.worker(named: "zz", environment: [:]) }
        #expect(throws: ConfigError(key: "", "cannot read config file /nonexistent.yaml")) {
            _ = try ClusterConfig.load(path: "/nonexistent.yaml")
        }
    }
}

@Suite("Wire coding")
struct WireCodingTests {
    @Test("units stay one word in snake_case keys, and decode back", arguments: [
        ("vramEstimateMiB", "vram_estimate_mib"), ("memoryFreeMiB", "memory_free_mib"), ("vramBudgetMiB", "vram_budget_mib"),
        ("heartbeatIntervalMs", "heartbeat_interval_ms"), ("inFlight", "in_flight"), ("name", "name"),
        ("slotsStale", "slots_stale"),
    ])
    func keys(camel: String, snake: String) {
        #expect(WireCoding.snakeCase(camel) == snake)
        #expect(WireCoding.camelCase(snake) == camel)
    }

    @Test("a report round-trips, and its JSON names MiB fields as *_mib")
    func report() throws {
        var report = WorkerReport(name: "a", url: "http://a", version: "1", sequence: 3,
                                  models: [ModelReport(name: "m", state: .draining, slotsTotal: 2, vramEstimateMiB: 512)],
                                  gpus: [GPUReport(index: 0, name: "g", memoryTotalMiB: 100, memoryFreeMiB: 50)],
                                  inFlight: 1, weight: 2)
        report.vramBudgetMiB = 100
        let data = try WireCoding.encoder().encode(report)
        let text = String(decoding: data, as: UTF8.self)
        for key in ["vram_estimate_mib", "memory_total_mib", "memory_free_mib", "vram_budget_mib", "in_flight"] {
            #expect(text.contains("\"\(key)\""), "\(key) missing in \(text)")
        }
        #expect(!text.contains("mi_b"))
        #expect(try WireCoding.decoder().decode(WorkerReport.self, from: data) == report)
    }

    static func sample() -> WorkerReport {
        WorkerReport(name: "a", url: "http://a:1", version: "1", sequence: 1,
                     models: [ModelReport(name: "m", state: .ready, slotsTotal: 4, slotsBusy: 1, vramEstimateMiB: 500)],
                     gpus: [GPUReport(index: 0, name: "g", memoryTotalMiB: 24000, memoryFreeMiB: 1000)], inFlight: 2, weight: 1)
    }

    typealias Edit = @Sendable (inout WorkerReport) -> Void
    static let hostile: [(String, Edit)] = [
        ("weight", { $0.weight = .infinity }), ("weight", { $0.weight = .nan }), ("weight", { $0.weight = 1e12 }),
        ("weight", { $0.weight = -1 }), ("in_flight", { $0.inFlight = -5 }), ("in_flight", { $0.inFlight = Int.max }),
        ("models[0].slots_total", { $0.models[0].slotsTotal = 10_000_000 }), ("models[0].slots_total", { $0.models[0].slotsTotal = -1 }),
        ("models[0].slots_busy", { $0.models[0].slotsBusy = 5 }), ("models[0].slots_busy", { $0.models[0].slotsBusy = -1 }),
        ("models[0].vram_estimate_mib", { $0.models[0].vramEstimateMiB = Int.max }),
        ("models[0].idle_seconds", { $0.models[0].idleSeconds = .nan }),
        ("models[0].recent_crashes", { $0.models[0].recentCrashes = -1 }),
        ("gpus[0].memory_total_mib", { $0.gpus[0].memoryTotalMiB = Int.max }),
        ("gpus[0].memory_free_mib", { $0.gpus[0].memoryFreeMiB = -1 }),
        ("vram_budget_mib", { $0.vramBudgetMiB = -1 }),
        ("models count", { $0.models = Array(repeating: $0.models[0], count: 5000) }),
        ("gpus count", { $0.gpus = Array(repeating: $0.gpus[0], count: 300) }),
        ("name length", { $0.name = String(repeating: "n", count: 200) }),
        ("url length", { $0.url = "" }),
        ("models[0].aliases", { $0.models[0].aliases = [String(repeating: "a", count: 300)] }),
        ("models[0].reason length", { $0.models[0].reason = String(repeating: "r", count: 20_000) }),
    ]

    @Test("every number and list of a worker report is bounded; a hostile one names its field", arguments: hostile)
    func bounds(field: String, edit: Edit) {
        #expect(Self.sample().problem == nil)
        var report = Self.sample()
        edit(&report)
        #expect(report.problem?.hasPrefix(field) == true, "\(report.problem ?? "accepted")")
    }
}
