/// A running engine's process as the supervisor sees it: a ``ChildProcess`` in production, a
/// scripted one in the supervisor's unit tests.
protocol EngineProcess: AnyObject, Sendable {
    var pid: Int32 { get }
    /// The raw wait status once the process has been reaped, nil while it runs.
    var exitStatus: Int32? { get }
    /// SIGTERM, then SIGKILL after `grace`; false when it took the SIGKILL.
    @discardableResult
    func terminate(grace: Duration) async -> Bool
}

extension EngineProcess {
    var hasExited: Bool { exitStatus != nil }
}

extension ChildProcess: EngineProcess {}

/// Starts engines and answers the supervisor's probes of them. Injected, so the supervisor
/// runs against scripted engines in unit tests (crashes, hangs, slow loads) and against
/// real processes over loopback in production.
protocol EngineLauncher: Sendable {
    /// Starts a process; `onLine` gets each output line, `onExit` its pid and wait status once reaped.
    func launch(executable: String, arguments: [String], environment: [String: String],
                onLine: @escaping @Sendable (String) -> Void,
                onExit: @escaping @Sendable (Int32, Int32) -> Void) async throws -> any EngineProcess
    /// The status of the engine's readiness path, nil when nothing answers.
    func health(_ engine: Engine) async -> Int?
    /// Whether the process answering on the engine's port is this engine (it knows the key).
    func ownsPort(_ engine: Engine) async -> Bool
    /// llama-server's slots (total, busy), nil when it does not answer.
    func slots(_ engine: Engine) async -> (total: Int, busy: Int)?
    /// llama-server's own Prometheus text.
    func metrics(_ engine: Engine) async -> String?
    /// What each slot holds (slot id -> content), nil when it does not answer.
    func slotContents(_ engine: Engine) async -> [Int: SlotContent]?
    /// The prompt tokens the engine reuses from `slot` for `tokens` (a restore's check).
    func cachedPrefix(_ engine: Engine, slot: Int, tokens: [Int32]) async -> Int?
    /// Saves (`restore`: restores) a slot's prompt cache to (from) `filename` in the engine's
    /// `--slot-save-path`: the tokens saved or restored, nil when it failed or took over `timeout`.
    func slotCache(_ engine: Engine, slot: Int, restore: Bool, filename: String, timeout: Duration) async -> Int?
}

/// Engines as child processes of this worker, probed over loopback.
struct LocalEngineLauncher: EngineLauncher {
    let probe: LlamaServerClient

    func launch(executable: String, arguments: [String], environment: [String: String],
                onLine: @escaping @Sendable (String) -> Void,
                onExit: @escaping @Sendable (Int32, Int32) -> Void) async throws -> any EngineProcess {
        try await ChildProcess.launch(executable: executable, arguments: arguments, environment: environment,
                                      onLine: onLine, onExit: onExit)
    }

    func health(_ engine: Engine) async -> Int? { await probe.health(engine) }
    func ownsPort(_ engine: Engine) async -> Bool { await probe.ownsPort(engine) }
    func slots(_ engine: Engine) async -> (total: Int, busy: Int)? { await probe.slots(engine) }
    func metrics(_ engine: Engine) async -> String? { await probe.metrics(engine) }
    func slotContents(_ engine: Engine) async -> [Int: SlotContent]? { await probe.slotContents(engine) }
    func cachedPrefix(_ engine: Engine, slot: Int, tokens: [Int32]) async -> Int? { await probe.cachedPrefix(engine, slot: slot, tokens: tokens) }
    func slotCache(_ engine: Engine, slot: Int, restore: Bool, filename: String, timeout: Duration) async -> Int? {
        await probe.slotAction(engine, slot: slot, action: restore ? "restore" : "save", filename: filename, timeout: timeout)
    }
}
