import Foundation
import Logging
import Synchronization
import Config
import Wire

/// What admins and the heartbeat ask of the supervisor: unload, load, reset, reload, logs,
/// reports and the engines' own metrics.
extension EngineSupervisor {
    /// An admin's unload: new requests for the model start it again; this one drains
    /// (requests in flight finish, reported `draining`) and stops it.
    func unload(_ name: String) throws {
        guard let runtime = models[name] else { throw EngineError.plain("model \(name) is not served by this worker", kind: .notServed) }
        guard runtime.lifecycle.serving != nil else { return }
        metrics?.engineUnloaded(name, reason: "admin")
        logger.info("stopping llama-server", metadata: ["model": "\(name)", "reason": "unloaded by an admin"])
        handle(name, .unload)
    }

    /// An admin's load: starts the model now, without a request (after any crash backoff).
    func load(_ name: String) throws {
        guard models[name] != nil else { throw EngineError.plain("model \(name) is not served by this worker", kind: .notServed) }
        jobSink.yield(.keepUp(model: name, after: nil))
    }

    /// Clears a model's crash history (and a crash loop), so it starts again on demand.
    func reset(_ name: String) throws {
        guard models[name] != nil else { throw EngineError.plain("model \(name) is not served by this worker", kind: .notServed) }
        logger.notice("model reset by an admin", metadata: ["model": "\(name)"])
        handle(name, .reset)
    }

    /// The output ring buffer of a model (by name or alias).
    func log(for requested: String) -> EngineLog? {
        canonicalName(requested).flatMap { models[$0]?.log }
    }

