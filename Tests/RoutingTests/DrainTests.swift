import Wire
import Foundation
import Testing

@testable import Routing
import RoutingFixtures
@testable import Config

@Suite("Drain and reload (registry)")
struct DrainTests {
    let t0 = ContinuousClock.now

    @Test("a worker drained here, or by its own report, is never picked; undrained it is again; all drained is 503, not 404")
    func drain() throws {
        var registry = Registry(expiry: .seconds(6))
        registry.register(report("a"), now: t0)
        registry.register(report("b"), now: t0)
        let drainedA = registry.setDrained("a", true)
        #expect(drainedA)
        let drainedNobody = registry.setDrained("nobody", true)
        #expect(!drainedNobody)
        for _ in 0..<8 {
            let pick = try #require(registry.pick("m", now: t0).decision.pick)
            #expect(pick.worker == "b")
            _ = registry.release(pick, sample: .success, now: t0)
        }
        // A heartbeat that does not say "draining" keeps this hub's drain.
        #expect(registry.heartbeat(report("a", seq: 2), now: t0) == .accepted)
        for _ in 0..<4 {
            let pick = try #require(registry.pick("m", now: t0).decision.pick)
            #expect(pick.worker == "b")
            _ = registry.release(pick, sample: .success, now: t0)
        }
        let undrainedA = registry.setDrained("a", false)
        #expect(undrainedA)
        var served: Set<String> = []
        for _ in 0..<4 {
            let pick = try #require(registry.pick("m", now: t0).decision.pick)
            served.insert(pick.worker)
            _ = registry.release(pick, sample: .success, now: t0)
        }
        #expect(served == ["a", "b"])
        // Drained on the worker (another hub's admin): its report says so.
        var drainedReport = report("b", seq: 3)
        drainedReport.draining = true
        #expect(registry.heartbeat(drainedReport, now: t0) == .accepted)
        #expect(registry.worker(named: "b")?.isDraining == true)
        #expect(registry.pick("m", now: t0).decision.worker == "a")
        if let pick = registry.pick("m", now: t0).decision.pick { _ = registry.release(pick, sample: .success, now: t0) }
        let drainedAgain = registry.setDrained("a", true)
        #expect(drainedAgain)
        #expect(registry.pick("m", now: t0).decision == .noLiveWorker)
    }

    @Test("a reloaded breaker policy applies to existing breakers, with their history")
    func reconfigure() throws {
        var registry = Registry(expiry: .seconds(6), breakerPolicy: .init(consecutiveFailures: 0))
        registry.register(report("a"), now: t0)
        for _ in 0..<3 {
            let pick = try #require(registry.pick("m", now: t0).decision.pick)
            _ = registry.release(pick, sample: .failure(.httpStatus(500)), now: t0)
        }
        let pair = try #require(registry.worker(named: "a")?.pairs.first)
        #expect(registry.breakers[pair].stateName == "closed", "3 failures: under min_samples, no consecutive rule")
        registry.reconfigure(declaredModels: ["m": "m"], discoveringWorkers: [],
                             breakerPolicy: .init(consecutiveFailures: 2), aheadPerSlot: 0)
        let pick = try #require(registry.pick("m", now: t0).decision.pick)
        _ = registry.release(pick, sample: .failure(.httpStatus(500)), now: t0)
        #expect(registry.breakers[pair].stateName == "open", "the new rule counts the failures in a row it already saw")
    }
}
