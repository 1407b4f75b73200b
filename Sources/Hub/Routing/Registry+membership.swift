import Foundation
import Config
import Wire

/// Workers joining, reporting, draining and leaving, and the routes (name → pairs) kept in
/// step with them.
extension Registry {

    /// Adds or replaces a worker (a re-register after a restart of either side).
    package mutating func register(_ report: WorkerReport, now: Instant) {
        if let slot = slotByName[report.name] {
            // Keep breakers and in-flight counts for models it still serves.
            update(slot: slot, with: report, now: now)
            return
        }
        let slot = slots.firstIndex(where: { $0 == nil }) ?? slots.count
        let worker = Worker(slot: slot, report: report, lastSeen: now, aliveAt: now, pairs: [])
        if slot == slots.count { slots.append(worker) } else { slots[slot] = worker }
        slotByName[report.name] = slot
        update(slot: slot, with: report, now: now)
    }

    /// Refreshes a known worker.
    package mutating func heartbeat(_ report: WorkerReport, now: Instant) -> HeartbeatResult {
        guard let slot = slotByName[report.name], let worker = slots[slot] else { return .unknownWorker }
        guard report.sequence > worker.report.sequence else { return .outOfOrder }
        update(slot: slot, with: report, now: now)
        return .accepted
    }

    /// Forgets models the cluster no longer has (a hub-managed model removed): requests for
    /// them get 404 again instead of 503, once no live worker reports them.
    package mutating func forget(_ names: Set<String>, now: Instant) {
        let reported = Set(liveWorkers(now: now).flatMap { $0.report.models.flatMap { [$0.name] + $0.aliases } })
        seenModels.subtract(names.subtracting(reported))
    }

    mutating func update(slot: Int, with report: WorkerReport, now: Instant) {
        guard var worker = slots[slot] else { return }
        let oldNames = worker.report.models.map(\.name)
        let oldAliases = worker.report.models.map(\.aliases)
        let oldIDs = worker.pairs
        let reuse = Dictionary(zip(oldNames, oldIDs), uniquingKeysWith: { first, _ in first })
        var ids: [Int] = []
        let budget = report.budget
        let freeVRAM = report.gpus.isEmpty ? nil : report.gpus.reduce(0) { $0 + max(0, $1.memoryFreeMiB) }
        for (index, model) in report.models.enumerated() {
            seenModels.insert(model.name)
            seenModels.formUnion(model.aliases)
            let fit = budget.fit(needMiB: model.vramEstimateMiB, freeMiB: freeVRAM)
            if let id = reuse[model.name] {
                // The engine stopped being ready (evicted, restarting, failed): its prompt cache is
                // gone, unless the worker saved it to restore at the next start (docs/worker.md).
                let wasServing = [.ready, .draining, .stopping].contains(pairs[id].state)
                if wasServing && [.notLoaded, .loading, .failed].contains(model.state) && (model.promptCaches ?? 0) == 0 {
                    pairs[id].cacheEpoch = newCacheEpoch()
                }
                pairs[id].drained = worker.drainedHere || report.draining == true
                pairs[id].model = index
                pairs[id].lastSeen = nanos(now)
                pairs[id].weight = report.weight
                pairs[id].state = model.state
                pairs[id].slotsTotal = model.slotsTotal
                pairs[id].slotsBusy = model.slotsBusy
                pairs[id].requests = model.requests ?? 0
                pairs[id].full = false
                pairs[id].fullUntilReport = false
                pairs[id].inFlightAtReport = pairs[id].inFlight
                pairs[id].fit = fit
                // A TTFT average no sample has confirmed for a while (a worker that now only
                // gets non-streamed requests, or none) is forgotten rather than held against it.
                if pairs[id].ttft > 0, nanos(now) - pairs[id].ttftAt > LatencyWeight.forgetAfter {
                    pairs[id].ttft = 0
                    reweighRoutes(of: id)
                }
                labels[id] = (report.name, report.url, model.name)
                refresh(id)
                ids.append(id)
            } else {
                incarnations += 1
                var pair = Pair(slot: slot, model: index, incarnation: incarnations, lastSeen: nanos(now), weight: report.weight, state: model.state,
                                slotsTotal: model.slotsTotal, slotsBusy: model.slotsBusy, fit: fit)
                pair.drained = worker.drainedHere || report.draining == true
                pair.requests = model.requests ?? 0
                pair.cacheEpoch = newCacheEpoch()
                let id: Int
                if let free = pairs.firstIndex(where: { $0.slot == -1 }) {
                    id = free
                    pairs[free] = pair
                    breakers[free] = CircuitBreaker(policy: breakerPolicy)
                    labels[free] = (report.name, report.url, model.name)
                } else {
                    id = pairs.count
                    pairs.append(pair)
                    breakers.append(CircuitBreaker(policy: breakerPolicy))
                    memberships.append([])
                    labels.append((report.name, report.url, model.name))
                }
                refresh(id)
                ids.append(id)
            }
        }
        for id in worker.pairs where !ids.contains(id) { free(id) }
        worker.pairs = ids
        worker.report = report
        worker.lastSeen = now
        worker.aliveAt = max(worker.aliveAt, now)
        slots[slot] = worker
        let isNew = oldIDs.isEmpty
        if isNew || oldNames != report.models.map(\.name) || oldAliases != report.models.map(\.aliases) { rebuildRoutes() }
    }

