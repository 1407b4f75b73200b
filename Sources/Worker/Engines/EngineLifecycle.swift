import Config

/// One model's lifecycle on this worker, as a pure state machine: events in (a request wants
/// it, the process launched, a readiness probe answered, the engine exited, a health check,
/// an eviction, a reload, an admin's unload or reset), actions out (find room, launch, probe,
/// stop, wait for the requests to finish, start it again). No processes, sockets, clocks or
/// awaits: ``EngineSupervisor`` performs the actions and feeds back what happened, and every
/// transition is unit-tested with exact expectations (`WorkerTests/EngineLifecycleTests`).
///
/// ```
///                 demand                admitted          launched             probe: ready
///   stopped ───────────────► admitting ─────────► launching ────────► loading ─────────────► ready
///     ▲  ▲   (after backoff)      │ no room           │ failed          │ exit, not in time     │ │
///     │  │                        ▼                   ▼                 ▼                       │ │ retire, unload
///     │  └──── failed ◄──────────────────────────────────────── (crash: backoff) ◄── exit ──────┘ ▼
///     │          crash loop ──► crashLooped (until reset or a new command line)            draining
///     │                                                                                        │ idle
///     └────────────────────── stopped ◄──────── stopping ◄── evict, ttl, unhealthy ◄── ready ◄─┘
/// ```
///
/// The phase carries its data (the engine, the start's deadline, the follow-up of a stop),
/// so no flag can disagree with it.
struct EngineLifecycle {
    typealias Instant = ContinuousClock.Instant

    /// What follows a stop.
    enum AfterStop: Equatable {
        /// Stays stopped (idle, evicted, unloaded, shutdown): the next request starts it.
        case rest
        /// Counts as a crash (an unhealthy engine): backoff, or a crash loop.
        case crash(String)
        /// Its start failed (not ready in time, port taken): failed until the next demand.
        case fail(EngineError)
        /// Retired by a reload: dropped when `removed`, else started again when it is pinned.
        case retire(removed: Bool)
    }

    enum Phase {
        /// Not running; starts on the next demand, not before `retryAt` (the crash backoff).
        case stopped(retryAt: Instant?)
        /// Its start failed or it crashed while loading; starts on the next demand after `retryAt`.
        case failed(retryAt: Instant?)
        /// Crashed `crash_limit` times within `crash_window`: no automatic start until an
        /// admin resets it or a reload changes its command line.
        case crashLooped(EngineError)
        /// Start number `attempt`, waiting for room under `max_loaded` and the VRAM budget.
        case admitting(attempt: Int, deadline: Instant)
        /// Admitted (it counts against the room); its process is being launched.
        case launching(attempt: Int, deadline: Instant)
        /// Running, not ready yet: readiness is probed until `deadline` (`load_timeout`).
        case loading(Engine, attempt: Int, deadline: Instant, probes: Int)
        /// Serving; `healthFailures` checks in a row failed.
        case ready(Engine, healthFailures: Int)
        /// Takes no new requests; stops once the ones in flight finish, then `then`.
        case draining(Engine, then: AfterStop)
        /// Being stopped (SIGTERM, SIGKILL after `stop_grace`); then `then`.
        case stopping(Engine, then: AfterStop)
        /// Removed from the configuration: the supervisor forgets it.
        case removed
    }

    enum Event {
        /// A request (or a pinned or preloaded model, or an admin's load) wants it ready.
        case demand(now: Instant)
        /// Room was found for it.
        case admitted
        /// No room could be made before the deadline, or it can never fit.
        case noRoom(EngineError)
        case launched(Engine)
        case launchFailed(EngineError)
        /// A readiness probe of the engine `pid` answered.
        case probed(pid: Int32, Probe, now: Instant)
        /// The engine `pid` exited on its own: `status` as words, `output` its last lines.
        case exited(pid: Int32, status: String, output: String, now: Instant)
        /// A `/health` check of the ready engine `pid`: passed, or failed with `detail`.
        case health(pid: Int32, ok: Bool, detail: String, now: Instant)
        /// Stop it now (idle past its ttl, evicted, worker shutdown); the supervisor has made
        /// sure no request holds it.
        case stop
        /// A reload changed its command line (`removed`: or dropped it): drain, stop, then retire.
        case retire(removed: Bool)
        /// An admin unloads it: drain, then stop.
        case unload
        /// The requests in flight finished (or the drain's limit passed).
        case drained
        /// The process of engine `pid` is gone after a stop.
        case stopped(pid: Int32, now: Instant)
        /// An admin clears its crash history.
        case reset
    }

