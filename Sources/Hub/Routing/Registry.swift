import Foundation
import Config
import Wire

/// The hub's view of its workers and the routing decision over them.
///
/// Pure value type with no I/O and no clock of its own: every call takes `now`, so tests
/// drive expiry, breakers and weights deterministically. Times are stamped on receipt;
/// worker clocks are never read.
///
/// Layout for speed: every (worker, model) pair has a `Pair` of plain values in one flat
/// array (worker-level facts such as last-seen time and weight are copied in at each
/// heartbeat). `routes` maps each model name and alias to a `Route`: its pair ids, a dense
/// array of 32-byte `Candidate`s holding exactly what the pick loop reads (rewritten by
/// `refresh(_:)` whenever a pair changes), and its balancer. A routing decision is one
/// dictionary lookup and one sequential pass over that array that retains nothing; names
/// are read only for the pair finally chosen.
package struct Registry: Sendable {
    package typealias Instant = ContinuousClock.Instant

    /// Routing state of one (worker, model) pair. Plain values only (no references, no
    /// resilient stdlib types such as `ContinuousClock.Instant`): reading one in the pick
    /// loop is a memory load, not a retain/release or a value-witness call.
    package struct Pair: Sendable {
        /// Worker slot, or -1 once the pair is free for reuse.
        package var slot: Int
        /// Index of the model in the worker's report.
        package var model: Int
        /// Distinguishes successive uses of one pair id, so a late release cannot touch a
        /// pair that was freed and reused meanwhile.
        package var incarnation: Int
        /// Last sign of life (heartbeat or successful answer, see ``Worker/aliveAt``), in
        /// nanoseconds since the registry's epoch.
        package var lastSeen: Int64
        /// The worker's static weight.
        package var weight: Double
        package var state: ModelState
        package var slotsTotal: Int
        package var slotsBusy: Int
        /// Requests the worker holds for the model (in slots or in the engine's queue), from
        /// its report (0 from workers that do not report it: `slotsBusy` counts then).
        package var requests = 0
        /// The worker answered "full" (``UpstreamError/Kind/workerFull``): no capacity here
        /// until its next report, or until one of this hub's requests on it ends.
        package var full = false
        /// The worker answered "full" since its last report: no request past this hub's view
        /// of its room (``Registry/affinityWeight``) until it reports again.
        package var fullUntilReport = false
        /// For a model that is not loaded: how it fits the worker's VRAM (``VRAMBudget``).
        package var fit: VRAMBudget.Fit
        /// Peak-EWMA of the time to first byte of streamed answers, in nanoseconds (0: no
        /// sample yet), and when it was last fed (see ``LatencyWeight``).
        package var ttft: Double = 0
        package var ttftAt: Int64 = 0
        /// Requests this hub has sent and not yet seen finish.
        package var inFlight = 0
        /// `inFlight` when the last heartbeat arrived: the part of its `slotsBusy` that was ours.
        package var inFlightAtReport = 0
        /// Requests this hub has sent in total.
        package var dispatched = 0
        /// The breaker's admission state, mirrored from `breakers[pair id]` after every change.
        package var gate = Gate.closed
        /// The worker is drained (by an admin, here or on the worker): not a candidate.
        package var drained = false
        /// The engine's prompt cache generation (``PrefixIndex``): a new value whenever the
        /// pair is created, its engine stops being ready (restart, eviction) or its answers
        /// say the cache missed, so older index entries no longer count.
        package var cacheEpoch: UInt32 = 0
        /// Prompt tokens of this hub's answers from the pair, and how many of them its engine
        /// reused from its cache (`cache_n`): the reuse the dashboard shows.
        package var promptTokens = 0
        package var cachedTokens = 0
    }

    /// What the pick loop reads for one pair, derived from the pair by `refresh(_:)`.
    package struct Candidate: Sendable {
        /// Last heartbeat + expiry, in registry nanoseconds: not a candidate after this.
        package var expiresAt: Int64 = .min
        /// Breaker: not a candidate before this (`.min` closed, `.max` while a probe is out).
        package var admitsFrom: Int64 = .max
        /// Routing weight in thousandths (worker weight x free slots x 1000); 0 when saturated.
        package var milliWeight: Int64 = 0
        /// `Tier.rawValue`, or -1 for a free pair id.
        package var tier = -1
        package var slot = -1
    }

    /// The pairs serving one model name (or alias), ordered by worker name, and the
    /// balancer whose peers are positions in `ids`.
    ///
    /// For speed the route keeps, per tier, each position's weight *if eligible* as of
    /// `asOf` (expiry and breaker times already applied), and `changesAt`, the earliest time
    /// any of those answers changes (a heartbeat expires, an open breaker's time is up).
    /// Until then a pick feeds those weights straight to the balancer; at `changesAt` the
    /// route is re-evaluated once. `set(_:to:)` keeps both exact as pairs change.
    package struct Route: Sendable {
        package var ids: [Int] = []
        package var candidates: [Candidate] = []
        /// Tier-major: `eligible[tier * count + position]`.
        package var eligible: [Int64] = []
        package var asOf: Int64 = .min
        package var changesAt: Int64 = .min
        /// Weights with excluded workers removed; kept to avoid an allocation per retry.
        package var scratch: [Int64] = []
        package var balancer = SmoothWeightedRoundRobin()
        /// A stable hash of each position's worker name (rendezvous: the same on every hub).
        package var keys: [UInt64] = []
        /// The lowest TTFT EWMA among the route's pairs (0: none measured): the reference
        /// each pair's latency factor is computed against.
        package var bestTTFT: Double = 0

        package init() {}

        package init(ids: [Int]) {
            self.ids = ids
            candidates = Array(repeating: Candidate(), count: ids.count)
            eligible = Array(repeating: 0, count: ids.count * Tier.allCases.count)
            scratch = Array(repeating: 0, count: ids.count)
            balancer = SmoothWeightedRoundRobin(peers: ids.count)
        }

        package mutating func set(_ position: Int, to candidate: Candidate) {
            candidates[position] = candidate
            store(position, at: asOf)
            changesAt = min(changesAt, Self.nextChange(candidate, after: asOf))
        }

        /// Re-evaluates every position as of `now`.
        package mutating func reevaluate(at now: Int64) {
            asOf = now
            changesAt = .max
            for position in candidates.indices {
                store(position, at: now)
                changesAt = min(changesAt, Self.nextChange(candidates[position], after: now))
            }
        }

        private mutating func store(_ position: Int, at now: Int64) {
            let candidate = candidates[position]
            let live = now <= candidate.expiresAt && now >= candidate.admitsFrom
            for tier in 0..<Tier.allCases.count {
                eligible[tier * ids.count + position] = live && candidate.tier == tier ? candidate.milliWeight : 0
            }
        }

        /// The first time after `now` at which the candidate's eligibility flips.
        private static func nextChange(_ candidate: Candidate, after now: Int64) -> Int64 {
            var next = Int64.max
            if now <= candidate.expiresAt { next = candidate.expiresAt + 1 }
            if now < candidate.admitsFrom && candidate.admitsFrom != .max { next = min(next, candidate.admitsFrom) }
            return next
        }
    }

    /// Whether a pair's breaker lets a request through, in plain values.
    package enum Gate: Sendable, Equatable {
        case closed
        case openUntil(Int64)
        case probeAvailable
        case probing

        package init(_ state: CircuitBreaker.State, epoch: ContinuousClock.Instant) {
            switch state {
            case .closed: self = .closed
            case .open(let until): self = .openUntil((until - epoch).nanoseconds)
            case .halfOpen(let probing, _): self = probing ? .probing : .probeAvailable
            }
        }

        package func admits(at now: Int64) -> Bool {
            switch self {
            case .closed, .probeAvailable: true
            case .openUntil(let until): now >= until
            case .probing: false
            }
        }
    }

    package struct Worker: Sendable {
        package let slot: Int
        package var report: WorkerReport
        /// Last heartbeat.
        package var lastSeen: Instant
        /// Last sign of life: the last heartbeat, or a later successful answer. A hub so
        /// busy that heartbeats wait longer than the expiry (a burst of thousands of new
        /// connections on two cores did this) must not drop the workers that are answering it.
        package var aliveAt: Instant
        /// Pair ids, in the order of `report.models`.
        package var pairs: [Int]
        /// Drained through this hub's admin API (the worker's own report may say so too).
        package var drainedHere = false
        package var name: String { report.name }
        /// Takes no new requests: drained here or on the worker.
        package var isDraining: Bool { drainedHere || report.draining == true }
    }

    /// The worker chosen for one attempt.
    package struct Pick: Sendable, Equatable {
        package let pair: Int
        package let incarnation: Int
        package let slot: Int
        package let worker: String
        package let url: String
        package let model: String
        /// True when this request is a half-open breaker's single probe.
        package let isProbe: Bool
        /// True when every slot was busy and the request was sent to wait in the engine's
        /// own queue (``Tier/ahead``): its time to first byte includes that wait.
        package var isAhead = false
        /// Why the policy chose this worker (nil: round-robin without a prompt to go by).
        package var reason: CacheAwarePolicy.Reason?
        /// Leading prompt blocks the hub expects this worker's engine to have cached.
        package var matchedBlocks = 0

        package init(pair: Int, incarnation: Int, slot: Int, worker: String, url: String, model: String,
                     isProbe: Bool, isAhead: Bool = false) {
            self.pair = pair
            self.incarnation = incarnation
            self.slot = slot
            self.worker = worker
            self.url = url
            self.model = model
            self.isProbe = isProbe
            self.isAhead = isAhead
        }
    }

    /// Outcome of asking for a worker.
    package enum Decision: Sendable, Equatable {
        case picked(Pick)
        /// Candidates exist but none has free capacity now: wait in the queue.
        case saturated
        /// Neither the configuration nor any live worker knows the name (404).
        case unknownModel
        /// The model exists but no live worker serves it right now (503).
        case noLiveWorker
        /// Live workers have the model but none can ever load it: it needs more VRAM than
        /// any of their budgets (503 at once, with this reason, instead of a queue timeout).
        case doesNotFit(String)
        /// Live workers serve it, but all were tried already or their breakers are open.
        case exhausted
    }

    package enum HeartbeatResult: Equatable {
        case accepted
        /// The hub does not know this worker (e.g. after a hub restart): it must register.
        case unknownWorker
        /// An older report arrived after a newer one; ignored.
        case outOfOrder
    }

    /// Slots assumed for a model that is not loaded yet (llama-server's default `--parallel`).
    package static let assumedSlots = 4

    package let expiry: Duration
    package private(set) var declaredModels: [String: String]
    /// Workers whose entries have a `models_dir`: while one of them is not live, a name no
    /// one knows may be one of its discovered models, so it gets 503 (try later), not 404.
    package private(set) var discoveringWorkers: Set<String>
    package private(set) var breakerPolicy: CircuitBreaker.Policy
    /// Requests per slot the hub may send to a loaded worker whose slots are all busy
    /// (`queue.ahead_per_slot`); see ``Tier/ahead``.
    package private(set) var aheadPerSlot: Int
    /// Who should serve a request among those who may (`hub.routing`).
    package private(set) var policy: RoutingPolicy
    /// Per canonical model: which pairs recently got which prompt blocks.
    private var prefixes: [String: PrefixIndex] = [:]
    /// Blocks each model's ``PrefixIndex`` may hold (`hub.routing.index_blocks`).
    package private(set) var indexBlocks: Int
    private var nextCacheEpoch: UInt32 = 0
    package private(set) var slots: [Worker?] = []
    package private(set) var pairs: [Pair] = []
    /// Circuit breakers, indexed like `pairs`.
    package private(set) var breakers: [CircuitBreaker] = []
    /// Where each pair appears in `routes` (its name and aliases), indexed like `pairs`.
    private var memberships: [[(route: Int, position: Int)]] = []
    /// What a `Pick` names, indexed like `pairs` (so a pick copies three strings, not a worker).
    private var labels: [(worker: String, url: String, model: String)] = []
    /// Origin of the nanosecond times in `pairs`.
    package let epoch: Instant
    private let expiryNanos: Int64
    private var slotByName: [String: Int] = [:]
    /// Every model name and alias a worker has reported since the hub started: with no
    /// live worker serving one now, a request gets 503 (try again), not 404, also for
    /// models workers found in their `models_dir` rather than in the cluster file.
    private var seenModels: Set<String> = []
    private var routeIndex: [String: Int] = [:]
    private var incarnations = 0
    private var routes: [Route] = []

    package init(expiry: Duration, declaredModels: [String: String] = [:], discoveringWorkers: Set<String> = [],
         breakerPolicy: CircuitBreaker.Policy = .init(), aheadPerSlot: Int = 0,
         policy: RoutingPolicy = .weightedRoundRobin, indexBlocks: Int = 1_000_000, epoch: Instant = .now) {
        self.policy = policy
        self.indexBlocks = indexBlocks
        self.discoveringWorkers = discoveringWorkers
        self.expiry = expiry
        self.aheadPerSlot = aheadPerSlot
        self.epoch = epoch
        self.expiryNanos = expiry.nanoseconds
        self.declaredModels = declaredModels
        self.breakerPolicy = breakerPolicy
    }

    package func nanos(_ instant: Instant) -> Int64 { (instant - epoch).nanoseconds }

    // MARK: Membership

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

    private mutating func update(slot: Int, with report: WorkerReport, now: Instant) {
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
                // The engine stopped being ready (evicted, restarting, failed): its prompt cache is gone.
                if pairs[id].state == .ready && model.state != .ready { pairs[id].cacheEpoch = newCacheEpoch() }
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

    private mutating func newCacheEpoch() -> UInt32 {
        nextCacheEpoch &+= 1
        return nextCacheEpoch
    }

    /// What an answer's usage says about the engine's prompt cache: its reuse is counted, and
    /// when it reused nothing although the hub expected blocks there (`cache_n` 0), the index
    /// forgets that this pair holds the request's blocks (`blocks`); its other conversations
    /// keep theirs.
    package mutating func observeCache(_ pick: Pick, prompt: Int, cached: Int, blocks: [UInt64] = []) {
        guard isCurrent(pick) else { return }
        pairs[pick.pair].promptTokens += prompt
        pairs[pick.pair].cachedTokens += cached
        if pick.matchedBlocks > 0 && cached == 0 { prefixes[pick.model]?.forget(blocks, pair: pick.pair) }
    }

    /// Drains (or undrains) a worker from this hub: its pairs stop being candidates at once,
    /// requests in flight finish. False when no such worker is registered.
    package mutating func setDrained(_ name: String, _ drained: Bool) -> Bool {
        guard let slot = slotByName[name], var worker = slots[slot] else { return false }
        worker.drainedHere = drained
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

    private mutating func free(_ id: Int) {
        pairs[id].slot = -1
        refresh(id)
    }

    /// Recomputes the pick loop's view of a pair; called after every change to `pairs[id]`
    /// or `breakers[id]`.
    private mutating func refresh(_ id: Int) {
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
    private mutating func observeTTFT(_ id: Int, _ ttft: Duration, now: Int64) {
        pairs[id].ttft = LatencyWeight.update(pairs[id].ttft, sample: Double(ttft.nanoseconds),
                                              elapsed: now - pairs[id].ttftAt)
        pairs[id].ttftAt = now
        reweighRoutes(of: id)
    }

    /// After a pair's TTFT average changed: recomputes the best average of each route it is
    /// in, and re-weighs the whole route when that reference moved.
    private mutating func reweighRoutes(of id: Int) {
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
    private mutating func rebuildRoutes() {
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

    // MARK: Capacity and weight

    /// Which pass a candidate belongs to: loaded models with a free slot first, then models
    /// a worker can load into free VRAM, then loaded models whose slots are all busy but whose
    /// engine may queue a few more (`ahead`), then models a worker can load only by evicting
    /// idle ones (`evicting`: it would displace a model someone may want), then models being
    /// drained for a reload (`draining`: a request there waits for the restart), then models
    /// that failed to load (a retry lets the worker try again).
    ///
    /// Why `ahead` exists: a slot freed by a finished request otherwise idles for the whole
    /// round trip (response to the hub, the queued request back through hub and worker)
    /// before its next request arrives; with short requests that idle time cost a quarter
    /// of llama-server's throughput (docs/benchmarks.md). A request sent ahead waits in
    /// llama-server's own queue and starts the moment a slot frees. It is the last resort
    /// before the hub's queue, so a free slot or a spare worker always wins.
    package enum Tier: Int, CaseIterable, Sendable {
        case loaded = 0, loadable, ahead, evicting, draining, failed
    }

    /// Free request slots of one (worker, model), counting this hub's own in-flight
    /// requests so a burst cannot pile onto a worker whose last heartbeat said "idle".
    ///
    /// - loaded: `slots_total - (max(0, requests (or busy slots) reported - hub in-flight when that report
    ///   arrived) + hub in-flight now)`: the requests that were not ours (other hubs, direct
    ///   callers; running or in the engine's queue) stay counted until the next report, ours
    ///   are counted live, so a slot we free is usable at once instead of after the next
    ///   heartbeat; a loaded model whose slots are unknown counts as one slot.
    /// - refused as full by the worker since its last report: nothing (``Pair/full``).
    /// - not loaded: `assumedSlots - hub in-flight` when the model fits the worker's VRAM
    ///   budget (``VRAMBudget/fit(needMiB:freeMiB:)``, the definition the worker admits by):
    ///   `loadable` when it fits the free VRAM now, `evicting` when idle models must go
    ///   first, nothing when it needs more than the whole budget. A model already loading
    ///   was admitted by the worker: `loadable`.
    /// - loaded with no free slot: `slots_total x aheadPerSlot` more may be sent ahead,
    ///   to wait in the engine's queue (``Tier/ahead``).
    /// - failed: one slot (a single retry at a time).
    package static func capacity(_ pair: Pair, aheadPerSlot: Int = 0) -> (tier: Tier, free: Int) {
        if pair.full { return (.loaded, 0) }
        switch pair.state {
        case .ready:
            let others = max(0, max(pair.requests, pair.slotsBusy) - pair.inFlightAtReport)
            let total = pair.slotsTotal > 0 ? pair.slotsTotal : 1
            let free = total - others - pair.inFlight
            if free <= 0 && aheadPerSlot > 0 && free + total * aheadPerSlot > 0 {
                return (.ahead, free + total * aheadPerSlot)
            }
            return (.loaded, free)
        case .notLoaded, .loading, .stopping:
            switch pair.fit {
            case .never: return (.loadable, 0)
            case .afterEviction where pair.state != .loading: return (.evicting, assumedSlots - pair.inFlight)
            default: return (.loadable, assumedSlots - pair.inFlight)
            }
        case .draining:
            return (.draining, max(1, pair.slotsTotal) - pair.inFlight)
        case .failed:
            return (.failed, 1 - pair.inFlight)
        }
    }

    /// A worker's static weight in thousandths, clamped to 0...1,000,000 (a report is
    /// input from the network: NaN or infinity must not trap).
    package static func milliWeight(_ weight: Double) -> Int64 {
        guard weight.isFinite, weight > 0 else { return 0 }
        return Int64((min(weight, 1_000_000) * 1000).rounded())
    }

    /// Among workers that would have to load the model, the one with the most free VRAM
    /// after the load is preferred: its weight is multiplied by that headroom in GiB (at least 1).
    package static func headroomFactor(_ pair: Pair) -> Int64 {
        guard pair.state != .ready, case .free(let headroom) = pair.fit else { return 1 }
        return Int64(max(1, headroom / 1024))
    }

    /// Routing weight = the worker's static `weight` x free slots (0 when saturated), before
    /// the VRAM headroom and latency factors.
    package static func weight(_ pair: Pair) -> Double {
        pair.drained ? 0 : pair.weight * Double(max(0, capacity(pair).free))
    }

    // MARK: Decision

    /// Picks the worker for the next attempt at `model`, skipping `excluded` slots, and
    /// reserves the slot (hub in-flight + 1, breaker probe taken). The caller must release
    /// the pick with ``release(_:sample:now:)``. `prompt` (the request's fingerprint) lets
    /// the cache-aware policy send it where its prefix is; the pick is recorded in the
    /// model's ``PrefixIndex``.
    package mutating func pick(_ model: String, excluding excluded: [Int] = [], prompt: PrefixFingerprint? = nil,
                               now: Instant) -> (decision: Decision, transitions: [(Pick, CircuitBreaker.Transition)])
    {
        guard let route = routeIndex[model] else {
            let mayExist = declaredModels[model] != nil || seenModels.contains(model)
                || discoveringWorkers.contains { name in worker(named: name).map { !isLive($0, now: now) } ?? true }
            return (mayExist ? .noLiveWorker : .unknownModel, [])
        }
        let now64 = nanos(now)
        var reason: CacheAwarePolicy.Reason?
        var matched: [Int] = []
        let chosen: Int?
        if case .cacheAware(let settings) = policy, let prompt, !prompt.isEmpty {
            let canonical = labels[routes[route].ids[0]].model
            let ids = routes[route].ids
            let epochs = ids.map { pairs[$0].cacheEpoch }
            // Mutated in place (a lookup may carry a block forward): a copy would duplicate the index.
            matched = prefixes[canonical, default: PrefixIndex(capacity: indexBlocks)].matches(prompt.blocks, pairs: ids, epochs: epochs)
            (chosen, reason) = chooseByCache(in: route, settings: settings, prompt: prompt, matched: matched,
                                             now: now64, excluding: excluded)
        } else {
            chosen = Self.choose(in: &routes[route], now: now64, excluding: excluded)
        }
        guard let id = chosen else { return (whyNoPick(routes[route].ids, excluding: excluded, now: now64), []) }
        let admission = breakers[id].admit(now: now)
        let isProbe: Bool = if case .halfOpen = breakers[id].state { true } else { false }
        pairs[id].gate = Gate(breakers[id].state, epoch: epoch)
        // Sent to wait for a slot in the engine's own queue: ahead, or past this hub's view of
        // its room (``affinityWeight(_:_:now:)``).
        let (tier, free) = Self.capacity(pairs[id], aheadPerSlot: aheadPerSlot)
        let isAhead = tier == .ahead || (tier == .loaded && free <= 0)
        pairs[id].inFlight += 1
        pairs[id].dispatched += 1
        refresh(id)
        let label = labels[id]
        var pick = Pick(pair: id, incarnation: pairs[id].incarnation, slot: pairs[id].slot, worker: label.worker,
                        url: label.url, model: label.model, isProbe: isProbe,
                        isAhead: isAhead)
        if let prompt, !prompt.isEmpty, case .cacheAware = policy {
            pick.reason = reason
            pick.matchedBlocks = routes[route].ids.firstIndex(of: id).map { matched[$0] } ?? 0
            prefixes[label.model, default: PrefixIndex(capacity: indexBlocks)]
                .record(prompt.blocks, pair: id, epoch: pairs[id].cacheEpoch)
        }
        return (.picked(pick), admission.transition.map { [(pick, $0)] } ?? [])
    }

    /// The cache-aware choice (``CacheAwarePolicy``), tier by tier. In the first tier two
    /// busy engines (that may take requests *ahead*, to wait for a slot) compete with free
    /// ones: one that holds enough of the prompt (a cached prefill usually costs less than
    /// the wait), and the request's rendezvous *home* (the first block's rendezvous pick over
    /// every loaded engine with room, free or ahead): so every hub sends a new conversation to
    /// the same engine however their counts of free slots differ, and its next turn, through
    /// another hub that has not seen it, finds it there.
    private mutating func chooseByCache(in route: Int, settings: CacheAwarePolicy, prompt: PrefixFingerprint, matched: [Int],
                                        now: Int64, excluding excluded: [Int]) -> (Int?, CacheAwarePolicy.Reason?) {
        if now >= routes[route].changesAt || now < routes[route].asOf { routes[route].reevaluate(at: now) }
        let count = routes[route].ids.count
        let enough = max(1, Int((settings.minMatch * Double(prompt.blocks.count)).rounded(.up)))
        let (loaded, ahead) = (Tier.loaded.rawValue, Tier.ahead.rawValue)
        var positions: [Int] = []
        var candidates: [CacheAwarePolicy.Candidate] = []
        func candidate(_ position: Int, weight: Int64) -> CacheAwarePolicy.Candidate {
            let pair = pairs[routes[route].ids[position]]
            let load = pair.inFlight + max(0, max(pair.requests, pair.slotsBusy) - pair.inFlightAtReport)
            // Rendezvous by the routing weight without its free-slot term (static weight x VRAM
            // headroom x latency): hubs count free slots differently, but see the same workers.
            let free = max(1, Self.capacity(pair, aheadPerSlot: aheadPerSlot).free)
            return .init(matched: matched[position], load: load, weight: Double(weight) / Double(free),
                         key: routes[route].keys[position])
        }
        // The home: rendezvous over the loaded engines with room (free or ahead).
        var home: Int?
        for position in 0..<count where !excluded.contains(routes[route].candidates[position].slot) {
            let weight = max(routes[route].eligible[loaded * count + position], routes[route].eligible[ahead * count + position])
            guard weight > 0 else { continue }
            positions.append(position)
            candidates.append(candidate(position, weight: weight))
        }
        if !candidates.isEmpty {
            home = positions[CacheAwarePolicy.rendezvous(candidates, among: Array(candidates.indices), key: prompt.blocks[0])]
        }
        for tier in 0..<Tier.allCases.count {
            positions.removeAll(keepingCapacity: true)
            candidates.removeAll(keepingCapacity: true)
            for position in 0..<count where !excluded.contains(routes[route].candidates[position].slot) {
                var weight = routes[route].eligible[tier * count + position]
                if weight == 0, tier == loaded, matched[position] >= enough || position == home {
                    weight = routes[route].eligible[ahead * count + position]
                    if weight == 0 { weight = affinityWeight(routes[route].ids[position], routes[route].candidates[position], now: now) }
                }
                guard weight > 0 else { continue }
                positions.append(position)
                candidates.append(candidate(position, weight: weight))
            }
            if let (index, reason) = settings.choose(candidates, blocks: prompt.blocks.count, firstBlock: prompt.blocks[0]) {
                return (routes[route].ids[positions[index]], reason)
            }
        }
        return (nil, nil)
    }

    /// The weight of a loaded engine that the request belongs to (its prefix or its home) but
    /// that has no room in this hub's view only because of other hubs' requests: this hub
    /// counts those as of the worker's last report, and they may have ended since. Allowed up
    /// to what the engine admits from this hub alone (`slots x (1 + ahead_per_slot)`); the
    /// worker, the authority on its own admission, answers "full" when it really is, and the
    /// request goes elsewhere. Nothing past a "full" answer until the worker reports again.
    private func affinityWeight(_ id: Int, _ candidate: Candidate, now: Int64) -> Int64 {
        let pair = pairs[id]
        guard now <= candidate.expiresAt, now >= candidate.admitsFrom, pair.state == .ready, !pair.full, !pair.drained,
              pair.fullUntilReport == false else { return 0 }
        let total = pair.slotsTotal > 0 ? pair.slotsTotal : 1
        guard pair.inFlight < total * (1 + aheadPerSlot) else { return 0 }
        return Self.milliWeight(pair.weight)
    }

    /// FNV-1a of a worker's name: the same on every hub and every run (Swift's `Hasher` is
    /// seeded per process).
    package static func stableHash(_ name: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return PrefixFingerprint.mix(hash)
    }

    /// The smooth weighted round-robin over one route's candidates, tier by tier; the
    /// route is borrowed in place (`inout`), so nothing is copied or retained.
    private static func choose(in route: inout Route, now: Int64, excluding excluded: [Int]) -> Int? {
        if now >= route.changesAt || now < route.asOf { route.reevaluate(at: now) }
        let count = route.ids.count
        for tier in 0..<Tier.allCases.count {
            let position: Int?
            if excluded.isEmpty {
                position = route.eligible.withUnsafeBufferPointer {
                    route.balancer.pick(weights: UnsafeBufferPointer(rebasing: $0[(tier * count)..<((tier + 1) * count)]))
                }
            } else {
                for i in 0..<count {
                    route.scratch[i] = excluded.contains(route.candidates[i].slot) ? 0 : route.eligible[tier * count + i]
                }
                position = route.scratch.withUnsafeBufferPointer { route.balancer.pick(weights: $0) }
            }
            if let position { return route.ids[position] }
        }
        return nil
    }

    /// Why no pair could be picked: nobody live, nobody able to ever load it (VRAM),
    /// everybody busy (queue), or everybody excluded or behind an open breaker.
    private func whyNoPick(_ ids: [Int], excluding excluded: [Int], now: Int64) -> Decision {
        var anyLive = false
        var tooLarge: (need: Int, budget: Int)?
        var anyCouldServe = false
        for id in ids {
            let pair = pairs[id]
            guard pair.slot >= 0, now - pair.lastSeen <= expiryNanos, !pair.drained else { continue }
            anyLive = true
            if pair.state != .ready, pair.state != .loading, case .never(let need, let budget) = pair.fit {
                if tooLarge.map({ budget > $0.budget }) ?? true { tooLarge = (need, budget) }
                continue
            }
            anyCouldServe = true
            if excluded.contains(pair.slot) || !pair.gate.admits(at: now) { continue }
            return .saturated
        }
        if !anyCouldServe, let tooLarge {
            return .doesNotFit(VRAMBudget.neverFitsReason(needMiB: tooLarge.need, budgetMiB: tooLarge.budget))
        }
        return anyLive ? .exhausted : .noLiveWorker
    }

    /// A successful answer is a sign of life: it extends the worker's liveness like a
    /// heartbeat (its report stays as it was). Refreshed at most every quarter of the
    /// expiry, so the hot path rarely pays for it.
    private mutating func noteAnswer(fromSlot slot: Int, now: Instant) {
        guard let aliveAt = slots[slot]?.aliveAt, now - aliveAt > expiry / 4 else { return }
        slots[slot]?.aliveAt = now
        let alive = nanos(now)
        for id in slots[slot]?.pairs ?? [] where pairs[id].lastSeen < alive {
            pairs[id].lastSeen = alive
            refresh(id)
        }
    }

    /// Ends a reservation: frees the in-flight slot, feeds the breaker and, for a streamed
    /// answer, the TTFT EWMA (`ttft`).
    package mutating func release(_ pick: Pick, sample: CircuitBreaker.Sample, ttft: Duration? = nil, now: Instant)
        -> CircuitBreaker.Transition?
    {
        // The worker may have left (or the pair been reused) meanwhile: then there is nothing to update.
        guard isCurrent(pick) else { return nil }
        pairs[pick.pair].inFlight = max(0, pairs[pick.pair].inFlight - 1)
        pairs[pick.pair].full = false  // one of ours ended there: the worker has room again
        if sample == .success { noteAnswer(fromSlot: pick.slot, now: now) }
        if let ttft, !pick.isAhead { observeTTFT(pick.pair, ttft, now: nanos(now)) }
        defer {
            pairs[pick.pair].gate = Gate(breakers[pick.pair].state, epoch: epoch)
            refresh(pick.pair)
        }
        if pick.isProbe, sample == .neutral {
            breakers[pick.pair].abandon()
            return nil
        }
        return breakers[pick.pair].record(sample, now: now, isProbe: pick.isProbe)
    }

    /// A judgement that came after the attempt's reservation ended (``Blame``): the request's
    /// other attempts showed the worker failed what another worker served (`.worker`), or
    /// nothing showed either way (`.undecided`, a suspect of `client`'s). Frees nothing; a
    /// breaker that is no longer closed ignores it (its probe was released as neutral).
    package mutating func judged(_ pick: Pick, _ verdict: Blame.Verdict, error: UpstreamError, client: String,
                                 now: Instant) -> CircuitBreaker.Transition? {
        guard isCurrent(pick) else { return nil }
        defer {
            pairs[pick.pair].gate = Gate(breakers[pick.pair].state, epoch: epoch)
            refresh(pick.pair)
        }
        switch verdict {
        case .worker: return breakers[pick.pair].record(.failure(error), now: now)
        case .undecided: return breakers[pick.pair].suspect(error, client: client, now: now)
        case .none, .request: return nil
        }
    }

    /// Ends a reservation the worker refused as full (``UpstreamError/Kind/workerFull``): its
    /// in-flight slot is freed, its breaker learns nothing, and the pair takes no more
    /// requests from this hub until the worker's next report or until one of this hub's
    /// requests there ends (another hub, or direct callers, filled it).
    package mutating func releaseFull(_ pick: Pick, now: Instant) {
        guard isCurrent(pick) else { return }
        pairs[pick.pair].inFlight = max(0, pairs[pick.pair].inFlight - 1)
        pairs[pick.pair].full = true
        pairs[pick.pair].fullUntilReport = true
        if pick.isProbe { breakers[pick.pair].abandon() }
        pairs[pick.pair].gate = Gate(breakers[pick.pair].state, epoch: epoch)
        refresh(pick.pair)
    }

    /// A streamed request's first byte is already later than `slowTTFB`: it counts as a
    /// failure now (not when the byte finally comes), and the worker's TTFT EWMA jumps to at
    /// least that, so its weight drops while the request is still outstanding.
    package mutating func firstByteOverdue(_ pick: Pick, after slowTTFB: Duration, now: Instant) -> CircuitBreaker.Transition? {
        guard isCurrent(pick) else { return nil }
        if !pick.isAhead { observeTTFT(pick.pair, slowTTFB, now: nanos(now)) }
        defer {
            pairs[pick.pair].gate = Gate(breakers[pick.pair].state, epoch: epoch)
            refresh(pick.pair)
        }
        return breakers[pick.pair].record(.failure(.slowFirstByte(slowTTFB)), now: now, isProbe: pick.isProbe)
    }

    private func isCurrent(_ pick: Pick) -> Bool {
        pick.pair < pairs.count && pairs[pick.pair].slot == pick.slot && pairs[pick.pair].incarnation == pick.incarnation
    }
}
