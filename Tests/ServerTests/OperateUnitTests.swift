import Logging
import Foundation
import NIOCore
import Testing
@testable import Proxy
@testable import Operations
@testable import Server
@testable import Wire


@Suite("Operate: usage, exposition, request ids, outcomes, JSON logs")
struct OperateUnitTests {
    @Test("usage is read from the final event of a stream kept only as its tail, and from a whole JSON body")
    func usage() {
        var tail = ResponseTail()
        for index in 0..<2000 {
            tail.append(ByteBuffer(string: #"data: {"choices":[{"delta":{"content":"tok\#(index)"}}],"usage":null}"# + "\n\n"))
        }
        #expect(tail.usage() == nil, "usage: null is no usage")
        tail.append(ByteBuffer(string: #"data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"prompt_tokens_details":{"cached_tokens":1}}}"# + "\n\ndata: [DONE]\n\n"))
        #expect(tail.usage() == TokenUsage(prompt: 12, completion: 34, cached: 1))
        // llama-server's last streamed event without include_usage: timings (prompt_n + cache_n; cache_n reused).
        var timings = ResponseTail()
        timings.append(ByteBuffer(string: #"data: {"choices":[{"finish_reason":"length"}],"timings":{"cache_n":21,"prompt_n":49,"predicted_n":8}}"# + "\n\n"))
        #expect(timings.usage() == TokenUsage(prompt: 70, completion: 8, cached: 21))
        // A string that looks like a key does not fool it.
        let body = ByteBuffer(string: #"{"choices":[{"message":{"content":"\"usage\": {\"prompt_tokens\": 999}"}}],"usage":{"prompt_tokens":5,"completion_tokens":6}}"#)
        #expect(ResponseTail.usage(in: body) == TokenUsage(prompt: 5, completion: 6))
        // One chunk larger than the tail keeps its end.
        var big = ResponseTail()
        big.append(ByteBuffer(string: String(repeating: "x", count: 40_000) + #","usage":{"prompt_tokens":1,"completion_tokens":2}}"#))
        #expect(big.usage() == TokenUsage(prompt: 1, completion: 2))
    }

    @Test("exposition: families grouped, label values escaped, engine text merged with a model label")
    func exposition() {
        var text = MetricsExposition()
        text.add("x_gauge", 1, labels: [("worker", "a\"b\\c\nd")], help: "help")
        text.add("x_gauge", 2.5, labels: [("worker", "e")], help: "help")
        text.merge("""
            # HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
            # TYPE llamacpp:prompt_tokens_total counter
            llamacpp:prompt_tokens_total 7
            llamacpp:labelled{kind="k"} 3
            """, adding: ("model", "tiny"))
        text.merge("""
            # TYPE llamacpp:prompt_tokens_total counter
            llamacpp:prompt_tokens_total 9
            """, adding: ("model", "other"))
        let rendered = text.render()
        #expect(rendered.contains(#"x_gauge{worker="a\"b\\c\nd"} 1"#))
        #expect(rendered.contains(#"x_gauge{worker="e"} 2.5"#))
        #expect(rendered.components(separatedBy: "# TYPE llamacpp:prompt_tokens_total counter").count == 2)
        #expect(rendered.contains(#"llamacpp:prompt_tokens_total{model="tiny"} 7"#))
        #expect(rendered.contains(#"llamacpp:prompt_tokens_total{model="other"} 9"#))
        #expect(rendered.contains(#"llamacpp:labelled{model="tiny",kind="k"} 3"#))
    }

    @Test("request ids: well-formed ones are kept, anything else replaced by 16 hex digits")
    func requestIDs() {
        #expect(RequestIDHeader.accept("trace-1.a:b_c") == "trace-1.a:b_c")
        for hostile in [nil, "", "has space", "quote\"", "new\nline", String(repeating: "a", count: 129), "é"] {
            let id = RequestIDHeader.accept(hostile)
            #expect(id.count == 16 && id.allSatisfy(\.isHexDigit) && id != hostile)
        }
        let ids = (0..<100_000).map { _ in RequestIDHeader.generate() }
        let distinct = Set(ids).count
        #expect(distinct == ids.count, "generated ids never repeat")
        #expect(ids.allSatisfy { $0.count == 16 && $0.allSatisfy(\.isHexDigit) })
        // Consecutive ids differ in about half their bits (the counter is mixed, not shown).
        let bits = zip(ids, ids.dropFirst()).prefix(1000).map { (UInt64($0, radix: 16)! ^ UInt64($1, radix: 16)!).nonzeroBitCount }
        let mean = Double(bits.reduce(0, +)) / Double(bits.count)
        #expect((24...40).contains(Int(mean)), "mean differing bits \(mean)")
    }

    @Test("outcomes from status, error code and how the relay ended")
    func outcomes() {
        #expect(AccessRecord.outcome(status: 200, code: nil, finish: .completed(.init())) == "ok")
        #expect(AccessRecord.outcome(status: 200, code: nil, finish: .clientGone(.init())) == "client_gone")
        #expect(AccessRecord.outcome(status: 200, code: nil, finish: .upstreamFailed(.gapTimeout(.seconds(60)), .init())) == "timeout")
        #expect(AccessRecord.outcome(status: 200, code: nil, finish: .upstreamFailed(.headTimeout(.seconds(60)), .init())) == "timeout")
        #expect(AccessRecord.outcome(status: 200, code: nil, finish: .upstreamFailed(.httpStatus(500), .init())) == "upstream_error")
        #expect(AccessRecord.outcome(status: 200, code: nil, finish: .upstreamFailed(.closedMidStream, .init())) == "upstream_error")
        #expect(AccessRecord.outcome(status: 401, code: .invalidAPIKey, finish: nil) == "rejected_auth")
        #expect(AccessRecord.outcome(status: 403, code: .modelNotAllowed, finish: nil) == "rejected_auth")
        #expect(AccessRecord.outcome(status: 429, code: .rateLimitExceeded, finish: nil) == "rejected_limit")
        #expect(AccessRecord.outcome(status: 429, code: .queueFull, finish: nil) == "rejected_queue")
        #expect(AccessRecord.outcome(status: 503, code: .queueTimeout, finish: nil) == "rejected_queue")
        #expect(AccessRecord.outcome(status: 408, code: .requestBodyTimeout, finish: nil) == "timeout")
        #expect(AccessRecord.outcome(status: 404, code: .modelNotFound, finish: nil) == "client_error")
        #expect(AccessRecord.outcome(status: 502, code: .workerUnreachable, finish: nil) == "upstream_error")
        #expect(AccessRecord.outcome(status: 499, code: nil, finish: nil) == "client_gone")
    }

    @Test("JSON log timestamps: UTC ISO 8601 with milliseconds, the current time")
    func timestamps() throws {
        let stamp = JSONLogHandler.timestamp()
        #expect(stamp.wholeMatch(of: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/) != nil, "\(stamp)")
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let parsed = try #require(formatter.date(from: stamp))
        #expect(abs(parsed.timeIntervalSinceNow) < 5)
    }

    @Test("JSON log lines: strings escaped, control characters too")
    func jsonQuote() throws {
        let quoted = JSONLogHandler.quote("a\"b\\c\nd\u{01}é")
        let decoded = try JSONSerialization.jsonObject(with: Data("[\(quoted)]".utf8)) as? [String]
        #expect(decoded == ["a\"b\\c\nd\u{01}é"])
        let nested = JSONLogHandler.render(.dictionary(["k": .array([.string("v"), .stringConvertible(3)])]))
        #expect(nested == #"{"k":["v","3"]}"#)
    }
}
