import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// An HTTP/1.1 upstream in the test process that follows a script for each request
/// (`connection` and `request` count from 1, request per connection): answer `200 ok`,
/// close the connection without answering (after a delay), or never answer.
package final class ScriptedUpstream: Sendable {
    package enum Step: Sendable {
        case answer
        case close(after: TimeAmount)
        case hang
    }

    private let channel: any Channel
    private let accepted: Counter
    package let url: String
    /// The port it listens on (127.0.0.1).
    package let port: Int

    /// Connections accepted so far.
    package var connections: Int { accepted.value.load(ordering: .relaxed) }

    private final class Counter: Sendable { let value = Atomic<Int>(0) }

    private init(channel: any Channel, accepted: Counter) {
        self.channel = channel
        self.accepted = accepted
        port = channel.localAddress?.port ?? 0
        url = "http://127.0.0.1:\(port)/v1/chat/completions"
    }

    package static func start(script: @escaping @Sendable (_ connection: Int, _ request: Int) -> Step) async throws -> ScriptedUpstream {
        let accepted = Counter()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                let number = accepted.value.add(1, ordering: .relaxed).newValue
                return channel.pipeline.configureHTTPServerPipeline().flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(Handler { script(number, $0) })
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return ScriptedUpstream(channel: channel, accepted: accepted)
    }

    package func stop() async throws { try await channel.close() }

    /// Runs `body` with an upstream that answers every request `200 ok`; stops it afterwards, pass or fail.
    package static func answering<T>(_ body: (ScriptedUpstream) async throws -> T) async throws -> T {
        let upstream = try await start { _, _ in .answer }
        do {
            let value = try await body(upstream)
            try await upstream.stop()
            return value
        } catch {
            try? await upstream.stop()
            throw error
        }
    }

    private final class Handler: ChannelInboundHandler {
        package typealias InboundIn = HTTPServerRequestPart
        package typealias OutboundOut = HTTPServerResponsePart
        package let step: (Int) -> Step
        package var requests = 0

        package init(step: @escaping (Int) -> Step) { self.step = step }

        package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            requests += 1
            switch step(requests) {
            case .answer:
                let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "2", "Content-Type": "application/json"])
                context.write(wrapOutboundOut(.head(head)), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "ok")))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            case .close(let delay):
                let channel = context.channel
                context.eventLoop.scheduleTask(in: delay) { channel.close(promise: nil) }
            case .hang:
                break
            }
        }
    }
}
