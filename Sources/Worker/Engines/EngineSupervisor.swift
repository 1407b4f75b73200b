import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import Config
import Server
import Wire

/// Owns every engine of this worker and executes each model's ``EngineLifecycle``: it feeds
/// the machine events (requests, launches, probe answers, exits, health checks, the clock)
/// and performs the actions it returns (find room, launch, probe, stop, drain) as child tasks
/// of ``run()``. Processes and probes go through an injected ``EngineLauncher``.
///
/// One actor owns all model states, so concurrent requests for a model that is starting
/// join the same start and never launch a second copy. Requests hold a lease on their model
/// (``EngineLeases``): a model with leases is never evicted or unloaded. Nothing here polls:
/// waits are on continuations (``ChangeSignal``: a phase changed, a model's last request
/// ended) and timers; every state change triggers an immediate heartbeat (`onChange`).
actor EngineSupervisor: Service {
    struct Runtime {
        var spec: ModelSpec
        var lifecycle = EngineLifecycle()
        /// The last slot counts `/slots` gave, kept when it is too slow to answer under load.
        var lastSlots: (total: Int, busy: Int)?
        /// Where its llama-server saves prompt caches (known from its first start).
        var cacheFolder: String?
        /// The current engine's prompt caches: the task each slot held at its last save or
        /// restore (a slot whose task has not changed is on disk already), the conversations
        /// restored at its start, and whether a save runs now (saves of one engine take turns).
        var slotsOnDisk: [Int: Int] = [:]
        var restoredConversations = 0
        var savingCaches = false
        let log: EngineLog
    }

    /// Work the machine asked for, run as a child task of ``run()``.
    enum Job: Sendable {
        case exited(model: String, pid: Int32, status: Int32)
        case findRoom(model: String, deadline: ContinuousClock.Instant)
        case launch(model: String)
        case probe(model: String, engine: Engine, after: Duration)
        case stop(model: String, engine: Engine)
        case awaitIdle(model: String)
        case keepUp(model: String, after: ContinuousClock.Instant?)
    }

    /// Thrown by ``acquire(_:)`` when the engine it waited for holds its bound of requests.
    struct AdmissionFull: Error {
        let limit: Int
    }

    var config: WorkerConfig
    let launcher: any EngineLauncher
    let logger: Logger
    let metrics: WorkerMetrics?
    private let onChange: @Sendable () -> Void
    let loadConfig: @Sendable () throws -> WorkerConfig
    /// The hub-placed models whose files are here (``Placements/readyModels``).
    let placed: @Sendable () -> [ModelConfig]
    var models: [String: Runtime] = [:]
    /// Model names in report order.
    var order: [String] = []
    var ports: PortAllocator
    let gpus: GPUMonitor
    /// The VRAM budget models are admitted against; read by the heartbeat without the actor.
    private nonisolated let budgetBox = Mutex(VRAMBudget(totalMiB: nil))
    private let record: EngineRecord
    /// The engine processes the record on disk lists.
    private var recordedPIDs: [Int32] = []
    private let jobs: AsyncStream<Job>
    let jobSink: AsyncStream<Job>.Continuation
    /// Leases per model, read and taken without entering the actor.
    nonisolated let leases = EngineLeases()
    /// Fired on every phase change (not when requests end): what the idle sweep waits for.
    let phases = ChangeSignal()
    /// Requested name or alias -> canonical model name; read without entering the actor.
    nonisolated let labels = Mutex<[String: String]>([:])
    /// Request rewriting per canonical model; read without entering the actor.
    nonisolated let rewrites = Mutex<[String: BodyRewrite]>([:])
    /// Remote upstreams per canonical model; read without entering the actor.
    nonisolated let remotes = Mutex<[String: (url: String, apiKey: Secret?)]>([:])
    /// Requests admitted per engine slot beyond the slot itself (the cluster's
    /// `queue.ahead_per_slot`, the hub's own setting): the bound of the leases.
    private let aheadPerSlot: Int

    /// - Parameter launcher: starts and probes engines (``LocalEngineLauncher``: child processes probed over loopback).
    /// - Parameter loadConfig: re-reads this worker's entry from the cluster file (reload).
    /// - Parameter onChange: called after every state change (sends a heartbeat now).
    init(config: WorkerConfig, launcher: any EngineLauncher, gpus: GPUMonitor, logger: Logger,
         metrics: WorkerMetrics? = nil, aheadPerSlot: Int = 1,
         loadConfig: @escaping @Sendable () throws -> WorkerConfig = { throw EngineError(description: "reload is not available", kind: .unsupported) },
         placed: @escaping @Sendable () -> [ModelConfig] = { [] },
         onChange: @escaping @Sendable () -> Void = {}) {
        self.placed = placed
        self.config = config
        self.aheadPerSlot = aheadPerSlot
        self.launcher = launcher
        self.gpus = gpus
        self.logger = logger
        self.metrics = metrics
        self.loadConfig = loadConfig
        self.onChange = onChange
        self.ports = PortAllocator(range: config.ports.ports)
        self.record = EngineRecord(directory: config.stateDir, worker: config.name, cluster: config.hubs.joined(separator: ","))
        (jobs, jobSink) = AsyncStream.makeStream(of: Job.self)
        let (specs, skipped) = ModelCatalog.resolve(config, placed: placed())
        for line in skipped { logger.warning("model skipped", metadata: ["reason": "\(line)"]) }
        for spec in specs {
            models[spec.name] = Runtime(spec: spec, log: EngineLog(capacity: config.logLines))
            order.append(spec.name)
        }
        labels.withLock { $0 = Self.labelMap(specs) }
        rewrites.withLock { $0 = Self.rewriteMap(specs) }
        remotes.withLock { $0 = Self.remoteMap(specs) }
    }

    static func remoteMap(_ specs: [ModelSpec]) -> [String: (url: String, apiKey: Secret?)] {
        var map: [String: (url: String, apiKey: Secret?)] = [:]
        for spec in specs { if let url = spec.config.upstream { map[spec.name] = (url, spec.config.apiKey) } }
        return map
    }

    static func rewriteMap(_ specs: [ModelSpec]) -> [String: BodyRewrite] {
        Dictionary(specs.filter { !$0.config.rewrite.isEmpty }.map { ($0.name, $0.config.rewrite) }, uniquingKeysWith: { first, _ in first })
    }

    static func labelMap(_ specs: [ModelSpec]) -> [String: String] {
        var map: [String: String] = [:]
        for spec in specs { for label in [spec.name] + spec.config.aliases where map[label] == nil { map[label] = spec.name } }
        return map
    }

    // MARK: Service

    /// Cleans up after a previous run, starts pinned and preloaded models, then runs the jobs
    /// the models' lifecycles ask for, the idle sweep and the health checks until shutdown,
    /// and finally stops every engine.
    func run() async throws {
        let stale = record.killStale(logger: logger)
        if !stale.isEmpty { logger.notice("cleaned up stale engines", metadata: ["count": "\(stale.count)"]) }
        await gpus.refresh()
        resolveBudget()
        for name in order where keepsUp(name) { jobSink.yield(.keepUp(model: name, after: nil)) }
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.sweepIdle() }
                group.addTask { await self.watchHealth() }
                group.addTask { await self.checkpointCaches() }
                for await job in self.jobs {
                    group.addTask { await self.perform(job) }
                }
            }
        }
        await stopAll()
    }

    /// `vram_budget_mb`, else the GPUs' total memory; none known (or CPU entries with 0 MiB)
    /// means no budget (``VRAMBudget``, the definition the hub routes by too).
    func resolveBudget() {
        let budget = VRAMBudget(totalMiB: config.vramBudgetMiB ?? VRAMBudget(gpus: gpus.current).totalMiB)
        budgetBox.withLock { $0 = budget }
    }

    /// The VRAM budget this worker admits models against (reported to the hub).
    nonisolated var budget: VRAMBudget { budgetBox.withLock { $0 } }

    /// The decisions for the current configuration (it changes on reload).
    var policy: EnginePolicy { EnginePolicy(config: config, budget: budget) }

    /// Pinned, or all models preloaded: meant to be up without a request.
    func keepsUp(_ name: String) -> Bool {
        guard let spec = models[name]?.spec, spec.config.upstream == nil else { return false }
        return spec.config.pin || config.preload
    }

    // MARK: The machine

    /// Feeds `event` to `name`'s lifecycle and performs what it returns.
    func handle(_ name: String, _ event: EngineLifecycle.Event) {
        guard var runtime = models[name] else {
            // Removed while it launched: nothing will serve it.
            if case .launched(let engine) = event { jobSink.yield(.stop(model: name, engine: engine)) }
            return
        }
        let settings = EngineLifecycle.Settings(policy: policy, loadTimeout: config.loadTimeout, pinned: runtime.spec.config.pin,
                                                preload: config.preload, crashWindow: config.crashWindow)
        let before = runtime.lifecycle.reported
        let actions = runtime.lifecycle.handle(event, settings)
        models[name] = runtime
        for action in actions { perform(action, for: name) }
        // The waiters look again at every transition; the hub hears only of what its report shows.
        if models[name]?.lifecycle.reported != before { changed() } else { leases.changes.fire() }
    }

    private func perform(_ action: EngineLifecycle.Action, for name: String) {
        switch action {
        case .findRoom(let deadline): jobSink.yield(.findRoom(model: name, deadline: deadline))
        case .launch: jobSink.yield(.launch(model: name))
        case .probe(let engine, let delay): jobSink.yield(.probe(model: name, engine: engine, after: delay))
        case .stop(let engine): jobSink.yield(.stop(model: name, engine: engine))
        case .awaitIdle: jobSink.yield(.awaitIdle(model: name))
        case .keepUp(let after): jobSink.yield(.keepUp(model: name, after: after))
        case .ready(let engine):
            leases.touch(name)
            logger.info("model ready", metadata: ["model": "\(name)", "port": "\(engine.port)", "pid": "\(engine.process.pid)"])
        case .startFailed(let error):
            logger.error("model failed to start", metadata: ["model": "\(name)", "reason": "\(error)"])
        case .unhealthy(let failures, let detail, let restart):
            logger.warning("engine health check failed", metadata: ["model": "\(name)", "status": "\(detail)", "failures": "\(failures)"])
            if restart { logger.error("engine unhealthy; restarting", metadata: ["model": "\(name)"]) }
        case .crashed(let verdict, let reason):
            metrics?.engineCrashed(name)
            switch verdict {
            case .crashLoop:
                logger.error("model is crash-looping", metadata: ["model": "\(name)", "reason": "\(reason)"])
            case .backoff(let backoff, _):
                logger.warning("engine exited; restarting on demand after backoff",
                               metadata: ["model": "\(name)", "backoff": "\(backoff)", "reason": "\(reason)"])
            }
        case .remove:
            models[name] = nil
            leases.forget(name)
        }
    }

    /// After every state change: the ready engines where requests take them, the waiters,
    /// the PID record and the hub (a heartbeat now).
    func changed() {
        publishReady()
        saveRecord()
        phases.fire()
        leases.changes.fire()
        onChange()
    }

    /// Publishes each ready engine (not draining) with its admission bound: `slots x (1 +
    /// ahead_per_slot)`, from its fixed slot count or the last `/slots` reading (one slot for
    /// engines without `/slots`).
    private func publishReady() {
        leases.publish(models.compactMapValues { runtime -> (engine: Engine, limit: Int?)? in
            guard let engine = runtime.lifecycle.serving else { return nil }
            let slots = engine.fixedSlots ?? runtime.lastSlots?.total ?? (engine.isLlamaServer ? nil : 1)
            return (engine, slots.map { max(1, $0) * (1 + aheadPerSlot) })
        })
    }

    /// Writes the PID record when the set of engine processes changed (a stale one is killed
    /// at the next start, ``EngineRecord``).
    private func saveRecord() {
        let processes = order.compactMap { name in models[name]?.lifecycle.engine.map { (name, $0.process) } }
            .filter { !$0.1.hasExited }
        let pids = processes.map(\.1.pid)
        guard pids != recordedPIDs else { return }
        recordedPIDs = pids
        record.save(processes.compactMap { name, process in
            EngineRecord.startTime(of: process.pid).map { EngineRecord.Entry(pid: process.pid, startTime: $0, model: name) }
        })
    }

    // MARK: Requests

    /// A remote upstream serving `model` (its API root and key), nil for a local engine.
    nonisolated func remote(_ model: String) -> (url: String, apiKey: Secret?)? {
        remotes.withLock { $0[model] }
    }

    /// A request to a remote model starts: counted like an engine lease (its busy slots).
    nonisolated func leaseRemote(_ model: String) { leases.leaseRemote(model) }

    /// The request rewriting of a canonical model (empty when it has none).
    nonisolated func rewrite(for model: String) -> BodyRewrite {
        rewrites.withLock { $0[model] } ?? BodyRewrite()
    }

    /// The canonical model for a requested name or alias, nil when this worker lacks it.
    nonisolated func canonicalName(_ requested: String) -> String? {
        labels.withLock { $0[requested] }
    }

    /// A lease on `model`'s engine when it is running and not draining: the data plane's
    /// synchronous path, on the request's event loop (`.notReady`: ``acquire(_:)`` starts it
    /// or waits). An engine being stopped was withdrawn first (``EngineLeases/claimIdle(_:)``).
    nonisolated func acquireReady(_ model: String) -> EngineLeases.ReadyLease { leases.acquireReady(model) }

    /// A ready engine for `model`, starting it (or joining a start in progress) when needed.
    /// The caller holds a lease until it calls ``release(_:)``: the model is not evicted
    /// or unloaded meanwhile.
    func acquire(_ model: String) async throws -> Engine {
        guard models[model] != nil else { throw EngineError.plain("model \(model) is not served by this worker", kind: .notServed) }
        leases.beginWait(model)
        let engine: Engine
        do {
            engine = try await awaitReady(model)
        } catch {
            _ = leases.endWait(model, lease: false)
            throw error
        }
        if let full = leases.endWait(model, lease: true) { throw AdmissionFull(limit: full) }
        return engine
    }

    /// Ends a lease taken by ``acquire(_:)`` or ``acquireReady(_:)``.
    nonisolated func release(_ model: String) { leases.release(model) }

    /// Requests held per model now and at most since start (`/metrics`, and the report's `requests`).
    nonisolated func admissions() -> [String: (requests: Int, peak: Int)] { leases.snapshot() }

    /// Waits until `name` is ready, starting it when nothing else does: a start under way is
    /// joined (and its failure is this caller's), a crash backoff is waited out, a drain or
    /// stop is followed by a new start.
    func awaitReady(_ name: String) async throws -> Engine {
        var awaited: Int?  // the start this caller waits for
        while true {
            try Task.checkCancellation()
            guard let runtime = models[name] else { throw EngineError.plain("model \(name) was removed from this worker", kind: .notServed) }
            if let awaited, let error = runtime.lifecycle.failure(of: awaited) { throw error }
            let seen = leases.changes.generation
            switch runtime.lifecycle.readiness(now: .now) {
            case .ready(let engine):
                guard let status = engine.process.exitStatus else { return engine }
                // It exited and the exit event is still on its way: handle it now.
                handle(name, .exited(pid: engine.process.pid, status: ChildProcess.describe(status: status),
                                     output: runtime.log.summary(5), now: .now))
            case .unavailable(let error):
                throw error
            case .notBefore(let instant):
                try await Task.sleep(until: instant)  // crash backoff: the request waits, bounded by its timeout
            case .startable:
                handle(name, .demand(now: .now))
            case .starting(let attempt):
                awaited = attempt
                await leases.changes.wait(since: seen)
            case .busy:
                await leases.changes.wait(since: seen)
            }
        }
    }
}
