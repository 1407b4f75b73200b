import Config
import Wire

/// The worker's engine decisions, without processes, sockets or awaits: admission under
/// `max_loaded` and the VRAM budget (and which model to evict for it), crash backoff and
/// crash loops, idle unloads, unhealthy restarts, and what a reload changes.
///
/// The same shape as the hub's routing core: a value type that takes `now`, so every
/// decision is unit-tested with exact expectations. ``EngineSupervisor`` executes them.
struct EnginePolicy: Sendable {
    typealias Instant = ContinuousClock.Instant

    var maxLoaded: Int?
    var budget: VRAMBudget
    /// The first restart's delay; it doubles per crash in the window, up to ``maxBackoff``.
    var restartBackoff: Duration
    var crashLimit: Int
    var crashWindow: Duration
    /// `/health` failures in a row that restart an engine (0: checks off).
    var healthFailures: Int

    static let maxBackoff = Duration.seconds(60)

    init(maxLoaded: Int? = nil, budget: VRAMBudget = VRAMBudget(totalMiB: nil), restartBackoff: Duration = .seconds(1),
         crashLimit: Int = 5, crashWindow: Duration = .seconds(300), healthFailures: Int = 3) {
        self.maxLoaded = maxLoaded
        self.budget = budget
        self.restartBackoff = restartBackoff
        self.crashLimit = crashLimit
        self.crashWindow = crashWindow
        self.healthFailures = healthFailures
    }

    init(config: WorkerConfig, budget: VRAMBudget) {
        self.init(maxLoaded: config.maxLoaded, budget: budget, restartBackoff: config.restartBackoff,
                  crashLimit: config.crashLimit, crashWindow: config.crashWindow, healthFailures: config.healthFailures)
    }

    // MARK: admission

    /// Another model holding room on this worker, as admission sees it.
    struct Resident: Equatable {
        enum Stage: Equatable {
            /// Serving. `evictable`: idle (no request uses or awaits it) and not pinned.
            case ready(evictable: Bool, lastUsed: Instant)
            /// Its engine is being stopped: its room comes free when it is gone.
            case stopping
            /// Starting, and already admitted.
            case starting
        }

        var name: String
        var vramMiB: Int?
        var stage: Stage
    }

    enum Admission: Equatable {
        /// It fits now.
        case admit
        /// Stop this idle model (least recently used) first, then ask again.
        case evict(String, reason: String)
        /// A model is stopping: wait for it, then ask again.
        case awaitStop
        /// Everything else is busy or pinned: wait (up to the load timeout) and ask again.
        case wait
        /// It can never fit here, whatever is stopped.
        case never(String)
    }

    /// Whether `model` (needing `needMiB`, nil when unknown) can start next to `residents`.
    func admission(for model: String, needMiB: Int?, residents: [Resident]) -> Admission {
        if case .never(let need, let total) = budget.fit(needMiB: needMiB, freeMiB: nil) {
            return .never("model \(model) " + VRAMBudget.neverFitsReason(needMiB: need, budgetMiB: total))
        }
        func fits(next residents: [Resident]) -> (count: Bool, vram: Bool) {
            let used = residents.map { $0.vramMiB ?? 0 }.reduce(0, +)
            let vram = switch budget.fit(needMiB: needMiB, freeMiB: budget.totalMiB.map { $0 - used }) {
            case .unconstrained, .free: true
            case .afterEviction, .never: false
            }
            return (maxLoaded.map { residents.count + 1 <= $0 } ?? true, vram)
        }
        let (countFits, vramFits) = fits(next: residents)
        if countFits && vramFits { return .admit }
        // The stops under way make room: wait for them rather than evict another model.
        let staying = residents.filter { $0.stage != .stopping }
        if staying.count < residents.count, fits(next: staying) == (true, true) { return .awaitStop }
        let idle = residents.compactMap { resident -> (name: String, lastUsed: Instant)? in
            guard case .ready(true, let lastUsed) = resident.stage else { return nil }
            return (resident.name, lastUsed)
        }
        // Ties go to the name first in order, so the choice is deterministic.
        if let victim = idle.min(by: { ($0.lastUsed, $0.name) < ($1.lastUsed, $1.name) }) {
            let why = countFits ? "VRAM budget" : "max_loaded \(maxLoaded ?? 0)"
            return .evict(victim.name, reason: "evicted (least recently used) to make room for \(model): \(why)")
        }
        if residents.contains(where: { $0.stage == .stopping }) { return .awaitStop }
        return .wait
    }

    // MARK: crashes

    enum CrashVerdict: Equatable {
        /// Restart no earlier than `until` (on demand, or at once when pinned or preloaded).
        case backoff(Duration, until: Instant)
        /// `count` exits within the crash window: automatic restarts stop until a reset or a
        /// changed command line.
        case crashLoop(count: Int)
    }

    /// An engine exited on its own at `now`, after the exits in `history`. Returns the exits
    /// still within the crash window (this one included) and what happens next.
    func crashed(history: [Instant], now: Instant) -> (history: [Instant], verdict: CrashVerdict) {
        let recent = history.filter { now - $0 < crashWindow } + [now]
        if recent.count >= crashLimit { return (recent, .crashLoop(count: recent.count)) }
        var backoff = restartBackoff
        for _ in 1..<recent.count { backoff *= 2 }
        backoff = min(backoff, Self.maxBackoff)
        return (recent, .backoff(backoff, until: now + backoff))
    }

    /// Exits of `history` within the crash window at `now` (the report's `recent_crashes`).
    func recentCrashes(_ history: [Instant], now: Instant) -> Int {
        history.filter { now - $0 < crashWindow }.count
    }

    // MARK: idle and health

    /// Whether a ready model unused since `lastUsed` is unloaded by its `ttl` at `now`.
    /// Pinned and busy models never are; no ttl means never.
    func idleExpired(ttl: Duration?, pinned: Bool, busy: Bool, lastUsed: Instant, now: Instant) -> Bool {
        guard let ttl, !pinned, !busy else { return false }
        return now - lastUsed >= ttl
    }

    /// Whether `failures` failed `/health` checks in a row make the engine restart.
    func isUnhealthy(failures: Int) -> Bool { healthFailures > 0 && failures >= healthFailures }

    // MARK: reload

    /// What a reload does with each model, by name.
    struct ReloadPlan: Equatable {
        /// New models: they start on demand (or now when pinned or preloaded).
        var added: [String] = []
        /// Kept models whose command line changed: they restart once idle.
        var restarted: [String] = []
        /// Kept models with the same command line: they keep running.
        var unchanged: [String] = []
        /// Models no longer configured: they stop once idle and are dropped.
        var removed: [String] = []
    }

    /// Compares the models before and after a reload by their full command lines (which
    /// include the executable, arguments and environment that matter to the engine).
    static func reloadPlan<Command: Equatable>(before: [(name: String, commandLine: Command)],
                                               after: [(name: String, commandLine: Command)]) -> ReloadPlan {
        var plan = ReloadPlan()
        let previous = Dictionary(before.map { ($0.name, $0.commandLine) }, uniquingKeysWith: { first, _ in first })
        for model in after {
            switch previous[model.name] {
            case nil: plan.added.append(model.name)
            case model.commandLine?: plan.unchanged.append(model.name)
            default: plan.restarted.append(model.name)
            }
        }
        let kept = Set(after.map(\.name))
        plan.removed = before.map(\.name).filter { !kept.contains($0) }
        return plan
    }
}
