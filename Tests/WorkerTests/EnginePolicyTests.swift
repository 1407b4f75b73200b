import Testing
import Wire

@testable import Worker

/// Every engine decision of the worker, without processes: admission and eviction, crash
/// backoff and crash loops, idle unloads, health restarts, and the reload diff.
@Suite("Engine policy")
struct EnginePolicyTests {
    let t0 = ContinuousClock.now

    func ready(_ name: String, vram: Int? = nil, idle: Bool = true, usedAt: Duration = .zero) -> EnginePolicy.Resident {
        EnginePolicy.Resident(name: name, vramMiB: vram, stage: .ready(evictable: idle, lastUsed: t0 + usedAt))
    }

    @Test("a CPU worker (no budget, no max_loaded) admits anything next to anything")
    func unconstrained() {
        let policy = EnginePolicy()
        #expect(policy.admission(for: "m", needMiB: 90_000, residents: [ready("a", vram: 50_000), ready("b")]) == .admit)
    }

    @Test("max_loaded: the least recently used idle model is evicted; ties go by name")
    func maxLoadedEvictsLRU() {
        let policy = EnginePolicy(maxLoaded: 2)
        #expect(policy.admission(for: "m", needMiB: nil, residents: [ready("a")]) == .admit)
        let residents = [ready("a", usedAt: .seconds(5)), ready("b", usedAt: .seconds(1)), ready("c", usedAt: .seconds(1))]
        #expect(policy.admission(for: "m", needMiB: nil, residents: residents)
            == .evict("b", reason: "evicted (least recently used) to make room for m: max_loaded 2"))
    }

    @Test("busy and pinned models are never evicted: a stopping one is awaited, else the start waits")
    func busyOrPinnedWait() {
        let policy = EnginePolicy(maxLoaded: 1)
        #expect(policy.admission(for: "m", needMiB: nil, residents: [ready("a", idle: false)]) == .wait)
        let stopping = EnginePolicy.Resident(name: "b", vramMiB: nil, stage: .stopping)
        #expect(policy.admission(for: "m", needMiB: nil, residents: [stopping]) == .awaitStop)
        let starting = EnginePolicy.Resident(name: "c", vramMiB: nil, stage: .starting)
        #expect(policy.admission(for: "m", needMiB: nil, residents: [starting]) == .wait)
    }

    @Test("a stop under way that makes enough room is awaited; no second model is evicted for it")
    func stopUnderWayIsEnough() {
        let policy = EnginePolicy(budget: VRAMBudget(totalMiB: 100))
        let stopping = EnginePolicy.Resident(name: "v2", vramMiB: 45, stage: .stopping)
        #expect(policy.admission(for: "v3", needMiB: 45, residents: [ready("v1", vram: 45), stopping]) == .awaitStop)
        // Not enough even after it: the next idle model is evicted too.
        #expect(policy.admission(for: "big", needMiB: 80, residents: [ready("v1", vram: 45), stopping])
            == .evict("v1", reason: "evicted (least recently used) to make room for big: VRAM budget"))
        let counted = EnginePolicy(maxLoaded: 2)
        #expect(counted.admission(for: "m", needMiB: nil, residents: [ready("a"), .init(name: "b", vramMiB: nil, stage: .stopping)])
            == .awaitStop)
    }

    @Test("VRAM budget: fits, fits after evicting the LRU idle model, never fits")
    func vram() {
        let policy = EnginePolicy(budget: VRAMBudget(totalMiB: 24_000))
        #expect(policy.admission(for: "m", needMiB: 8_000, residents: [ready("a", vram: 16_000)]) == .admit)
        let residents = [ready("a", vram: 10_000, usedAt: .seconds(2)), ready("b", vram: 10_000, usedAt: .seconds(1))]
        #expect(policy.admission(for: "m", needMiB: 8_000, residents: residents)
            == .evict("b", reason: "evicted (least recently used) to make room for m: VRAM budget"))
        #expect(policy.admission(for: "m", needMiB: 8_000, residents: [ready("a", vram: 20_000, idle: false)]) == .wait)
        guard case .never(let reason) = policy.admission(for: "huge", needMiB: 30_000, residents: []) else {
            Issue.record("a model over the whole budget must never fit")
            return
        }
        #expect(reason.contains("30000 MiB") && reason.contains("24000 MiB"))
        // A model without an estimate is not limited by VRAM.
        #expect(policy.admission(for: "m", needMiB: nil, residents: [ready("a", vram: 24_000, idle: false)]) == .admit)
    }

    @Test("crashes back off 1 s, 2 s, 4 s …, capped at 60 s; the crash limit within the window is a crash loop")
    func crashBackoff() {
        let policy = EnginePolicy(restartBackoff: .seconds(1), crashLimit: 4, crashWindow: .seconds(300))
        var history: [ContinuousClock.Instant] = []
        var verdicts: [EnginePolicy.CrashVerdict] = []
        for second in [0, 10, 20, 30] {
            let verdict: EnginePolicy.CrashVerdict
            (history, verdict) = policy.crashed(history: history, now: t0 + .seconds(second))
            verdicts.append(verdict)
        }
        #expect(verdicts == [
            .backoff(.seconds(1), until: t0 + .seconds(1)), .backoff(.seconds(2), until: t0 + .seconds(12)),
            .backoff(.seconds(4), until: t0 + .seconds(24)), .crashLoop(count: 4),
        ])
        // Exits older than the window are forgotten: the count starts again.
        let (kept, verdict) = policy.crashed(history: [t0, t0 + .seconds(10)], now: t0 + .seconds(400))
        #expect(kept == [t0 + .seconds(400)] && verdict == .backoff(.seconds(1), until: t0 + .seconds(401)))
        #expect(policy.recentCrashes([t0, t0 + .seconds(200)], now: t0 + .seconds(350)) == 1)
        let capped = EnginePolicy(restartBackoff: .seconds(10), crashLimit: 100)
        let (_, long) = capped.crashed(history: (0..<9).map { t0 + .seconds($0) }, now: t0 + .seconds(9))
        #expect(long == .backoff(.seconds(60), until: t0 + .seconds(69)))
    }

    @Test("ttl unloads only idle, unpinned models, at the ttl; health restarts at health_failures (0: off)")
    func idleAndHealth() {
        let policy = EnginePolicy(healthFailures: 3)
        let used = t0
        #expect(policy.idleExpired(ttl: .seconds(60), pinned: false, busy: false, lastUsed: used, now: t0 + .seconds(60)))
        #expect(!policy.idleExpired(ttl: .seconds(60), pinned: false, busy: false, lastUsed: used, now: t0 + .seconds(59)))
        #expect(!policy.idleExpired(ttl: .seconds(60), pinned: true, busy: false, lastUsed: used, now: t0 + .seconds(600)))
        #expect(!policy.idleExpired(ttl: .seconds(60), pinned: false, busy: true, lastUsed: used, now: t0 + .seconds(600)))
        #expect(!policy.idleExpired(ttl: nil, pinned: false, busy: false, lastUsed: used, now: t0 + .seconds(600)))
        #expect(!policy.isUnhealthy(failures: 2) && policy.isUnhealthy(failures: 3))
        #expect(!EnginePolicy(healthFailures: 0).isUnhealthy(failures: 100))
    }

    @Test("reload: added, restarted (command line changed), unchanged and removed, by name")
    func reloadPlan() {
        let plan = EnginePolicy.reloadPlan(
            before: [("a", ["llama-server", "-m", "a.gguf"]), ("b", ["llama-server", "-m", "b.gguf"]), ("c", ["x"])],
            after: [("b", ["llama-server", "-m", "b.gguf", "-c", "4096"]), ("a", ["llama-server", "-m", "a.gguf"]), ("d", ["y"])])
        #expect(plan == EnginePolicy.ReloadPlan(added: ["d"], restarted: ["b"], unchanged: ["a"], removed: ["c"]))
    }
}
