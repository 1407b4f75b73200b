import Foundation
import Store

/// `GET /admin/usage`'s answer: one line per group, with the sums.
struct UsageReport: Encodable, Sendable {
    struct Line: Encodable, Sendable {
        var key: String?
        var model: String?
        var hour: String?
        var requests: Int
        var errors: Int
        var promptTokens: Int
        var completionTokens: Int
        var cachedTokens: Int
        var totalTokens: Int
    }

    var usage: [Line]

    init(lines: [UsageLine]) {
        usage = lines.map { line in
            Line(key: line.subject, model: line.model, hour: line.hour?.formatted(.iso8601), requests: line.requests,
                 errors: line.errors, promptTokens: line.promptTokens, completionTokens: line.completionTokens,
                 cachedTokens: line.cachedTokens, totalTokens: line.totalTokens)
        }
    }

    /// The same as CSV, with a header row; the grouped columns first.
    static func csv(_ lines: [UsageLine], groupBy: [UsageQuery.Dimension]) -> String {
        var out = (groupBy.map(\.rawValue) + ["requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens"])
            .joined(separator: ",") + "\n"
        for line in lines {
            let groups = groupBy.map { dimension -> String in
                switch dimension {
                case .key: field(line.subject ?? "")
                case .model: field(line.model ?? "")
                case .hour: line.hour?.formatted(.iso8601) ?? ""
                }
            }
            let sums = [line.requests, line.errors, line.promptTokens, line.completionTokens, line.cachedTokens, line.totalTokens]
            out += (groups + sums.map(String.init)).joined(separator: ",") + "\n"
        }
        return out
    }

    /// RFC 4180 quoting, and no formula a spreadsheet would run (a leading `=`, `+`, `-`, `@`).
    private static func field(_ text: String) -> String {
        var text = text
        if let first = text.first, "=+-@".contains(first) { text = "'" + text }
        guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
