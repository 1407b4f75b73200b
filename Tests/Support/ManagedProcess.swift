import Foundation
import Synchronization

/// A process started by a test: output captured line by line, always cleaned up.
package final class ManagedProcess: Sendable {
    private let process: Process
    private let lines = CapturedLines()
    package let name: String

    package var pid: Int32 { process.processIdentifier }
    package var isRunning: Bool { process.isRunning }

    package init(name: String, executable: URL, arguments: [String], environment: [String: String] = [:]) throws {
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
    package var output: [String] { lines.all }

    /// Waits for a line containing `text` and returns it.
    package func waitForLine(containing text: String, timeout: Duration = .seconds(30)) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let line = output.first(where: { $0.contains(text) }) { return line }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("\(name): no line containing \"\(text)\"; output:\n" + output.suffix(30).joined(separator: "\n"))
    }

    /// SIGTERM, then SIGKILL after `grace`.
    package func stop(grace: Duration = .seconds(10)) async {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = ContinuousClock.now + grace
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning { kill(pid, SIGKILL) }
    }

    package func kill9() { kill(pid, SIGKILL) }
}

/// Output lines of a process, appended from the pipe's reader.
package final class CapturedLines: Sendable {
    private let lines = Mutex<(complete: [String], partial: String)>(([], ""))

    package func append(_ text: String) {
        lines.withLock { state in
            let parts = (state.partial + text).split(separator: "\n", omittingEmptySubsequences: false)
            state.complete.append(contentsOf: parts.dropLast().map(String.init))
            state.partial = String(parts.last ?? "")
        }
    }

    package var all: [String] { lines.withLock { $0.complete + ($0.partial.isEmpty ? [] : [$0.partial]) } }
}

package struct TestFailure: Error, CustomStringConvertible {
    package let description: String
    package init(_ description: String) { self.description = description }
}
