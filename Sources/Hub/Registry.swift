import Shared

/// The hub's view of its workers and the routing decision over them.
///
/// Pure value type with no I/O and no clock of its own: every call takes `now`, so tests
/// drive expiry, breakers and weights deterministically. Times are stamped on receipt;
/// worker clocks are never read.
///
/// Layout for speed: every (worker, model) pair has a `Pair` of plain values in one flat
/// array (worker-level facts such as last-seen time and weight are copied in at each
/// heartbeat), and `routes` maps each model name and alias to pair ids. A routing decision
/// is one dictionary lookup and one pass over that array that retains nothing; names and
/// reports are read only for the worker finally chosen.
struct Registry: Sendable {
    typealias Instant = ContinuousClock.Instant

    /// Routing state of one (worker, model) pair. Plain values only (no references, no
    /// resilient stdlib types such as `ContinuousClock.Instant`): reading one in the pick
    /// loop is a memory load, not a retain/release or a value-witness call.
    struct Pair: Sendable {
        /// Worker slot, or -1 once the pair is free for reuse.
        var slot: Int
        /// Index of the model in the worker's report.
        var model: Int
        /// Last heartbeat, in nanoseconds since the registry's epoch.
        var lastSeen: Int64
        /// The worker's static weight.
        var weight: Double
        var state: ModelState
        var slotsTotal: Int
        var slotsBusy: Int
        /// For a model that is not loaded: whether it fits the worker's reported free VRAM.
        var fits: Bool
        /// Requests this hub has sent and not yet seen finish.
        var inFlight = 0
        /// Requests this hub has sent in total.
        var dispatched = 0
        /// The breaker's admission state, mirrored from `breakers[pair id]` after every change.
        var gate = Gate.closed
    }

    /// Whether a pair's breaker lets a request through, in plain values.
    enum Gate: Sendable, Equatable {
        case closed
        case openUntil(Int64)
        case probeAvailable
        case probing

        init(_ state: CircuitBreaker.State, nanos: (ContinuousClock.Instant) -> Int64) {
            switch state {
            case .closed: self = .closed
            case .open(let until): self = .openUntil(nanos(until))
            case .halfOpen(let probing, _): self = probing ? .probing : .probeAvailable
            }
        }

        func admits(at now: Int64) -> Bool {
            switch self {
            case .closed, .probeAvailable: true
            case .openUntil(let until): now >= until
            case .probing: false
            }
        }
    }

    struct Worker: Sendable {
        let slot: Int
        var report: WorkerReport
        var lastSeen: Instant
        /// Pair ids, in the order of `report.models`.
        var pairs: [Int]
        var name: String { report.name }
    }

    /// The worker chosen for one attempt.
    struct Pick: Sendable, Equatable {
        let pair: Int
        let slot: Int
        let worker: String
        let url: String
        let model: String
        /// True when this request is a half-open breaker's single probe.
        let isProbe: Bool
    }

    /// Outcome of asking for a worker.
    enum Decision: Sendable, Equatable {
        case picked(Pick)
        /// Candidates exist but none has free capacity now: wait in the queue.
        case saturated
        /// Neither the configuration nor any live worker knows the name (404).
        case unknownModel
        /// The model exists but no live worker serves it right now (503).
        case noLiveWorker
        /// Live workers serve it, but all were tried already or their breakers are open.
        case exhausted
    }

    enum HeartbeatResult: Equatable {
        case accepted
        /// The hub does not know this worker (e.g. after a hub restart): it must register.
        case unknownWorker
        /// An older report arrived after a newer one; ignored.
        case outOfOrder
    }

    /// Slots assumed for a model that is not loaded yet (llama-server's default `--parallel`).
    static let assumedSlots = 4

    let expiry: Duration
    let declaredModels: [String: String]
    let breakerPolicy: CircuitBreaker.Policy
    private(set) var slots: [Worker?] = []
    private(set) var pairs: [Pair] = []
    /// Circuit breakers, indexed like `pairs`.
    private(set) var breakers: [CircuitBreaker] = []
    /// Origin of the nanosecond times in `pairs`.
    let epoch: Instant
    private let expiryNanos: Int64
    private var slotByName: [String: Int] = [:]
    private var routes: [String: [Int]] = [:]
    private var balancers: [String: SmoothWeightedRoundRobin] = [:]

