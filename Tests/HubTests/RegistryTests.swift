import Testing

@testable import Hub
@testable import Shared

private func report(_ name: String, seq: UInt64 = 1, models: [ModelReport] = [ModelReport(name: "m", aliases: ["m-alias"], state: .ready)])
    -> WorkerReport
{
    WorkerReport(name: name, url: "http://\(name)", version: "t", sequence: seq, models: models, gpus: [], inFlight: 0)
}

@Suite("Registry")
struct RegistryTests {
    let t0 = ContinuousClock.now

    @Test("a worker expires after the expiry window without heartbeats, not before")
    func expiry() {
        var registry = Registry(expiry: .seconds(6))
        registry.register(report("a"), now: t0)
        registry.register(report("b"), now: t0)
        #expect(registry.heartbeat(report("b", seq: 2), now: t0 + .seconds(5)) == .accepted)
        #expect(registry.liveWorkers(now: t0 + .seconds(6)).map(\.name) == ["a", "b"])
        #expect(registry.liveWorkers(now: t0 + .milliseconds(6001)).map(\.name) == ["b"])
        #expect(registry.expire(now: t0 + .milliseconds(6001)) == ["a"])
        #expect(registry.workers.keys.sorted() == ["b"])
        #expect(registry.expire(now: t0 + .seconds(12)) == ["b"])
    }

    @Test("heartbeats: unknown workers must register, old sequence numbers are ignored")
    func heartbeats() {
        var registry = Registry(expiry: .seconds(6))
        #expect(registry.heartbeat(report("a"), now: t0) == .unknownWorker)
        registry.register(report("a", seq: 5), now: t0)
        #expect(registry.heartbeat(report("a", seq: 4), now: t0 + .seconds(1)) == .outOfOrder)
        #expect(registry.workers["a"]?.lastSeen == t0)
        #expect(registry.heartbeat(report("a", seq: 6), now: t0 + .seconds(1)) == .accepted)
        #expect(registry.workers["a"]?.lastSeen == t0 + .seconds(1))
        let removed = registry.deregister("a")
        let removedAgain = registry.deregister("a")
        #expect(removed)
        #expect(!removedAgain)
    }

    @Test("models resolve by name and alias to live workers only")
    func resolve() {
        var registry = Registry(expiry: .seconds(6), declaredModels: ["cfg": "cfg"])
        registry.register(report("b"), now: t0)
        registry.register(report("a"), now: t0)
        let both = [Registry.Candidate(worker: "a", url: "http://a", model: "m"),
                    Registry.Candidate(worker: "b", url: "http://b", model: "m")]
        #expect(registry.resolve("m", now: t0) == .candidates(both, lastResort: []))
        #expect(registry.resolve("m-alias", now: t0) == .candidates(both, lastResort: []))
        #expect(registry.resolve("nope", now: t0) == .unknownModel)
        // Declared in config but served by nobody: known, so 503 rather than 404.
        #expect(registry.resolve("cfg", now: t0) == .noLiveWorker)
        // Once every worker has expired, the model is still known from earlier reports? No:
        // only config and live workers count, so an undeclared model becomes unknown.
        #expect(registry.resolve("m", now: t0 + .seconds(7)) == .unknownModel)
        #expect(registry.servedModels(now: t0) == ["m"])
    }

    @Test("a worker whose model failed is tried last")
    func failedLast() {
        var registry = Registry(expiry: .seconds(6))
        registry.register(report("a", models: [ModelReport(name: "m", state: .failed, reason: "boom")]), now: t0)
        registry.register(report("b", models: [ModelReport(name: "m", state: .notLoaded)]), now: t0)
        #expect(registry.resolve("m", now: t0) == .candidates(
            [Registry.Candidate(worker: "b", url: "http://b", model: "m")],
            lastResort: [Registry.Candidate(worker: "a", url: "http://a", model: "m")]))
    }
}

@Suite("Round-robin")
struct RoundRobinTests {
    @Test("each call starts one further along, per key")
    func rotation() {
        var balancer = RoundRobin()
        let picks = (0..<6).map { _ in balancer.rotation(of: ["a", "b", "c"], key: "m").first! }
        #expect(picks == ["a", "b", "c", "a", "b", "c"])
        #expect(balancer.rotation(of: ["a", "b", "c"], key: "m") == ["a", "b", "c"])
        #expect(balancer.rotation(of: ["a", "b", "c"], key: "m") == ["b", "c", "a"])
        #expect(balancer.rotation(of: ["x", "y"], key: "other") == ["x", "y"])
        #expect(balancer.rotation(of: [String](), key: "m").isEmpty)
    }

    @Test("hub state routes round-robin and follows an injected clock")
    func hubState() {
        let clock = ManualNow()
        let state = HubState(registry: Registry(expiry: .seconds(1)), now: { clock.now })
        state.register(report("a"))
        state.register(report("b"))
        let first = (0..<4).compactMap { _ -> String? in
            if case .candidates(let list, _) = state.route("m") { return list.first?.worker }
            return nil
        }
        #expect(first == ["a", "b", "a", "b"])
        clock.advance(.seconds(2))
        #expect(state.route("m") == .unknownModel)
        #expect(state.expire() == ["a", "b"])
    }
}

import Synchronization

/// A clock tests move by hand.
final class ManualNow: Sendable {
    private let instant = Mutex(ContinuousClock.now)
    var now: ContinuousClock.Instant { instant.withLock { $0 } }
    func advance(_ by: Duration) { instant.withLock { $0 += by } }
}
