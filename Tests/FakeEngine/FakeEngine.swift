import Foundation
import HTTPTypes
import Hummingbird
import Synchronization
import UnixSignals

/// A stand-in for llama-server used only to inject faults in tests (never shipped).
///
/// It accepts the flags the worker passes (`--host`, `--port`, `--alias`, the rest is
/// ignored) and serves `/health`, `/slots` and `/v1/chat/completions` (plain and SSE).
/// Behaviour comes from `FAKE_*` environment variables (set per model in the cluster
/// file) and, at runtime, from the JSON file named by `FAKE_CONTROL`, re-read on every
/// request so a test can change it while the engine runs:
///
/// | key (env / JSON) | effect |
/// |---|---|
/// | `FAKE_TTFB_MS` / `ttfb_ms` | wait before the response head (llama-server sends none while it waits) |
/// | `FAKE_TOKEN_MS` / `token_ms` | wait between streamed tokens |
/// | `FAKE_TOKENS` / `tokens` | tokens per answer (default 5) |
/// | `FAKE_STATUS` / `status` | answer with this HTTP status and an error body |
/// | `FAKE_HANG` / `hang` | never answer |
/// | `FAKE_CRASH_AFTER` / `crash_after` | exit the process after sending this many tokens |
/// | `FAKE_HEALTH_DELAY_MS` / `health_delay_ms` | `/health` answers 503 this long after start |
/// | `FAKE_SLOTS` / `slots` | slots reported by `/slots` (default 4) |
/// | `FAKE_SLOTS_DELAY_MS` / `slots_delay_ms` | `/slots` answers this late (an engine too busy to report) |
/// | `FAKE_PAD` / `pad` | bytes of padding in each streamed token (fills socket buffers fast) |
/// | `health_hang` (JSON only) | `/health` never answers (alive but wedged) |
/// | `FAKE_RECORD` | a file the last request body is written to, byte for byte |
/// | `FAKE_NAME` | sent back in `X-Served-By`, so tests can see who answered |
/// | `FAKE_USAGE` | `1`: a stream's last event carries llama-server's `timings` |
/// | body `"fake_tokens": N` | tokens for this one answer (overrides `FAKE_TOKENS`) |
/// | body `"fake_status": N` | this one answer's status, as a poison request gets from every engine |
/// | `FAKE_EXIT_AFTER_MS` | exit (status 3) this long after start: a crash while ready |
/// | `FAKE_IGNORE_SIGTERM` | `1`: ignore SIGTERM, so only SIGKILL stops it |
@main
struct FakeEngine {
    struct Behaviour: Decodable {
        var ttfbMs = 0
        var tokenMs = 0
        var tokens = 5
        var status: Int?
        var hang = false
        var crashAfter: Int?
        var healthDelayMs = 0
        var slots = 4
        var slotsDelayMs = 0
        var pad = 0
        var healthHang = false
        /// Answers with `status` carry the worker's "full" mark (X-Caravan-Admission: full).
        var full = false

        enum CodingKeys: String, CodingKey {
            case ttfbMs = "ttfb_ms", tokenMs = "token_ms", tokens, status, hang, crashAfter = "crash_after"
            case healthDelayMs = "health_delay_ms", slots, slotsDelayMs = "slots_delay_ms", pad, healthHang = "health_hang", full
        }

