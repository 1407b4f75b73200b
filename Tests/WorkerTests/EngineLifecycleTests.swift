import Synchronization
import Testing
import Wire

@testable import Worker

/// Every transition of one model's lifecycle, without processes or clocks: the instants are
/// the test's, the engine processes scripted.
@Suite("Engine lifecycle")
struct EngineLifecycleTests {
    typealias Lifecycle = EngineLifecycle
    let t0 = ContinuousClock.now
    let settings = EngineLifecycle.Settings(
        policy: EnginePolicy(restartBackoff: .seconds(1), crashLimit: 3, crashWindow: .seconds(60), healthFailures: 2),
        loadTimeout: .seconds(10), pinned: false, preload: false, crashWindow: .seconds(60))

    static func engine(_ pid: Int32, model: String = "m") -> Engine {
        Engine(model: model, port: 9000 + Int(pid), apiKey: "k", process: ScriptedProcess(pid: pid))
    }

    /// A lifecycle brought to ready on engine `pid`.
    func ready(_ pid: Int32 = 1, settings: EngineLifecycle.Settings? = nil) -> (Lifecycle, Engine) {
        var lifecycle = Lifecycle()
        let settings = settings ?? self.settings
        let engine = Self.engine(pid)
        _ = lifecycle.handle(.demand(now: t0), settings)
        _ = lifecycle.handle(.admitted, settings)
        _ = lifecycle.handle(.launched(engine), settings)
        _ = lifecycle.handle(.probed(pid: pid, .ready, now: t0), settings)
        return (lifecycle, engine)
    }

    func name(_ phase: Lifecycle.Phase) -> String {
        switch phase {
        case .stopped: "stopped"
        case .failed: "failed"
        case .crashLooped: "crashLooped"
        case .admitting: "admitting"
        case .launching: "launching"
        case .loading: "loading"
        case .ready: "ready"
        case .draining: "draining"
        case .stopping: "stopping"
        case .removed: "removed"
        }
    }

    func names(_ actions: [Lifecycle.Action]) -> [String] {
        actions.map { action in
            switch action {
            case .findRoom: "findRoom"
            case .launch: "launch"
            case .probe: "probe"
            case .ready: "ready"
            case .startFailed: "startFailed"
            case .stop: "stop"
            case .awaitIdle: "awaitIdle"
            case .keepUp: "keepUp"
            case .unhealthy(_, _, let restart): restart ? "unhealthy-restart" : "unhealthy"
            case .crashed(.crashLoop, _): "crashLoop"
            case .crashed(.backoff, _): "backoff"
            case .remove: "remove"
            }
        }
    }

