import Shared
import Synchronization

/// The hub's shared mutable state: the registry and the balancer behind one lock.
///
/// A `Mutex` rather than an actor: every request touches it briefly and never awaits
/// while holding it. The clock is injected so tests can move time.
final class HubState: Sendable {
    typealias Now = @Sendable () -> ContinuousClock.Instant

    private struct Guarded: Sendable {
        var registry: Registry
        var balancer = RoundRobin()
    }

    private let guarded: Mutex<Guarded>
    let now: Now

    init(registry: Registry, now: @escaping Now = { ContinuousClock.now }) {
        self.guarded = Mutex(Guarded(registry: registry))
        self.now = now
    }

    /// Looks the model up and, when it has candidates, returns them rotated by round-robin.
    func route(_ model: String) -> Registry.Resolution {
        let instant = now()
        return guarded.withLock { state in
            switch state.registry.resolve(model, now: instant) {
            case .candidates(let healthy, let lastResort):
                guard let key = healthy.first?.model else { return .candidates(healthy, lastResort: lastResort) }
                return .candidates(state.balancer.rotation(of: healthy, key: key), lastResort: lastResort)
            case let other:
                return other
            }
        }
    }

    func register(_ report: WorkerReport) {
        let instant = now()
        guarded.withLock { $0.registry.register(report, now: instant) }
    }

    func heartbeat(_ report: WorkerReport) -> Registry.HeartbeatResult {
        let instant = now()
        return guarded.withLock { $0.registry.heartbeat(report, now: instant) }
    }

    @discardableResult
    func deregister(_ name: String) -> Bool {
        guarded.withLock { $0.registry.deregister(name) }
    }

    func expire() -> [String] {
        let instant = now()
        return guarded.withLock { $0.registry.expire(now: instant) }
    }

    func liveWorkers() -> [Registry.Worker] {
        let instant = now()
        return guarded.withLock { $0.registry.liveWorkers(now: instant) }
    }

    func servedModels() -> [String] {
        let instant = now()
        return guarded.withLock { $0.registry.servedModels(now: instant) }
    }
}