        init() {}

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let base = Behaviour.fromEnvironment()
            ttfbMs = try c.decodeIfPresent(Int.self, forKey: .ttfbMs) ?? base.ttfbMs
            tokenMs = try c.decodeIfPresent(Int.self, forKey: .tokenMs) ?? base.tokenMs
            tokens = try c.decodeIfPresent(Int.self, forKey: .tokens) ?? base.tokens
            status = try c.decodeIfPresent(Int.self, forKey: .status) ?? base.status
            hang = try c.decodeIfPresent(Bool.self, forKey: .hang) ?? base.hang
            crashAfter = try c.decodeIfPresent(Int.self, forKey: .crashAfter) ?? base.crashAfter
            healthDelayMs = try c.decodeIfPresent(Int.self, forKey: .healthDelayMs) ?? base.healthDelayMs
            full = try c.decodeIfPresent(Bool.self, forKey: .full) ?? false
            slots = try c.decodeIfPresent(Int.self, forKey: .slots) ?? base.slots
            slotsDelayMs = try c.decodeIfPresent(Int.self, forKey: .slotsDelayMs) ?? base.slotsDelayMs
            pad = try c.decodeIfPresent(Int.self, forKey: .pad) ?? base.pad
            healthHang = try c.decodeIfPresent(Bool.self, forKey: .healthHang) ?? false
        }

        static func fromEnvironment() -> Behaviour {
            let env = ProcessInfo.processInfo.environment
            var behaviour = Behaviour()
            behaviour.ttfbMs = env["FAKE_TTFB_MS"].flatMap(Int.init) ?? 0
            behaviour.tokenMs = env["FAKE_TOKEN_MS"].flatMap(Int.init) ?? 0
            behaviour.tokens = env["FAKE_TOKENS"].flatMap(Int.init) ?? 5
            behaviour.status = env["FAKE_STATUS"].flatMap(Int.init)
            behaviour.hang = env["FAKE_HANG"] == "1"
            behaviour.crashAfter = env["FAKE_CRASH_AFTER"].flatMap(Int.init)
            behaviour.healthDelayMs = env["FAKE_HEALTH_DELAY_MS"].flatMap(Int.init) ?? 0
            behaviour.slots = env["FAKE_SLOTS"].flatMap(Int.init) ?? 4
            behaviour.slotsDelayMs = env["FAKE_SLOTS_DELAY_MS"].flatMap(Int.init) ?? 0
            behaviour.pad = env["FAKE_PAD"].flatMap(Int.init) ?? 0
            return behaviour
        }

