import Foundation
import HTTPTypes
import NIOCore
import Testing


@Suite("Routing fields")
struct RoutingFieldsTests {
    @Test("model and stream are read, the rest ignored")
    func valid() throws {
        let fields = try RoutingFields.parse(ByteBuffer(string: #"{"messages":[{"x":1}],"model":"m","stream":true}"#))
        #expect(fields == RoutingFields(model: "m", stream: true))
        #expect(try RoutingFields.parse(ByteBuffer(string: #"{"model":"m"}"#)).stream == false)
    }

    @Test("bad bodies are 400 with a precise code", arguments: [
        ("", "invalid_json"), ("{bad", "invalid_json"), ("[1,2]", "invalid_json"), ("\"str\"", "invalid_json"),
        ("{}", "missing_model"), (#"{"model":null}"#, "missing_model"), (#"{"model":5}"#, "invalid_model"),
        (#"{"model":""}"#, "invalid_model"), (#"{"model":["a"]}"#, "invalid_model"),
    ])
    func invalid(body: String, code: String) {
        #expect(throws: OpenAIError.self) { try RoutingFields.parse(ByteBuffer(string: body)) }
        do {
            _ = try RoutingFields.parse(ByteBuffer(string: body))
        } catch {
            #expect(error.status.code == 400)
            #expect(error.code.rawValue == code)
            #expect(error.type == .invalidRequest)
        }
    }

    @Test("escapes, unicode and nesting: the same answers Foundation's parser gives", arguments: [
        (#"{"model":"caf\u00e9","stream":true}"#, "café", true),
        (#"{"model":"\ud83d\ude00 \"q\" \\ \/ \n","stream":false}"#, "😀 \"q\" \\ / \n", false),
        (#" { "mod\u0065l" : "escaped-key" , "stream" : null } "#, "escaped-key", false),
        (#"{"model":"first","model":"last","stream":true,"stream":false}"#, "last", false),
        (#"{"a":{"model":"inner","b":[1,-2.5e+3,0.1,true,false,null,{}]},"model":"outer"}"#, "outer", false),
        ("{\"model\":\"日本語\"}", "日本語", false),
    ])
    func tricky(body: String, model: String, stream: Bool) throws {
        #expect(try RoutingFields.parse(ByteBuffer(string: body)) == RoutingFields(model: model, stream: stream))
    }

    @Test("strict JSON over 20,000 mutated bodies: never more lenient than Foundation, the same fields whenever both accept, stricter only on trailing commas")
    func agreesWithFoundation() throws {
        let seeds = [
            #"{"model":"tiny","messages":[{"role":"user","content":"Say \"hi\" \u00e9 \ud83d\ude00"}],"max_tokens":1,"stream":true,"temperature":0.7,"stop":null,"n":-1e-3}"#,
            #"{"stream":false,"model":"m","x":[[],[{}],{"a":[1,2,{"b":"c"}]}]}"#,
            "{\"model\":\"é日\",\"tab\":\"\\t\"}",
        ]
        let alphabet = Array(#"{}[]:,"\ 0123456789.eE+-tfnulrs\/abu"#.utf8) + [0x00, 0x1F, 0x7F, 0xC3, 0xA9, 0xE6, 0x97, 0xA5, 0xED, 0xA0, 0xF0, 0xFF]
        var generator = SplitMix64(seed: 42)
        var accepted = 0
        var stricter = 0
        for round in 0..<20_000 {
            var bytes = Array(seeds[round % seeds.count].utf8)
            for _ in 0..<(1 + Int(generator.next() % 3)) {
                let position = Int(generator.next() % UInt64(bytes.count + 1))
                switch generator.next() % 3 {
                case 0 where position < bytes.count: bytes.remove(at: position)
                case 1 where position < bytes.count: bytes[position] = alphabet[Int(generator.next() % UInt64(alphabet.count))]
                default: bytes.insert(alphabet[Int(generator.next() % UInt64(alphabet.count))], at: position)
                }
            }
            let expected = Self.foundationFields(bytes)
            let actual: RoutingFields?
            do { actual = try RoutingFields.parse(ByteBuffer(bytes: bytes)) } catch { actual = nil }
            if actual == nil, expected != nil {
                // Foundation accepts a trailing comma (`[1,]`); strict JSON, and llama-server, do not.
                #expect(Self.hasTrailingComma(bytes), "rejected: \(String(decoding: bytes, as: UTF8.self).debugDescription)")
                stricter += 1
                continue
            }
            #expect(actual == expected, "body: \(String(decoding: bytes, as: UTF8.self).debugDescription) \(bytes)")
            if actual != expected { break }
            if actual != nil { accepted += 1 }
        }
        // Both outcomes were exercised; the one leniency Foundation has is rare.
        #expect(accepted > 1_000 && accepted < 19_000)
        #expect(stricter < 50)
    }

    static func hasTrailingComma(_ bytes: [UInt8]) -> Bool {
        let significant = bytes.filter { ![0x20, 0x0A, 0x0D, 0x09].contains($0) }
        return zip(significant, significant.dropFirst()).contains { $0 == UInt8(ascii: ",") && ($1 == UInt8(ascii: "}") || $1 == UInt8(ascii: "]")) }
    }

    /// The reference: Foundation's parsers with the previous implementation's field rules.
    static func foundationFields(_ bytes: [UInt8]) -> RoutingFields? {
        struct Probe: Decodable {
            enum Keys: String, CodingKey { case model, stream, maxTokens = "max_tokens" }
            var model: String?
            var stream: Bool
            var maxTokens: Int?
            init(from decoder: any Decoder) throws {
                let c = try decoder.container(keyedBy: Keys.self)
                model = try? c.decodeIfPresent(String.self, forKey: .model)
                stream = (try? c.decodeIfPresent(Bool.self, forKey: .stream)) ?? false
                // A cap of -1 (no limit) reserves nothing; a fraction is truncated, as llama-server does.
                maxTokens = (try? c.decodeIfPresent(Double.self, forKey: .maxTokens)).flatMap { $0.flatMap { $0 >= 0 ? Int($0) : nil } }
            }
        }
        // JSONDecoder skips strings it does not need without checking their escapes;
        // JSONSerialization reads every one, so it is the reference for what is valid JSON.
        guard (try? JSONSerialization.jsonObject(with: Data(bytes))) is [String: Any],
            let probe = try? JSONDecoder().decode(Probe.self, from: Data(bytes)), let model = probe.model, !model.isEmpty
        else { return nil }
        return RoutingFields(model: model, stream: probe.stream, maxTokens: probe.maxTokens)
    }

    @Test("nesting: 511 levels are read, deeper is a 400 (no stack exhaustion on 100,000 levels)")
    func nesting() throws {
        let ok = #"{"model":"m","x":"# + String(repeating: "[", count: 510) + String(repeating: "]", count: 510) + "}"
        #expect(try RoutingFields.parse(ByteBuffer(string: ok)).model == "m")
        let deep = #"{"model":"m","x":"# + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}"
        do {
            _ = try RoutingFields.parse(ByteBuffer(string: deep))
            Issue.record("100,000 levels were accepted")
        } catch {
            #expect(error.code == .invalidJSON && error.status.code == 400)
        }
    }

    @Test("a body that is not UTF-8 is rejected")
    func notUTF8() {
        #expect(throws: OpenAIError.self) {
            try RoutingFields.parse(ByteBuffer(bytes: [0x7B, 0x22, 0x6D, 0xFF, 0xFE, 0x22, 0x3A, 0x31, 0x7D]))
        }
    }

    @Test("the envelope has message, type and code")
    func envelope() throws {
        let error = OpenAIError.modelNotFound("x")
        let json = try JSONSerialization.jsonObject(with: error.body) as? [String: [String: String]]
        #expect(json?["error"]?["code"] == "model_not_found")
        #expect(json?["error"]?["type"] == "invalid_request_error")
        #expect(json?["error"]?["message"]?.contains("'x'") == true)
        #expect(String(buffer: error.sseEvent).hasPrefix("data: {\"error\":"))
    }
}

import Foundation
@testable import Config
@testable import Proxy
@testable import Server
@testable import Wire

@Suite("Forwarded headers")
struct HTTPForwardingTests {
    @Test("a client cannot set the hub's own headers, credentials, hop-by-hop headers or a raw request id upstream")
    func requestHeaders() {
        let fields: HTTPFields = [
            .authorization: "Bearer client", .contentType: "application/json", .connection: "close",
            HTTPField.Name("X-Caravan-Model")!: "other-model", HTTPField.Name("X-Caravan-Stream")!: "true",
            HTTPField.Name("Cookie")!: "c=1", HTTPField.Name("X-Request-Id")!: "r1",
        ]
        let forwarded = HTTPForwarding.requestHeaders(fields)
        // The request id goes on as the hub accepted it (``RequestIDHeader/accept(_:)``), set by the caller.
        #expect(forwarded.map(\.0).map { $0.lowercased() }.sorted() == ["content-type"])
    }

    @Test("an upstream's CORS and hop-by-hop headers never reach the client; the rest does")
    func responseHeaders() {
        let upstream: [(name: String, value: String)] = [
            ("Access-Control-Allow-Origin", "https://evil.example"), ("access-control-allow-credentials", "true"),
            ("Connection", "close"), ("Transfer-Encoding", "chunked"), ("Content-Type", "text/event-stream"),
            ("Content-Length", "12"), ("X-Request-Id", "r1"),
        ]
        let passed = HTTPForwarding.responseHeaders(upstream).map { $0.name.canonicalName }.sorted()
        #expect(passed == ["content-length", "content-type", "x-request-id"])
    }
}

/// A small deterministic generator for reproducible mutations.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite("Upstream URLs")
struct UpstreamTargetTests {
    @Test("scheme, host, port and path are split without Foundation; the pool key ignores the path")
    func parsing() throws {
        let plain = try UpstreamTarget("http://127.0.0.1:8080/v1/chat/completions?x=1")
        #expect(!plain.tls && plain.host == "127.0.0.1" && plain.port == 8080)
        #expect(plain.pathAndQuery == "/v1/chat/completions?x=1" && plain.key == "http://127.0.0.1:8080")
        #expect(plain.serverName == nil)
        let tls = try UpstreamTarget("https://gpu-1.lab")
        #expect(tls.tls && tls.port == 443 && tls.pathAndQuery == "/" && tls.serverName == "gpu-1.lab")
        let v6 = try UpstreamTarget("http://[::1]:9000/health")
        #expect(v6.host == "::1" && v6.port == 9000 && v6.hostHeader == "[::1]:9000" && v6.serverName == nil)
        for bad in ["ftp://x/", "http://:80/", "http://host:99999/", "http://host:port/", "127.0.0.1:80"] {
            #expect(throws: UpstreamError.badURL(bad)) { try UpstreamTarget(bad) }
        }
    }
}

/// What llama-server would mis-answer is a 400 naming the `param`; what it accepts passes.
@Suite("Request shape")
struct RequestShapeTests {
    @Test("rejected with the param named", arguments: [
        (#"{"model":"m","messages":[{"content":"tiny"}]}"#, "messages[0].role"),
        (#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":7,"content":"b"}]}"#, "messages[1].role"),
        (#"{"model":"m","messages":"hi"}"#, "messages"),
        (#"{"model":"m","messages":[{"role":"user","content":"x","name":null}]}"#, "messages[0].name"),
        (#"{"model":"m","messages":[{"role":"tool","content":"x","tool_call_id":5}]}"#, "messages[0].tool_call_id"),
        (#"{"model":"m","messages":[{"role":"user","content":"x","tool_calls":5}]}"#, "messages[0].tool_calls"),
        (#"{"model":"m","messages":[{"role":"user","content":"x","tool_calls":[{"type":"function"}]}]}"#, "messages[0].tool_calls[0]"),
        (#"{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}"#, "messages[0].content[0].text"),
        (#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":5}]}]}"#, "messages[0].content[0].text"),
        (#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":{}}"#, "tools"),
        (#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"x","function":{}}]}"#, "tools[0]"),
        (#"{"model":"m","messages":[["user","hi"]]}"#, "messages[0]"),
        (#"{"model":"m","messages":[{"role":"user","content":5}]}"#, "messages[0].content"),
        (#"{"model":"m","messages":[{"role":"user","content":["text"]}]}"#, "messages[0].content[0]"),
        (#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#, "stream"),
        (#"{"model":"m","messages":[{"role":"user"}],"max_tokens":"10"}"#, "max_tokens"),
        (#"{"model":"m","messages":[{"role":"user"}],"max_tokens":-2}"#, "max_tokens"),
        (#"{"model":"m","messages":[{"role":"user"}],"max_tokens":1e300}"#, "max_tokens"),
        (#"{"model":"m","messages":[{"role":"user"}],"max_completion_tokens":true}"#, "max_completion_tokens"),
        (#"{"model":"m","prompt":"x","n_predict":[1]}"#, "n_predict"),
    ])
    func rejected(body: String, param: String) {
        do {
            _ = try RoutingFields.parse(ByteBuffer(string: body), messages: true)
            Issue.record("accepted: \(body)")
        } catch {
            #expect(error.status.code == 400)
            #expect(error.param == param)
            #expect(error.code == .invalidRequestBody)
        }
    }

    @Test("accepted as llama-server accepts it", arguments: [
        #"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"stream":true}"#,
        #"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":null,"max_tokens":null}"#,
        #"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{}"}}]}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"x-extra":{"a":[1]}}"#,
        #"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":-1,"n_predict":2147483647}"#,
        #"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":16.0}"#,
        #"{"model":"m","messages":[],"max_tokens":2.5,"tools":null}"#,
        #"{"model":"m","messages":[{"role":"user","content":"x","tool_calls":[],"name":"n"}],"tools":[]}"#,
        #"{"model":"m","messages":[{"role":"assistant","content":"x","tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]}]}"#,
    ])
    func accepted(body: String) throws {
        _ = try RoutingFields.parse(ByteBuffer(string: body), messages: true)
    }

    @Test("messages are checked only on the chat endpoints")
    func notChat() throws {
        #expect(try RoutingFields.parse(ByteBuffer(string: #"{"model":"m","messages":"x"}"#)).model == "m")
    }
}
