import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A child process in its own process group whose output is read line by line.
///
/// Why not Foundation's `Process`: the worker must (1) signal the whole process group,
/// (2) give the child default signal dispositions (the service lifecycle ignores SIGTERM
/// in the worker, and ignored signals survive `exec`), and (3) make the child die with
/// the worker even on SIGKILL. For (3) the child is started through `setpriv --pdeathsig`,
/// and because Linux ties that signal to the *thread* that forked, the child is spawned,
/// read and reaped by one dedicated thread that lives exactly as long as the child.
final class ChildProcess: Sendable {
    let pid: pid_t
    private let exit = Mutex<(status: Int32?, waiters: [CheckedContinuation<Int32, Never>])>((nil, []))
    /// Fired once, when the process has been reaped (for waits with a timeout).
    private let exited = ChangeSignal()

    private init(pid: pid_t) { self.pid = pid }

    struct LaunchError: Error, CustomStringConvertible {
        let description: String
    }

    /// Starts `executable` (searched on PATH) and calls `onLine` for every output line
    /// (stdout and stderr merged) from the process's own thread.
    static func launch(
        executable: String,
        arguments: [String],
        environment: [String: String] = [:],
        onLine: @escaping @Sendable (String) -> Void,
        onExit: @escaping @Sendable (pid_t, Int32) -> Void = { _, _ in }
    ) async throws -> ChildProcess {
        guard let path = resolveExecutable(executable) else {
            throw LaunchError(description: "cannot start \(executable): not found or not executable")
        }
        return try await withCheckedThrowingContinuation { (started: CheckedContinuation<ChildProcess, any Error>) in
            let thread = Thread {
                var fds: [Int32] = [0, 0]
                guard pipe(&fds) == 0 else {
                    started.resume(throwing: LaunchError(description: "pipe failed: errno \(errno)"))
                    return
                }
                let (readEnd, writeEnd) = (fds[0], fds[1])
                // Room for the lines that arrive between two batched reads (``readLines``).
                _ = fcntl(readEnd, 1031 /* F_SETPIPE_SZ, which Glibc's Swift module lacks */, 1 << 20)
                let spawned = spawn(path, arguments, environment, output: writeEnd)
                close(writeEnd)
                let pid: pid_t
                switch spawned {
                case .failure(let error):
                    close(readEnd)
                    started.resume(throwing: error)
                    return
                case .success(let value):
                    pid = value
                }
                let child = ChildProcess(pid: pid)
                started.resume(returning: child)
                readLines(readEnd, onLine)
                close(readEnd)
                var status: Int32 = 0
                while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
                child.finish(status)
                onExit(pid, status)
            }
            thread.name = "child-\(executable.split(separator: "/").last ?? "")"
            thread.start()
        }
    }

    /// Runs a command to completion and returns its exit status and output (for short probes).
    /// A command still running after `timeout` is killed (its whole group) and this throws:
    /// a hung probe (`nvidia-smi` after a GPU error) must not hang its caller.
    static func run(_ executable: String, _ arguments: [String], timeout: Duration = .seconds(10)) async throws
        -> (status: Int32, output: String)
    {
        let lines = Mutex<[String]>([])
        let child = try await launch(executable: executable, arguments: arguments) { line in
            lines.withLock { $0.append(line) }
        }
        guard await child.waitForExit(timeout: timeout) else {
            child.signalGroup(SIGKILL)
            throw LaunchError(description: "\(executable) did not finish within \(timeout); killed")
        }
        return (await child.waitForExit(), lines.withLock { $0.joined(separator: "\n") })
    }

    /// Exit status once the process has been reaped, nil while it runs.
    var exitStatus: Int32? { exit.withLock { $0.status } }

    var hasExited: Bool { exitStatus != nil }

    /// Waits until the process has exited and been reaped; returns the raw wait status.
    func waitForExit() async -> Int32 {
        await withCheckedContinuation { continuation in
            let status: Int32? = exit.withLock { state in
                if let status = state.status { return status }
                state.waiters.append(continuation)
                return nil
            }
            if let status { continuation.resume(returning: status) }
        }
    }

    /// Waits at most `timeout`; true when the process exited in time.
    func waitForExit(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        let seen = exited.generation
        if hasExited { return true }
        await exited.wait(since: seen, until: deadline)
        return hasExited
    }

    /// Sends `signal` to the child's whole process group.
    func signalGroup(_ signal: Int32) {
        guard !hasExited else { return }
        kill(-pid, signal)
    }

