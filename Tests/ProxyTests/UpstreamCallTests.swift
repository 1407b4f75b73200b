import Foundation
import HTTPTypes
import NIOHTTP1
import Logging
import NIOCore
import Testing
@testable import Proxy
@testable import TestSupport
@testable import Wire

/// ``UpstreamClient/call(_:options:logger:)``: the data plane's relay answering this
/// process's own code (the hub's admin calls to workers), and the SSE parser the hub reads a
/// tunnelled worker's reports with.
@Suite("Upstream calls")
struct UpstreamCallTests {
    @Test("a whole answer and a stream come back with their status and every byte; a refused connect throws the upstream error in words")
    func answersAndStreams() async throws {
        let engine = try await RelayTests.Engine.start()
        let client = UpstreamClient(connectTimeout: .seconds(2))
        defer { client.shutdown() }
        do {
            try engine.set(#"{"tokens": 20, "token_ms": 5}"#)
            let options = RelayTests.options()
            let plain = try await client.call(UpstreamRequest(url: engine.url, method: .POST, headers: [("Content-Type", "application/json")],
                                                              body: ByteBuffer(string: #"{"model":"fake","messages":[]}"#)),
                                              options: options, logger: Logger(label: "test"))
            var text = ""
            for try await chunk in plain.body { text += String(buffer: chunk) }
            #expect(plain.status == .ok && text.contains(#""content":"\#(String(repeating: "x", count: 20))""#), "\(text)")

            let stream = try await client.call(UpstreamRequest(url: engine.url, method: .POST, headers: [("Content-Type", "application/json")],
                                                               body: ByteBuffer(string: #"{"model":"fake","messages":[],"stream":true}"#)),
                                               options: options, logger: Logger(label: "test"))
            #expect(stream.headers[.contentType]?.hasPrefix("text/event-stream") == true)
            var events = ServerSentEvents()
            var received: [ServerSentEvents.Event] = []
            for try await chunk in stream.body { received += try events.append(chunk.readableBytesView) }
            #expect(received.count == 21 && received.last?.data == "[DONE]", "\(received.count) events")

            let refused = UpstreamRequest(url: "http://127.0.0.1:\(try freePort())/x", method: .GET, headers: [], body: ByteBuffer())
            await #expect(throws: UpstreamError.connectionRefused) {
                _ = try await client.call(refused, options: options, logger: Logger(label: "test"))
            }
        } catch {
            await engine.stop()
            throw error
        }
        await engine.stop()
    }

    @Test("server-sent events: split anywhere, comments skipped, named events, multi-line data; encoded events parse back")
    func serverSentEvents() throws {
        let wire = ": keepalive\n\ndata: é\n\nevent: leaving\ndata: {}\n\ndata: a\r\ndata: b\n\n" + ServerSentEvents.Event(name: "x", data: "1\n2").encoded
        var parser = ServerSentEvents()
        var events: [ServerSentEvents.Event] = []
        for byte in wire.utf8 { events += try parser.append([byte]) }
        #expect(events == [.init(data: "é"), .init(name: "leaving", data: "{}"), .init(data: "a\nb"), .init(name: "x", data: "1\n2")])
        var long = ServerSentEvents()
        #expect(throws: SSEError.self) { _ = try long.append([UInt8](repeating: 120, count: ServerSentEvents.maxLine + 1)) }
    }
}
