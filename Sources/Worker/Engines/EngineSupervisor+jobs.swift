import Foundation
import Logging
import Synchronization
import Config

/// The jobs the lifecycles ask for, the idle sweep and the health checks: each awaits its
/// I/O or its timer outside the actor's state and feeds the result back as an event.
extension EngineSupervisor {
    func perform(_ job: Job) async {
        switch job {
        case .exited(let name, let pid, let status):
            guard let log = models[name]?.log else { return }
            handle(name, .exited(pid: pid, status: ChildProcess.describe(status: status), output: log.summary(5), now: .now))
        case .findRoom(let name, let deadline): await findRoom(for: name, until: deadline)
        case .launch(let name): await launch(name)
        case .probe(let name, let engine, let delay): await probe(name, engine, after: delay)
        case .stop(let name, let engine): await stop(name, engine)
        case .awaitIdle(let name): await awaitIdle(name)
        case .keepUp(let name, let after): await keepUp(name, after: after)
        }
    }

    /// Waits until `name` fits under `max_loaded` and the VRAM budget, stopping the least
    /// recently used idle models as needed. Models with leases and pinned models are never
    /// evicted: then it waits (until the deadline) for one to become idle or stop.
    private func findRoom(for name: String, until deadline: ContinuousClock.Instant) async {
        while !Task.isCancelled {
            guard case .admitting = models[name]?.lifecycle.phase else { return }
            let seen = leases.changes.generation
            let residents = residents(besides: name)
            switch policy.admission(for: name, needMiB: models[name]?.spec.vramMiB, residents: residents) {
            case .admit:
                return handle(name, .admitted)
            case .never(let reason):
                return handle(name, .noRoom(.plain(reason, kind: .noRoom)))
            case .evict(let victim, let reason):
                // Withdrawn from requests in the same step as it is found idle: none can take it now.
                guard leases.claimIdle(victim) else { continue }
                metrics?.engineEvicted(victim)
                logger.info("stopping llama-server", metadata: ["model": "\(victim)", "reason": "\(reason)"])
                handle(victim, .stop)
            case .awaitStop, .wait:
                guard ContinuousClock.now < deadline else {
                    return handle(name, .noRoom(.plain("no room to load \(name): \(residents.count) model(s) loaded, all busy or pinned", kind: .noRoom)))
                }
                await leases.changes.wait(since: seen, until: deadline)
            }
        }
    }

    /// The models other than `name` that hold room: ready or draining, stopping, or admitted and starting.
    private func residents(besides name: String) -> [EnginePolicy.Resident] {
        models.compactMap { key, runtime -> EnginePolicy.Resident? in
            guard key != name,
                let stage = runtime.lifecycle.residentStage(evictable: !runtime.spec.config.pin && !leases.isBusy(key),
                                                            lastUsed: leases.lastUsed(key))
            else { return nil }
            return EnginePolicy.Resident(name: key, vramMiB: runtime.spec.vramMiB, stage: stage)
        }
    }

    private func launch(_ name: String) async {
        guard let spec = models[name]?.spec, let log = models[name]?.log else { return }
        let taken = Set(models.values.compactMap { $0.lifecycle.engine?.port })
        guard let port = ports.allocate(excluding: taken) else {
            return handle(name, .launchFailed(EngineError(description: "no free port in \(config.ports.lower)-\(config.ports.upper)",
                                                          publicReason: "the worker has no free engine port")))
        }
        let apiKey = Self.randomKey()
        var (executable, arguments) = spec.launchCommand(llamaServer: config.llamaServer, port: port, apiKey: apiKey)
        let cacheFolder = cacheFolder(for: spec)
        models[name]?.slotsOnDisk = [:]
        models[name]?.restoredConversations = 0
        if let cacheFolder { arguments += ["--slot-save-path", cacheFolder + "/"] }
        var environment = spec.config.env
        environment["LLAMA_API_KEY"] = apiKey  // kept out of argv, which other users can read
        environment["ENGINE_API_KEY"] = apiKey  // the same, for a `cmd` engine
        metrics?.engineStarted(name)
        logger.info(spec.config.cmd == nil ? "starting llama-server" : "starting engine",
                    metadata: ["model": "\(name)", "port": "\(port)", "executable": "\(executable)"])
        let level = Logger.Level(rawValue: config.engineLogLevel) ?? .info
        do {
            let process = try await launcher.launch(
                executable: executable, arguments: arguments, environment: environment,
                onLine: { [logger] line in
                    log.append(line)
                    logger.log(level: level, "[\(name)] \(line)")
                },
                onExit: { [jobSink] pid, status in jobSink.yield(.exited(model: name, pid: pid, status: status)) })
            handle(name, .launched(Engine(model: name, port: port, apiKey: apiKey, process: process, healthPath: spec.config.healthPath,
                                          readyStatus: spec.config.readyStatus, fixedSlots: spec.config.slots,
                                          isLlamaServer: spec.config.cmd == nil, cacheFolder: cacheFolder)))
        } catch {
            handle(name, .launchFailed(EngineError(description: "\(error)")))
        }
    }

