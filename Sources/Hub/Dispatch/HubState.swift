import HTTPTypes
import Routing
import Logging
import NIOCore
import Synchronization
import Config
import Proxy
import Server
import Wire

/// The hub's shared mutable state: registry, balancer, breakers and wait queues behind one lock.
///
/// A `Mutex` rather than an actor: every request touches it briefly and never awaits
/// while holding it. The clock is injected so tests can move time.
final class HubState: Sendable {
    typealias Now = @Sendable () -> ContinuousClock.Instant
    /// A queued request: told once, with its pick or why it stopped waiting.
    typealias Waiter = @Sendable (Result<Registry.Pick, any Error>) -> Void
    /// A queued request: how to settle it, and its prompt (it keeps its cache affinity while it waits).
    struct Waiting: Sendable {
        let settle: Waiter
        let prompt: PrefixFingerprint?
    }

    private struct Guarded: Sendable {
        var registry: Registry
        var queues: [String: WaitQueue<Waiting>] = [:]
    }

    private let guarded: Mutex<Guarded>
    let now: Now
    private let capacity: Atomic<Int>
    /// Arrival tickets handed out (``arrival()``).
    private let tickets = Atomic<UInt64>(0)
    let logger: Logger
    /// Where state changes are announced (`GET /admin/events`).
    let events: ClusterEvents
    /// Breaker transitions are counted here.
    let metrics: HubMetrics?

    init(registry: Registry, queueCapacity: Int = 64, logger: Logger = Logger(label: "caravan.hub"),
         events: ClusterEvents = ClusterEvents(), metrics: HubMetrics? = nil,
         now: @escaping Now = { ContinuousClock.now }) {
        self.guarded = Mutex(Guarded(registry: registry))
        self.capacity = Atomic(queueCapacity)
        self.logger = logger
        self.events = events
        self.metrics = metrics
        self.now = now
    }

    /// Requests that may wait per model (`queue.size`; a reload changes it).
    var queueCapacity: Int { capacity.load(ordering: .relaxed) }

    /// Applies a reloaded configuration's routing and queue settings.
    func reconfigure(declaredModels: [String: String], discoveringWorkers: Set<String>,
                     breakerPolicy: CircuitBreaker.Policy, aheadPerSlot: Int, routingPolicy: RoutingPolicy? = nil,
                     indexBlocks: Int? = nil, queueCapacity: Int) {
        capacity.store(queueCapacity, ordering: .relaxed)
        guarded.withLock {
            $0.registry.reconfigure(declaredModels: declaredModels, discoveringWorkers: discoveringWorkers,
                                    breakerPolicy: breakerPolicy, aheadPerSlot: aheadPerSlot,
                                    policy: routingPolicy, indexBlocks: indexBlocks)
        }
        drainQueues()
    }

    /// See ``Registry/forget(_:now:)``.
    func forget(models names: Set<String>) {
        let instant = now()
        guarded.withLock { $0.registry.forget(names, now: instant) }
    }

    /// Drains or undrains a worker on this hub at once (its own report follows; `onWorker`:
    /// the worker acknowledged it); false when no such worker is registered.
    func setDrained(_ name: String, _ drained: Bool, onWorker: Bool = false) -> Bool {
        let (found, before, after) = guarded.withLock { state in
            let before = state.registry.worker(named: name)?.isDraining
            let found = state.registry.setDrained(name, drained, onWorker: onWorker)
            return (found, before, state.registry.worker(named: name)?.isDraining)
        }
        announceDrain(name, from: before, to: after)
        if found && !drained { drainQueues() }
        return found
    }

    /// Publishes a change of a worker's effective drain (here or on the worker), once.
    private func announceDrain(_ name: String, from before: Bool?, to after: Bool?) {
        guard let before, let after, before != after else { return }
        events.publish(.init(type: after ? "worker_draining" : "worker_undrained", worker: name))
    }

    // MARK: Routing

    /// Picks and reserves a worker for `model`, skipping `excluded` slots; `prompt` lets the
    /// cache-aware policy send the request where its prefix is.
    func pick(_ model: String, excluding excluded: [Int] = [], prompt: PrefixFingerprint? = nil) -> Registry.Decision {
        let instant = now()
        let (decision, transitions) = guarded.withLock {
            $0.registry.pick(model, excluding: excluded, prompt: prompt, now: instant)
        }
        for (pick, transition) in transitions { log(transition, pick) }
        return decision
    }

