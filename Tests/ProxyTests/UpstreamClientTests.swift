import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing
@testable import Config
@testable import Proxy
@testable import Server
@testable import TestSupport
@testable import Wire

/// The data plane's HTTP client against a fake engine process, over real sockets: pooling,
/// streaming, deadlines, client departure.
@Suite("Upstream client")
struct UpstreamClientTests {
    /// A fake engine on a free port, its base URL, and the file that changes its behaviour.
    struct Engine {
        let process: ManagedProcess
        let url: String
        let control: URL

        static func start() async throws -> Engine {
            let control = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-uc-\(UUID().uuidString.prefix(8)).json")
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

    /// Runs `body` against a fresh fake engine and client; both are stopped afterwards, pass or fail.
    static func withEngine(_ body: (Engine, UpstreamClient) async throws -> Void) async throws {
        let engine = try await Engine.start()
        let client = UpstreamClient(connectTimeout: .seconds(2), maxIdle: .seconds(30))
        do {
            try await body(engine, client)
        } catch {
            client.shutdown()
            await engine.stop()
            throw error
        }
        client.shutdown()
        await engine.stop()
    }

    static func chat(_ client: UpstreamClient, _ engine: Engine, stream: Bool = false, headers: [(String, String)] = [],
                     headTimeout: Duration = .seconds(10), idleTimeout: Duration = .seconds(10),
                     departure: ClientDeparture? = nil) async throws -> UpstreamResponse {
        let request = UpstreamRequest(url: engine.url, method: .POST, headers: [("Content-Type", "application/json")] + headers,
                                      body: ByteBuffer(string: chatBody(model: "fake", stream: stream)))
        return try await client.execute(request, headTimeout: headTimeout, idleTimeout: idleTimeout,
                                        maxBufferedBody: 1 << 20, departure: departure)
    }

    static func collect(_ response: UpstreamResponse) async throws -> String {
        switch response.body {
        case .complete(let bytes): return String(buffer: bytes)
        case .stream(let events):
            var text = ""
            for try await chunk in events { text += String(buffer: chunk) }
            return text
        }
    }

    @Test("sequential requests share one pooled connection and leave no departure callback behind; an exchange that says Connection: close leaves the pool")
    func pooling() async throws {
        try await Self.withEngine { engine, client in
            let departure = ClientDeparture()  // one keep-alive client connection carrying every request
            for _ in 0..<3 {
                let response = try await Self.chat(client, engine, departure: departure)
                #expect(departure.pendingCallbacks == 0)
                #expect(response.head.status == .ok)
                #expect(try await Self.collect(response).contains("chat.completion"))
                #expect(client.idleConnections(to: engine.url) == 1)  // two would mean a new connection each time
            }
            let closing = try await Self.chat(client, engine, headers: [("Connection", "close")])
            #expect(closing.head.status == .ok)
            #expect(client.idleConnections(to: engine.url) == 0)
        }
    }

    @Test("an event stream arrives chunk by chunk with its timing, and its connection is pooled afterwards")
    func streaming() async throws {
        try await Self.withEngine { engine, client in
            try engine.set(#"{"tokens": 5, "token_ms": 30}"#)
            let response = try await Self.chat(client, engine, stream: true)
            guard case .stream(let events) = response.body else {
                Issue.record("an event stream was collected whole")
                return
            }
            var chunks = 0
            var text = ""
            for try await chunk in events {
                chunks += 1
                text += String(buffer: chunk)
            }
            #expect(text.components(separatedBy: "data: ").count - 1 == 6)  // five tokens and [DONE]
            #expect(chunks >= 2)
            #expect(events.timing.firstByte != nil)
            #expect(events.timing.maxGap >= .milliseconds(15))
            #expect(client.idleConnections(to: engine.url) == 1)
        }
    }

    @Test("a reader that falls behind pauses the upstream's reads and resumes them: nothing lost, nothing stuck",
          .timeLimit(.minutes(1)))
    func backpressure() async throws {
        try await Self.withEngine { engine, client in
            try engine.set(#"{"tokens": 3000, "token_ms": 0}"#)  // ~330 KB as fast as the engine can write
            let response = try await Self.chat(client, engine, stream: true, idleTimeout: .seconds(5))
            guard case .stream(let events) = response.body else {
                Issue.record("an event stream was collected whole")
                return
            }
            var text = ""
            var first = true
            for try await chunk in events {
                if first {
                    first = false
                    try await Task.sleep(for: .milliseconds(500))  // the engine has sent everything meanwhile
                }
                text += String(buffer: chunk)
            }
            #expect(text.components(separatedBy: "data: ").count - 1 == 3001)
            #expect(text.hasSuffix("data: [DONE]\n\n"))
            #expect(client.idleConnections(to: engine.url) == 1)
        }
    }

    @Test("a reader that takes nothing for the idle timeout stops the upstream (a stalled client holds no engine slot)",
          .timeLimit(.minutes(1)))
    func stalledReader() async throws {
        try await Self.withEngine { engine, client in
            try engine.set(#"{"tokens": 3000, "token_ms": 0}"#)
            let response = try await Self.chat(client, engine, stream: true, idleTimeout: .milliseconds(300))
            guard case .stream(let events) = response.body else {
                Issue.record("an event stream was collected whole")
                return
            }
            var first = true
            await #expect(throws: UpstreamError.readerStalled(.milliseconds(300))) {
                for try await _ in events where first {
                    first = false
                    try await Task.sleep(for: .seconds(1))
                }
            }
            #expect(client.idleConnections(to: engine.url) == 0)
        }
    }

    @Test("no head within the head timeout, or a stream silent past the idle timeout, fails and closes the connection")
    func deadlines() async throws {
        try await Self.withEngine { engine, client in
            try engine.set(#"{"ttfb_ms": 5000}"#)
            let started = ContinuousClock.now
            await #expect(throws: UpstreamError.headTimeout(.milliseconds(300))) {
                _ = try await Self.chat(client, engine, headTimeout: .milliseconds(300))
            }
            #expect(ContinuousClock.now - started < .seconds(4))
            #expect(client.idleConnections(to: engine.url) == 0)

            try engine.set(#"{"tokens": 3, "token_ms": 5000}"#)
            let response = try await Self.chat(client, engine, stream: true, idleTimeout: .milliseconds(300))
            await #expect(throws: UpstreamError.gapTimeout(.milliseconds(300))) { _ = try await Self.collect(response) }
            #expect(client.idleConnections(to: engine.url) == 0)
        }
    }

    @Test("a departing client ends the wait for the answer; a refused connection is reported as such")
    func departureAndRefusal() async throws {
        try await Self.withEngine { engine, client in
            try engine.set(#"{"ttfb_ms": 5000}"#)
            let departure = ClientDeparture()
            MultiThreadedEventLoopGroup.singleton.next().scheduleTask(in: .milliseconds(200)) { departure.depart() }
            let started = ContinuousClock.now
            await #expect(throws: ClientDeparted.self) {
                _ = try await Self.chat(client, engine, departure: departure)
            }
            #expect(ContinuousClock.now - started < .seconds(4))

            let refused = Engine(process: engine.process, url: "http://127.0.0.1:1/v1/chat/completions", control: engine.control)
            await #expect(throws: UpstreamError.connectionRefused) { _ = try await Self.chat(client, refused) }
        }
    }

    @Test("a pooled connection that the upstream closes as it is reused is retried once on a new connection; a new one closed unanswered fails at once")
    func staleConnection() async throws {
        // The first connection answers one request and closes on the second (an idle close
        // crossing the next request); later connections answer everything.
        let upstream = try await ScriptedUpstream.start { connection, request in
            connection == 1 && request == 2 ? .close(after: .zero) : .answer
        }
        let client = UpstreamClient(connectTimeout: .seconds(2), maxIdle: .seconds(30))
        defer { client.shutdown() }
        for _ in 0..<2 {
            let response = try await client.execute(upstream.request, headTimeout: .seconds(5), idleTimeout: .seconds(5), maxBufferedBody: 1024)
            #expect(response.head.status == .ok)
            #expect(try await Self.collect(response) == "ok")
        }
        #expect(upstream.connections == 2, "the closed connection was replaced once")
        try await upstream.stop()

        let closing = try await ScriptedUpstream.start { _, _ in .close(after: .zero) }
        await #expect(throws: UpstreamError.resetBeforeHead) {
            _ = try await client.execute(closing.request, headTimeout: .seconds(5), idleTimeout: .seconds(5), maxBufferedBody: 1024)
        }
        #expect(closing.connections == 1, "a new connection is not retried")
        try await closing.stop()
    }

    @Test("the retry on a new connection gets what is left of the head timeout, not a new one")
    func retryKeepsDeadline() async throws {
        // The pooled connection is closed 1.5 s into the second request; the new one never answers.
        let upstream = try await ScriptedUpstream.start { connection, request in
            connection == 1 ? (request == 1 ? .answer : .close(after: .milliseconds(1500))) : .hang
        }
        let client = UpstreamClient(connectTimeout: .seconds(2), maxIdle: .seconds(30))
        defer { client.shutdown() }
        _ = try await client.execute(upstream.request, headTimeout: .seconds(5), idleTimeout: .seconds(5), maxBufferedBody: 1024)
        let started = ContinuousClock.now
        await #expect(throws: UpstreamError.headTimeout(.seconds(2))) {
            _ = try await client.execute(upstream.request, headTimeout: .seconds(2), idleTimeout: .seconds(5), maxBufferedBody: 1024)
        }
        let waited = ContinuousClock.now - started
        #expect(upstream.connections == 2, "the request was retried")
        #expect(waited < .milliseconds(3000), "\(waited): a fresh 2 s timeout after the 1.5 s would end at ~3.5 s")
        try await upstream.stop()
    }
}

extension ScriptedUpstream {
    /// A small POST to this upstream.
    var request: UpstreamRequest { UpstreamRequest(url: url, method: .POST, headers: [], body: ByteBuffer(string: "{}")) }
}
