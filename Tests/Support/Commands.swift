import Crypto
import Foundation

/// Runs a command to completion and returns its standard output, trimmed.
package func runCommand(_ executable: String, _ arguments: [String]) throws -> String {
    try runProcess([executable] + arguments, input: "").trimmingCharacters(in: .whitespacesAndNewlines)
}

/// Runs a command to completion with `input` on stdin; its stdout, or a failure with its output.
package func runProcess(_ arguments: [String], input: String, timeout: Duration = .seconds(120)) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = stderr
    try process.run()
    stdin.fileHandleForWriting.write(Data(input.utf8))
    try stdin.fileHandleForWriting.close()
    let output = stdout.fileHandleForReading.readDataToEndOfFile()
    let errors = stderr.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw TestFailure("\(arguments.joined(separator: " ")) exited \(process.terminationStatus): "
            + String(decoding: errors, as: UTF8.self).suffix(2000))
    }
    return String(decoding: output, as: UTF8.self)
}

package func sha256Hex(_ text: String) -> String {
    SHA256.hash(data: Data(text.utf8)).map { String(format: "%02x", $0) }.joined()
}

package let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
