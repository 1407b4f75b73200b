import Foundation
import Testing
import TestSupport

/// README's 5-minute tour, read from README.md itself and run in order against the example
/// cluster, so the tour cannot drift from the code: each command runs as written (only the
/// hub's address, the token files and the worker's PID are substituted), and each output the
/// tour shows (`# {...}`) is compared with what came back.
@Suite("README tour", .serialized)
struct ReadmeTourTests {
    struct Step {
        var command: String
        var expected: String?
    }

    /// The tour's commands (continuations joined) with the outputs it shows for them; the
    /// quickstart lines are what ``TestCluster/startExample(workers:)`` stands in for.
    static func tour() throws -> [Step] {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../README.md").standardized
        let text = try String(contentsOf: readme, encoding: .utf8)
        guard let start = text.range(of: "## A 5-minute tour"), let open = text.range(of: "```sh\n", range: start.upperBound..<text.endIndex),
            let close = text.range(of: "\n```", range: open.upperBound..<text.endIndex)
        else { throw TestFailure("README.md has no tour block") }
        var steps: [Step] = []
        var pending = ""
        for raw in text[open.upperBound..<close.lowerBound].split(separator: "\n", omittingEmptySubsequences: true).map(String.init) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("# {") {
                steps[steps.count - 1].expected = String(line.dropFirst(2))
                continue
            }
            if line.hasPrefix("#") { continue }
            let joined = pending + line
            if joined.hasSuffix("\\") {
                pending = String(joined.dropLast()) + " "
                continue
            }
            pending = ""
            if joined.hasPrefix("scripts/quickstart.sh") { continue }
            if let comment = joined.range(of: "  # {") {
                steps.append(Step(command: String(joined[..<comment.lowerBound]).trimmingCharacters(in: .whitespaces),
                                  expected: "{" + joined[comment.upperBound...].trimmingCharacters(in: .whitespaces)))
            } else {
                steps.append(Step(command: joined))
            }
        }
        return steps
    }

    @Test("every command of the tour works as written, in order, and prints what the tour shows")
    func tourAsWritten() async throws {
        let steps = try Self.tour()
        #expect(steps.count >= 12, "\(steps.map(\.command))")
        try await TestCluster.startExample().using { cluster in
            try cluster.clientToken.write(to: cluster.directory.appendingPathComponent("token"), atomically: true, encoding: .utf8)
            try cluster.adminToken.write(to: cluster.directory.appendingPathComponent("admin-token"), atomically: true, encoding: .utf8)
            let hub = cluster.hubURL.replacingOccurrences(of: "http://", with: "")
            let victim = try #require(cluster.workers["gpu-a"]).pid
            var script = "set -euo pipefail\n"
            for (index, step) in steps.enumerated() {
                let command = step.command
                    .replacingOccurrences(of: ".caravan/quickstart/", with: cluster.directory.path + "/")
                    .replacingOccurrences(of: "127.0.0.1:8080", with: hub)
                    .replacingOccurrences(of: "localhost:8080", with: hub)
                    .replacingOccurrences(of: #"$(pgrep -f "name gpu-a")"#, with: "\(victim)")
                script += "echo '@@step \(index)'\n\(command)\necho\n"
            }
            let output = try runProcess(["/bin/bash", "-c", script], input: "", timeout: .seconds(120))
            var outputs: [Int: String] = [:]
            for chunk in output.components(separatedBy: "@@step ").dropFirst() {
                let number = Int(chunk.prefix { $0.isNumber }) ?? -1
                outputs[number] = chunk.drop { $0 != "\n" }.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            #expect(outputs.count == steps.count, "every step ran: \(output.suffix(2000))")
            for (index, step) in steps.enumerated() {
                guard let expected = step.expected else { continue }
                let got = outputs[index] ?? ""
                #expect(Self.sameJSON(got, expected), "\(step.command)\n  printed: \(got)\n  the tour shows: \(expected)")
            }
            // Its last step, the OpenAI client, printed the model's reply after the kill.
            let last = try #require(steps.lastIndex { $0.command.contains("from openai import OpenAI") })
            #expect(!(outputs[last] ?? "").isEmpty, "\(output.suffix(2000))")
        }
    }

    static func sameJSON(_ a: String, _ b: String) -> Bool {
        guard let x = try? JSONSerialization.jsonObject(with: Data(a.utf8)) as? NSDictionary,
            let y = try? JSONSerialization.jsonObject(with: Data(b.utf8)) as? NSDictionary
        else { return false }
        return x == y
    }
}
