import Foundation
import Testing
@testable import Routing
@testable import Config
@testable import Wire
import RoutingFixtures

/// Latency weights, slow first bytes, retries and breakers in the registry.
extension RegistryTests {
    @Test("latency-aware weights: a worker 10x slower to first byte gets a small share, then regains it as it recovers")
    func latencyWeights() {
        var registry = Registry(expiry: .seconds(600))
        let models = [ModelReport(name: "m", state: .ready, slotsTotal: 1000)]
        registry.register(report("fast", models: models), now: t0)
        registry.register(report("slow", models: models), now: t0)
        func share(_ at: ContinuousClock.Instant, _ count: Int, ttft: (String) -> Duration) -> Int {
            var slow = 0
            for _ in 0..<count {
                let pick = registry.pick("m", now: at).decision.pick!
                if pick.worker == "slow" { slow += 1 }
                _ = registry.release(pick, sample: .success, ttft: ttft(pick.worker), now: at)
            }
            return slow
        }
        // Equal speed: equal shares.
        #expect(share(t0, 100) { _ in .milliseconds(100) } == 50)
        // "slow" becomes 10x slower: its first slow answer lifts its peak-EWMA at once.
        let degraded = share(t0 + .seconds(1), 200) { $0 == "slow" ? .seconds(1) : .milliseconds(100) }
        #expect(degraded < 30, "slow got \(degraded) of 200")
        // It recovers: its average decays over the time constant, and its share comes back.
        var later = t0 + .seconds(2)
        var shares: [Int] = []
        for _ in 0..<6 {
            later = later + .seconds(2)
            shares.append(share(later, 100) { _ in .milliseconds(100) })
        }
        #expect(shares.last! >= 40, "shares while recovering: \(shares)")
        #expect(shares.first! < shares.last!, "shares while recovering: \(shares)")
    }

    @Test("a worker whose 1.5 s first-byte fault clears gets a fair share back within 10 s of steady traffic (10 requests a second)")
    func latencyRecovery() {
        var registry = Registry(expiry: .seconds(600))
        let models = [ModelReport(name: "m", state: .ready, slotsTotal: 1000)]
        for name in ["a", "b", "c", "slow"] { registry.register(report(name, models: models), now: t0) }
        var now = t0
        func run(seconds: Int, slowTTFB: Duration) -> [Int] {
            var perSecond: [Int] = []
            for _ in 0..<seconds {
                var slow = 0
                for _ in 0..<10 {
                    now = now + .milliseconds(100)
                    let pick = registry.pick("m", now: now).decision.pick!
                    if pick.worker == "slow" { slow += 1 }
                    _ = registry.release(pick, sample: .success, ttft: pick.worker == "slow" ? slowTTFB : .milliseconds(100), now: now)
                }
                perSecond.append(slow)
            }
            return perSecond
        }
        _ = run(seconds: 5, slowTTFB: .milliseconds(100))
        let faulty = run(seconds: 10, slowTTFB: .milliseconds(1500))
        #expect(faulty.suffix(5).reduce(0, +) <= 5, "during the fault: \(faulty)")
        let recovered = run(seconds: 14, slowTTFB: .milliseconds(100))
        // Fair is 2.5 of every 10; from the 10th second on it gets at least 2 a second on average.
        let tail = recovered.dropFirst(10)
        #expect(Double(tail.reduce(0, +)) / Double(tail.count) >= 2, "after the fault: \(recovered)")
    }

    @Test("peak-EWMA: a higher sample replaces the average; a lower one decays it with time")
    func peakEWMA() {
        #expect(LatencyWeight.update(0, sample: 100, elapsed: 0) == 100)
        #expect(LatencyWeight.update(100, sample: 500, elapsed: 0) == 500)
        let half = LatencyWeight.update(500, sample: 100, elapsed: Int64(LatencyWeight.tau * log(2)))
        #expect(abs(half - 300) < 1)
        #expect(LatencyWeight.factor(1000, best: 100) == 0.1)
        #expect(LatencyWeight.factor(100_000, best: 100) == LatencyWeight.floor)
        #expect(LatencyWeight.factor(100, best: 100) == 1)
    }

