import Shared

/// The hub's view of its workers and the routing decision over them.
///
/// Pure value type with no I/O and no clock of its own: every call takes `now`, so tests
/// drive expiry, breakers and weights deterministically. Times are stamped on receipt;
/// worker clocks are never read.
///
/// Layout for speed: workers live in a slot array (a slot id is a small integer), and
/// `routes` maps every model name and alias to the (slot, model index) pairs serving it,
/// so a routing decision is one dictionary lookup and one pass over plain arrays.
struct Registry: Sendable {
    typealias Instant = ContinuousClock.Instant

    /// Per (worker, model) routing state that outlives heartbeats.
    struct ModelEntry: Sendable {
        var report: ModelReport
        /// Requests this hub has sent and not yet seen finish.
        var inFlight = 0
        /// Requests this hub has sent in total.
        var dispatched = 0
        var breaker: CircuitBreaker
    }

    struct Worker: Sendable {
        let slot: Int
        var report: WorkerReport
        var lastSeen: Instant
        var models: [ModelEntry]
        var name: String { report.name }
    }

    struct Route: Sendable, Equatable {
        let slot: Int
        let model: Int
    }

    /// The worker chosen for one attempt.
    struct Pick: Sendable, Equatable {
        let slot: Int
        let modelIndex: Int
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
    private var slotByName: [String: Int] = [:]
    private var routes: [String: [Route]] = [:]
    private var balancers: [String: SmoothWeightedRoundRobin] = [:]

    init(expiry: Duration, declaredModels: [String: String] = [:], breakerPolicy: CircuitBreaker.Policy = .init()) {
        self.expiry = expiry
        self.declaredModels = declaredModels
        self.breakerPolicy = breakerPolicy
    }

    // MARK: Membership

    /// Adds or replaces a worker (a re-register after a restart of either side).
    mutating func register(_ report: WorkerReport, now: Instant) {
        if let slot = slotByName[report.name] {
            // Keep breakers and in-flight counts for models it still serves.
            update(slot: slot, with: report, now: now)
            return
        }
        let slot = slots.firstIndex(where: { $0 == nil }) ?? slots.count
        let worker = Worker(slot: slot, report: report, lastSeen: now,
                            models: report.models.map { ModelEntry(report: $0, breaker: CircuitBreaker(policy: breakerPolicy)) })
        if slot == slots.count { slots.append(worker) } else { slots[slot] = worker }
        slotByName[report.name] = slot
        for key in balancers.keys { balancers[key]?.reset(slot) }
        rebuildRoutes()
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
        let sameModels = worker.models.map(\.report.name) == report.models.map(\.name)
        if sameModels {
            for index in report.models.indices { worker.models[index].report = report.models[index] }
        } else {
            let old = Dictionary(worker.models.map { ($0.report.name, $0) }, uniquingKeysWith: { a, _ in a })
            worker.models = report.models.map { model in
                var entry = old[model.name] ?? ModelEntry(report: model, breaker: CircuitBreaker(policy: breakerPolicy))
                entry.report = model
                return entry
            }
        }
        worker.report = report
        worker.lastSeen = now
        slots[slot] = worker
        if !sameModels || worker.models.map(\.report.aliases) != report.models.map(\.aliases) { rebuildRoutes() }
    }

    /// Removes a worker that is leaving on purpose; false when it was not registered.
    @discardableResult
    mutating func deregister(_ name: String) -> Bool {
        guard let slot = slotByName.removeValue(forKey: name) else { return false }
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
        var routes: [String: [Route]] = [:]
        for worker in slots.compactMap({ $0 }) {
            for (index, entry) in worker.models.enumerated() {
                for name in Set([entry.report.name] + entry.report.aliases) {
                    routes[name, default: []].append(Route(slot: worker.slot, model: index))
                }
            }
        }
        for key in routes.keys { routes[key]!.sort { slots[$0.slot]!.name < slots[$1.slot]!.name } }
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
    static func capacity(_ entry: ModelEntry, gpus: [GPUReport]) -> (tier: Tier, free: Int) {
        let report = entry.report
        switch report.state {
        case .ready:
            let total = report.slotsTotal > 0 ? report.slotsTotal : 1
            return (.loaded, total - max(report.slotsBusy, entry.inFlight))
        case .notLoaded, .loading:
            if let need = report.vramEstimateMiB, !gpus.isEmpty, gpus.map(\.memoryFreeMiB).reduce(0, +) < need {
                return (.loadable, 0)
            }
            return (.loadable, assumedSlots - entry.inFlight)
        case .failed:
            return (.failed, 1 - entry.inFlight)
        }
    }

    /// Routing weight = the worker's static `weight` x free slots (0 when saturated).
    static func weight(_ entry: ModelEntry, of worker: Worker) -> Double {
        worker.report.weight * Double(max(0, capacity(entry, gpus: worker.report.gpus).free))
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
        var anyLive = false
        var anyAdmissible = false
        // Taken out of the dictionary so the score array is uniquely owned (no copy on write).
        var balancer = balancers.removeValue(forKey: model) ?? SmoothWeightedRoundRobin()
        defer { balancers[model] = balancer }
        for tier in Tier.allCases {
            var round = SmoothWeightedRoundRobin.Round()
            var chosenRoute: Route?
            for route in candidates {
                guard let worker = slots[route.slot], isLive(worker, now: now) else { continue }
                anyLive = true
                if excluded.contains(route.slot) { continue }
                let entry = worker.models[route.model]
                guard entry.breaker.wouldAdmit(now: now) else { continue }
                let (entryTier, free) = Self.capacity(entry, gpus: worker.report.gpus)
                guard entryTier == tier else { continue }
                anyAdmissible = true
                if free > 0 {
                    balancer.offer(route.slot, weight: worker.report.weight * Double(free), to: &round)
                    if round.best == route.slot { chosenRoute = route }
                }
            }
            guard let chosen = balancer.finish(round), let route = chosenRoute else { continue }
            var worker = slots[chosen]!
            var transitions: [(Pick, CircuitBreaker.Transition)] = []
            let admission = worker.models[route.model].breaker.admit(now: now)
            let isProbe: Bool = if case .halfOpen = worker.models[route.model].breaker.state { true } else { false }
            worker.models[route.model].inFlight += 1
            worker.models[route.model].dispatched += 1
            slots[chosen] = worker
            let pick = Pick(slot: chosen, modelIndex: route.model, worker: worker.name, url: worker.report.url,
                            model: worker.models[route.model].report.name, isProbe: isProbe)
            if let transition = admission.transition { transitions.append((pick, transition)) }
            return (.picked(pick), transitions)
        }
        if !anyLive { return (.noLiveWorker, []) }
        return (anyAdmissible ? .saturated : .exhausted, [])
    }

    /// Ends a reservation: frees the in-flight slot and feeds the breaker.
    mutating func release(_ pick: Pick, sample: CircuitBreaker.Sample, now: Instant) -> CircuitBreaker.Transition? {
        guard var worker = slots[pick.slot], worker.name == pick.worker, pick.modelIndex < worker.models.count,
            worker.models[pick.modelIndex].report.name == pick.model
        else { return nil }  // the worker left or changed its models meanwhile
        worker.models[pick.modelIndex].inFlight = max(0, worker.models[pick.modelIndex].inFlight - 1)
        let transition: CircuitBreaker.Transition?
        if pick.isProbe, sample == .neutral {
            worker.models[pick.modelIndex].breaker.abandon()
            transition = nil
        } else {
            transition = worker.models[pick.modelIndex].breaker.record(sample, now: now)
        }
        slots[pick.slot] = worker
        return transition
    }
}
