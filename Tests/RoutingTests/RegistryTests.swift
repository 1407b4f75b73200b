import Foundation
import Testing

@testable import Routing
@testable import Config
@testable import Wire
import RoutingFixtures

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
        #expect(registry.pick("m", now: t0 + .milliseconds(6001)).decision.worker == "b")
        #expect(registry.expire(now: t0 + .milliseconds(6001)) == ["a"])
        #expect(registry.liveWorkers(now: t0 + .milliseconds(6001)).map(\.name) == ["b"])
        #expect(registry.expire(now: t0 + .seconds(12)) == ["b"])
    }

    @Test("a successful answer keeps a worker live like a heartbeat; failures do not, and the heartbeat age still shows the last heartbeat")
    func answersAreSignsOfLife() {
        var registry = Registry(expiry: .seconds(6))
        registry.register(report("busy"), now: t0)
        registry.register(report("quiet"), now: t0)
        let pick = registry.pick("m", excluding: [registry.worker(named: "quiet")!.slot], now: t0 + .seconds(5)).decision.pick!
        #expect(pick.worker == "busy")
        _ = registry.release(pick, sample: .success, now: t0 + .seconds(5))
        let failed = registry.pick("m", excluding: [registry.worker(named: "busy")!.slot], now: t0 + .seconds(5)).decision.pick!
        _ = registry.release(failed, sample: .failure(.httpStatus(500)), now: t0 + .seconds(5))
        // 10 s after the last heartbeat: only the worker that answered 5 s ago is live.
        #expect(registry.liveWorkers(now: t0 + .seconds(10)).map(\.name) == ["busy"])
        #expect(registry.pick("m", now: t0 + .seconds(10)).decision.worker == "busy")
        #expect(registry.worker(named: "busy")!.lastSeen == t0)
        #expect(registry.expire(now: t0 + .seconds(10)) == ["quiet"])
        #expect(registry.expire(now: t0 + .milliseconds(11_001)) == ["busy"])
    }

    @Test("eligibility cached between picks follows the clock: expiry drops a worker, a heartbeat brings it back")
    func cachedEligibility() {
        var registry = Registry(expiry: .seconds(6))
        registry.register(report("a"), now: t0)
        registry.register(report("b"), now: t0)
        let early = (0..<4).map { _ in registry.pick("m", now: t0 + .seconds(1)).decision.worker! }
        #expect(Set(early) == ["a", "b"])
        #expect(registry.heartbeat(report("b", seq: 2), now: t0 + .seconds(5)) == .accepted)
        #expect(registry.pick("m", now: t0 + .seconds(6)).decision.worker != nil)
        #expect(registry.pick("m", now: t0 + .milliseconds(6001)).decision.worker == "b")
        #expect(registry.heartbeat(report("a", seq: 2), now: t0 + .seconds(7)) == .accepted)
        let later = (0..<2).map { _ in registry.pick("m", now: t0 + .seconds(7)).decision.worker! }
        #expect(later.contains("a"))
    }

    @Test("a late release for a pair that was freed and reused changes nothing")
    func lateRelease() {
        var registry = Registry(expiry: .seconds(6))
        registry.register(report("a", models: [ModelReport(name: "m", state: .ready, slotsTotal: 1)]), now: t0)
        let stale = registry.pick("m", now: t0).decision.pick!
        registry.deregister("a")
        registry.register(report("a", models: [ModelReport(name: "m", state: .ready, slotsTotal: 1)]), now: t0)
        let fresh = registry.pick("m", now: t0).decision.pick!
        #expect(fresh.pair == stale.pair && fresh.incarnation != stale.incarnation)
        #expect(registry.release(stale, sample: .failure(.connectionRefused), now: t0) == nil)
        #expect(registry.pick("m", now: t0).decision == .saturated)  // the fresh pick still holds the only slot
    }

    @Test("a model a worker reported (found in its models_dir, say) is 503 while no live worker serves it, not 404")
    func seenModels() {
        var registry = Registry(expiry: .seconds(6))
        registry.register(report("a", models: [ModelReport(name: "found", aliases: ["found-alias"], state: .ready, slotsTotal: 1)]), now: t0)
        #expect(registry.pick("found", now: t0).decision.worker == "a")
        #expect(registry.expire(now: t0 + .seconds(7)) == ["a"])
        #expect(registry.pick("found", now: t0 + .seconds(7)).decision == .noLiveWorker)
        #expect(registry.pick("found-alias", now: t0 + .seconds(7)).decision == .noLiveWorker)
        #expect(registry.pick("never", now: t0 + .seconds(7)).decision == .unknownModel)
    }

    @Test("heartbeats: unknown workers must register, old sequence numbers are ignored")
    func heartbeats() {
        var registry = Registry(expiry: .seconds(6))
        #expect(registry.heartbeat(report("a"), now: t0) == .unknownWorker)
        registry.register(report("a", seq: 5), now: t0)
        #expect(registry.heartbeat(report("a", seq: 4), now: t0 + .seconds(1)) == .outOfOrder)
        #expect(registry.worker(named: "a")?.lastSeen == t0)
        #expect(registry.heartbeat(report("a", seq: 6), now: t0 + .seconds(1)) == .accepted)
        #expect(registry.worker(named: "a")?.lastSeen == t0 + .seconds(1))
        let removed = registry.deregister("a")
        let removedAgain = registry.deregister("a")
        #expect(removed)
        #expect(!removedAgain)
    }

    @Test("models resolve by name and alias; unknown is 404, declared-but-unserved is 503")
    func resolve() {
        var registry = Registry(expiry: .seconds(6), declaredModels: ["cfg": "cfg"])
        registry.register(report("a"), now: t0)
        #expect(registry.pick("m", now: t0).decision.pick?.model == "m")
        #expect(registry.pick("m-alias", now: t0).decision.pick?.model == "m")
        #expect(registry.pick("nope", now: t0).decision == .unknownModel)
        #expect(registry.pick("cfg", now: t0).decision == .noLiveWorker)
        #expect(registry.pick("m", now: t0 + .seconds(7)).decision == .noLiveWorker)
        #expect(registry.servedModels(now: t0) == ["m"])
    }

    @Test("loaded models first, then loadable ones, failed ones last")
    func tiers() {
        var registry = Registry(expiry: .seconds(6))
        registry.register(report("failed", models: [ModelReport(name: "m", state: .failed, reason: "boom")]), now: t0)
        registry.register(report("cold", models: [ModelReport(name: "m", state: .notLoaded)]), now: t0)
        registry.register(report("hot", models: [ModelReport(name: "m", state: .ready, slotsTotal: 1)]), now: t0)
        #expect(registry.pick("m", now: t0).decision.worker == "hot")
        // hot is now saturated by this hub's own in-flight request: the loadable worker is next.
        #expect(registry.pick("m", now: t0).decision.worker == "cold")
        for _ in 0..<3 { _ = registry.pick("m", now: t0) }  // cold's 4 assumed slots fill up
        #expect(registry.pick("m", now: t0).decision.worker == "failed")
        #expect(registry.pick("m", now: t0).decision == .saturated)
    }

    @Test("with every slot busy, slots x ahead_per_slot more go ahead to the engine's queue: after free slots and loadable workers, before failed ones")
    func ahead() {
        var registry = Registry(expiry: .seconds(6), aheadPerSlot: 1)
        registry.register(report("failed", models: [ModelReport(name: "m", state: .failed, reason: "boom")]), now: t0)
        registry.register(report("hot", models: [ModelReport(name: "m", state: .ready, slotsTotal: 2)]), now: t0)
        let first = registry.pick("m", now: t0).decision.pick!
        #expect(first.worker == "hot" && !first.isAhead)
        #expect(registry.pick("m", now: t0).decision.pick.map { $0.worker == "hot" && !$0.isAhead } == true)
        // Both slots busy: two more may wait in hot's engine, before the failed worker's retry.
        let aheads = (0..<2).map { _ in registry.pick("m", now: t0).decision.pick! }
        #expect(aheads.allSatisfy { $0.worker == "hot" && $0.isAhead })
        #expect(registry.pick("m", now: t0).decision.worker == "failed")
        #expect(registry.pick("m", now: t0).decision == .saturated)
        // A finished request frees room ahead (the engine's own queue moves up), not a slot.
        _ = registry.release(first, sample: .success, now: t0)
        #expect(registry.pick("m", now: t0).decision.pick.map { $0.worker == "hot" && $0.isAhead } == true)

        // A loadable worker beats waiting ahead; a free slot anywhere beats both.
        var spill = Registry(expiry: .seconds(6), aheadPerSlot: 1)
        spill.register(report("hot", models: [ModelReport(name: "m", state: .ready, slotsTotal: 1)]), now: t0)
        spill.register(report("cold", models: [ModelReport(name: "m", state: .notLoaded)]), now: t0)
        #expect(spill.pick("m", now: t0).decision.worker == "hot")
        #expect(spill.pick("m", now: t0).decision.worker == "cold")
        // Strict mode (0): a busy worker gets nothing more.
        var strict = Registry(expiry: .seconds(6), aheadPerSlot: 0)
        strict.register(report("hot", models: [ModelReport(name: "m", state: .ready, slotsTotal: 1)]), now: t0)
        #expect(strict.pick("m", now: t0).decision.worker == "hot")
        #expect(strict.pick("m", now: t0).decision == .saturated)
    }

    @Test("a worker's \"full\" answer empties its capacity until its next report or until one of this hub's requests there ends")
    func full() {
        var registry = Registry(expiry: .seconds(6), aheadPerSlot: 1)
        registry.register(report("a", models: [ModelReport(name: "m", state: .ready, slotsTotal: 2)]), now: t0)
        registry.register(report("b", models: [ModelReport(name: "m", state: .ready, slotsTotal: 2)]), now: t0)
        let slotB = registry.worker(named: "b")!.slot
        let held = registry.pick("m", excluding: [slotB], now: t0).decision.pick!
        let refused = registry.pick("m", excluding: [slotB], now: t0).decision.pick!
        #expect(held.worker == "a" && refused.worker == "a")
        registry.releaseFull(refused, now: t0)
        // Everything goes to b now (2 slots + 2 ahead), then the queue: a is not picked again.
        let toB = (0..<4).map { _ in registry.pick("m", now: t0).decision.worker }
        #expect(toB == ["b", "b", "b", "b"])
        #expect(registry.pick("m", now: t0).decision == .saturated)
        // One of this hub's requests on a ends: a has room again.
        _ = registry.release(held, sample: .success, now: t0)
        #expect(registry.pick("m", now: t0).decision.worker == "a")
        // A report clears it too, and its `requests` (slots and the engine's queue) count the
        // other hubs' share: 3 held there, 1 of them ours, so 2 of 4 (2 slots + 2 ahead) are others'.
        var c = Registry(expiry: .seconds(6), aheadPerSlot: 1)
        c.register(report("c", models: [ModelReport(name: "m", state: .ready, slotsTotal: 2)]), now: t0)
        let ours = c.pick("m", now: t0).decision.pick!
        c.releaseFull(c.pick("m", now: t0).decision.pick!, now: t0)
        #expect(c.pick("m", now: t0).decision == .saturated)
        var model = ModelReport(name: "m", state: .ready, slotsTotal: 2, slotsBusy: 2)
        model.requests = 3
        #expect(c.heartbeat(report("c", seq: 2, models: [model]), now: t0) == .accepted)
        #expect(c.pick("m", now: t0).decision.pick?.isAhead == true)
        #expect(c.pick("m", now: t0).decision == .saturated)
        _ = ours
    }

    @Test("the hub's own in-flight count caps a worker between heartbeats; release frees it")
    func inFlight() {
        var registry = Registry(expiry: .seconds(6))
        registry.register(report("a", models: [ModelReport(name: "m", state: .ready, slotsTotal: 2)]), now: t0)
        let first = registry.pick("m", now: t0).decision.pick!
        let second = registry.pick("m", now: t0).decision.pick!
        #expect(registry.pick("m", now: t0).decision == .saturated)
        _ = registry.release(first, sample: .success, now: t0)
        #expect(registry.pick("m", now: t0).decision.worker == "a")
        _ = registry.release(second, sample: .success, now: t0)
        // A heartbeat reporting busy slots (another hub's requests) also counts.
        registry.register(report("a", seq: 2, models: [ModelReport(name: "m", state: .ready, slotsTotal: 2, slotsBusy: 2)]), now: t0)
        #expect(registry.pick("m", now: t0).decision == .saturated)
    }

    @Test("a report of busy slots that were this hub's own does not outlive their release")
    func ownBusySlots() {
        var registry = Registry(expiry: .seconds(6))
        let busy = { (count: Int, seq: UInt64) in
            report("a", seq: seq, models: [ModelReport(name: "m", state: .ready, slotsTotal: 2, slotsBusy: count)])
        }
        registry.register(busy(0, 1), now: t0)
        let first = registry.pick("m", now: t0).decision.pick!
        let second = registry.pick("m", now: t0).decision.pick!
        #expect(registry.heartbeat(busy(2, 2), now: t0) == .accepted)  // the two busy slots are ours
        #expect(registry.pick("m", now: t0).decision == .saturated)
        _ = registry.release(first, sample: .success, now: t0)
        let third = registry.pick("m", now: t0).decision.pick  // usable now, not at the next heartbeat
        #expect(third?.worker == "a")
        _ = registry.release(second, sample: .success, now: t0)
        _ = registry.release(third!, sample: .success, now: t0)
        // One busy slot that is not ours (another hub) stays counted until the next report.
        #expect(registry.heartbeat(busy(1, 3), now: t0) == .accepted)
        #expect(registry.pick("m", now: t0).decision.worker == "a")
        #expect(registry.pick("m", now: t0).decision == .saturated)
    }

    @Test("routing weight = static weight x free slots, 0 when saturated", arguments: [
        (1.0, 4, 0, 0, 4.0), (2.0, 4, 1, 0, 6.0), (1.0, 4, 0, 3, 1.0), (3.0, 4, 4, 0, 0.0), (1.0, 2, 1, 2, 0.0),
        (0.5, 8, 2, 1, 2.5),
    ])
    func weights(weight: Double, total: Int, busy: Int, hubInFlight: Int, expected: Double) {
        var pair = Registry.Pair(slot: 0, model: 0, incarnation: 1, lastSeen: 0, weight: weight, state: .ready, slotsTotal: total,
                                 slotsBusy: busy, fit: .unconstrained)
        pair.inFlight = hubInFlight
        #expect(Registry.weight(pair) == expected)
    }

    @Test("a model that fits the free VRAM loads there first; one that needs evictions is a later choice")
    func vram() {
        var registry = Registry(expiry: .seconds(6))
        registry.register(gpuReport("small", totalMiB: 8192, freeMiB: 4000, needMiB: 8000), now: t0)
        registry.register(gpuReport("big", totalMiB: 24000, freeMiB: 20000, needMiB: 8000), now: t0)
        let picks = (0..<8).compactMap { _ in registry.pick("m", now: t0).decision.worker }
        #expect(picks == ["big", "big", "big", "big", "small", "small", "small", "small"])
        #expect(registry.pick("m", now: t0).decision == .saturated)
    }

    @Test("a CPU worker (GPU declared with vram_mb 0, as in cluster.example.yaml) can load any model")
    func cpuWorkerLoads() {
        var registry = Registry(expiry: .seconds(6))
        var cpu = report("cpu", models: [ModelReport(name: "m", state: .notLoaded, vramEstimateMiB: 12)])
        cpu.gpus = [GPUReport(index: 0, name: "cpu", memoryTotalMiB: 0, memoryFreeMiB: 0)]
        registry.register(cpu, now: t0)
        #expect(registry.pick("m", now: t0).decision.worker == "cpu")
        // After a crash the model is not loaded again, and still loadable.
        var crashed = cpu
        crashed.sequence = 2
        crashed.models[0].state = .notLoaded
        #expect(registry.heartbeat(crashed, now: t0) == .accepted)
        #expect(registry.pick("m", now: t0).decision.worker == "cpu")
    }

    @Test("a model larger than every live worker's VRAM budget gets a reason at once, not a queue")
    func neverFits() {
        var registry = Registry(expiry: .seconds(6))
        let gpu = gpuReport("gpu", totalMiB: 24000, freeMiB: 24000, needMiB: 30000)
        registry.register(gpu, now: t0)
        guard case .doesNotFit(let reason) = registry.pick("m", now: t0).decision else {
            Issue.record("expected doesNotFit")
            return
        }
        #expect(reason.contains("30000 MiB") && reason.contains("24000 MiB"))
        // The worker's own vram_budget_mb is the budget when it reports one.
        var budgeted = gpu
        budgeted.sequence = 2
        budgeted.vramBudgetMiB = 40000
        #expect(registry.heartbeat(budgeted, now: t0) == .accepted)
        #expect(registry.pick("m", now: t0).decision.worker == "gpu")
    }

    @Test("among workers that must load the model, the most free VRAM after the load is preferred")
    func headroom() {
        var registry = Registry(expiry: .seconds(6))
        registry.register(gpuReport("tight", totalMiB: 8192, freeMiB: 8192, needMiB: 7000), now: t0)
        registry.register(gpuReport("roomy", totalMiB: 49152, freeMiB: 49152, needMiB: 7000), now: t0)
        #expect(registry.pick("m", now: t0).decision.worker == "roomy")
    }

    @Test("weight auto: static weight proportional to the VRAM budget (48 GiB gets twice 24 GiB)")
    func autoWeight() {
        #expect(VRAMBudget(totalMiB: 49152).autoWeight == 48)
        #expect(VRAMBudget(totalMiB: 24576).autoWeight == 24)
        #expect(VRAMBudget(totalMiB: 0).autoWeight == 1)
        #expect(VRAMBudget(gpus: [GPUReport(index: 0, name: "cpu", memoryTotalMiB: 0, memoryFreeMiB: 0)]).totalMiB == nil)
        var registry = Registry(expiry: .seconds(60))
        let models = [ModelReport(name: "m", state: .ready, slotsTotal: 64)]
        registry.register(report("big", weight: VRAMBudget(totalMiB: 49152).autoWeight, models: models), now: t0)
        registry.register(report("small", weight: VRAMBudget(totalMiB: 24576).autoWeight, models: models), now: t0)
        var counts: [String: Int] = [:]
        for _ in 0..<30 {
            let pick = registry.pick("m", now: t0).decision.pick!
            counts[pick.worker, default: 0] += 1
            _ = registry.release(pick, sample: .success, now: t0)
        }
        #expect(counts == ["big": 20, "small": 10])
    }

    @Test("a model draining for a reload is used only when no other worker can take the request")
    func draining() {
        var registry = Registry(expiry: .seconds(60))
        registry.register(report("a", models: [ModelReport(name: "m", state: .draining, slotsTotal: 4)]), now: t0)
        registry.register(report("b", models: [ModelReport(name: "m", state: .ready, slotsTotal: 2)]), now: t0)
        let picks = (0..<3).compactMap { _ in registry.pick("m", now: t0).decision.worker }
        #expect(picks == ["b", "b", "a"])
    }

    @Test("a name no one knows is 503 (not 404) while a worker that discovers models from models_dir is away")
    func discoveringWorkerAway() {
        var registry = Registry(expiry: .seconds(6), discoveringWorkers: ["disk"])
        registry.register(report("a"), now: t0)
        #expect(registry.pick("found-on-disk", now: t0).decision == .noLiveWorker)
        registry.register(report("disk", models: [ModelReport(name: "found-on-disk", state: .notLoaded)]), now: t0)
        #expect(registry.pick("typo", now: t0).decision == .unknownModel)
        #expect(registry.expire(now: t0 + .seconds(7)) == ["a", "disk"])
        #expect(registry.pick("found-on-disk", now: t0 + .seconds(7)).decision == .noLiveWorker)
    }
}