    // MARK: Reload

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
        apply(try loadConfig())
    }

    /// Applies the hub-placed models as they are now (a download finished, a model was removed),
    /// with the configuration unchanged.
    @discardableResult
    func refreshPlaced() -> ReloadSummary {
        apply(config)
    }

    private func apply(_ next: WorkerConfig) -> ReloadSummary {
        let previous = config
        config = next
        if next.ports != previous.ports { ports = PortAllocator(range: next.ports.ports) }
        if next.vramBudgetMiB != previous.vramBudgetMiB { resolveBudget() }
        let (specs, skipped) = ModelCatalog.resolve(next, placed: placed())
        let plan = EnginePolicy.reloadPlan(
            before: order.compactMap { name in models[name].map { (name, $0.spec.commandLine(executable: previous.llamaServer)) } },
            after: specs.map { ($0.name, $0.commandLine(executable: next.llamaServer)) })
        let summary = ReloadSummary(added: plan.added, removed: plan.removed, restarted: plan.restarted,
                                    unchanged: plan.unchanged, skipped: skipped)
        order = specs.map(\.name)
        labels.withLock { $0 = Self.labelMap(specs) }
        rewrites.withLock { $0 = Self.rewriteMap(specs) }
        remotes.withLock { $0 = Self.remoteMap(specs) }
        for spec in specs {
            if models[spec.name] != nil {
                models[spec.name]?.spec = spec
                if plan.restarted.contains(spec.name) { handle(spec.name, .retire(removed: false)) }
            } else {
                models[spec.name] = Runtime(spec: spec, log: EngineLog(capacity: next.logLines))
                if keepsUp(spec.name) { jobSink.yield(.keepUp(model: spec.name, after: nil)) }
            }
        }
        for name in plan.removed { handle(name, .retire(removed: true)) }
        logger.notice("configuration reloaded", metadata: [
            "added": "\(summary.added)", "removed": "\(summary.removed)", "restarted": "\(summary.restarted)",
            "unchanged": "\(summary.unchanged.count)",
        ])
        changed()
        return summary
    }

    // MARK: Reports

    /// One model's report as the supervisor's state has it, and the engine whose `/slots`
    /// the report asks (outside the actor).
    private struct Draft {
        var report: ModelReport
        var engine: Engine?
        var lastSlots: (total: Int, busy: Int)?
    }

    private func drafts() -> [Draft] {
        let now = ContinuousClock.now
        let policy = self.policy
        return order.compactMap { name -> Draft? in
            guard let runtime = models[name] else { return nil }
            var entry = ModelReport(name: name, aliases: runtime.spec.config.aliases, state: .notLoaded)
            entry.unlisted = runtime.spec.config.unlisted
            let requests = leases.leases(name)
            if runtime.spec.config.upstream != nil {
                // A remote endpoint: always ready, with the capacity its entry declares.
                let total = runtime.spec.config.slots ?? 4
                entry.state = .ready
                entry.slotsTotal = total
                entry.slotsBusy = min(total, requests)
                entry.requests = requests
                return Draft(report: entry)
            }
            entry.vramEstimateMiB = runtime.spec.vramMiB
            entry.pinned = runtime.spec.config.pin
            entry.reason = runtime.lifecycle.reason
            entry.recentCrashes = policy.recentCrashes(runtime.lifecycle.crashes, now: now)
            entry.idleSeconds = max(.zero, now - leases.lastUsed(name)).inSeconds
            if let folder = runtime.cacheFolder {
                let saved = caches.saved(in: folder)
                entry.promptCaches = saved.count
                entry.promptCacheBytes = saved.map(\.bytes).reduce(0, +)
                if runtime.lifecycle.serving != nil { entry.promptCacheRestored = runtime.restoredConversations }
            }
            var engine: Engine?
            switch runtime.lifecycle.phase {
            case .stopped, .removed: break
            case .admitting, .launching, .loading: entry.state = .loading
            case .stopping: entry.state = .stopping
            case .failed, .crashLooped: entry.state = .failed
            case .ready(let running, _), .draining(let running, _):
                // A model whose replacement waits for it to drain takes no new requests here
                // while another worker can serve them.
                entry.state = runtime.lifecycle.serving == nil ? .draining : .ready
                entry.requests = requests
                engine = running
            }
            return Draft(report: entry, engine: engine, lastSlots: runtime.lastSlots)
        }
    }

    /// What the heartbeat reports for every model. The slot counts are read from the engines
    /// outside the actor, so a slow `/slots` delays nothing but this report.
    nonisolated func report() async -> [ModelReport] {
        let drafts = await self.drafts()
        let slots = await withTaskGroup(of: (Int, (total: Int, busy: Int)?).self) { group in
            for (index, draft) in drafts.enumerated() {
                guard let engine = draft.engine else { continue }
                group.addTask { (index, await self.slots(engine)) }
            }
            var slots: [Int: (total: Int, busy: Int)] = [:]
            for await (index, reading) in group { if let reading { slots[index] = reading } }
            return slots
        }
        var reports: [ModelReport] = []
        var fresh: [(model: String, slots: (total: Int, busy: Int))] = []
        for (index, draft) in drafts.enumerated() {
            var entry = draft.report
            if let reading = slots[index] {
                (entry.slotsTotal, entry.slotsBusy) = reading
                fresh.append((entry.name, reading))
            } else if draft.engine != nil, let last = draft.lastSlots {
                // Too slow under load: the last good counts, flagged, not zeros (which
                // would make the hub think the capacity was gone exactly when busiest).
                (entry.slotsTotal, entry.slotsBusy) = last
                entry.slotsStale = true
            }
            reports.append(entry)
        }
        if !fresh.isEmpty { await noteSlots(fresh) }
        return reports
    }

    /// Keeps the last slot counts (they bound what each engine is given at once).
    private func noteSlots(_ readings: [(model: String, slots: (total: Int, busy: Int))]) {
        var bounds = false
        for reading in readings {
            bounds = bounds || models[reading.model]?.lastSlots?.total != reading.slots.total
            models[reading.model]?.lastSlots = reading.slots
        }
        if bounds { changed() }
    }

    /// Slots of a ready engine (total, busy): its fixed count, llama-server's `/slots`, or
    /// one per non-llama-server engine; busy counts come from leases where the engine has no `/slots`.
    private nonisolated func slots(_ engine: Engine) async -> (total: Int, busy: Int)? {
        if let fixed = engine.fixedSlots { return (fixed, min(fixed, leases.leases(engine.model))) }
        guard engine.isLlamaServer else { return (1, min(1, leases.leases(engine.model))) }
        return await launcher.slots(engine)
    }

    /// The engines that serve or drain, in report order.
    private func runningEngines() -> [Engine] {
        order.compactMap { name in
            switch models[name]?.lifecycle.phase {
            case .ready(let engine, _)?, .draining(let engine, _)?: engine
            default: nil
            }
        }
    }

    /// Each running llama-server's own `/metrics` text (it runs with `--metrics`), read outside the actor.
    nonisolated func engineMetrics() async -> [(model: String, exposition: String)] {
        let engines = await runningEngines().filter(\.isLlamaServer)
        var result: [(String, String)] = []
        for engine in engines {
            if let exposition = await launcher.metrics(engine) { result.append((engine.model, exposition)) }
        }
        return result
    }
}