    init(expiry: Duration, declaredModels: [String: String] = [:], breakerPolicy: CircuitBreaker.Policy = .init(),
         epoch: Instant = .now) {
        self.expiry = expiry
        self.epoch = epoch
        self.expiryNanos = Self.nanoseconds(expiry)
        self.declaredModels = declaredModels
        self.breakerPolicy = breakerPolicy
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    func nanos(_ instant: Instant) -> Int64 { Self.nanoseconds(instant - epoch) }

    // MARK: Membership

    /// Adds or replaces a worker (a re-register after a restart of either side).
    mutating func register(_ report: WorkerReport, now: Instant) {
        if let slot = slotByName[report.name] {
            // Keep breakers and in-flight counts for models it still serves.
            update(slot: slot, with: report, now: now)
            return
        }
        let slot = slots.firstIndex(where: { $0 == nil }) ?? slots.count
        let worker = Worker(slot: slot, report: report, lastSeen: now, pairs: [])
        if slot == slots.count { slots.append(worker) } else { slots[slot] = worker }
        slotByName[report.name] = slot
        for key in balancers.keys { balancers[key]?.reset(slot) }
        update(slot: slot, with: report, now: now)
    }

    /// Refreshes a known worker.
    mutating func heartbeat(_ report: WorkerReport, now: Instant) -> HeartbeatResult {
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
        let freeVRAM = report.gpus.map(\.memoryFreeMiB).reduce(0, +)
        for (index, model) in report.models.enumerated() {
            let fits = model.vramEstimateMiB.map { report.gpus.isEmpty || freeVRAM >= $0 } ?? true
            if let id = reuse[model.name] {
                pairs[id].model = index
                pairs[id].lastSeen = nanos(now)
                pairs[id].weight = report.weight
                pairs[id].state = model.state
                pairs[id].slotsTotal = model.slotsTotal
                pairs[id].slotsBusy = model.slotsBusy
                pairs[id].fits = fits
                ids.append(id)
            } else {
                let pair = Pair(slot: slot, model: index, lastSeen: nanos(now), weight: report.weight, state: model.state,
                                slotsTotal: model.slotsTotal, slotsBusy: model.slotsBusy, fits: fits)
                if let free = pairs.firstIndex(where: { $0.slot == -1 }) {
                    pairs[free] = pair
                    breakers[free] = CircuitBreaker(policy: breakerPolicy)
                    ids.append(free)
                } else {
                    pairs.append(pair)
                    breakers.append(CircuitBreaker(policy: breakerPolicy))
                    ids.append(pairs.count - 1)
                }
            }
        }
        for id in worker.pairs where !ids.contains(id) { pairs[id].slot = -1 }
        worker.pairs = ids
        worker.report = report
        worker.lastSeen = now
        slots[slot] = worker
        let isNew = oldIDs.isEmpty
        if isNew || oldNames != report.models.map(\.name) || oldAliases != report.models.map(\.aliases) { rebuildRoutes() }
    }

    /// Removes a worker that is leaving on purpose; false when it was not registered.
    @discardableResult
    mutating func deregister(_ name: String) -> Bool {
        guard let slot = slotByName.removeValue(forKey: name) else { return false }
        for id in slots[slot]?.pairs ?? [] { pairs[id].slot = -1 }
        slots[slot] = nil
        rebuildRoutes()
        return true
    }

    /// Drops workers not heard from within `expiry`; returns their names.
    mutating func expire(now: Instant) -> [String] {
        let dead = slots.compactMap { $0 }.filter { !isLive($0, now: now) }.map(\.name).sorted()
        for name in dead { deregister(name) }
        return dead
    }

    func isLive(_ worker: Worker, now: Instant) -> Bool {
        now - worker.lastSeen <= expiry
    }

    /// Live workers, ordered by name.
    func liveWorkers(now: Instant) -> [Worker] {
        slots.compactMap { $0 }.filter { isLive($0, now: now) }.sorted { $0.name < $1.name }
    }

    func worker(named name: String) -> Worker? {
        slotByName[name].flatMap { slots[$0] }
    }

    /// Canonical names of the models live workers serve, sorted and de-duplicated.
    func servedModels(now: Instant) -> [String] {
        Array(Set(liveWorkers(now: now).flatMap { $0.report.models.map(\.name) })).sorted()
    }

    private mutating func rebuildRoutes() {
        var routes: [String: [Int]] = [:]
        for worker in slots.compactMap({ $0 }) {
            for (index, model) in worker.report.models.enumerated() {
                for name in Set([model.name] + model.aliases) {
                    routes[name, default: []].append(worker.pairs[index])
                }
            }
        }
        for key in routes.keys {
            routes[key]!.sort { slots[pairs[$0].slot]!.name < slots[pairs[$1].slot]!.name }
        }
        self.routes = routes
    }

    // MARK: Capacity and weight

    /// Which pass a candidate belongs to: loaded models first, then models a worker can
    /// load, then models that failed to load (a retry lets the worker try again).
    enum Tier: Int, CaseIterable, Sendable {
        case loaded = 0, loadable, failed
    }

    /// Free request slots of one (worker, model), counting this hub's own in-flight
    /// requests so a burst cannot pile onto a worker whose last heartbeat said "idle".
    ///
    /// - loaded: `slots_total - max(slots_busy reported, hub in-flight)`; a loaded model
    ///   whose slots are unknown counts as one slot.
    /// - not loaded or loading: `assumedSlots - hub in-flight`, and only when the worker
    ///   reports no GPUs or at least the model's VRAM estimate free.
    /// - failed: one slot (a single retry at a time).
    static func capacity(_ pair: Pair) -> (tier: Tier, free: Int) {
        switch pair.state {
        case .ready:
            return (.loaded, (pair.slotsTotal > 0 ? pair.slotsTotal : 1) - max(pair.slotsBusy, pair.inFlight))
        case .notLoaded, .loading:
            return (.loadable, pair.fits ? assumedSlots - pair.inFlight : 0)
        case .failed:
            return (.failed, 1 - pair.inFlight)
        }
    }

    /// Routing weight = the worker's static `weight` x free slots (0 when saturated).
    static func weight(_ pair: Pair) -> Double {
        pair.weight * Double(max(0, capacity(pair).free))
    }

    // MARK: Decision

    /// Picks the worker for the next attempt at `model`, skipping `excluded` slots, and
    /// reserves the slot (hub in-flight + 1, breaker probe taken). The caller must release
    /// the pick with ``release(_:sample:now:)``.
    mutating func pick(_ model: String, excluding excluded: [Int] = [], now: Instant)
        -> (decision: Decision, transitions: [(Pick, CircuitBreaker.Transition)])
    {
        guard let candidates = routes[model] else {
            return (declaredModels[model] != nil ? .noLiveWorker : .unknownModel, [])
        }
        let now64 = nanos(now)
        var anyLive = false
        var anyAdmissible = false
        // Taken out of the dictionary so the score array is uniquely owned (no copy on write).
        var balancer = balancers.removeValue(forKey: model) ?? SmoothWeightedRoundRobin()
        defer { balancers[model] = balancer }
        for tier in Tier.allCases {
            var round = SmoothWeightedRoundRobin.Round()
            var chosen: Int?
            for id in candidates {
                let pair = pairs[id]
                guard pair.slot >= 0, now64 - pair.lastSeen <= expiryNanos else { continue }
                anyLive = true
                if !excluded.isEmpty && excluded.contains(pair.slot) { continue }
                guard pair.gate.admits(at: now64) else { continue }
                let (pairTier, free) = Self.capacity(pair)
                guard pairTier == tier else { continue }
                anyAdmissible = true
                if free > 0 {
                    balancer.offer(pair.slot, weight: pair.weight * Double(free), to: &round)
                    if round.best == pair.slot { chosen = id }
                }
            }
            guard balancer.finish(round) != nil, let id = chosen else { continue }
            let admission = breakers[id].admit(now: now)
            let isProbe: Bool = if case .halfOpen = breakers[id].state { true } else { false }
            pairs[id].gate = Gate(breakers[id].state, nanos: nanos)
            pairs[id].inFlight += 1
            pairs[id].dispatched += 1
            let worker = slots[pairs[id].slot]!
            let pick = Pick(pair: id, slot: worker.slot, worker: worker.name, url: worker.report.url,
                            model: worker.report.models[pairs[id].model].name, isProbe: isProbe)
            return (.picked(pick), admission.transition.map { [(pick, $0)] } ?? [])
        }
        if !anyLive { return (.noLiveWorker, []) }
        return (anyAdmissible ? .saturated : .exhausted, [])
    }

    /// Ends a reservation: frees the in-flight slot and feeds the breaker.
    mutating func release(_ pick: Pick, sample: CircuitBreaker.Sample, now: Instant) -> CircuitBreaker.Transition? {
        // The worker may have left (or the pair been reused) meanwhile: then there is nothing to update.
        guard pick.pair < pairs.count, pairs[pick.pair].slot == pick.slot,
            let worker = slots[pick.slot], worker.name == pick.worker, worker.pairs.contains(pick.pair)
        else { return nil }
        pairs[pick.pair].inFlight = max(0, pairs[pick.pair].inFlight - 1)
        defer { pairs[pick.pair].gate = Gate(breakers[pick.pair].state, nanos: nanos) }
        if pick.isProbe, sample == .neutral {
            breakers[pick.pair].abandon()
            return nil
        }
        return breakers[pick.pair].record(sample, now: now)
    }
}
