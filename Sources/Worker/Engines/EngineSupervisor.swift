import NIOCore
import AsyncHTTPClient
import Foundation
import Logging
import NIOHTTP1
import ServiceLifecycle
import Synchronization
import Config
import Server
import Wire

/// Owns every llama-server of this worker and the lifecycle of each model:
///
/// ```
/// stopped ──request──► starting ──/health 200──► ready ──ttl / evicted / reload──► stopping ──► stopped
///    ▲                    │ exit, timeout              │ exit (crash)
///    └── backoff ◄────────┴────────────────────────────┘      N crashes in the window ──► failed (crash loop)
/// ```
///
/// One actor owns all model states, so concurrent requests for a model that is starting
/// join the same start and never launch a second copy. Requests hold a lease on their
/// model (`acquire` / `release`): a model with leases is never evicted or unloaded.
/// Engine exits arrive as events the moment the process is reaped, and every state change
/// triggers an immediate heartbeat (`onChange`).
actor EngineSupervisor: Service {
    private enum Phase {
        case stopped
        case starting(Task<Engine, any Error>)
        case ready(Engine)
        case stopping(Task<Void, Never>)
        /// Why: `Runtime.reason`.
        case failed
    }

    private struct Runtime {
        var spec: ModelSpec
        var phase = Phase.stopped
        /// The launched process (from launch until it is reaped), for the PID record.
        var process: ChildProcess?
        /// Past `makeRoom`: counts against `max_loaded` and the VRAM budget while starting.
        var admitted = false
        var crashes: [ContinuousClock.Instant] = []
        var crashLooped = false
        /// Why it last stopped on its own or failed.
        var reason: String?
        /// No automatic start before this (crash backoff).
        var retryAt: ContinuousClock.Instant?
        /// Its command line changed or it was removed: stop once idle (reported `draining`).
        var retiring = false
        /// An admin unloads it: stop once idle (reported `draining`), then stay stopped.
        var unloading = false
        /// The last slot counts `/slots` gave, kept when it is too slow to answer under load.
        var lastSlots: (total: Int, busy: Int)?
        /// `/health` checks of the running engine that failed in a row.
        var healthFailures = 0
        let log: EngineLog
    }

    /// Leases and last use per model, outside the actor so a finishing response can release
    /// synchronously from any thread.
    private struct Usage {
        /// Requests using the running engine.
        var leases = 0
        /// Requests waiting for the engine to start (or restart): they keep the model from
        /// being evicted, but a drain does not wait for them (they wait for the drain).
        var waiting = 0
        var lastUsed = ContinuousClock.now
        /// The running engine requests may take without asking the actor (see ``acquireReady(_:)``).
        var ready: Engine?
        /// Most requests the running engine is given at once: `slots x (1 + ahead_per_slot)`
        /// once its slots are known (nil: no bound yet). Beyond it the worker answers "full".
        var limit: Int?
        /// The most leases held at once since this worker started (`/metrics`).
        var peak = 0
        var busy: Bool { leases + waiting > 0 }

        mutating func lease() {
            leases += 1
            peak = max(peak, leases)
            lastUsed = .now
        }
    }

    /// What ``acquireReady(_:)`` found.
    enum ReadyLease {
        /// A lease on the running engine.
        case engine(Engine)
        /// The engine holds `limit` requests already: the request goes elsewhere (the hub's retry or queue).
        case full(limit: Int)
        /// No engine is running: ``acquire(_:)`` starts one or waits for it.
        case notReady
    }

    /// Thrown by ``acquire(_:)`` when the engine it waited for holds its bound of requests.
    struct AdmissionFull: Error {
        let limit: Int
    }

    private enum Event: Sendable {
        case exited(model: String, pid: Int32, status: Int32)
        /// Start (or keep) a model without a request: preload, pin, restart of a pinned model.
        case ensure(String)
        /// Drain a retiring model, stop it, and drop it when it was removed.
        case retire(String)
        /// Drain a model an admin unloads, and stop it.
        case unload(String)
    }

    private var config: WorkerConfig
    private let probe: LlamaServerClient
    private let logger: Logger
    private let metrics: WorkerMetrics?
    private let onChange: @Sendable () -> Void
    private let loadConfig: @Sendable () throws -> WorkerConfig
    private var models: [String: Runtime] = [:] {
        didSet { publishReady() }
    }
    /// Model names in report order.
    private var order: [String] = []
    private var ports: PortAllocator
    private let gpus: GPUMonitor
    /// The VRAM budget models are admitted against; read by the heartbeat without the actor.
    private nonisolated let budgetBox = Mutex(VRAMBudget(totalMiB: nil))
    private let record: EngineRecord
    private let events: AsyncStream<Event>
    private let eventSink: AsyncStream<Event>.Continuation
    /// Requested name or alias -> canonical model name; read without entering the actor.
    private nonisolated let labels = Mutex<[String: String]>([:])
    private nonisolated let usage = Mutex<[String: Usage]>([:])
    /// Request rewriting per canonical model; read without entering the actor.
    private nonisolated let rewrites = Mutex<[String: BodyRewrite]>([:])
    /// Remote upstreams per canonical model; read without entering the actor.
    private nonisolated let remotes = Mutex<[String: (url: String, apiKey: Secret?)]>([:])
    /// Requests admitted per engine slot beyond the slot itself (the cluster's
    /// `queue.ahead_per_slot`, the hub's own setting): the bound of ``Usage/limit``.
    private let aheadPerSlot: Int

    /// - Parameter loadConfig: re-reads this worker's entry from the cluster file (reload).
    /// - Parameter onChange: called after every state change (sends a heartbeat now).
    init(config: WorkerConfig, client: HTTPClient, gpus: GPUMonitor, logger: Logger, metrics: WorkerMetrics? = nil,
         aheadPerSlot: Int = 1, loadConfig: @escaping @Sendable () throws -> WorkerConfig = { throw EngineError(description: "reload is not available") },
         onChange: @escaping @Sendable () -> Void = {}) {
        self.config = config
        self.aheadPerSlot = aheadPerSlot
        self.probe = LlamaServerClient(client: client)
        self.gpus = gpus
        self.logger = logger
        self.metrics = metrics
        self.loadConfig = loadConfig
        self.onChange = onChange
        self.ports = PortAllocator(range: config.ports.ports)
        self.record = EngineRecord(directory: config.stateDir, worker: config.name, cluster: config.hubs.joined(separator: ","))
        (events, eventSink) = AsyncStream.makeStream(of: Event.self)
        let (specs, skipped) = ModelCatalog.resolve(config)
        for line in skipped { logger.warning("model skipped", metadata: ["reason": "\(line)"]) }
        for spec in specs {
            models[spec.name] = Runtime(spec: spec, log: EngineLog(capacity: config.logLines))
            order.append(spec.name)
        }
        labels.withLock { $0 = Self.labelMap(specs) }
        rewrites.withLock { $0 = Self.rewriteMap(specs) }
        remotes.withLock { $0 = Self.remoteMap(specs) }
    }

    private static func remoteMap(_ specs: [ModelSpec]) -> [String: (url: String, apiKey: Secret?)] {
        var map: [String: (url: String, apiKey: Secret?)] = [:]
        for spec in specs { if let url = spec.config.upstream { map[spec.name] = (url, spec.config.apiKey) } }
        return map
    }

    private static func rewriteMap(_ specs: [ModelSpec]) -> [String: BodyRewrite] {
        Dictionary(specs.filter { !$0.config.rewrite.isEmpty }.map { ($0.name, $0.config.rewrite) }, uniquingKeysWith: { first, _ in first })
    }

    private static func labelMap(_ specs: [ModelSpec]) -> [String: String] {
        var map: [String: String] = [:]
        for spec in specs { for label in [spec.name] + spec.config.aliases where map[label] == nil { map[label] = spec.name } }
        return map
    }

    // MARK: Service

    /// Cleans up after a previous run, starts pinned and preloaded models, then handles
    /// engine exits and unloads idle models until shutdown, and finally stops every engine.
    func run() async throws {
        let stale = record.killStale(logger: logger)
        if !stale.isEmpty { logger.notice("cleaned up stale engines", metadata: ["count": "\(stale.count)"]) }
        await gpus.refresh()
        resolveBudget()
        for name in order where config.preload || models[name]!.spec.config.pin { eventSink.yield(.ensure(name)) }
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.sweepIdle() }
                group.addTask { await self.watchHealth() }
                for await event in self.events {
                    switch event {
                    case .exited(let model, let pid, let status): await self.engineExited(model, pid: pid, status: status)
                    case .ensure(let model): group.addTask { await self.ensure(model) }
                    case .retire(let model): group.addTask { await self.retire(model) }
                    case .unload(let model): group.addTask { await self.drainAndUnload(model) }
                    }
                }
            }
        }
        await stopAll()
    }

    /// `vram_budget_mb`, else the GPUs' total memory; none known (or CPU entries with 0 MiB)
    /// means no budget (``VRAMBudget``, the definition the hub routes by too).
    private func resolveBudget() {
        let budget = VRAMBudget(totalMiB: config.vramBudgetMiB ?? VRAMBudget(gpus: gpus.current).totalMiB)
        budgetBox.withLock { $0 = budget }
    }

    /// The VRAM budget this worker admits models against (reported to the hub).
    nonisolated var budget: VRAMBudget { budgetBox.withLock { $0 } }

    /// The decisions for the current configuration (it changes on reload).
    private var policy: EnginePolicy { EnginePolicy(config: config, budget: budget) }

    // MARK: Requests

    /// A remote upstream serving `model` (its API root and key), nil for a local engine.
    nonisolated func remote(_ model: String) -> (url: String, apiKey: Secret?)? {
        remotes.withLock { $0[model] }
    }

    /// A request to a remote model starts: counted like an engine lease (its busy slots).
    nonisolated func leaseRemote(_ model: String) {
        usage.withLock { usage in
            usage[model, default: Usage()].lease()
        }
    }

    /// The request rewriting of a canonical model (empty when it has none).
    nonisolated func rewrite(for model: String) -> BodyRewrite {
        rewrites.withLock { $0[model] } ?? BodyRewrite()
    }

    /// The canonical model for a requested name or alias, nil when this worker lacks it.
    nonisolated func canonicalName(_ requested: String) -> String? {
        labels.withLock { $0[requested] }
    }

    /// A ready engine for `model`, starting it (or joining a start in progress) when needed.
    /// The caller holds a lease until it calls ``release(_:)``: the model is not evicted
    /// or unloaded meanwhile.
    func acquire(_ model: String) async throws -> Engine {
        guard models[model] != nil else { throw EngineError.plain("model \(model) is not served by this worker") }
        usage.withLock { $0[model, default: Usage()].waiting += 1 }
        do {
            let engine = try await readyEngine(model)
            let full = usage.withLock { usage -> Int? in
                usage[model]?.waiting -= 1
                if let limit = usage[model]?.limit, let leases = usage[model]?.leases, leases >= limit { return limit }
                usage[model]?.lease()
                return nil
            }
            if let full { throw AdmissionFull(limit: full) }
            return engine
        } catch {
            usage.withLock { $0[model]?.waiting -= 1 }
            throw error
        }
    }

    /// A lease on `model`'s engine when it is running and not draining: the data plane's
    /// synchronous path, on the request's event loop (nil: ``acquire(_:)`` starts it or waits).
    /// An eviction decided in the same instant can still stop the engine under the request,
    /// which then fails before its first byte and the hub retries it elsewhere.
    nonisolated func acquireReady(_ model: String) -> ReadyLease {
        usage.withLock { usage -> ReadyLease in
            guard let entry = usage[model], let engine = entry.ready, engine.process.exitStatus == nil else { return .notReady }
            if let limit = entry.limit, entry.leases >= limit { return .full(limit: limit) }
            usage[model]?.lease()
            return .engine(engine)
        }
    }

    /// Requests held per model now and at most since start (`/metrics`, and the report's `requests`).
    nonisolated func admissions() -> [String: (requests: Int, peak: Int)] {
        usage.withLock { $0.mapValues { ($0.leases, $0.peak) } }
    }

    /// Mirrors the engines that are ready (not retiring or unloading) where ``acquireReady(_:)`` reads them.
    /// Also publishes each engine's admission bound: `slots x (1 + ahead_per_slot)`, from its
    /// fixed slot count or the last `/slots` reading (one slot for engines without `/slots`).
    private func publishReady() {
        let ready = models.compactMapValues { runtime -> (engine: Engine, limit: Int?)? in
            guard case .ready(let engine) = runtime.phase, !runtime.retiring, !runtime.unloading else { return nil }
            let slots = engine.fixedSlots ?? runtime.lastSlots?.total ?? (engine.isLlamaServer ? nil : 1)
            return (engine, slots.map { max(1, $0) * (1 + aheadPerSlot) })
        }
        usage.withLock { usage in
            for name in Set(usage.keys).union(ready.keys) {
                usage[name, default: Usage()].ready = ready[name]?.engine
                usage[name]?.limit = ready[name]?.limit
            }
        }
    }

    /// Ends a lease taken by ``acquire(_:)`` or ``acquireReady(_:)``.
    nonisolated func release(_ model: String) {
        usage.withLock { usage in
            usage[model]?.leases -= 1
            usage[model]?.lastUsed = .now
        }
    }

    /// Requests using the engine now (what a drain waits for).
    private func leases(_ model: String) -> Int { usage.withLock { $0[model]?.leases ?? 0 } }

    /// Whether any request uses or waits for the model (then it is not evicted or unloaded).
    private func isBusy(_ model: String) -> Bool { usage.withLock { $0[model]?.busy ?? false } }

    private func readyEngine(_ name: String) async throws -> Engine {
        while true {
            guard let runtime = models[name] else { throw EngineError.plain("model \(name) was removed from this worker") }
            switch runtime.phase {
            case .ready where runtime.retiring:
                try await Task.sleep(for: .milliseconds(50))  // its replacement starts once it drains
            case .ready(let engine):
                if let status = engine.process.exitStatus {
                    engineExited(name, pid: engine.process.pid, status: status)
                    continue
                }
                return engine
            case .starting(let task):
                _ = try await task.value
            case .stopping(let task):
                await task.value
            case .failed where runtime.crashLooped:
                throw EngineError(description: runtime.reason ?? "crash loop",
                                  publicReason: "it is in a crash loop; automatic restarts are stopped until an admin resets it")
            case .stopped, .failed:
                if let retryAt = runtime.retryAt, retryAt > .now {
                    try await Task.sleep(until: retryAt)  // crash backoff: the request waits, bounded by its timeout
                    continue
                }
                let task = Task { try await self.start(name) }
                models[name]?.phase = .starting(task)
                changed()
                _ = try await task.value
            }
        }
    }

    // MARK: Starting

    private func start(_ name: String) async throws -> Engine {
        guard let spec = models[name]?.spec, let log = models[name]?.log else {
            throw EngineError.plain("model \(name) was removed from this worker")
        }
        do {
            try await makeRoom(for: name)
        } catch {
            models[name]?.phase = .stopped
            models[name]?.reason = "\(error)"
            changed()
            throw error
        }
        let taken = Set(models.values.compactMap { runtime -> Int? in
            switch runtime.phase {
            case .ready(let engine): engine.port
            default: nil
            }
        })
        guard let port = ports.allocate(excluding: taken) else {
            throw fail(name, "no free port in \(config.ports.lower)-\(config.ports.upper)", publicReason: "the worker has no free engine port")
        }
        let apiKey = randomKey()
        let (executable, arguments) = spec.launchCommand(llamaServer: config.llamaServer, port: port, apiKey: apiKey)
        var environment = spec.config.env
        environment["LLAMA_API_KEY"] = apiKey  // kept out of argv, which other users can read
        environment["ENGINE_API_KEY"] = apiKey  // the same, for a `cmd` engine
        let launchedAt = ContinuousClock.now
        metrics?.engineStarted(name)
        logger.info(spec.config.cmd == nil ? "starting llama-server" : "starting engine",
                    metadata: ["model": "\(name)", "port": "\(port)", "executable": "\(executable)"])
        let process: ChildProcess
        let level = Logger.Level(rawValue: config.engineLogLevel) ?? .info
        do {
            process = try await ChildProcess.launch(
                executable: executable, arguments: arguments, environment: environment,
                onLine: { [logger] line in
                    log.append(line)
                    logger.log(level: level, "[\(name)] \(line)")
                },
                onExit: { [eventSink] pid, status in eventSink.yield(.exited(model: name, pid: pid, status: status)) })
        } catch {
            throw fail(name, "\(error)")
        }
        models[name]?.process = process
        saveRecord()
        let engine = Engine(model: name, port: port, apiKey: apiKey, process: process, healthPath: spec.config.healthPath,
                            readyStatus: spec.config.readyStatus, fixedSlots: spec.config.slots,
                            isLlamaServer: spec.config.cmd == nil)
        let deadline = ContinuousClock.now + config.loadTimeout
        while true {
            if let status = process.exitStatus {
                let reason = "llama-server exited during load (\(ChildProcess.describe(status: status))): \(log.summary(5))"
                logger.error("model failed to start", metadata: ["model": "\(name)", "reason": "\(reason)"])
                recordCrash(name, reason: reason, whileReady: false)
                throw EngineError(description: models[name]?.reason ?? reason)
            }
            if await probe.health(engine) == engine.readyStatus {
                // Prove the answer came from our process: only it knows this API key. Another
                // process that grabbed the port first would answer 401 here.
                guard await probe.ownsPort(engine) else {
                    await process.terminate(grace: config.stopGrace)
                    throw fail(name, "port \(port) answered /health but not with this engine's API key (taken by another process)")
                }
                break
            }
            if ContinuousClock.now > deadline {
                await process.terminate(grace: config.stopGrace)
                throw fail(name, "not ready within \(config.loadTimeout): \(log.summary(3))",
                           publicReason: "it did not become ready within \(config.loadTimeout) (see the worker's logs for model \(name))")
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        guard models[name] != nil else {
            await process.terminate(grace: config.stopGrace)
            throw EngineError.plain("model \(name) was removed from this worker while it started")
        }
        // Its slots bound what it is given at once (``Usage/limit``) from the first request on.
        if engine.fixedSlots == nil, engine.isLlamaServer, let slots = await probe.slots(engine) {
            models[name]?.lastSlots = slots
        }
        models[name]?.phase = .ready(engine)
        models[name]?.reason = nil
        metrics?.loaded(name, after: ContinuousClock.now - launchedAt)
        usage.withLock { $0[name, default: Usage()].lastUsed = .now }
        logger.info("model ready", metadata: ["model": "\(name)", "port": "\(port)", "pid": "\(process.pid)"])
        changed()
        return engine
    }

    /// Waits until `name` fits under `max_loaded` and the VRAM budget, stopping the least
    /// recently used idle models as needed. Models with leases and pinned models are never
    /// evicted: then it waits (up to the load timeout) for one to become idle.
    private func makeRoom(for name: String) async throws {
        let need = models[name]?.spec.vramMiB
        let deadline = ContinuousClock.now + config.loadTimeout
        while true {
            let residents = residents(besides: name)
            switch policy.admission(for: name, needMiB: need, residents: residents) {
            case .admit:
                models[name]?.admitted = true
                return
            case .never(let reason):
                throw EngineError.plain(reason)
            case .evict(let victim, let reason):
                metrics?.engineEvicted(victim)
                await stop(victim, reason: reason)
            case .awaitStop:
                for case .stopping(let task) in residents.compactMap({ models[$0.name]?.phase }) {
                    await task.value
                    break
                }
            case .wait:
                guard ContinuousClock.now < deadline else {
                    throw EngineError.plain("no room to load \(name): \(residents.count) model(s) loaded, all busy or pinned")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    /// The models other than `name` that hold room: ready, stopping, or starting and admitted.
    private func residents(besides name: String) -> [EnginePolicy.Resident] {
        models.compactMap { key, runtime -> EnginePolicy.Resident? in
            guard key != name else { return nil }
            let stage: EnginePolicy.Resident.Stage
            switch runtime.phase {
            case .ready: stage = .ready(evictable: !runtime.spec.config.pin && !isBusy(key), lastUsed: lastUsed(key))
            case .stopping: stage = .stopping
            case .starting where runtime.admitted: stage = .starting
            case .starting, .stopped, .failed: return nil
            }
            return EnginePolicy.Resident(name: key, vramMiB: runtime.spec.vramMiB, stage: stage)
        }
    }

    private func lastUsed(_ model: String) -> ContinuousClock.Instant {
        usage.withLock { $0[model]?.lastUsed ?? .now }
    }

    /// Records a failed start and returns the error to throw.
    /// - Parameter publicReason: what a client may read (no engine output); nil: see the logs.
    private func fail(_ name: String, _ reason: String, publicReason: String? = nil) -> EngineError {
        models[name]?.phase = .failed
        models[name]?.reason = reason
        models[name]?.admitted = false
        logger.error("model failed to start", metadata: ["model": "\(name)", "reason": "\(reason)"])
        changed()
        return EngineError(description: reason, publicReason: publicReason)
    }

    /// An engine exited on its own (while starting or ready): count it, back off, and call
    /// it a crash loop after `crash_limit` exits within `crash_window`.
    private func recordCrash(_ name: String, reason: String, whileReady: Bool) {
        guard var runtime = models[name] else { return }
        metrics?.engineCrashed(name)
        let verdict: EnginePolicy.CrashVerdict
        (runtime.crashes, verdict) = policy.crashed(history: runtime.crashes, now: .now)
        runtime.process = nil
        runtime.admitted = false
        switch verdict {
        case .crashLoop(let count):
            runtime.crashLooped = true
            let text = "crash loop: \(count) exits within \(config.crashWindow); automatic restarts stopped "
                + "until the model's config changes or an admin resets it. Last: \(reason)"
            runtime.phase = .failed
            runtime.reason = text
            logger.error("model is crash-looping", metadata: ["model": "\(name)", "reason": "\(text)"])
        case .backoff(let backoff, let until):
            runtime.retryAt = until
            // A crash of a running engine leaves it restartable (not loaded); a failed load is a failure.
            runtime.phase = whileReady ? .stopped : .failed
            runtime.reason = reason
            logger.warning("engine exited; restarting on demand after backoff",
                           metadata: ["model": "\(name)", "backoff": "\(backoff)", "reason": "\(reason)"])
            // Pinned and preloaded models are meant to be up: bring them back after the backoff.
            if runtime.spec.config.pin || config.preload { eventSink.yield(.ensure(name)) }
        }
        models[name] = runtime
        saveRecord()
        changed()
    }

    /// Handles an engine exit event (or an exit noticed when a request came).
    private func engineExited(_ name: String, pid: Int32, status: Int32) {
        // Only an engine that was serving counts here: an exit while starting is handled by
        // the start, and one while stopping was asked for.
        guard let runtime = models[name], runtime.process?.pid == pid, case .ready = runtime.phase else { return }
        let reason = "llama-server exited (\(ChildProcess.describe(status: status))): \(runtime.log.summary(5))"
        recordCrash(name, reason: reason, whileReady: true)
    }

    /// Starts a model with no request waiting (preload, pin), after any backoff.
    private func ensure(_ name: String) async {
        guard let runtime = models[name], !runtime.crashLooped, runtime.spec.config.upstream == nil else { return }
        if let retryAt = runtime.retryAt, retryAt > .now { try? await Task.sleep(until: retryAt) }
        guard !Task.isCancelled else { return }
        do { _ = try await readyEngine(name) } catch {
            logger.error("could not start model", metadata: ["model": "\(name)", "reason": "\(error)"])
        }
    }

    // MARK: Stopping

    /// Stops a ready engine: SIGTERM to its process group, SIGKILL after `stop_grace`.
    ///
    /// The stopping task leaves `.stopping` itself, on the actor, before it completes: a
    /// waiter that sees its task finished must also see the phase moved on. (When the phase
    /// was left by the caller after `await task.value`, a request looping in `readyEngine`
    /// could find `.stopping` with a finished task, await it without suspending, and spin on
    /// the actor forever: no heartbeat, no new engine.)
    private func stop(_ name: String, reason: String) async {
        guard let runtime = models[name] else { return }
        switch runtime.phase {
        case .stopping(let task):
            await task.value
        case .ready(let engine):
            logger.info("stopping llama-server", metadata: ["model": "\(name)", "pid": "\(engine.process.pid)", "reason": "\(reason)"])
            let grace = config.stopGrace
            let task = Task {
                if await !engine.process.terminate(grace: grace) {
                    logger.warning("llama-server ignored SIGTERM; killed after the grace period",
                                   metadata: ["model": "\(name)", "grace": "\(grace)"])
                }
                stopped(name)
            }
            models[name]?.phase = .stopping(task)
            changed()
            await task.value
        default:
            return
        }
    }

    /// The end of `stop`: the engine's process is gone.
    private func stopped(_ name: String) {
        if case .stopping = models[name]?.phase { models[name]?.phase = .stopped }
        models[name]?.process = nil
        models[name]?.admitted = false
        saveRecord()
        changed()
    }

    /// Unloads models idle for longer than their `ttl`, every quarter second until cancelled.
    private func sweepIdle() async {
        while !Task.isCancelled {
            let now = ContinuousClock.now
            for name in order {
                guard let runtime = models[name], case .ready = runtime.phase else { continue }
                let ttl = runtime.spec.config.ttl ?? config.ttl
                guard policy.idleExpired(ttl: ttl, pinned: runtime.spec.config.pin, busy: isBusy(name),
                                         lastUsed: lastUsed(name), now: now)
                else { continue }
                metrics?.engineUnloaded(name, reason: "ttl")
                await stop(name, reason: "idle for \(ttl.map { "\($0)" } ?? "") (ttl)")
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }

    /// Checks every ready engine's `/health` every `health_interval`. An engine that is alive
    /// but stops answering (a deadlock, a wedged GPU driver) is noticed by nothing else: after
    /// `health_failures` failed checks in a row it is reported unhealthy, stopped (which takes it
    /// out of routing at once) and counted as a crash, so it restarts after the backoff and a
    /// model that keeps hanging ends in a crash loop.
    private func watchHealth() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: config.healthInterval)
            guard config.healthFailures > 0 else { continue }  // checks off (a reload may turn them on)
            for name in order {
                guard let runtime = models[name], case .ready(let engine) = runtime.phase, !runtime.retiring else { continue }
                let status = await probe.health(engine)
                // The engine may have been stopped or replaced while the check was out.
                guard case .ready(let current) = models[name]?.phase, current.process.pid == engine.process.pid else { continue }
                if status == engine.readyStatus {
                    models[name]?.healthFailures = 0
                    continue
                }
                let failures = (models[name]?.healthFailures ?? 0) + 1
                models[name]?.healthFailures = failures
                logger.warning("engine health check failed", metadata: [
                    "model": "\(name)", "status": "\(status.map(String.init) ?? "no answer")", "failures": "\(failures)",
                ])
                guard policy.isUnhealthy(failures: failures) else { continue }
                let reason = "unhealthy: /health failed \(failures) times in a row (\(status.map { "HTTP \($0)" } ?? "no answer")); restarted"
                logger.error("engine unhealthy; restarting", metadata: ["model": "\(name)", "reason": "\(reason)"])
                await stop(name, reason: reason)
                models[name]?.healthFailures = 0
                recordCrash(name, reason: reason, whileReady: true)
            }
        }
    }

    /// Drains a retiring model (changed command line, or removed), stops it, then drops it
    /// or starts it again when pinned.
    private func retire(_ name: String) async {
        let deadline = ContinuousClock.now + .seconds(600)
        while leases(name) > 0 && ContinuousClock.now < deadline && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
        }
        await stop(name, reason: "configuration changed")
        guard let runtime = models[name] else { return }
        models[name]?.retiring = false
        if !order.contains(name) {
            models[name] = nil
            _ = usage.withLock { $0.removeValue(forKey: name) }
            changed()
        } else if runtime.spec.config.pin {
            await ensure(name)
        }
    }

    /// An admin's unload: new requests for the model start it again; this one drains
    /// (requests in flight finish, reported `draining`) and stops it.
    func unload(_ name: String) throws {
        guard let runtime = models[name] else { throw EngineError.plain("model \(name) is not served by this worker") }
        guard case .ready = runtime.phase, !runtime.unloading else { return }
        models[name]?.unloading = true
        eventSink.yield(.unload(name))
        changed()
    }

    /// An admin's load: starts the model now, without a request (after any crash backoff).
    func load(_ name: String) throws {
        guard models[name] != nil else { throw EngineError.plain("model \(name) is not served by this worker") }
        eventSink.yield(.ensure(name))
    }

    private func drainAndUnload(_ name: String) async {
        let deadline = ContinuousClock.now + .seconds(600)
        while leases(name) > 0 && ContinuousClock.now < deadline && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
        }
        metrics?.engineUnloaded(name, reason: "admin")
        await stop(name, reason: "unloaded by an admin")
        models[name]?.unloading = false
        changed()
    }

    /// Each running llama-server's own `/metrics` text (it runs with `--metrics`).
    func engineMetrics() async -> [(model: String, exposition: String)] {
        var result: [(String, String)] = []
        for name in order {
            guard case .ready(let engine) = models[name]?.phase, engine.isLlamaServer,
                let exposition = await probe.metrics(engine)
            else { continue }
            result.append((name, exposition))
        }
        return result
    }

    /// Stops every engine (worker shutdown).
    func stopAll() async {
        for name in order + models.keys.filter({ !order.contains($0) }) {
            if case .starting(let task) = models[name]?.phase { _ = try? await task.value }
            await stop(name, reason: "worker shutting down")
        }
        saveRecord()
    }

    // MARK: Reload and reset

    /// What a reload changed, for the log and the admin answer.
    struct ReloadSummary: Encodable, Sendable {
        var added: [String] = []
        var removed: [String] = []
        var restarted: [String] = []
        var unchanged: [String] = []
        var skipped: [String] = []
    }

    /// Re-reads the configuration and applies it: models whose command line is unchanged
    /// keep running (their ttl, pin, aliases and listing update in place); changed ones
    /// restart once idle; removed ones stop once idle; new ones start on demand.
    func reload() async throws -> ReloadSummary {
        let next = try loadConfig()
        return apply(next)
    }

    private func apply(_ next: WorkerConfig) -> ReloadSummary {
        let previous = config
        config = next
        if next.ports != previous.ports { ports = PortAllocator(range: next.ports.ports) }
        if next.vramBudgetMiB != previous.vramBudgetMiB { resolveBudget() }
        let (specs, skipped) = ModelCatalog.resolve(next)
        let plan = EnginePolicy.reloadPlan(
            before: order.compactMap { name in models[name].map { (name, $0.spec.commandLine(executable: previous.llamaServer)) } },
            after: specs.map { ($0.name, $0.commandLine(executable: next.llamaServer)) })
        let summary = ReloadSummary(added: plan.added, removed: plan.removed, restarted: plan.restarted,
                                    unchanged: plan.unchanged, skipped: skipped)
        for spec in specs {
            if var runtime = models[spec.name] {
                runtime.spec = spec
                if plan.restarted.contains(spec.name) {
                    runtime.crashes = []
                    runtime.crashLooped = false
                    runtime.retryAt = nil
                    if case .failed = runtime.phase { runtime.phase = .stopped }
                    if case .ready = runtime.phase {
                        runtime.retiring = true
                        eventSink.yield(.retire(spec.name))
                    }
                }
                models[spec.name] = runtime
            } else {
                models[spec.name] = Runtime(spec: spec, log: EngineLog(capacity: next.logLines))
                if spec.config.pin || next.preload { eventSink.yield(.ensure(spec.name)) }
            }
        }
        for name in plan.removed {
            switch models[name]?.phase {
            case .ready?:
                models[name]?.retiring = true
                eventSink.yield(.retire(name))
            default:
                models[name] = nil
            }
        }
        order = specs.map(\.name)
        labels.withLock { $0 = Self.labelMap(specs) }
        rewrites.withLock { $0 = Self.rewriteMap(specs) }
        remotes.withLock { $0 = Self.remoteMap(specs) }
        logger.notice("configuration reloaded", metadata: [
            "added": "\(summary.added)", "removed": "\(summary.removed)", "restarted": "\(summary.restarted)",
            "unchanged": "\(summary.unchanged.count)",
        ])
        changed()
        return summary
    }

    /// Clears a model's crash history (and a crash loop), so it starts again on demand.
    func reset(_ name: String) throws {
        guard models[name] != nil else { throw EngineError.plain("model \(name) is not served by this worker") }
        models[name]?.crashes = []
        models[name]?.crashLooped = false
        models[name]?.retryAt = nil
        models[name]?.reason = nil
        if case .failed = models[name]?.phase { models[name]?.phase = .stopped }
        logger.notice("model reset by an admin", metadata: ["model": "\(name)"])
        if models[name]?.spec.config.pin == true { eventSink.yield(.ensure(name)) }
        changed()
    }

    /// The output ring buffer of a model (by name or alias).
    func log(for requested: String) -> EngineLog? {
        canonicalName(requested).flatMap { models[$0]?.log }
    }

    // MARK: Reports

    /// What the heartbeat reports for every model.
    func report() async -> [ModelReport] {
        var reports: [ModelReport] = []
        let now = ContinuousClock.now
        for name in order {
            guard let runtime = models[name] else { continue }
            var entry = ModelReport(name: name, aliases: runtime.spec.config.aliases, state: .notLoaded)
            if runtime.spec.config.upstream != nil {
                // A remote endpoint: always ready, with the capacity its entry declares.
                let total = runtime.spec.config.slots ?? 4
                entry.state = .ready
                entry.slotsTotal = total
                entry.slotsBusy = min(total, leases(name))
                entry.requests = leases(name)
                entry.unlisted = runtime.spec.config.unlisted
                reports.append(entry)
                continue
            }
            entry.vramEstimateMiB = runtime.spec.vramMiB
            entry.pinned = runtime.spec.config.pin
            entry.unlisted = runtime.spec.config.unlisted
            entry.reason = runtime.reason
            entry.recentCrashes = policy.recentCrashes(runtime.crashes, now: now)
            let idle = max(.zero, now - lastUsed(name))  // a model never used has no lastUsed yet: "now", read after `now`
            entry.idleSeconds = idle.inSeconds
            switch runtime.phase {
            case .stopped: break
            case .starting: entry.state = .loading
            case .stopping: entry.state = .stopping
            case .failed: entry.state = .failed
            case .ready(let engine):
                // A model whose replacement waits for it to drain takes no new requests here
                // while another worker can serve them.
                entry.state = runtime.retiring || runtime.unloading ? .draining : .ready
                entry.requests = leases(name)
                if let slots = await slots(engine) {
                    models[name]?.lastSlots = slots
                    (entry.slotsTotal, entry.slotsBusy) = slots
                } else if let last = models[name]?.lastSlots {
                    // Too slow under load: the last good counts, flagged, not zeros (which
                    // would make the hub think the capacity was gone exactly when busiest).
                    (entry.slotsTotal, entry.slotsBusy) = last
                    entry.slotsStale = true
                }
            }
            reports.append(entry)
        }
        return reports
    }

    // MARK: Helpers

    private func changed() { onChange() }

    private func saveRecord() {
        let entries = order.compactMap { name -> EngineRecord.Entry? in
            guard let process = models[name]?.process, !process.hasExited,
                let start = EngineRecord.startTime(of: process.pid)
            else { return nil }
            return EngineRecord.Entry(pid: process.pid, startTime: start, model: name)
        }
        record.save(entries)
    }

    /// Slots of a ready engine (total, busy): its fixed count, llama-server's `/slots`, or
    /// one per non-llama-server engine; busy counts come from leases where the engine has no `/slots`.
    private func slots(_ engine: Engine) async -> (total: Int, busy: Int)? {
        if let fixed = engine.fixedSlots { return (fixed, min(fixed, leases(engine.model))) }
        guard engine.isLlamaServer else { return (1, min(1, leases(engine.model))) }
        return await probe.slots(engine)
    }

    private func randomKey() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }
}