    @Test("a first byte overdue counts as a failure at once and drops the weight while still outstanding")
    func overdueFirstByte() {
        var policy = CircuitBreaker.Policy()
        policy.consecutiveFailures = 2
        var registry = Registry(expiry: .seconds(600), breakerPolicy: policy)
        let models = [ModelReport(name: "m", state: .ready, slotsTotal: 1000)]
        registry.register(report("a", models: models), now: t0)
        registry.register(report("b", models: models), now: t0)
        for _ in 0..<10 {
            let pick = registry.pick("m", now: t0).decision.pick!
            _ = registry.release(pick, sample: .success, ttft: .milliseconds(100), now: t0)
        }
        var outstanding: [Registry.Pick] = []
        while outstanding.count < 2 {
            let pick = registry.pick("m", now: t0).decision.pick!
            if pick.worker == "a" { outstanding.append(pick) } else { _ = registry.release(pick, sample: .success, ttft: .milliseconds(100), now: t0) }
        }
        #expect(registry.firstByteOverdue(outstanding[0], after: .seconds(1), now: t0 + .seconds(1)) == nil)
        let opened = registry.firstByteOverdue(outstanding[1], after: .seconds(1), now: t0 + .seconds(1))
        #expect(opened?.to == "open")
        // Neither request has finished, yet "a" is out of routing.
        #expect((0..<10).allSatisfy { _ in
            let pick = registry.pick("m", now: t0 + .seconds(1)).decision.pick!
            _ = registry.release(pick, sample: .success, now: t0 + .seconds(1))
            return pick.worker == "b"
        })
    }

    @Test("retries skip workers already tried; all tried means exhausted")
    func exclusions() {
        var registry = Registry(expiry: .seconds(6))
        registry.register(report("a"), now: t0)
        registry.register(report("b"), now: t0)
        let first = registry.pick("m", now: t0).decision.pick!
        let second = registry.pick("m", excluding: [first.slot], now: t0).decision.pick!
        #expect(first.worker != second.worker)
        #expect(registry.pick("m", excluding: [first.slot, second.slot], now: t0).decision == .exhausted)
    }

    @Test("an open breaker removes a worker from routing until its half-open probe")
    func breakerRouting() {
        let policy = CircuitBreaker.Policy(window: .seconds(10), minSamples: 2, failureRate: 0.5, openFor: .seconds(5),
                                           maxOpenFor: .seconds(60), closeAfter: 1)
        var registry = Registry(expiry: .seconds(60), breakerPolicy: policy)
        registry.register(report("a"), now: t0)
        registry.register(report("b"), now: t0)
        for _ in 0..<4 {
            let pick = registry.pick("m", now: t0).decision.pick!
            _ = registry.release(pick, sample: pick.worker == "a" ? .failure(.httpStatus(500)) : .success, now: t0)
        }
        #expect((0..<6).allSatisfy { _ in
            let pick = registry.pick("m", now: t0 + .seconds(1)).decision.pick!
            _ = registry.release(pick, sample: .success, now: t0 + .seconds(1))
            return pick.worker == "b"
        })
        // After open_for, exactly one probe goes to "a"; success closes the breaker.
        var probes: [Registry.Pick] = []
        for _ in 0..<6 {
            let pick = registry.pick("m", now: t0 + .seconds(6)).decision.pick!
            if pick.worker == "a" { probes.append(pick) } else { _ = registry.release(pick, sample: .success, now: t0) }
        }
        #expect(probes.count == 1 && probes[0].isProbe)
        let transition = registry.release(probes[0], sample: .success, now: t0 + .seconds(6))
        #expect(transition?.to == "closed")
        let pair = registry.worker(named: "a")!.pairs[0]
        #expect(registry.breakers[pair].state == .closed)
        #expect(registry.pairs[pair].gate == .closed)
    }
}
