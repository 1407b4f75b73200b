import Foundation
import Logging
import Testing
import Config
import Wire

@testable import Worker

/// The supervisor executing the lifecycles against scripted engines (``ScriptedLauncher``):
/// no processes, no sockets, and waits on events rather than sleeps.
@Suite("Engine supervisor with scripted engines")
struct EngineSupervisorTests {
    /// A worker entry with `models` (YAML list items) and `extra` worker settings.
    static func config(_ models: String, extra: String = "") throws -> WorkerConfig {
        let file = try WorkerFixture.clusterFile(credential: String(repeating: "w", count: 40), models: models, extra: "gpus: []\n" + extra)
        return try ClusterConfig.loadWorker(path: file.path, name: "a", environment: [:]).worker
    }

    /// Runs a supervisor over `config` with scripted engines while `body` runs.
    static func running(_ config: WorkerConfig, _ body: (EngineSupervisor, ScriptedLauncher) async throws -> Void) async throws {
        var logger = Logger(label: "caravan.worker.test")
        logger.logLevel = .critical
        defer { if let folder = config.stateDir { try? FileManager.default.removeItem(atPath: folder) } }
        let launcher = ScriptedLauncher()
        let supervisor = EngineSupervisor(config: config, launcher: launcher, gpus: GPUMonitor(declared: [], interval: .seconds(60), logger: logger),
                                          logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await supervisor.run() }
            defer { group.cancelAll() }
            try await body(supervisor, launcher)
        }
    }

    /// Waits for `model`'s reported state (the report is built from the supervisor's state).
    static func waitFor(_ supervisor: EngineSupervisor, _ model: String, _ state: ModelState) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        while await supervisor.report().first(where: { $0.name == model })?.state != state {
            guard ContinuousClock.now < deadline else { throw CancellationError() }
            await supervisor.leases.changes.wait(since: supervisor.leases.changes.generation, until: .now + .milliseconds(50))
        }
    }

    @Test("concurrent requests join one start; a crash is an event; the next request restarts it after the backoff")
    func oneStartAndCrash() async throws {
        try await Self.running(try Self.config("- {name: m, path: /models/m.gguf}", extra: "restart_backoff: 50ms")) { supervisor, launcher in
            async let first = supervisor.acquire("m")
            async let second = supervisor.acquire("m")
            let engines = try await [first, second]
            #expect(launcher.launched.count == 1 && engines[0].process.pid == engines[1].process.pid)
            supervisor.release("m")
            supervisor.release("m")
            launcher.launched[0].exit(9)
            try await Self.waitFor(supervisor, "m", .notLoaded)
            #expect(await supervisor.report().first?.recentCrashes == 1)
            guard case .notReady = supervisor.acquireReady("m") else { Issue.record("a crashed engine was handed out"); return }
            let again = try await supervisor.acquire("m")
            #expect(launcher.launched.count == 2 && again.process.pid == launcher.launched[1].pid)
            supervisor.release("m")
        }
    }

    @Test("a hung engine: it never becomes ready, the start fails at load_timeout with the reason, and is stopped")
    func hungStart() async throws {
        try await Self.running(try Self.config("- {name: m, path: /models/m.gguf}", extra: "load_timeout: 200ms")) { supervisor, launcher in
            launcher.setHealth(503)
            await #expect(throws: EngineError.self) { _ = try await supervisor.acquire("m") }
            #expect(launcher.launched.first?.exitStatus != nil, "the engine that never became ready was stopped")
            #expect(await supervisor.report().first?.state == .failed)
            launcher.setHealth(200)
            _ = try await supervisor.acquire("m")
            supervisor.release("m")
        }
    }

    @Test("ttl: an idle model is unloaded; one with a request waiting for it, or using it, is not")
    func ttlSpareBusy() async throws {
        try await Self.running(try Self.config("- {name: m, path: /models/m.gguf, ttl: 100ms}")) { supervisor, launcher in
            _ = try await supervisor.acquire("m")
            // Held past its ttl: stays.
            try await Task.sleep(for: .milliseconds(300))
            #expect(await supervisor.report().first?.state == .ready)
            supervisor.release("m")
            try await Self.waitFor(supervisor, "m", .notLoaded)
            #expect(launcher.launched[0].exitStatus != nil)
        }
    }

    @Test("max_loaded 1: a second model evicts the idle first one, and waits while the first is in use")
    func eviction() async throws {
        let config = try Self.config("- {name: a, path: /models/a.gguf}\n- {name: b, path: /models/b.gguf}",
                                     extra: "max_loaded: 1\nload_timeout: 5s")
        try await Self.running(config) { supervisor, launcher in
            _ = try await supervisor.acquire("a")
            async let b = supervisor.acquire("b")
            try await Self.waitFor(supervisor, "b", .loading)
            #expect(launcher.launched.count == 1, "a is in use: b waits for room")
            supervisor.release("a")
            _ = try await b
            #expect(launcher.launched.count == 2 && launcher.launched[0].exitStatus != nil, "a was evicted, then b started")
            supervisor.release("b")
        }
    }

    @Test("an admin's unload drains the request in flight, stops the engine; a load starts it again")
    func unloadAndLoad() async throws {
        try await Self.running(try Self.config("- {name: m, path: /models/m.gguf}")) { supervisor, launcher in
            _ = try await supervisor.acquire("m")
            try await supervisor.unload("m")
            try await Self.waitFor(supervisor, "m", .draining)
            guard case .notReady = supervisor.acquireReady("m") else { Issue.record("a draining engine took a request"); return }
            #expect(launcher.launched[0].exitStatus == nil, "the request in flight keeps it")
            supervisor.release("m")
            try await Self.waitFor(supervisor, "m", .notLoaded)
            try await supervisor.load("m")
            try await Self.waitFor(supervisor, "m", .ready)
            #expect(launcher.launched.count == 2)
        }
    }

    @Test("a restore is judged by the engine's cache_n: kept when it reuses the prompt; a build that claims it but computes it again is distrusted, and never asked again")
    func restoreJudged() async throws {
        for (reused, trusted) in [(99, true), (3, false)] {
            let config = try Self.config("- {name: m, path: /models/m.gguf}", extra: "restart_backoff: 10ms")
            let store = PromptCacheStore(config: config)
            let folder = store.folder(for: try #require(ModelCatalog.resolve(config).specs.first), llamaServer: config.llamaServer)
            try store.prepare(folder)
            try PromptCacheStoreTests.cacheFile(tokens: Array(1...100), server: true).write(to: URL(fileURLWithPath: folder + "/1-slot0.bin"))
            try await Self.running(config) { supervisor, launcher in
                launcher.setCaches(restored: 100, reused: reused)
                _ = try await supervisor.acquire("m")
                supervisor.release("m")
                #expect(launcher.restores == 1)
                #expect(store.restoresDistrusted(in: folder) == !trusted)
                #expect(await supervisor.report().first?.promptCacheRestored == (trusted ? 1 : 0))
                #expect(store.saved(in: folder).count == 1, "a restored file stays until its conversation is saved again")
                // The next start: a trusted build restores again, a distrusted one is not asked.
                launcher.launched[0].exit(9)
                try await Self.waitFor(supervisor, "m", .notLoaded)
                _ = try await supervisor.acquire("m")
                supervisor.release("m")
                #expect(launcher.restores == (trusted ? 2 : 1))
            }
        }
    }
}
