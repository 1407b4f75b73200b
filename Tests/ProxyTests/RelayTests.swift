import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
@testable import Proxy
@testable import Server
@testable import TestSupport
@testable import Wire

/// The relay over real sockets: a client, a ``RelayServer`` (the data plane's dispatcher,
/// forwarder, client and connection) and a fake engine process or a scripted upstream.
/// Pooling, streaming, back-pressure, deadlines, departure, stale connections.
@Suite("Relay")
struct RelayTests {
    /// A fake engine on a free port, its base URL, and the file that changes its behaviour.
    struct Engine {
        let process: ManagedProcess
        let url: String
        let control: URL

        static func start() async throws -> Engine {
            let control = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-relay-\(UUID().uuidString.prefix(8)).json")
            try "{}".write(to: control, atomically: true, encoding: .utf8)
            let process = try ManagedProcess(
                name: "fake", executable: TestCluster.binDirectory.appendingPathComponent("FakeEngine"),
                arguments: ["--host", "127.0.0.1", "--port", "0", "--alias", "fake"], environment: ["FAKE_CONTROL": control.path])
            let line = try await process.waitForLine(containing: "listening on 127.0.0.1:")
            guard let port = line.split(separator: ":").last.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) else {
                throw TestFailure("no port in \(line)")
            }
            return Engine(process: process, url: "http://127.0.0.1:\(port)/v1/chat/completions", control: control)
        }

        func set(_ json: String) throws { try json.write(to: control, atomically: true, encoding: .utf8) }

