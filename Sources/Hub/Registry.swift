import Shared

/// The hub's view of its workers: what each last reported and when the hub heard it.
///
/// Pure value type with no I/O and no clock of its own: every call takes `now`, so tests
/// drive expiry deterministically. Times are stamped on receipt; worker clocks are never read.
struct Registry: Sendable {
    typealias Instant = ContinuousClock.Instant

    /// One registered worker.
    struct Worker: Sendable, Equatable {
        var report: WorkerReport
        var lastSeen: Instant
        var name: String { report.name }
    }

    /// A worker that can take a request for a model, with the model's name on that worker.
    struct Candidate: Sendable, Equatable {
        var worker: String
        var url: String
        var model: String
    }

    /// Outcome of looking a requested model up.
    enum Resolution: Sendable, Equatable {
        /// Neither the configuration nor any live worker knows the name (404).
        case unknownModel
        /// The model exists but no live worker serves it right now (503).
        case noLiveWorker
        /// Live workers that serve it, in a stable order (by worker name); `lastResort` holds
        /// those whose model is in the failed state.
        case candidates([Candidate], lastResort: [Candidate])
    }

    enum HeartbeatResult: Equatable {
        case accepted
        /// The hub does not know this worker (e.g. after a hub restart): it must register.
        case unknownWorker
        /// An older report arrived after a newer one; ignored.
        case outOfOrder
    }

    /// How long after its last report a worker stops being live.
    let expiry: Duration
    /// Model names and aliases from the cluster file, mapped to canonical names.
    let declaredModels: [String: String]
    private(set) var workers: [String: Worker] = [:]

    init(expiry: Duration, declaredModels: [String: String] = [:]) {
        self.expiry = expiry
        self.declaredModels = declaredModels
    }

    /// Adds or replaces a worker (a re-register after a restart of either side).
    mutating func register(_ report: WorkerReport, now: Instant) {
        workers[report.name] = Worker(report: report, lastSeen: now)
    }

    /// Refreshes a known worker.
    mutating func heartbeat(_ report: WorkerReport, now: Instant) -> HeartbeatResult {
        guard var worker = workers[report.name] else { return .unknownWorker }
        guard report.sequence > worker.report.sequence else { return .outOfOrder }
        worker.report = report
        worker.lastSeen = now
        workers[report.name] = worker
        return .accepted
    }

    /// Removes a worker that is leaving on purpose; false when it was not registered.
    @discardableResult
    mutating func deregister(_ name: String) -> Bool {
        workers.removeValue(forKey: name) != nil
    }

    /// Drops workers not heard from within `expiry`; returns their names.
    mutating func expire(now: Instant) -> [String] {
        let dead = workers.values.filter { !isLive($0, now: now) }.map(\.name).sorted()
        for name in dead { workers.removeValue(forKey: name) }
        return dead
    }

    func isLive(_ worker: Worker, now: Instant) -> Bool {
        now - worker.lastSeen <= expiry
    }

    /// Live workers, ordered by name.
    func liveWorkers(now: Instant) -> [Worker] {
        workers.values.filter { isLive($0, now: now) }.sorted { $0.name < $1.name }
    }

    /// Finds the live workers serving `model` (by name or alias); workers whose model failed come last.
    func resolve(_ model: String, now: Instant) -> Resolution {
        var healthy: [Candidate] = []
        var failed: [Candidate] = []
        var known = declaredModels[model] != nil
        for worker in liveWorkers(now: now) {
            guard let served = worker.report.models.first(where: { $0.name == model || $0.aliases.contains(model) })
            else { continue }
            known = true
            let candidate = Candidate(worker: worker.name, url: worker.report.url, model: served.name)
            // A failed model is a last resort: asking again lets its worker retry the start.
            if served.state == .failed { failed.append(candidate) } else { healthy.append(candidate) }
        }
        if !healthy.isEmpty || !failed.isEmpty { return .candidates(healthy, lastResort: failed) }
        return known ? .noLiveWorker : .unknownModel
    }

    /// Canonical names of the models live workers serve, sorted and de-duplicated.
    func servedModels(now: Instant) -> [String] {
        Array(Set(liveWorkers(now: now).flatMap { $0.report.models.map(\.name) })).sorted()
    }
}