        /// The environment, overridden by the control file when it exists.
        static func current() -> Behaviour {
            guard let path = ProcessInfo.processInfo.environment["FAKE_CONTROL"],
                let data = FileManager.default.contents(atPath: path),
                let behaviour = try? JSONDecoder().decode(Behaviour.self, from: data)
            else { return fromEnvironment() }
            return behaviour
        }
    }

    static func main() async throws {
        var host = "127.0.0.1"
        var port = 8080
        var alias = "fake"
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            switch argument {
            case "--host": host = arguments.next() ?? host
            case "--port": port = arguments.next().flatMap(Int.init) ?? port
            case "--alias": alias = arguments.next() ?? alias
            default: break
            }
        }
        let model = alias
        let started = ContinuousClock.now
        let apiKey = ProcessInfo.processInfo.environment["LLAMA_API_KEY"]
        let servedBy = ProcessInfo.processInfo.environment["FAKE_NAME"] ?? model
        let busy = Atomic<Int>(0)
        let router = Router()
        router.get("/health") { _, _ -> Response in
            if Behaviour.current().healthHang { try await Task.sleep(for: .seconds(3600)) }
            let ready = ContinuousClock.now - started >= .milliseconds(Behaviour.current().healthDelayMs)
            return Response(status: ready ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: ready ? #"{"status":"ok"}"# : #"{"error":"loading"}"#)))
        }
        router.get("/slots") { request, _ -> Response in
            if let apiKey, request.headers[.authorization] != "Bearer \(apiKey)" { return Response(status: .unauthorized) }
            let behaviour = Behaviour.current()
            try await Task.sleep(for: .milliseconds(behaviour.slotsDelayMs))
            let slots = behaviour.slots
            let inUse = busy.load(ordering: .relaxed)
            let json = (0..<slots).map { #"{"id":\#($0),"is_processing":\#($0 < inUse)}"# }.joined(separator: ",")
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: "[\(json)]")))
        }
        for path in ["/v1/chat/completions", "/v1/completions"] {
            router.post(RouterPath(path)) { request, _ -> Response in
                let body = try await request.body.collect(upTo: 1 << 24)
                if let record = ProcessInfo.processInfo.environment["FAKE_RECORD"] {
                    _ = FileManager.default.createFile(atPath: record, contents: Data(body.readableBytesView))
                }
                let stream = String(buffer: body).contains(#""stream":true"#)
                var behaviour = Behaviour.current()
                let text = String(buffer: body)
                if let range = text.range(of: #""fake_tokens":\d+"#, options: .regularExpression),
                    let count = Int(text[range].split(separator: ":").last ?? "")
                {
                    behaviour.tokens = count
                }
                if let range = text.range(of: #""fake_status":\d+"#, options: .regularExpression),
                    let status = Int(text[range].split(separator: ":").last ?? "")
                {
                    behaviour.status = status
                }
                busy.add(1, ordering: .relaxed)
                defer { busy.add(-1, ordering: .relaxed) }
                if behaviour.hang { try await Task.sleep(for: .seconds(3600)) }
                try await Task.sleep(for: .milliseconds(behaviour.ttfbMs))
                var headers: HTTPFields = [.contentType: stream ? "text/event-stream" : "application/json"]
                headers[HTTPField.Name("X-Served-By")!] = servedBy
                if let status = behaviour.status {
                    if behaviour.full { headers[HTTPField.Name("X-Caravan-Admission")!] = "full" }
                    return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(
                        string: #"{"error":{"code":\#(status),"message":"injected failure","type":"server_error"}}"#)))
                }
                if !stream {
                    try await Task.sleep(for: .milliseconds(behaviour.tokenMs * behaviour.tokens))
                    let text = String(repeating: "x", count: behaviour.tokens)
                    return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string:
                        #"{"object":"chat.completion","model":"\#(model)","choices":[{"index":0,"message":{"role":"assistant","content":"\#(text)"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":\#(behaviour.tokens),"total_tokens":\#(behaviour.tokens + 3)}}"#)))
                }
                let padding = String(repeating: "p", count: behaviour.pad)
                let streamed = behaviour
                return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                    for index in 0..<streamed.tokens {
                        if index > 0 { try await Task.sleep(for: .milliseconds(streamed.tokenMs)) }
                        if let crash = streamed.crashAfter, index >= crash { exit(1) }
                        // `sent_ns`: when the event was written (CLOCK_MONOTONIC, shared by the processes of one
                        // machine), so a client can measure what each hop adds per token (scripts/lib/token-latency.py).
                        try await writer.write(ByteBuffer(string:
                            #"data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"t\#(index)\#(padding)"}}],"sent_ns":\#(monotonicNanoseconds())}"# + "\n\n"))
                    }
                    if ProcessInfo.processInfo.environment["FAKE_USAGE"] == "1" {
                        try await writer.write(ByteBuffer(string:
                            #"data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"length"}],"timings":{"prompt_n":3,"predicted_n":\#(streamed.tokens)}}"# + "\n\n"))
                    }
                    try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                    try await writer.finish(nil)
                })
            }
        }
        let say: @Sendable (String) -> Void = { line in FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
        let env = ProcessInfo.processInfo.environment
        if let exitAfter = env["FAKE_EXIT_AFTER_MS"].flatMap(Int.init) {
            Thread.detachNewThread {
                Thread.sleep(forTimeInterval: Double(exitAfter) / 1000)
                say("fake engine \(model): exiting on purpose (FAKE_EXIT_AFTER_MS)")
                exit(3)
            }
        }
        let app = Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "fake-engine"),
                              onServerRunning: { [host, port] channel in
                                  say("fake engine \(model) listening on \(host):\(channel.localAddress?.port ?? port)")
                              })
        if env["FAKE_IGNORE_SIGTERM"] == "1" {
            signal(SIGTERM, SIG_IGN)
            try await app.runService(gracefulShutdownSignals: [.sigint])
        } else {
            try await app.runService()
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock every process on the machine shares.
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