    /// Drains (or undrains) a worker from this hub: its pairs stop being candidates at once,
    /// requests in flight finish. `onWorker`: the worker acknowledged it too, so its last report
    /// is read as saying so (an undrain then serves at once, not at its next heartbeat). False
    /// when no such worker is registered.
    package mutating func setDrained(_ name: String, _ drained: Bool, onWorker: Bool = false) -> Bool {
        guard let slot = slotByName[name], var worker = slots[slot] else { return false }
        worker.drainedHere = drained
        if onWorker { worker.report.draining = drained }
        slots[slot] = worker
        for id in worker.pairs {
            pairs[id].drained = worker.isDraining
            refresh(id)
        }
        return true
    }

    /// Applies a reloaded configuration's routing settings. Breakers keep their state and
    /// history under the new policy; balancer state is kept.
    package mutating func reconfigure(declaredModels: [String: String], discoveringWorkers: Set<String>,
                                      breakerPolicy: CircuitBreaker.Policy, aheadPerSlot: Int,
                                      policy: RoutingPolicy? = nil, indexBlocks: Int? = nil) {
        if let policy { self.policy = policy }
        if let indexBlocks, indexBlocks != self.indexBlocks {
            self.indexBlocks = indexBlocks
            prefixes = [:]
        }
        self.declaredModels = declaredModels
        self.discoveringWorkers = discoveringWorkers
        self.breakerPolicy = breakerPolicy
        self.aheadPerSlot = aheadPerSlot
        for id in breakers.indices { breakers[id].adopt(breakerPolicy) }
        for id in pairs.indices { refresh(id) }
    }

    /// Removes a worker that is leaving on purpose; false when it was not registered.
    @discardableResult
    package mutating func deregister(_ name: String) -> Bool {
        guard let slot = slotByName.removeValue(forKey: name) else { return false }
        for id in slots[slot]?.pairs ?? [] { free(id) }
        slots[slot] = nil
        rebuildRoutes()
        return true
    }

    /// Drops workers not heard from within `expiry`; returns their names.
    package mutating func expire(now: Instant) -> [String] {
        let dead = slots.compactMap { $0 }.filter { !isLive($0, now: now) }.map(\.name).sorted()
        for name in dead { deregister(name) }
        return dead
    }

    package func isLive(_ worker: Worker, now: Instant) -> Bool {
        now - worker.aliveAt <= expiry
    }

    /// Live workers, ordered by name.
    package func liveWorkers(now: Instant) -> [Worker] {
        slots.compactMap { $0 }.filter { isLive($0, now: now) }.sorted { $0.name < $1.name }
    }

    package func worker(named name: String) -> Worker? {
        slotByName[name].flatMap { slots[$0] }
    }

    /// The canonical models a requested name (a model or an alias) resolves to: every model
    /// it names in the cluster file or on a registered worker (an alias may name different
    /// models on different workers). Empty when no one knows the name.
    package func canonicalModels(for requested: String) -> Set<String> {
        var names: Set<String> = []
        if let declared = declaredModels[requested] { names.insert(declared) }
        if let route = routeIndex[requested] {
            for id in routes[route].ids where pairs[id].slot >= 0 { names.insert(labels[id].model) }
        }
        return names
    }