    /// SIGTERM to the group, then SIGKILL after `grace` if it is still there; false when
    /// it took the SIGKILL.
    @discardableResult
    func terminate(grace: Duration) async -> Bool {
        signalGroup(SIGTERM)
        if await waitForExit(timeout: grace) { return true }
        signalGroup(SIGKILL)
        _ = await waitForExit()
        return false
    }

    /// Human-readable exit ("exit status 1", "killed by signal 9").
    static func describe(status: Int32) -> String {
        let signal = status & 0x7f
        return signal == 0 ? "exit status \((status >> 8) & 0xff)" : "killed by signal \(signal)"
    }

    private func finish(_ status: Int32) {
        let waiters = exit.withLock { state in
            state.status = status
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: status) }
        exited.fire()
    }
}

/// The absolute path of `executable`, searching PATH when it has no slash.
func resolveExecutable(_ executable: String) -> String? {
    if executable.contains("/") {
        return FileManager.default.isExecutableFile(atPath: executable) ? executable : nil
    }
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    return path.split(separator: ":").map { "\($0)/\(executable)" }
        .first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// `setpriv` makes the kernel SIGKILL the child when the spawning thread dies.
private let setprivPath: String? = ["/usr/bin/setpriv", "/bin/setpriv"].first {
    FileManager.default.isExecutableFile(atPath: $0)
}

/// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34+), which Swift's Glibc module
/// does not export; nil on an older C library (then children inherit what is not close-on-exec).
private let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
}()

private func spawn(_ executable: String, _ arguments: [String], _ extraEnvironment: [String: String], output: Int32)
    -> Result<pid_t, ChildProcess.LaunchError>
{
    var argv = [executable] + arguments
    if let setprivPath { argv = [setprivPath, "--pdeathsig", "KILL", "--"] + argv }
    // A child never sees the worker's own settings: `CARAVAN_*` carries secrets (compose
    // passes them that way) that no engine needs.
    var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CARAVAN_") }
    for (key, value) in extraEnvironment { environment[key] = value }

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, output, 1)
    posix_spawn_file_actions_adddup2(&actions, output, 2)
    // Nothing else of the worker's: NIO's sockets and epoll descriptors and the pipes of other
    // children are not close-on-exec. Inherited, the worker's listening socket stayed bound
    // in every llama-server, connections the worker closed sent no FIN while an engine lived,
    // and an engine started meanwhile held another engine's pipe open.
    _ = addCloseFrom?(&actions, 3)

    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var defaults = sigset_t()
    sigfillset(&defaults)
    var emptyMask = sigset_t()
    sigemptyset(&emptyMask)
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setsigmask(&attributes, &emptyMask)
    posix_spawnattr_setpgroup(&attributes, 0)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

    let cArguments = argv.map { strdup($0) } + [nil]
    let cEnvironment = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        cArguments.forEach { free($0) }
        cEnvironment.forEach { free($0) }
    }
    var pid: pid_t = 0
    let result = posix_spawnp(&pid, argv[0], &actions, &attributes, cArguments, cEnvironment)
    guard result == 0 else {
        return .failure(.init(description: "cannot start \(executable): \(String(cString: strerror(result)))"))
    }
    return .success(pid)
}

/// How long the reader of an engine's output lets lines gather after emptying the pipe (µs).
private let lineBatchDelay: useconds_t = 10_000

/// Reads `fd` until EOF, calling `onLine` for each complete line (and a final partial one).
///
/// Batched: after a read that emptied the pipe, the thread waits ``lineBatchDelay`` before
/// the next, so the lines an engine writes for one request (llama-server: ~27 writes) arrive
/// in one read instead of one each (`scripts/bench.sh` counts the system calls). The pipe
/// holds 1 MiB meanwhile, so the engine never waits on its log.
private func readLines(_ fd: Int32, _ onLine: @Sendable (String) -> Void) {
    var pending: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { break }
        defer { if count < buffer.count { usleep(lineBatchDelay) } }
        pending.append(contentsOf: buffer[0..<count])
        while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
            onLine(String(decoding: pending[..<newline], as: UTF8.self))
            pending.removeSubrange(...newline)
        }
        if pending.count > 64 * 1024 {  // a line without end: flush it rather than grow
            onLine(String(decoding: pending, as: UTF8.self))
            pending.removeAll()
        }
    }
    if !pending.isEmpty { onLine(String(decoding: pending, as: UTF8.self)) }
}