    /// A new request's ticket: its place in line, kept if it has to wait again (``waitForCapacity``).
    func arrival() -> UInt64 { tickets.wrappingAdd(1, ordering: .relaxed).newValue }

    /// Waits in the model's queue (by arrival ticket) until a worker has capacity, the deadline passes
    /// (503), the queue is full (429), the client leaves (`clientDeparture`: its place goes
    /// to the next in line; `CancellationError`) or the shutdown grace is over (503
    /// `server_shutting_down`). `done` is called exactly once, from whichever thread settles
    /// the wait; the deadline is a task scheduled on `loop` (the request's), so a waiting
    /// request costs no Swift task.
    func waitForCapacity(_ model: String, prompt: PrefixFingerprint? = nil, deadline: ContinuousClock.Instant,
                         on loop: any EventLoop, clientDeparture: ClientDeparture? = nil, shutdown: ShutdownGrace? = nil,
                         ticket: UInt64? = nil, _ done: @escaping @Sendable (Result<Registry.Pick, any Error>) -> Void) {
        enum Admission { case ready(Registry.Pick), full, queued }
        let instant = now()
        let queued = QueuedRequest(done)
        let id = ticket ?? arrival()
        let admission = guarded.withLock { state -> Admission in
            // Capacity may have freed since the caller's pick: take it rather than queue,
            // unless someone who arrived earlier waits for it.
            if state.queues[model]?.isFirst(id) ?? true,
               case .picked(let pick) = state.registry.pick(model, prompt: prompt, now: instant).decision {
                return .ready(pick)
            }
            var queue = state.queues[model] ?? WaitQueue(capacity: queueCapacity)
            guard queue.enqueue(id: id, deadline: deadline, Waiting(settle: { queued.settle($0) }, prompt: prompt)) else { return .full }
            state.queues[model] = queue
            return .queued
        }
        switch admission {
        case .ready(let pick):
            return done(.success(pick))
        case .full:
            return done(.failure(OpenAIError(.queueFull, message: "Every worker for '\(model)' is busy and the wait queue is full",
                                             headers: [.retryAfter: "1"])))
        case .queued:
            break
        }
        // Whichever comes first takes the entry out of the queue and settles it; the others find it gone.
        let leave: @Sendable (any Error) -> Void = { [self] error in
            guard let entry = guarded.withLock({ $0.queues[model]?.remove(id: id) }) else { return }
            entry.waiter.settle(.failure(error))
        }
        let timer = loop.scheduleTask(in: TimeAmount(max(deadline - now(), .zero))) { [self] in
            leave(downloading(model) ?? OpenAIError(.queueTimeout, message: "No worker for '\(model)' had capacity within the queue timeout",
                                                    headers: [.retryAfter: "1"]))
        }
        let departed = clientDeparture?.onDeparture { leave(CancellationError()) }
        let expired = shutdown?.onExpiry { leave(OpenAIError.shuttingDown) }
        queued.onSettle {
            timer.cancel()
            clientDeparture?.cancel(departed)
            shutdown?.cancel(expired)
        }
    }

    /// Hands freed capacity to queued requests, oldest first.
    private func drainQueues() {
        let instant = now()
        let ready: [(Waiter, Registry.Pick)] = guarded.withLock { state in
            var ready: [(Waiter, Registry.Pick)] = []
            for model in state.queues.keys {
                while let first = state.queues[model]?.entries.first {
                    let prompt = first.waiter.prompt
                    guard case .picked(let pick) = state.registry.pick(model, prompt: prompt, now: instant).decision else { break }
                    _ = state.queues[model]?.popFirst()
                    ready.append((first.waiter.settle, pick))
                }
            }
            return ready
        }
        for (waiter, pick) in ready { waiter(.success(pick)) }
    }

    /// Ends a reservation, feeds the breaker (and the TTFT average) and lets queued requests in.
    func release(_ pick: Registry.Pick, sample: CircuitBreaker.Sample, ttft: Duration? = nil) {
        let instant = now()
        let transition = guarded.withLock { $0.registry.release(pick, sample: sample, ttft: ttft, now: instant) }
        if let transition { log(transition, pick) }
        drainQueues()
    }