    /// Canonical names of the models live workers serve and list (not `unlisted` ones), sorted and de-duplicated.
    package func servedModels(now: Instant) -> [String] {
        Array(Set(liveWorkers(now: now).flatMap { $0.report.models.filter { $0.unlisted != true }.map(\.name) })).sorted()
    }

    mutating func free(_ id: Int) {
        pairs[id].slot = -1
        refresh(id)
    }

    /// Recomputes the pick loop's view of a pair; called after every change to `pairs[id]`
    /// or `breakers[id]`.
    mutating func refresh(_ id: Int) {
        let pair = pairs[id]
        guard !memberships[id].isEmpty else { return }
        guard pair.slot >= 0 else {
            for (route, position) in memberships[id] { routes[route].set(position, to: Candidate()) }
            return
        }
        if pair.drained {
            for (route, position) in memberships[id] { routes[route].set(position, to: Candidate(slot: pair.slot)) }
            return
        }
        let (tier, free) = Self.capacity(pair, aheadPerSlot: aheadPerSlot)
        let admitsFrom: Int64 = switch pair.gate {
        case .closed, .probeAvailable: .min
        case .openUntil(let until): until
        case .probing: .max
        }
        let base = Self.milliWeight(pair.weight) * Int64(max(0, free)) * Self.headroomFactor(pair)
        for (route, position) in memberships[id] {
            // A half-open breaker's probe goes out at the worker's full share: it is how the
            // worker shows it recovered.
            let factor = pair.gate != .closed ? 1 : LatencyWeight.factor(pair.ttft, best: routes[route].bestTTFT)
            let candidate = Candidate(expiresAt: pair.lastSeen + expiryNanos, admitsFrom: admitsFrom,
                                      milliWeight: factor == 1 ? base : Int64((Double(base) * factor).rounded(.up)),
                                      tier: tier.rawValue, slot: pair.slot)
            routes[route].set(position, to: candidate)
        }
    }

    /// Feeds a pair's TTFT EWMA and re-weighs the routes whose best TTFT moved as a result.
    mutating func observeTTFT(_ id: Int, _ ttft: Duration, now: Int64) {
        pairs[id].ttft = LatencyWeight.update(pairs[id].ttft, sample: Double(ttft.nanoseconds),
                                              elapsed: now - pairs[id].ttftAt)
        pairs[id].ttftAt = now
        reweighRoutes(of: id)
    }

    /// After a pair's TTFT average changed: recomputes the best average of each route it is
    /// in, and re-weighs the whole route when that reference moved.
    mutating func reweighRoutes(of id: Int) {
        for (route, _) in memberships[id] {
            var best = 0.0
            for other in routes[route].ids where pairs[other].slot >= 0 && pairs[other].ttft > 0 {
                best = best == 0 ? pairs[other].ttft : min(best, pairs[other].ttft)
            }
            // Re-weigh the whole route only when its reference moved by more than 5 %: the
            // best worker's own samples move it a little on every answer.
            let previous = routes[route].bestTTFT
            guard previous == 0 || abs(best - previous) > previous * 0.05 else { continue }
            routes[route].bestTTFT = best
            for other in routes[route].ids where other != id { refresh(other) }
        }
        refresh(id)
    }

    /// Rebuilds the name -> pairs map after membership changes. Balancer scores start
    /// again from zero, as nginx's do after a reload.
    mutating func rebuildRoutes() {
        var members: [String: [Int]] = [:]
        for worker in slots.compactMap({ $0 }) {
            for (index, model) in worker.report.models.enumerated() {
                for name in Set([model.name] + model.aliases) {
                    members[name, default: []].append(worker.pairs[index])
                }
            }
        }
        routeIndex = [:]
        routes = []
        memberships = Array(repeating: [], count: pairs.count)
        for (name, ids) in members {
            let sorted = ids.sorted { slots[pairs[$0].slot]!.name < slots[pairs[$1].slot]!.name }
            for (position, id) in sorted.enumerated() { memberships[id].append((routes.count, position)) }
            routeIndex[name] = routes.count
            var route = Route(ids: sorted)
            route.keys = sorted.map { Self.stableHash(labels[$0].worker) }
            route.bestTTFT = sorted.map { pairs[$0].ttft }.filter { $0 > 0 }.min() ?? 0
            routes.append(route)
        }
        for id in pairs.indices { refresh(id) }
    }
}
