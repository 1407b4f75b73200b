import Foundation
import Synchronization

/// A process started by a test: output captured line by line, always cleaned up.
final class ManagedProcess: Sendable {
    private let process: Process
    private let lines = CapturedLines()
    let name: String

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    init(name: String, executable: URL, arguments: [String], environment: [String: String] = [:]) throws {
        self.name = name
        process = Process()
        process.executableURL = executable
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["CARAVAN_LOG_LEVEL"] = env["CARAVAN_LOG_LEVEL"] ?? "info"
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let lines = self.lines
        pipe.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            guard !data.isEmpty else {
                handle.readabilityHandler = nil
                return
            }
            let text = String(decoding: data, as: UTF8.self)
            lines.append(text)
        }
        try process.run()
    }

    /// Everything the process printed so far.
    var output: [String] { lines.all }

    /// Waits for a line containing `text` and returns it.
    func waitForLine(containing text: String, timeout: Duration = .seconds(30)) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let line = output.first(where: { $0.contains(text) }) { return line }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("\(name): no line containing \"\(text)\"; output:\n" + output.suffix(30).joined(separator: "\n"))
    }

    /// SIGTERM, then SIGKILL after `grace`.
    func stop(grace: Duration = .seconds(10)) async {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = ContinuousClock.now + grace
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning { kill(pid, SIGKILL) }
    }

    func kill9() { kill(pid, SIGKILL) }
}

/// Output lines of a process, appended from the pipe's reader.
final class CapturedLines: Sendable {
    private let lines = Mutex<(complete: [String], partial: String)>(([], ""))

    func append(_ text: String) {
        lines.withLock { state in
            let parts = (state.partial + text).split(separator: "\n", omittingEmptySubsequences: false)
            state.complete.append(contentsOf: parts.dropLast().map(String.init))
            state.partial = String(parts.last ?? "")
        }
    }

    var all: [String] { lines.withLock { $0.complete + ($0.partial.isEmpty ? [] : [$0.partial]) } }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// True while `pid` exists and is not a zombie.
func isRunning(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return false }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state != "Z" && state != "X"
}

/// What the open descriptors of `pid` refer to ("socket:[123]", "pipe:[456]", paths).
func openFiles(of pid: Int32) -> Set<String> {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
    return Set(fds.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)") })
}

/// Processes whose parent is `parent` and whose command line contains `text`.
func children(of parent: Int32, matching text: String) -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { Int32($0) }.filter { pid in
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")"), isRunning(pid)
        else { return false }
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        guard fields.count > 1, Int32(fields[1]) == parent,
            let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline")
        else { return false }
        return String(decoding: cmdline, as: UTF8.self).contains(text)
    }
}

/// A plain TCP connection to the host and port of `url` on 127.0.0.1, for tests that must
/// misbehave below HTTP (half-sent requests, hanging up while queued). The caller closes it.
/// `receiveBuffer`: a `SO_RCVBUF` set before connecting (a client that reads slowly, or never).
func rawConnection(to url: String, receiveBuffer: Int32? = nil) throws -> Int32 {
    guard let parsed = URL(string: url), let port = parsed.port else { throw TestFailure("bad URL \(url)") }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    if var size = receiveBuffer {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        throw TestFailure("connect to \(url) failed")
    }
    return fd
}