    enum Probe: Equatable {
        case ready
        case notYet
        /// Something answered the port, but not with this engine's key.
        case foreignPort
    }

    enum Action {
        /// Make room for it (evicting idle models), then feed back `admitted` or `noRoom`.
        case findRoom(deadline: Instant)
        /// Launch its process, then feed back `launched` or `launchFailed`.
        case launch
        /// Probe its readiness after `delay`, then feed back `probed`.
        case probe(Engine, after: Duration)
        /// It became ready.
        case ready(Engine)
        /// Its start failed: the requests that waited for it get `error`.
        case startFailed(EngineError)
        /// SIGTERM its process group (SIGKILL after the grace), then feed back `stopped`.
        case stop(Engine)
        /// Feed back `drained` once no request holds it (bounded by ``drainLimit``).
        case awaitIdle
        /// Start it again without a request, after `after` (pinned and preloaded models).
        case keepUp(after: Instant?)
        /// A health check failed; `restart`: the last one allowed.
        case unhealthy(failures: Int, detail: String, restart: Bool)
        /// It exited on its own (`reason`), judged by the crash policy.
        case crashed(EnginePolicy.CrashVerdict, reason: String)
        /// Forget it (removed by a reload).
        case remove
    }

    /// What the machine reads of the configuration (it changes on reload).
    struct Settings {
        var policy: EnginePolicy
        var loadTimeout: Duration
        var pinned: Bool
        var preload: Bool
        var crashWindow: Duration
    }

    /// The longest a drain waits for the requests in flight (a reload's or an unload's).
    static let drainLimit = Duration.seconds(600)

    private(set) var phase = Phase.stopped(retryAt: nil)
    /// When it exited on its own, within the crash window.
    private(set) var crashes: [Instant] = []
    /// Why it last stopped on its own or failed (reported; cleared once ready or reset).
    private(set) var reason: String?
    /// Starts so far: a request waiting for start `n` fails with its error (``failure(of:)``).
    private(set) var starts = 0
    private var lastFailure: (attempt: Int, error: EngineError)?

    init() {}

    // MARK: queries

    enum Readiness {
        case ready(Engine)
        /// Start `attempt` is under way.
        case starting(attempt: Int)
        /// Draining or stopping: a new start follows once it is stopped.
        case busy
        /// A demand starts it now.
        case startable
        /// A demand starts it at this instant (crash backoff).
        case notBefore(Instant)
        case unavailable(EngineError)
    }

    func readiness(now: Instant) -> Readiness {
        switch phase {
        case .ready(let engine, _): .ready(engine)
        case .admitting(let attempt, _), .launching(let attempt, _), .loading(_, let attempt, _, _): .starting(attempt: attempt)
        case .draining, .stopping: .busy
        case .stopped(let retryAt), .failed(let retryAt):
            if let retryAt, retryAt > now { .notBefore(retryAt) } else { .startable }
        case .crashLooped(let error): .unavailable(error)
        case .removed: .unavailable(.plain("the model was removed from this worker", kind: .notServed))
        }
    }

    /// The error of start `attempt` (or of a later one) when it failed.
    func failure(of attempt: Int) -> EngineError? {
        guard let lastFailure, lastFailure.attempt >= attempt else { return nil }
        return lastFailure.error
    }

    /// Its engine process, from launch until it is gone.
    var engine: Engine? {
        switch phase {
        case .loading(let engine, _, _, _), .ready(let engine, _), .draining(let engine, _), .stopping(let engine, _): engine
        default: nil
        }
    }

    /// What a report says of it (its state, reason, crashes and engine): a change of this is
    /// worth a heartbeat; a probe that answered "not yet" or a passed health check is not.
    var reported: String {
        let kind = switch phase {
        case .stopped: "stopped"
        case .failed: "failed"
        case .crashLooped: "crashLooped"
        case .admitting, .launching, .loading: "loading"
        case .ready: "ready"
        case .draining: "draining"
        case .stopping: "stopping"
        case .removed: "removed"
        }
        return "\(kind) \(engine?.process.pid ?? 0) \(crashes.count) \(reason ?? "")"
    }

    /// The engine requests may take: ready and not draining.
    var serving: Engine? {
        if case .ready(let engine, _) = phase { return engine }
        return nil
    }