        /// Stops it at once: its graceful drain would wait out the answers it is still
        /// delaying (up to seconds), and no test here is about the engine's shutdown.
        func stop() async {
            await process.stop(grace: .milliseconds(200))
            try? FileManager.default.removeItem(at: control)
        }
    }

    static func options(headTimeout: Duration = .seconds(10), idleTimeout: Duration = .seconds(10),
                        clientWriteTimeout: Duration? = nil) -> UpstreamForwarder.Options {
        .init(headTimeout: headTimeout, idleTimeout: idleTimeout, maxBufferedBody: 1 << 20, clientWriteTimeout: clientWriteTimeout)
    }

    /// Runs `body` with a fresh fake engine, a relay in front of it and an HTTP client; all
    /// are stopped afterwards, pass or fail.
    static func withRelay(_ options: UpstreamForwarder.Options = options(),
                          _ body: @Sendable (Engine, RelayServer, UpstreamClient, HTTPClient) async throws -> Void) async throws {
        let engine = try await Engine.start()
        let client = UpstreamClient(connectTimeout: .seconds(2), maxIdle: .seconds(30))
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            try await RelayServer.serving(to: engine.url, client: client, options: options) { relay in
                try await body(engine, relay, client, http)
            }
        } catch {
            try? await http.shutdown()
            client.shutdown()
            await engine.stop()
            throw error
        }
        try await http.shutdown()
        client.shutdown()
        await engine.stop()
    }

    /// POSTs a chat request through the relay: status and body.
    static func chat(_ http: HTTPClient, _ relay: RelayServer, stream: Bool = false, headers: [(String, String)] = [])
        async throws -> (status: Int, body: String)
    {
        var request = HTTPClientRequest(url: relay.url + "/v1/chat/completions")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(string: chatBody(model: "fake", stream: stream)))
        let response = try await http.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 8 << 20)
        return (Int(response.status.code), String(buffer: body))
    }

    @Test("sequential requests share one pooled upstream connection; an exchange that says Connection: close leaves the pool")
    func pooling() async throws {
        try await Self.withRelay { engine, relay, client, http in
            for _ in 0..<3 {
                let answer = try await Self.chat(http, relay)
                #expect(answer.status == 200 && answer.body.contains("chat.completion"), "\(answer)")
                #expect(client.idleConnections(to: engine.url) == 1)  // two would mean a new connection each time
            }
            let closing = try await Self.chat(http, relay, headers: [("Connection", "close")])
            #expect(closing.status == 200)
            #expect(client.idleConnections(to: engine.url) == 0)
            // (A result is recorded just after its answer is flushed: the client may read first.)
            #expect(try await relay.waitForResults(4) == ["relayed", "relayed", "relayed", "relayed"])
        }
    }

    @Test("an event stream is relayed chunk by chunk with its timing, and its connection is pooled afterwards")
    func streaming() async throws {
        try await Self.withRelay { engine, relay, client, http in
            try engine.set(#"{"tokens": 5, "token_ms": 30}"#)
            let answer = try await Self.chat(http, relay, stream: true)
            #expect(answer.body.components(separatedBy: "data: ").count - 1 == 6, "\(answer.body)")  // five tokens and [DONE]
            guard case .completed(let timing) = try await relay.waitForFinishes(1)[0] else {
                Issue.record("not completed: \(relay.finished)")
                return
            }
            #expect(timing.chunks >= 2 && timing.firstByte != nil)
            #expect(timing.maxGap >= .milliseconds(15))
            #expect(client.idleConnections(to: engine.url) == 1)
        }
    }

    @Test("a client that reads late gets everything: nothing lost, nothing stuck", .timeLimit(.minutes(1)))
    func lateReader() async throws {
        try await Self.withRelay { engine, relay, client, _ in
            try engine.set(#"{"tokens": 3000, "token_ms": 0}"#)  // ~330 KB as fast as the engine can write
            let fd = try rawConnection(to: relay.url, receiveBuffer: 4096)
            defer { close(fd) }
            Self.send(fd, stream: true)
            try await Task.sleep(for: .milliseconds(500))  // the engine has sent everything meanwhile
            let text = Self.readAll(fd)
            #expect(text.components(separatedBy: "data: ").count - 1 == 3001)
            #expect(text.contains("data: [DONE]"))
            guard case .completed = try await relay.waitForFinishes(1)[0] else {
                Issue.record("not completed: \(relay.finished)")
                return
            }
            #expect(client.idleConnections(to: engine.url) == 1)
        }
    }

    @Test("a client that takes nothing for its write timeout is cut off and the upstream stopped (a stalled client holds no engine slot)",
          .timeLimit(.minutes(1)))
    func stalledReader() async throws {
        try await Self.withRelay(Self.options(clientWriteTimeout: .milliseconds(300))) { engine, relay, client, _ in
            try engine.set(#"{"tokens": 100000, "token_ms": 0}"#)  // ~11 MB: more than every buffer between
            let fd = try rawConnection(to: relay.url, receiveBuffer: 4096)
            defer { close(fd) }
            Self.send(fd, stream: true)
            guard case .clientGone = try await relay.waitForFinishes(1)[0] else {
                Issue.record("not ended as client gone: \(relay.finished)")
                return
            }
            #expect(isClosedByPeer(fd))
            #expect(client.idleConnections(to: engine.url) == 0)
        }
    }

    @Test("no head within the head timeout is a 502 before any byte; a stream silent past the idle timeout ends with an error event")
    func deadlines() async throws {
        try await Self.withRelay(Self.options(headTimeout: .milliseconds(300), idleTimeout: .milliseconds(300))) { engine, relay, client, http in
            try engine.set(#"{"ttfb_ms": 5000}"#)
            let started = ContinuousClock.now
            let late = try await Self.chat(http, relay)
            #expect(late.status == 502 && envelope(late.body)?.code == "head_timeout", "\(late)")
            #expect(ContinuousClock.now - started < .seconds(4))
            #expect(client.idleConnections(to: engine.url) == 0)

            try engine.set(#"{"tokens": 3, "token_ms": 5000}"#)
            let silent = try await Self.chat(http, relay, stream: true)
            #expect(silent.status == 200 && silent.body.contains("upstream_stream_error"), "\(silent)")
            guard case .upstreamFailed(let error, _) = try await relay.waitForFinishes(1)[0] else {
                Issue.record("not failed: \(relay.finished)")
                return
            }
            #expect(error == .gapTimeout(.milliseconds(300)))
            #expect(client.idleConnections(to: engine.url) == 0)
        }
    }

    @Test("a worker's \"full\" answer is held back even with no retry left; an ordinary 429 then passes through")
    func fullIsAlwaysHeldBack() async throws {
        try await Self.withRelay { engine, relay, client, http in
            try engine.set(#"{"status": 429, "full": true}"#)
            let full = try await Self.chat(http, relay)
            #expect(full.status == 429)
            try engine.set(#"{"status": 429}"#)
            let busy = try await Self.chat(http, relay)
            #expect(busy.status == 429)
            #expect(try await relay.waitForResults(2) == ["worker_full", "relayed"])
        }
    }

    @Test("a client that hangs up while the answer is awaited stops the upstream request; a refused connection is reported as such")
    func departureAndRefusal() async throws {
        try await Self.withRelay { engine, relay, client, http in
            try engine.set(#"{"ttfb_ms": 5000}"#)
            let fd = try rawConnection(to: relay.url)
            Self.send(fd, stream: false)
            try await Task.sleep(for: .milliseconds(200))
            close(fd)
            #expect(try await relay.waitForResults(1, within: .seconds(4)) == ["clientGone"])
            #expect(client.idleConnections(to: engine.url) == 0)
        }
        let client = UpstreamClient(connectTimeout: .seconds(2))
        defer { client.shutdown() }
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        try await RelayServer.serving(to: "http://127.0.0.1:1/v1/chat/completions", client: client, options: Self.options()) { relay in
            let refused = try await Self.chat(http, relay)
            #expect(refused.status == 502 && envelope(refused.body)?.code == "connection_refused", "\(refused)")
        }
        try await http.shutdown()
    }

    @Test("a pooled connection that the upstream closes as it is reused is retried once on a new connection; a new one closed unanswered fails at once")
    func staleConnection() async throws {
        // The first connection answers one request and closes on the second (an idle close
        // crossing the next request); later connections answer everything.
        let upstream = try await ScriptedUpstream.start { connection, request in
            connection == 1 && request == 2 ? .close(after: .zero) : .answer
        }
        let closing = try await ScriptedUpstream.start { _, _ in .close(after: .zero) }
        let client = UpstreamClient(connectTimeout: .seconds(2), maxIdle: .seconds(30))
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        try await RelayServer.serving(to: upstream.url, client: client, options: Self.options()) { relay in
            for _ in 0..<2 {
                let answer = try await Self.chat(http, relay)
                #expect(answer.status == 200 && answer.body == "ok", "\(answer)")
            }
        }
        #expect(upstream.connections == 2, "the closed connection was replaced once")
        try await RelayServer.serving(to: closing.url, client: client, options: Self.options()) { relay in
            let answer = try await Self.chat(http, relay)
            #expect(answer.status == 502 && envelope(answer.body)?.code == "reset_before_head", "\(answer)")
        }
        #expect(closing.connections == 1, "a new connection is not retried")
        client.shutdown()
        try await http.shutdown()
        try await upstream.stop()
        try await closing.stop()
    }

    @Test("the retry on a new connection gets what is left of the head timeout, not a new one")
    func retryKeepsDeadline() async throws {
        // The pooled connection is closed 1.5 s into the second request; the new one never answers.
        let upstream = try await ScriptedUpstream.start { connection, request in
            connection == 1 ? (request == 1 ? .answer : .close(after: .milliseconds(1500))) : .hang
        }
        let client = UpstreamClient(connectTimeout: .seconds(2), maxIdle: .seconds(30))
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        try await RelayServer.serving(to: upstream.url, client: client, options: Self.options(headTimeout: .seconds(2))) { relay in
            _ = try await Self.chat(http, relay)
            let started = ContinuousClock.now
            let answer = try await Self.chat(http, relay)
            let waited = ContinuousClock.now - started
            #expect(answer.status == 502 && envelope(answer.body)?.code == "head_timeout", "\(answer)")
            #expect(upstream.connections == 2, "the request was retried")
            #expect(waited < .milliseconds(3000), "\(waited): a fresh 2 s timeout after the 1.5 s would end at ~3.5 s")
        }
        client.shutdown()
        try await http.shutdown()
        try await upstream.stop()
    }

    @Test("Expect: 100-continue is answered at once: 100 Continue, then the answer once the body came; 413 at once when the announced body is over the limit")
    func expectContinue() async throws {
        try await Self.withRelay { _, relay, _, _ in
            let body = chatBody(model: "fake")
            let asking = try rawConnection(to: relay.url)
            defer { close(asking) }
            Self.send(asking, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + "Expect: 100-continue\r\nContent-Length: \(body.utf8.count)\r\n\r\n")
            let interim = Self.read(asking, within: 2)
            #expect(interim.hasPrefix("HTTP/1.1 100 Continue"), "no interim answer before the body: \(interim.prefix(100))")
            Self.send(asking, body)
            let answer = Self.read(asking, within: 5)
            #expect(answer.contains("HTTP/1.1 200") && answer.contains("chat.completion"), "\(answer.prefix(300))")

            let huge = try rawConnection(to: relay.url)
            defer { close(huge) }
            Self.send(huge, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + "Expect: 100-continue\r\nContent-Length: \(4 << 20)\r\n\r\n")
            let refused = Self.read(huge, within: 2)
            #expect(refused.hasPrefix("HTTP/1.1 413") && refused.contains("request_too_large"), "\(refused.prefix(300))")
            #expect(isClosedByPeer(huge), "the connection closes: the client sends no body")
        }
    }

    static func send(_ fd: Int32, _ text: String) {
        _ = text.withCString { Foundation.send(fd, $0, strlen($0), 0) }
    }

    /// What arrives within `seconds`, and then until 300 ms pass without a byte, as text.
    static func read(_ fd: Int32, within seconds: Int) -> String {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { break }
            received += buffer[0..<n]
            timeout = timeval(tv_sec: 0, tv_usec: 300_000)
        }
        return String(decoding: received, as: UTF8.self)
    }

    static func send(_ fd: Int32, stream: Bool) {
        let body = chatBody(model: "fake", stream: stream)
        let request = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
        _ = request.withCString { Foundation.send(fd, $0, strlen($0), 0) }
    }

    /// Reads until the chunked answer's last chunk or the connection ends (5 s without a
    /// byte); returns the body without its chunk framing.
    static func readAll(_ fd: Int32) -> String {
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { break }
            bytes += buffer[0..<n]
            if bytes.suffix(7).elementsEqual("\r\n0\r\n\r\n".utf8) { break }
        }
        // Head, then chunks: size in hex, CRLF, data, CRLF.
        let text = String(decoding: bytes, as: UTF8.self)
        guard let headEnd = text.range(of: "\r\n\r\n") else { return "" }
        var rest = Substring(text[headEnd.upperBound...]).utf8
        var body: [UInt8] = []
        while let lineEnd = rest.firstRange(of: "\r\n".utf8), let size = Int(String(decoding: rest[..<lineEnd.lowerBound], as: UTF8.self), radix: 16),
              size > 0 {
            let data = rest[lineEnd.upperBound...].prefix(size)
            body += data
            rest = rest[lineEnd.upperBound...].dropFirst(size + 2)
        }
        return String(decoding: body, as: UTF8.self)
    }
}