    /// Applies a judgement made after an attempt's lease ended (``Registry/judged(_:_:error:client:now:)``).
    func judged(_ pick: Registry.Pick, _ verdict: Blame.Verdict, error: UpstreamError, client: String) {
        let instant = now()
        let transition = guarded.withLock { $0.registry.judged(pick, verdict, error: error, client: client, now: instant) }
        metrics?.judged(model: pick.model, verdict: verdict)
        if let transition { log(transition, pick) }
    }

    /// An answer's usage: the engine's prompt-cache reuse (``Registry/observeCache(_:prompt:cached:)``).
    func observeCache(_ pick: Registry.Pick, _ usage: TokenUsage, prompt: PrefixFingerprint?) {
        guard let cached = usage.cached else { return }
        guarded.withLock { $0.registry.observeCache(pick, prompt: usage.prompt, cached: cached, blocks: prompt?.blocks ?? []) }
    }

    /// Ends a reservation the worker refused as full (``Registry/releaseFull(_:now:)``).
    func releaseFull(_ pick: Registry.Pick) {
        let instant = now()
        guarded.withLock { $0.registry.releaseFull(pick, now: instant) }
        metrics?.workerFull(model: pick.model, worker: pick.worker)
    }

    /// A reserved request's first byte is overdue: judge it slow now (``Registry/firstByteOverdue(_:after:now:)``).
    func firstByteOverdue(_ pick: Registry.Pick, after slowTTFB: Duration) {
        let instant = now()
        let transition = guarded.withLock { $0.registry.firstByteOverdue(pick, after: slowTTFB, now: instant) }
        if let transition { log(transition, pick) }
    }

    /// Requests waiting per model (for the admin API).
    func queueLengths() -> [String: Int] {
        guarded.withLock { $0.queues.mapValues(\.count).filter { $0.value > 0 } }
    }

    private func log(_ transition: CircuitBreaker.Transition, _ pick: Registry.Pick) {
        logger.warning("circuit breaker \(transition.from) -> \(transition.to)", metadata: [
            "worker": "\(pick.worker)", "model": "\(pick.model)", "reason": "\(transition.reason)",
        ])
        metrics?.breakerTransition(worker: pick.worker, model: pick.model, to: "\(transition.to)")
        events.publish(.init(type: "breaker", worker: pick.worker, model: pick.model, from: "\(transition.from)",
                             to: "\(transition.to)", reason: transition.reason))
    }

    // MARK: Membership

    func register(_ report: WorkerReport) {
        let instant = now()
        let (previous, after) = guarded.withLock { state in
            let previous = state.registry.worker(named: report.name)
            state.registry.register(report, now: instant)
            return (previous, state.registry.worker(named: report.name)?.isDraining)
        }
        if previous == nil { events.publish(.init(type: "worker_registered", worker: report.name, to: report.url)) }
        announceChanges(from: previous?.report, to: report)
        announceDrain(report.name, from: previous?.isDraining ?? false, to: after)
        drainQueues()
    }

    func heartbeat(_ report: WorkerReport) -> Registry.HeartbeatResult {
        let instant = now()
        let (result, previous, after) = guarded.withLock { state in
            let previous = state.registry.worker(named: report.name)
            let result = state.registry.heartbeat(report, now: instant)
            return (result, previous, state.registry.worker(named: report.name)?.isDraining)
        }
        if result == .accepted {
            announceChanges(from: previous?.report, to: report)
            announceDrain(report.name, from: previous?.isDraining, to: after)
            drainQueues()
        }
        return result
    }