    /// One readiness probe, after `delay`. Ready means its health answer, from this engine:
    /// only it knows its API key (another process that grabbed the port first answers 401).
    private func probe(_ name: String, _ engine: Engine, after delay: Duration) async {
        try? await Task.sleep(for: delay)
        guard !Task.isCancelled, !engine.process.hasExited else { return }  // an exit is its own event
        var answer = EngineLifecycle.Probe.notYet
        if await launcher.health(engine) == engine.readyStatus {
            answer = await launcher.ownsPort(engine) ? .ready : .foreignPort
        }
        // Its slots bound what it is given at once from the first request on.
        if answer == .ready, engine.fixedSlots == nil, engine.isLlamaServer, let slots = await launcher.slots(engine) {
            models[name]?.lastSlots = slots
        }
        // Requests wait for the start, so none sees a slot half restored.
        if answer == .ready { await restoreCaches(name, engine, slots: models[name]?.lastSlots?.total ?? 1) }
        handle(name, .probed(pid: engine.process.pid, answer, now: .now))
    }

    /// SIGTERM to the engine's process group, SIGKILL after `stop_grace`.
    private func stop(_ name: String, _ engine: Engine) async {
        logger.debug("stopping engine process", metadata: ["model": "\(name)", "pid": "\(engine.process.pid)"])
        // A planned stop keeps the prompt caches; an unhealthy engine's, a failed start's or a
        // retired command line's would not be restored.
        if case .stopping(_, .rest)? = models[name]?.lifecycle.phase { await saveCaches(name, engine) }
        let grace = config.stopGrace
        if await !engine.process.terminate(grace: grace) {
            logger.warning("llama-server ignored SIGTERM; killed after the grace period", metadata: ["model": "\(name)", "grace": "\(grace)"])
        }
        handle(name, .stopped(pid: engine.process.pid, now: .now))
    }

    /// A drain: waits until no request uses the model (at most ``EngineLifecycle/drainLimit``).
    private func awaitIdle(_ name: String) async {
        let deadline = ContinuousClock.now + EngineLifecycle.drainLimit
        while !Task.isCancelled && ContinuousClock.now < deadline {
            let seen = leases.changes.generation
            guard case .draining = models[name]?.lifecycle.phase else { return }
            if leases.leases(name) == 0 { break }
            await leases.changes.wait(since: seen, until: deadline)
        }
        handle(name, .drained)
    }

    /// Starts a model with no request waiting (preload, pin, an admin's load), after any backoff.
    private func keepUp(_ name: String, after: ContinuousClock.Instant?) async {
        guard models[name]?.spec.config.upstream == nil else { return }
        if let after { try? await Task.sleep(until: after) }
        guard !Task.isCancelled, models[name] != nil else { return }
        do { _ = try await awaitReady(name) } catch {
            logger.error("could not start model", metadata: ["model": "\(name)", "reason": "\(error)"])
        }
    }

    /// Unloads models idle for longer than their `ttl`. It sleeps until the earliest expiry
    /// (or a phase change): a busy model's expiry is at least a ttl after it is released.
    func sweepIdle() async {
        while !Task.isCancelled {
            let seen = phases.generation
            let now = ContinuousClock.now
            var next: ContinuousClock.Instant?
            for name in order {
                guard let runtime = models[name], runtime.lifecycle.serving != nil,
                    let ttl = runtime.spec.config.ttl ?? config.ttl, !runtime.spec.config.pin
                else { continue }
                let expiry = leases.isBusy(name) ? now + ttl : leases.lastUsed(name) + ttl
                guard policy.idleExpired(ttl: ttl, pinned: false, busy: leases.isBusy(name), lastUsed: leases.lastUsed(name), now: now),
                    leases.claimIdle(name)
                else {
                    next = min(next ?? expiry, expiry)
                    continue
                }
                metrics?.engineUnloaded(name, reason: "ttl")
                logger.info("stopping llama-server", metadata: ["model": "\(name)", "reason": "idle for \(ttl) (ttl)"])
                handle(name, .stop)
            }
            await phases.wait(since: seen, until: next ?? now + .seconds(3600))
        }
    }

    /// Checks every ready engine's `/health` every `health_interval`. An engine that is alive
    /// but stops answering (a deadlock, a wedged GPU driver) is noticed by nothing else: after
    /// `health_failures` failed checks in a row it is stopped (which takes it out of routing at
    /// once) and counted as a crash, so it restarts after the backoff and a model that keeps
    /// hanging ends in a crash loop.
    func watchHealth() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: config.healthInterval)
            guard config.healthFailures > 0 else { continue }  // checks off (a reload may turn them on)
            for name in order {
                guard let engine = models[name]?.lifecycle.serving else { continue }
                let status = await launcher.health(engine)
                handle(name, .health(pid: engine.process.pid, ok: status == engine.readyStatus,
                                     detail: status.map { "HTTP \($0)" } ?? "no answer", now: .now))
            }
        }
    }

    /// Stops every engine (worker shutdown), all at once.
    func stopAll() async {
        let running = models.compactMap { name, runtime in runtime.lifecycle.engine.map { (name, $0) } }
        let serving = models.compactMap { name, runtime in runtime.lifecycle.serving.map { (name, $0) } }
        let grace = config.stopGrace
        await withDiscardingTaskGroup { group in
            for (name, engine) in serving { group.addTask { await self.saveCaches(name, engine) } }
        }
        await withDiscardingTaskGroup { group in
            for (_, engine) in running { group.addTask { await engine.process.terminate(grace: grace) } }
        }
        for (name, engine) in running {
            handle(name, .stop)
            handle(name, .stopped(pid: engine.process.pid, now: .now))
        }
    }

    static func randomKey() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }
}
