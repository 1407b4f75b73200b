import Synchronization

/// The requests each model's engine holds, outside the supervisor's actor: a request takes
/// a lease on the event loop it arrived on, and a finishing response releases it from any
/// thread, synchronously.
///
/// The supervisor publishes here the engine requests may take (ready, not draining) and its
/// admission bound. A stop for idleness or room goes through ``claimIdle(_:)``, which checks
/// that nothing holds the model and withdraws its engine in one step: a request cannot take
/// an engine that is being stopped.
final class EngineLeases: Sendable {
    private struct Usage {
        /// Requests using the running engine.
        var leases = 0
        /// Requests waiting for the engine to start (or restart): they keep the model from
        /// being evicted, but a drain does not wait for them (they wait for the drain).
        var waiting = 0
        var lastUsed = ContinuousClock.now
        /// The engine requests may take without asking the supervisor.
        var ready: Engine?
        /// Most requests the running engine is given at once: `slots x (1 + ahead_per_slot)`
        /// once its slots are known (nil: no bound yet). Beyond it the worker answers "full".
        var limit: Int?
        /// The most leases held at once since this worker started (`/metrics`).
        var peak = 0
        var busy: Bool { leases + waiting > 0 }

        mutating func lease() {
            leases += 1
            peak = max(peak, leases)
            lastUsed = .now
        }
    }

    /// What ``acquireReady(_:)`` found.
    enum ReadyLease {
        /// A lease on the running engine.
        case engine(Engine)
        /// The engine holds `limit` requests already: the request goes elsewhere (the hub's retry or queue).
        case full(limit: Int)
        /// No engine is running: the supervisor starts one or waits for it.
        case notReady
    }

    private let usage = Mutex<[String: Usage]>([:])
    /// Fired when a model's last request ends (what drains and admission wait for); the
    /// supervisor fires it on every phase change too.
    let changes = ChangeSignal()

    init() {}

    /// A lease on `model`'s engine when it is running and not draining (nil engine: `.notReady`).
    func acquireReady(_ model: String) -> ReadyLease {
        usage.withLock { usage -> ReadyLease in
            guard let entry = usage[model], let engine = entry.ready, !engine.process.hasExited else { return .notReady }
            if let limit = entry.limit, entry.leases >= limit { return .full(limit: limit) }
            usage[model]?.lease()
            return .engine(engine)
        }
    }

    /// A request starts waiting for `model`'s engine to start.
    func beginWait(_ model: String) {
        usage.withLock { $0[model, default: Usage()].waiting += 1 }
    }

    /// The wait ended; with `lease`, it takes a lease now unless the engine holds its bound
    /// (then the bound is returned, and no lease is taken).
    func endWait(_ model: String, lease: Bool) -> Int? {
        let (full, idle) = usage.withLock { usage -> (Int?, Bool) in
            usage[model]?.waiting -= 1
            guard lease else { return (nil, usage[model]?.busy == false) }
            if let limit = usage[model]?.limit, let leases = usage[model]?.leases, leases >= limit {
                return (limit, usage[model]?.busy == false)
            }
            usage[model]?.lease()
            return (nil, false)
        }
        if idle { changes.fire() }
        return full
    }

    /// A request to a remote model starts: counted like an engine lease (its busy slots).
    func leaseRemote(_ model: String) {
        usage.withLock { $0[model, default: Usage()].lease() }
    }

    /// Ends a lease.
    func release(_ model: String) {
        let idle = usage.withLock { usage -> Bool in
            usage[model]?.leases -= 1
            usage[model]?.lastUsed = .now
            return usage[model]?.leases == 0  // what a drain waits for (and, with no waiters, an eviction)
        }
        if idle { changes.fire() }
    }

    /// Withdraws `model`'s engine when no request holds or awaits it (true): from then on
    /// requests find it not ready, so it can be stopped. False: it is busy, and stays.
    func claimIdle(_ model: String) -> Bool {
        usage.withLock { usage in
            guard usage[model]?.busy != true else { return false }
            usage[model]?.ready = nil
            return true
        }
    }

    /// Publishes the engines requests may take, with their admission bounds.
    func publish(_ ready: [String: (engine: Engine, limit: Int?)]) {
        usage.withLock { usage in
            for name in Set(usage.keys).union(ready.keys) {
                usage[name, default: Usage()].ready = ready[name]?.engine
                usage[name]?.limit = ready[name]?.limit
            }
        }
    }

    /// Marks `model` used now (it just became ready: its ttl counts from here).
    func touch(_ model: String) {
        usage.withLock { $0[model, default: Usage()].lastUsed = .now }
    }

    func forget(_ model: String) {
        _ = usage.withLock { $0.removeValue(forKey: model) }
    }

    /// Requests using `model`'s engine now (what a drain waits for).
    func leases(_ model: String) -> Int { usage.withLock { $0[model]?.leases ?? 0 } }

    /// Whether any request uses or waits for `model`.
    func isBusy(_ model: String) -> Bool { usage.withLock { $0[model]?.busy ?? false } }

    func lastUsed(_ model: String) -> ContinuousClock.Instant { usage.withLock { $0[model]?.lastUsed ?? .now } }

    /// Requests held per model now and at most since start (`/metrics`, and the report's `requests`).
    func snapshot() -> [String: (requests: Int, peak: Int)] {
        usage.withLock { $0.mapValues { ($0.leases, $0.peak) } }
    }
}