    /// How admission sees it while another model looks for room (nil: it holds none).
    func residentStage(evictable: Bool, lastUsed: Instant) -> EnginePolicy.Resident.Stage? {
        switch phase {
        case .ready, .draining: .ready(evictable: evictable, lastUsed: lastUsed)
        case .stopping: .stopping
        case .launching, .loading: .starting
        case .admitting, .stopped, .failed, .crashLooped, .removed: nil
        }
    }

    // MARK: transitions

    /// Applies `event` and returns what to do. Events about another engine than the current
    /// one (a late probe, an exit already handled) change nothing.
    mutating func handle(_ event: Event, _ settings: Settings) -> [Action] {
        switch (event, phase) {
        case (.demand(let now), .stopped(let retryAt)), (.demand(let now), .failed(let retryAt)):
            guard retryAt.map({ $0 <= now }) ?? true else { return [] }
            starts += 1
            let deadline = now + settings.loadTimeout
            phase = .admitting(attempt: starts, deadline: deadline)
            return [.findRoom(deadline: deadline)]

        case (.admitted, .admitting(let attempt, let deadline)):
            phase = .launching(attempt: attempt, deadline: deadline)
            return [.launch]
        case (.noRoom(let error), .admitting(let attempt, _)):
            // Nothing ran: it is not loaded, and the requests that waited get the reason.
            reason = error.description
            lastFailure = (attempt, error)
            phase = .stopped(retryAt: nil)
            return [.startFailed(error)]

        case (.launched(let engine), .launching(let attempt, let deadline)):
            phase = .loading(engine, attempt: attempt, deadline: deadline, probes: 0)
            return [.probe(engine, after: Self.probeDelay(0))]
        case (.launched(let engine), _):
            return [.stop(engine)]  // removed or shut down while it launched
        case (.launchFailed(let error), .launching(let attempt, _)):
            return fail(error, attempt: attempt)

        case (.probed(let pid, let probe, let now), .loading(let engine, let attempt, let deadline, let probes)) where engine.process.pid == pid:
            switch probe {
            case .ready:
                phase = .ready(engine, healthFailures: 0)
                reason = nil
                return [.ready(engine)]
            case .foreignPort:
                let error = EngineError(description: "port \(engine.port) answered /health but not with this engine's API key (taken by another process)")
                phase = .stopping(engine, then: .fail(error))
                return [.stop(engine)]
            case .notYet where now > deadline:
                let error = EngineError(description: "not ready within \(settings.loadTimeout)",
                                        publicReason: "it did not become ready within \(settings.loadTimeout) (see the worker's logs for model \(engine.model))")
                phase = .stopping(engine, then: .fail(error))
                return [.stop(engine)]
            case .notYet:
                phase = .loading(engine, attempt: attempt, deadline: deadline, probes: probes + 1)
                return [.probe(engine, after: Self.probeDelay(probes + 1))]
            }

        case (.exited(let pid, let status, let output, let now), .loading(let engine, let attempt, _, _)) where engine.process.pid == pid:
            let actions = crash("llama-server exited during load (\(status)): \(output)", whileReady: false, now: now, settings)
            lastFailure = (attempt, EngineError(description: reason ?? status))
            return actions + [.startFailed(EngineError(description: reason ?? status))]
        case (.exited(let pid, let status, let output, let now), .ready(let engine, _)) where engine.process.pid == pid:
            return crash("llama-server exited (\(status)): \(output)", whileReady: true, now: now, settings)
        case (.exited(let pid, let status, let output, let now), .draining(let engine, let then)) where engine.process.pid == pid:
            let actions = crash("llama-server exited (\(status)): \(output)", whileReady: true, now: now, settings)
            if then == .retire(removed: true) {
                phase = .removed
                return actions + [.remove]
            }
            return actions

        case (.health(let pid, let ok, let detail, _), .ready(let engine, let failures)) where engine.process.pid == pid:
            guard !ok else {
                phase = .ready(engine, healthFailures: 0)
                return []
            }
            let count = failures + 1
            guard settings.policy.isUnhealthy(failures: count) else {
                phase = .ready(engine, healthFailures: count)
                return [.unhealthy(failures: count, detail: detail, restart: false)]
            }
            let why = "unhealthy: /health failed \(count) times in a row (\(detail)); restarted"
            phase = .stopping(engine, then: .crash(why))
            return [.unhealthy(failures: count, detail: detail, restart: true), .stop(engine)]

        case (.stop, .ready(let engine, _)), (.stop, .loading(let engine, _, _, _)):
            phase = .stopping(engine, then: .rest)
            return [.stop(engine)]
        case (.stop, .draining(let engine, let then)):
            phase = .stopping(engine, then: then)
            return [.stop(engine)]

        case (.unload, .ready(let engine, _)):
            phase = .draining(engine, then: .rest)
            return [.awaitIdle]
        case (.retire(let removed), .ready(let engine, _)):
            if !removed { clearCrashes() }
            phase = .draining(engine, then: .retire(removed: removed))
            return [.awaitIdle]
        case (.retire(let removed), .loading(let engine, _, _, _)):
            if !removed { clearCrashes() }
            phase = .stopping(engine, then: .retire(removed: removed))
            return [.stop(engine)]
        case (.retire(let removed), .draining(let engine, let then)):
            // An unload under way becomes a retirement (a removal wins).
            phase = .draining(engine, then: removed || then == .retire(removed: true) ? .retire(removed: true) : .retire(removed: false))
            return []
        case (.retire(true), .stopping(let engine, _)):
            phase = .stopping(engine, then: .retire(removed: true))
            return []
        case (.retire(true), _):
            phase = .removed
            return [.remove]
        case (.retire(false), _):
            // Not running: the next start uses the new command line, with a clean history.
            clearCrashes()
            if case .crashLooped = phase { phase = .stopped(retryAt: nil) }
            if case .failed = phase { phase = .stopped(retryAt: nil) }
            return []

        case (.drained, .draining(let engine, let then)):
            phase = .stopping(engine, then: then)
            return [.stop(engine)]

        case (.stopped(let pid, let now), .stopping(let engine, let then)) where engine.process.pid == pid:
            switch then {
            case .rest:
                phase = .stopped(retryAt: nil)
                return []
            case .crash(let why):
                return crash(why, whileReady: true, now: now, settings)
            case .fail(let error):
                return fail(error, attempt: starts)
            case .retire(removed: true):
                phase = .removed
                return [.remove]
            case .retire(removed: false):
                phase = .stopped(retryAt: nil)
                return settings.pinned ? [.keepUp(after: nil)] : []
            }

        case (.reset, _):
            clearCrashes()
            reason = nil
            switch phase {
            case .failed, .crashLooped: phase = .stopped(retryAt: nil)
            case .stopped: phase = .stopped(retryAt: nil)
            default: break
            }
            return settings.pinned ? [.keepUp(after: nil)] : []

        default:
            return []
        }
    }

