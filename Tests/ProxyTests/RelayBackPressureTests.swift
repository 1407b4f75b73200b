import HTTPTypes
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import Synchronization
import Testing
@testable import Proxy
@testable import Wire

/// The relay's glue on embedded channels sharing one event loop: an upstream connection
/// (``UpstreamConnection``) relaying a stream to a client's ``ClientWriter``. The client's
/// writability alone decides whether the upstream is read, the stall timeout cuts a client
/// that takes nothing, and a client that leaves stops the upstream.
@Suite("Relay back-pressure")
struct RelayBackPressureTests {
    /// Hosts the client's writer on the client channel, as the dispatcher does.
    final class WriterHost: ChannelInboundHandler {
        typealias InboundIn = NIOAny
        var writer: ClientWriter?
        var ended: [Int] = []
        var gone: [Int?] = []

        func handlerAdded(context: ChannelHandlerContext) {
            writer = ClientWriter(context: context, headers: { [RequestIDHeader.field: "r1"] },
                                  ended: { [unowned self] in ended.append($0) }, gone: { [unowned self] in gone.append($0) })
        }

        func channelWritabilityChanged(context: ChannelHandlerContext) { writer?.writabilityChanged() }

        func channelInactive(context: ChannelHandlerContext) { writer?.connectionClosed() }
    }

    /// Counts the reads the upstream connection asks its channel for.
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = NIOAny
        var reads = 0

        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }
    }

    final class Finishes: Sendable {
        let list = Mutex<[UpstreamForwarder.Finish]>([])
        var all: [UpstreamForwarder.Finish] { list.withLock { $0 } }
    }

    struct Rig {
        let loop: EmbeddedEventLoop
        let client: EmbeddedChannel
        let upstream: EmbeddedChannel
        let host: WriterHost
        let counter: ReadCounter
        let finishes: Finishes
        let outcome: EventLoopFuture<RelayOutcome>

        /// The client's answer parts written so far.
        func clientParts() throws -> [HTTPResponsePart] {
            var parts: [HTTPResponsePart] = []
            while let part = try client.readOutbound(as: HTTPResponsePart.self) { parts.append(part) }
            return parts
        }

        func streamHead() throws {
            let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-type": "text/event-stream"])
            try upstream.writeInbound(HTTPClientResponsePart.head(head))
        }

        func chunk(_ text: String) throws { try upstream.writeInbound(HTTPClientResponsePart.body(ByteBuffer(string: text))) }
    }

    /// An exchange begun on an upstream connection, relaying to a client writer; `stall`: the client's write timeout.
    static func rig(stall: TimeAmount = .milliseconds(300)) throws -> Rig {
        let loop = EmbeddedEventLoop()
        let host = WriterHost()
        let client = EmbeddedChannel(handler: host, loop: loop)
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let counter = ReadCounter()
        let key = ConnectionPool.Key(upstream: "http://engine", loop: loop)
        let connection = UpstreamConnection(key: key, pool: ConnectionPool())
        let upstream = EmbeddedChannel(handlers: [counter, connection], loop: loop)
        try upstream.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).wait()
        let finishes = Finishes()
        let now = NIODeadline.now()
        let limits = UpstreamConnectionStateMachine.Limits(
            id: 1, headDeadline: now + .seconds(60), headTimeout: .seconds(60), idleTimeout: .seconds(60), stallTimeout: stall,
            maxBufferedBody: 1024, start: now, keepAlive: true, readUsage: false)
        let promise = loop.makePromise(of: RelayOutcome.self)
        connection.begin(Exchange(
            head: HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/chat/completions"), body: ByteBuffer(string: "{}"),
            limits: limits, writer: try #require(host.writer), promise: promise, interceptRetryable: false, shutdown: nil,
            onFirstByte: nil, onFinish: { finish in finishes.list.withLock { $0.append(finish) } }, logger: Logger(label: "test")))
        while try upstream.readOutbound(as: HTTPClientRequestPart.self) != nil {}  // the request went out
        return Rig(loop: loop, client: client, upstream: upstream, host: host, counter: counter, finishes: finishes,
                   outcome: promise.futureResult)
    }

    @Test("chunks go to the client as they come; while the client is not writable no read is passed on, and the held read is given when it is")
    func backPressure() throws {
        let rig = try Self.rig()
        try rig.streamHead()
        guard case .relayed = try rig.outcome.wait() else { Issue.record("the head was not relayed"); return }
        try rig.chunk("data: 1\n\n")
        var parts = try rig.clientParts()
        #expect(parts.count == 2)
        guard case .head(let head) = parts.first else { Issue.record("no head first"); return }
        #expect(head.status == .ok && head.headerFields[RequestIDHeader.field] == "r1")
        #expect(parts.last == .body(ByteBuffer(string: "data: 1\n\n")))

        let before = rig.counter.reads
        rig.upstream.pipeline.read()
        #expect(rig.counter.reads == before + 1, "a writable client: reads pass")

        rig.client.isWritable = false
        try rig.chunk("data: 2\n\n")  // relayed, then reads pause
        #expect(try rig.clientParts() == [.body(ByteBuffer(string: "data: 2\n\n"))])
        rig.upstream.pipeline.read()
        rig.upstream.pipeline.read()
        #expect(rig.counter.reads == before + 1, "a full client: no read reaches the upstream")

        rig.client.isWritable = true
        rig.client.pipeline.fireChannelWritabilityChanged()
        #expect(rig.counter.reads == before + 2, "the held read is given once")

        try rig.upstream.writeInbound(HTTPClientResponsePart.end(nil))
        parts = try rig.clientParts()
        #expect(parts == [.end(nil)])
        #expect(rig.host.ended == [200])
        guard case .completed(let timing)? = rig.finishes.all.first else { Issue.record("not completed: \(rig.finishes.all)"); return }
        #expect(timing.chunks == 2)
        #expect(rig.upstream.isActive, "kept for the pool")
        _ = try rig.client.finish()
        _ = try rig.upstream.finish()
    }

    @Test("a client that takes nothing for its write timeout is cut off; the upstream connection closes and the stream ends as client gone")
    func stalledClient() throws {
        let rig = try Self.rig(stall: .milliseconds(300))
        try rig.streamHead()
        rig.client.isWritable = false
        try rig.chunk("data: 1\n\n")
        rig.loop.advanceTime(to: .now() + .milliseconds(200))
        #expect(rig.client.isActive && rig.finishes.all.isEmpty, "not yet")
        rig.loop.advanceTime(to: .now() + .seconds(1))
        #expect(!rig.client.isActive, "the client's connection was closed")
        #expect(!rig.upstream.isActive, "the upstream stopped")
        guard case .clientGone? = rig.finishes.all.first else { Issue.record("not client gone: \(rig.finishes.all)"); return }
        #expect(rig.host.gone == [200])
    }

    @Test("a client that leaves mid-stream stops the upstream; one that leaves before the head ends the relay as client gone")
    func clientLeaves() throws {
        let streaming = try Self.rig()
        try streaming.streamHead()
        try streaming.chunk("data: 1\n\n")
        try streaming.client.close().wait()
        #expect(!streaming.upstream.isActive)
        guard case .clientGone? = streaming.finishes.all.first else { Issue.record("not client gone: \(streaming.finishes.all)"); return }

        let waiting = try Self.rig()
        try waiting.client.close().wait()
        guard case .clientGone = try waiting.outcome.wait() else { Issue.record("not client gone"); return }
        #expect(!waiting.upstream.isActive, "the upstream request was stopped")
        #expect(waiting.finishes.all.isEmpty && waiting.host.gone == [nil])
    }
}