    @Test("a demand starts it: room, launch, probes (fast, then every 200 ms), ready; one start however many demands")
    func start() {
        var lifecycle = Lifecycle()
        #expect(names(lifecycle.handle(.demand(now: t0), settings)) == ["findRoom"])
        #expect(names(lifecycle.handle(.demand(now: t0), settings)).isEmpty, "a second request joins the start")
        guard case .starting(let attempt) = lifecycle.readiness(now: t0) else { Issue.record("not starting"); return }
        #expect(names(lifecycle.handle(.admitted, settings)) == ["launch"])
        let engine = Self.engine(1)
        #expect(names(lifecycle.handle(.launched(engine), settings)) == ["probe"])
        #expect(names(lifecycle.handle(.probed(pid: 1, .notYet, now: t0 + .seconds(1)), settings)) == ["probe"])
        #expect(names(lifecycle.handle(.probed(pid: 2, .ready, now: t0), settings)).isEmpty, "another engine's probe")
        #expect(names(lifecycle.handle(.probed(pid: 1, .ready, now: t0 + .seconds(2)), settings)) == ["ready"])
        #expect(lifecycle.serving?.process.pid == 1)
        #expect(lifecycle.failure(of: attempt) == nil)
        #expect(Lifecycle.probeDelay(0) == .milliseconds(10) && Lifecycle.probeDelay(3) == .milliseconds(80)
            && Lifecycle.probeDelay(40) == .milliseconds(200))
    }

    @Test("not ready within load_timeout: stopped, failed with the reason, and the waiting requests get it")
    func loadTimeout() {
        var lifecycle = Lifecycle()
        _ = lifecycle.handle(.demand(now: t0), settings)
        _ = lifecycle.handle(.admitted, settings)
        _ = lifecycle.handle(.launched(Self.engine(1)), settings)
        #expect(names(lifecycle.handle(.probed(pid: 1, .notYet, now: t0 + .seconds(11)), settings)) == ["stop"])
        #expect(name(lifecycle.phase) == "stopping")
        #expect(names(lifecycle.handle(.stopped(pid: 1, now: t0 + .seconds(11)), settings)) == ["startFailed"])
        #expect(name(lifecycle.phase) == "failed")
        #expect(lifecycle.failure(of: 1)?.publicReason?.contains("did not become ready within 10") == true)
        guard case .startable = lifecycle.readiness(now: t0 + .seconds(12)) else { Issue.record("a new request starts it again"); return }
    }

    @Test("a port answered by another process: the start fails, nothing is served")
    func foreignPort() {
        var lifecycle = Lifecycle()
        _ = lifecycle.handle(.demand(now: t0), settings)
        _ = lifecycle.handle(.admitted, settings)
        _ = lifecycle.handle(.launched(Self.engine(1)), settings)
        #expect(names(lifecycle.handle(.probed(pid: 1, .foreignPort, now: t0), settings)) == ["stop"])
        _ = lifecycle.handle(.stopped(pid: 1, now: t0), settings)
        #expect(lifecycle.failure(of: 1)?.description.contains("taken by another process") == true)
        #expect(lifecycle.serving == nil)
    }

    @Test("crash, backoff 1 s then 2 s, crash loop at the limit, no start until an admin resets it")
    func crashLoop() {
        var (lifecycle, _) = ready(1)
        #expect(names(lifecycle.handle(.exited(pid: 1, status: "killed by signal 9", output: "", now: t0 + .seconds(1)), settings)) == ["backoff"])
        guard case .notBefore(let retry) = lifecycle.readiness(now: t0 + .seconds(1)) else { Issue.record("backoff"); return }
        #expect(retry == t0 + .seconds(2))
        #expect(names(lifecycle.handle(.demand(now: t0 + .milliseconds(1500)), settings)).isEmpty, "no start within the backoff")
        #expect(names(lifecycle.handle(.demand(now: t0 + .seconds(2)), settings)) == ["findRoom"])
        _ = lifecycle.handle(.admitted, settings)
        _ = lifecycle.handle(.launched(Self.engine(2)), settings)
        // It exits while loading: a failed start, whose waiters get the reason.
        let actions = lifecycle.handle(.exited(pid: 2, status: "exit status 1", output: "bad model", now: t0 + .seconds(3)), settings)
        #expect(names(actions) == ["backoff", "startFailed"])
        #expect(lifecycle.failure(of: 2)?.description.contains("exited during load (exit status 1): bad model") == true)
        guard case .notBefore(let second) = lifecycle.readiness(now: t0 + .seconds(3)) else { Issue.record("backoff"); return }
        #expect(second == t0 + .seconds(5), "the backoff doubles")
        _ = lifecycle.handle(.demand(now: t0 + .seconds(5)), settings)
        _ = lifecycle.handle(.admitted, settings)
        _ = lifecycle.handle(.launched(Self.engine(3)), settings)
        _ = lifecycle.handle(.probed(pid: 3, .ready, now: t0 + .seconds(6)), settings)
        #expect(names(lifecycle.handle(.exited(pid: 3, status: "killed by signal 11", output: "", now: t0 + .seconds(7)), settings)) == ["crashLoop"])
        guard case .unavailable(let error) = lifecycle.readiness(now: t0 + .seconds(100)) else { Issue.record("crash loop"); return }
        #expect(error.kind == .crashLoop && error.publicReason?.contains("crash loop") == true)
        #expect(lifecycle.reason?.contains("3 exits within") == true)
        #expect(names(lifecycle.handle(.demand(now: t0 + .seconds(100)), settings)).isEmpty)
        #expect(names(lifecycle.handle(.reset, settings)).isEmpty)
        #expect(lifecycle.reason == nil && lifecycle.crashes.isEmpty)
        #expect(names(lifecycle.handle(.demand(now: t0 + .seconds(100)), settings)) == ["findRoom"])
    }

    @Test("a preloaded or pinned model that crashes is started again after the backoff, without a request")
    func preloadedCrash() {
        var preload = settings
        preload.preload = true
        var (lifecycle, _) = ready(1, settings: preload)
        let actions = lifecycle.handle(.exited(pid: 1, status: "killed by signal 9", output: "", now: t0), preload)
        guard case .keepUp(let after)? = actions.last else { Issue.record("\(names(actions))"); return }
        #expect(after == t0 + .seconds(1))
        var pinned = settings
        pinned.pinned = true
        var (other, _) = ready(2, settings: pinned)
        #expect(names(other.handle(.exited(pid: 2, status: "", output: "", now: t0), pinned)) == ["backoff", "keepUp"])
    }

    @Test("a hung engine: health failures below the limit keep it, at the limit it is stopped and counted as a crash")
    func hungEngine() {
        var (lifecycle, _) = ready(1)
        #expect(names(lifecycle.handle(.health(pid: 1, ok: false, detail: "no answer", now: t0), settings)) == ["unhealthy"])
        #expect(names(lifecycle.handle(.health(pid: 1, ok: true, detail: "HTTP 200", now: t0), settings)).isEmpty, "a pass resets the count")
        _ = lifecycle.handle(.health(pid: 1, ok: false, detail: "no answer", now: t0), settings)
        #expect(names(lifecycle.handle(.health(pid: 1, ok: false, detail: "no answer", now: t0), settings)) == ["unhealthy-restart", "stop"])
        #expect(lifecycle.serving == nil, "out of routing at once")
        // Its exit while stopping was asked for: no second crash.
        #expect(names(lifecycle.handle(.exited(pid: 1, status: "killed by signal 15", output: "", now: t0), settings)).isEmpty)
        #expect(names(lifecycle.handle(.stopped(pid: 1, now: t0 + .seconds(1)), settings)) == ["backoff"])
        #expect(lifecycle.crashes.count == 1 && lifecycle.reason?.contains("unhealthy: /health failed 2 times") == true)
        guard case .notBefore = lifecycle.readiness(now: t0 + .seconds(1)) else { Issue.record("restarts after the backoff"); return }
    }

    @Test("reload under load: the changed model drains (no new requests), then stops; the next demand starts the new command line")
    func reloadUnderLoad() {
        var (lifecycle, _) = ready(1)
        _ = lifecycle.handle(.exited(pid: 9, status: "", output: "", now: t0), settings)  // another engine: nothing
        #expect(names(lifecycle.handle(.retire(removed: false), settings)) == ["awaitIdle"])
        #expect(lifecycle.serving == nil && name(lifecycle.phase) == "draining")
        guard case .busy = lifecycle.readiness(now: t0) else { Issue.record("requests wait for the replacement"); return }
        #expect(names(lifecycle.handle(.demand(now: t0), settings)).isEmpty, "no second engine while it drains")
        #expect(names(lifecycle.handle(.drained, settings)) == ["stop"])
        #expect(names(lifecycle.handle(.stopped(pid: 1, now: t0), settings)).isEmpty)
        #expect(names(lifecycle.handle(.demand(now: t0), settings)) == ["findRoom"])
        // Pinned: started again at once.
        var pinned = settings
        pinned.pinned = true
        var (kept, _) = ready(2, settings: pinned)
        _ = kept.handle(.retire(removed: false), pinned)
        _ = kept.handle(.drained, pinned)
        #expect(names(kept.handle(.stopped(pid: 2, now: t0), pinned)) == ["keepUp"])
    }

    @Test("removed by a reload: a running one drains then goes; a loading one stops then goes; a stopped one goes at once")
    func removed() {
        var (running, _) = ready(1)
        #expect(names(running.handle(.retire(removed: true), settings)) == ["awaitIdle"])
        _ = running.handle(.drained, settings)
        #expect(names(running.handle(.stopped(pid: 1, now: t0), settings)) == ["remove"])
        var loading = Lifecycle()
        _ = loading.handle(.demand(now: t0), settings)
        _ = loading.handle(.admitted, settings)
        _ = loading.handle(.launched(Self.engine(2)), settings)
        #expect(names(loading.handle(.retire(removed: true), settings)) == ["stop"])
        #expect(name(loading.phase) == "stopping")
        var launching = Lifecycle()
        _ = launching.handle(.demand(now: t0), settings)
        _ = launching.handle(.admitted, settings)
        #expect(names(launching.handle(.retire(removed: true), settings)) == ["remove"])
        #expect(names(launching.handle(.launched(Self.engine(3)), settings)) == ["stop"], "its process, launched too late, is stopped")
        var stopped = Lifecycle()
        #expect(names(stopped.handle(.retire(removed: true), settings)) == ["remove"])
    }

    @Test("drain, then unload, then load: requests finish, it stops and stays stopped, an admin's load starts it again")
    func unloadThenLoad() {
        var (lifecycle, _) = ready(1)
        #expect(names(lifecycle.handle(.unload, settings)) == ["awaitIdle"])
        #expect(names(lifecycle.handle(.unload, settings)).isEmpty, "a second unload changes nothing")
        #expect(names(lifecycle.handle(.drained, settings)) == ["stop"])
        #expect(names(lifecycle.handle(.stopped(pid: 1, now: t0), settings)).isEmpty)
        #expect(name(lifecycle.phase) == "stopped" && lifecycle.crashes.isEmpty)
        #expect(names(lifecycle.handle(.demand(now: t0), settings)) == ["findRoom"])
    }

    @Test("a crash while draining still counts; a removed model then goes")
    func crashWhileDraining() {
        var (lifecycle, _) = ready(1)
        _ = lifecycle.handle(.retire(removed: true), settings)
        #expect(names(lifecycle.handle(.exited(pid: 1, status: "killed by signal 9", output: "", now: t0), settings)) == ["backoff", "remove"])
        #expect(names(lifecycle.handle(.drained, settings)).isEmpty, "the drain ends on a model already gone")
    }

    @Test("no room: the start fails with the reason, the model is not loaded")
    func noRoom() {
        var lifecycle = Lifecycle()
        _ = lifecycle.handle(.demand(now: t0), settings)
        #expect(names(lifecycle.handle(.noRoom(.plain("no room to load m", kind: .noRoom)), settings)) == ["startFailed"])
        #expect(name(lifecycle.phase) == "stopped" && lifecycle.failure(of: 1)?.description == "no room to load m")
    }
}