    /// Readiness probes come fast at first (a small model is ready in tens of milliseconds),
    /// then every 200 ms (a large one loads for minutes).
    static func probeDelay(_ probes: Int) -> Duration {
        .milliseconds(min(200, 10 << min(probes, 5)))
    }

    private mutating func clearCrashes() {
        crashes = []
        lastFailure = nil
    }

    private mutating func fail(_ error: EngineError, attempt: Int) -> [Action] {
        reason = error.description
        lastFailure = (attempt, error)
        phase = .failed(retryAt: nil)
        return [.startFailed(error)]
    }

    /// It exited on its own: counted in the crash window; after `crash_limit` exits it is a
    /// crash loop, else it may start again after the backoff (pinned and preloaded models
    /// start again by themselves).
    private mutating func crash(_ why: String, whileReady: Bool, now: Instant, _ settings: Settings) -> [Action] {
        let verdict: EnginePolicy.CrashVerdict
        (crashes, verdict) = settings.policy.crashed(history: crashes, now: now)
        switch verdict {
        case .crashLoop(let count):
            let text = "crash loop: \(count) exits within \(settings.crashWindow); automatic restarts stopped "
                + "until the model's config changes or an admin resets it. Last: \(why)"
            reason = text
            phase = .crashLooped(EngineError(description: text,
                                             publicReason: "it is in a crash loop; automatic restarts are stopped until an admin resets it",
                                             kind: .crashLoop))
            return [.crashed(verdict, reason: text)]
        case .backoff(_, let until):
            reason = why
            // A crash of a running engine leaves it restartable (not loaded); a failed load is a failure.
            phase = whileReady ? .stopped(retryAt: until) : .failed(retryAt: until)
            let keepUp: [Action] = settings.pinned || settings.preload ? [.keepUp(after: until)] : []
            return [.crashed(verdict, reason: why)] + keepUp
        }
    }
}
