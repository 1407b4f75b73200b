import Synchronization

@testable import Worker

/// An engine process whose exit a test decides (for the lifecycle and the supervisor).
final class ScriptedProcess: EngineProcess {
    let pid: Int32
    private let state = Mutex<(status: Int32?, ignoresTerm: Bool, onExit: (@Sendable (Int32, Int32) -> Void)?)>((nil, false, nil))
    private let exited = ChangeSignal()

    init(pid: Int32, ignoresTerm: Bool = false, onExit: (@Sendable (Int32, Int32) -> Void)? = nil) {
        self.pid = pid
        state.withLock {
            $0.ignoresTerm = ignoresTerm
            $0.onExit = onExit
        }
    }

    var exitStatus: Int32? { state.withLock { $0.status } }

    /// It exits (a crash, or the end of a stop): the reaper's event follows, as in production.
    func exit(_ status: Int32 = 9) {
        let onExit = state.withLock { state -> (@Sendable (Int32, Int32) -> Void)? in
            guard state.status == nil else { return nil }
            state.status = status
            return state.onExit
        }
        exited.fire()
        onExit?(pid, status)
    }

    func terminate(grace: Duration) async -> Bool {
        let seen = exited.generation
        if state.withLock({ $0.ignoresTerm }) {
            await exited.wait(since: seen, until: .now + grace)
            exit(9)
            return false
        }
        exit(15)
        return true
    }
}

/// Engines a test scripts: each launch makes a ``ScriptedProcess``; readiness answers what
/// `health` says (200 ready, 503 loading, nil hung); a prompt-cache restore answers
/// `restored` tokens, and the check after it `reused` (``setCaches(restored:reused:)``).
final class ScriptedLauncher: EngineLauncher {
    private let state = Mutex<(processes: [ScriptedProcess], health: Int?, nextPID: Int32)>(([], 200, 1000))
    private let cacheScript = Mutex<(restored: Int?, reused: Int?, restores: Int)>((nil, nil, 0))

    func setCaches(restored: Int?, reused: Int?) { cacheScript.withLock { $0 = (restored, reused, $0.restores) } }

    /// Restores asked for so far.
    var restores: Int { cacheScript.withLock { $0.restores } }

    var launched: [ScriptedProcess] { state.withLock { $0.processes } }

    func setHealth(_ status: Int?) { state.withLock { $0.health = status } }

    func launch(executable: String, arguments: [String], environment: [String: String],
                onLine: @escaping @Sendable (String) -> Void,
                onExit: @escaping @Sendable (Int32, Int32) -> Void) async throws -> any EngineProcess {
        state.withLock { state in
            state.nextPID += 1
            let process = ScriptedProcess(pid: state.nextPID, onExit: onExit)
            state.processes.append(process)
            return process
        }
    }

    func health(_ engine: Engine) async -> Int? { state.withLock { $0.health } }
    func ownsPort(_ engine: Engine) async -> Bool { true }
    func slots(_ engine: Engine) async -> (total: Int, busy: Int)? { (2, 0) }
    func metrics(_ engine: Engine) async -> String? { nil }
    func slotContents(_ engine: Engine) async -> [Int: SlotContent]? { nil }
    func cachedPrefix(_ engine: Engine, slot: Int, tokens: [Int32]) async -> Int? { cacheScript.withLock { $0.reused } }
    func slotCache(_ engine: Engine, slot: Int, restore: Bool, filename: String, timeout: Duration) async -> Int? {
        guard restore else { return nil }
        return cacheScript.withLock { script in
            script.restores += 1
            return script.restored
        }
    }
}