    /// Publishes what changed between two reports of one worker: model states, engine crashes
    /// and failed downloads.
    private func announceChanges(from previous: WorkerReport?, to report: WorkerReport) {
        let before = Dictionary((previous?.models ?? []).map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for model in report.models {
            let old = before[model.name]
            if old?.state != model.state {
                events.publish(.init(type: "model_state", worker: report.name, model: model.name,
                                     from: old.map { $0.state.rawValue }, to: model.state.rawValue, reason: model.reason))
            }
            if (model.recentCrashes ?? 0) > (old?.recentCrashes ?? 0) {
                events.publish(.init(type: "engine_crash", worker: report.name, model: model.name, reason: model.reason))
            }
            // A hub-placed model's download that failed (checksum, full disk, the source's 404...).
            if let error = model.download?.error, error != old?.download?.error {
                events.publish(.init(type: "download_failed", worker: report.name, model: model.name, reason: error))
            }
        }
    }

    @discardableResult
    func deregister(_ name: String) -> Bool {
        let removed = guarded.withLock { $0.registry.deregister(name) }
        if removed { events.publish(.init(type: "worker_left", worker: name)) }
        return removed
    }

    func expire() -> [String] {
        let instant = now()
        let expired = guarded.withLock { $0.registry.expire(now: instant) }
        for name in expired { events.publish(.init(type: "worker_expired", worker: name)) }
        return expired
    }

    /// Live workers with the routing state and breaker of each of their models (report order).
    func liveWorkerStates() -> [(worker: Registry.Worker, pairs: [(Registry.Pair, CircuitBreaker)])] {
        let instant = now()
        return guarded.withLock { state in
            state.registry.liveWorkers(now: instant).map { worker in
                (worker, worker.pairs.map { (state.registry.pairs[$0], state.registry.breakers[$0]) })
            }
        }
    }

    func liveWorkers() -> [Registry.Worker] {
        let instant = now()
        return guarded.withLock { $0.registry.liveWorkers(now: instant) }
    }

    /// The live workers that serve `requested` (a name or alias) but are draining: why a
    /// request for it finds no worker, in words.
    func drainingWorkers(serving requested: String) -> [String] {
        let models = canonicalModels(for: requested).union([requested])
        return liveWorkers().filter { worker in worker.isDraining && worker.report.models.contains { models.contains($0.name) } }
            .map(\.name).sorted()
    }

    /// See ``Registry/canonicalModels(for:)``.
    func canonicalModels(for requested: String) -> Set<String> {
        guarded.withLock { $0.registry.canonicalModels(for: requested) }
    }

    func servedModels() -> [String] {
        let instant = now()
        return guarded.withLock { $0.registry.servedModels(now: instant) }
    }

    /// The 503 for a request that waited for a model whose files are still coming to its
    /// workers (hub-placed): the furthest download's progress, and `Retry-After` its time left.
    func downloading(_ model: String) -> OpenAIError? {
        let downloads = liveWorkers().flatMap { $0.report.models }.filter { $0.name == model && $0.state == .downloading }
            .compactMap(\.download)
        guard let best = downloads.max(by: { ($0.fraction ?? 0) < ($1.fraction ?? 0) }) else { return nil }
        let seconds = Int((best.secondsLeft ?? 5).rounded(.up))
        let message = best.error.map { "'\(model)' is not on its workers yet: its download failed (\($0)) and is retried; \(best.summary)" }
            ?? "'\(model)' is still downloading to its workers: \(best.summary), about \(seconds) s left"
        return OpenAIError(.modelDownloading, message: message, headers: [.retryAfter: String(max(1, min(seconds, 3600)))])
    }

    /// Per canonical model: how many live workers have it in each state.
    func modelPlacement() -> [String: [String: Int]] {
        var placement: [String: [String: Int]] = [:]
        for worker in liveWorkers() {
            for model in worker.report.models {
                placement[model.name, default: [:]][worker.isDraining ? "draining" : model.state.rawValue, default: 0] += 1
            }
        }
        return placement
    }
}

/// A request in a wait queue: settled once, by a pick, its deadline, its client leaving or
/// the shutdown; then its other watches are cancelled.
private final class QueuedRequest: Sendable {
    private let done: @Sendable (Result<Registry.Pick, any Error>) -> Void
    private let state = Mutex<(settled: Bool, cleanup: (@Sendable () -> Void)?)>((false, nil))

    init(_ done: @escaping @Sendable (Result<Registry.Pick, any Error>) -> Void) { self.done = done }

    func settle(_ result: Result<Registry.Pick, any Error>) {
        let (first, cleanup) = state.withLock { state in
            defer { state = (true, nil) }
            return (!state.settled, state.cleanup)
        }
        guard first else { return }
        cleanup?()
        done(result)
    }

    /// Runs `cleanup` when settled (at once if it already is).
    func onSettle(_ cleanup: @escaping @Sendable () -> Void) {
        let settled = state.withLock { state in
            if !state.settled { state.cleanup = cleanup }
            return state.settled
        }
        if settled { cleanup() }
    }
}