/// The race the supervisor once had: an eviction (or a ttl unload) decided in the same
/// instant as a request took the engine stopped it under the request.
@Suite("Engine leases")
struct EngineLeasesTests {
    @Test("claimIdle and acquireReady are one step each: whichever comes first wins, never both")
    func evictionRace() {
        let leases = EngineLeases()
        let engine = EngineLifecycleTests.engine(1)
        leases.publish(["m": (engine: engine, limit: 2)])
        // The request first: the engine is busy, and the stop is refused.
        guard case .engine = leases.acquireReady("m") else { Issue.record("ready"); return }
        #expect(!leases.claimIdle("m"))
        leases.release("m")
        // The stop first: the engine is withdrawn, so the request starts (or waits for) another.
        #expect(leases.claimIdle("m"))
        guard case .notReady = leases.acquireReady("m") else { Issue.record("a withdrawn engine was taken"); return }
    }

    @Test("a request waiting for the engine keeps it from a ttl unload or an eviction; the bound answers full")
    func waitingAndFull() {
        let leases = EngineLeases()
        leases.publish(["m": (engine: EngineLifecycleTests.engine(1), limit: 1)])
        leases.beginWait("m")
        #expect(!leases.claimIdle("m"), "a waiting request counts")
        #expect(leases.endWait("m", lease: true) == nil)
        guard case .full(let limit) = leases.acquireReady("m") else { Issue.record("bound of 1"); return }
        #expect(limit == 1 && leases.leases("m") == 1 && leases.snapshot()["m"]?.peak == 1)
    }

    @Test("the last request's end wakes a drain, even while other requests wait for the replacement")
    func lastReleaseSignals() async {
        let leases = EngineLeases()
        leases.publish(["m": (engine: EngineLifecycleTests.engine(1), limit: 4)])
        guard case .engine = leases.acquireReady("m") else { Issue.record("ready"); return }
        leases.beginWait("m")
        let seen = leases.changes.generation
        leases.release("m")
        #expect(leases.changes.generation != seen)
        await leases.changes.wait(since: seen)  // returns at once: the change already happened
    }
}
