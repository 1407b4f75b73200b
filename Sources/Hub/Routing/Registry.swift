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
    package internal(set) var declaredModels: [String: String]
    /// Workers whose entries have a `models_dir`: while one of them is not live, a name no
    /// one knows may be one of its discovered models, so it gets 503 (try later), not 404.
    package internal(set) var discoveringWorkers: Set<String>
    package internal(set) var breakerPolicy: CircuitBreaker.Policy
    /// Requests per slot the hub may send to a loaded worker whose slots are all busy
    /// (`queue.ahead_per_slot`); see ``Tier/ahead``.
    package internal(set) var aheadPerSlot: Int
    /// Who should serve a request among those who may (`hub.routing`).
    package internal(set) var policy: RoutingPolicy
    /// Per canonical model: which pairs recently got which prompt blocks.
    var prefixes: [String: PrefixIndex] = [:]
    /// Blocks each model's ``PrefixIndex`` may hold (`hub.routing.index_blocks`).
    package internal(set) var indexBlocks: Int
    var nextCacheEpoch: UInt32 = 0
    package internal(set) var slots: [Worker?] = []
    package internal(set) var pairs: [Pair] = []
    /// Circuit breakers, indexed like `pairs`.
    package internal(set) var breakers: [CircuitBreaker] = []
    /// Where each pair appears in `routes` (its name and aliases), indexed like `pairs`.
    var memberships: [[(route: Int, position: Int)]] = []
    /// What a `Pick` names, indexed like `pairs` (so a pick copies three strings, not a worker).
    var labels: [(worker: String, url: String, model: String)] = []
    /// Origin of the nanosecond times in `pairs`.
    package let epoch: Instant
    let expiryNanos: Int64
    var slotByName: [String: Int] = [:]
    /// Every model name and alias a worker has reported since the hub started: with no
    /// live worker serving one now, a request gets 503 (try again), not 404, also for
    /// models workers found in their `models_dir` rather than in the cluster file.
    var seenModels: Set<String> = []
    var routeIndex: [String: Int] = [:]
    var incarnations = 0
    var routes: [Route] = []

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

    /// The smooth weighted round-robin over one route's candidates, tier by tier; the
    /// route is borrowed in place (`inout`), so nothing is copied or retained.
    static func choose(in route: inout Route, now: Int64, excluding excluded: [Int]) -> Int? {
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
    func whyNoPick(_ ids: [Int], excluding excluded: [Int], now: Int64) -> Decision {
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

}
