import Logging
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization
import Wire

/// The hub's end of the tunnels that workers behind NAT keep open (`connect: outbound`).
///
/// A worker dials the hub's `tunnel_listen`, proves who it is on the first line
/// (``TunnelHandshake``), and then the roles reverse: on that one connection the hub is the
/// HTTP/2 client and the worker the server. Every request the hub forwards to
/// `tunnel://<worker>` is one HTTP/2 stream, relayed by the same ``UpstreamConnection`` as an
/// HTTP/1 exchange; per-stream flow control carries the client's back-pressure to the
/// worker. A newer tunnel from the same worker replaces the older one; PINGs
/// (``TunnelKeepalive``) close a tunnel whose peer went silent.
public final class Tunnels: Sendable {
    struct Tunnel: Sendable {
        let channel: any Channel
        let multiplexer: NIOHTTP2Handler.StreamMultiplexer
    }

    private let tunnels = Mutex<[String: Tunnel]>([:])
    /// Requests waiting for a worker's tunnel to (re)open, by worker name.
    private let waiting = Mutex<[String: [EventLoopPromise<Tunnel?>]]>([:])
    private let keepalive: TimeAmount
    private let connectTimeout: TimeAmount
    private let logger: Logger
    private let opened: AsyncStream<String>.Continuation
    /// The name of each worker whose tunnel opens (again): the hub then reads its reports
    /// over it. Ends at ``closeAll()``.
    public let openings: AsyncStream<String>

    /// - Parameters:
    ///   - keepalive: PING interval; a tunnel silent for three intervals is closed.
    ///   - connectTimeout: how long a request waits for a worker's tunnel that is not open
    ///     (a worker dials again within milliseconds of a drop): a tunnel's "connect".
    public init(keepalive: Duration, connectTimeout: Duration, logger: Logger) {
        self.keepalive = TimeAmount(keepalive)
        self.connectTimeout = TimeAmount(connectTimeout)
        self.logger = logger
        (openings, opened) = AsyncStream.makeStream(of: String.self)
    }

    /// Names of the workers with a tunnel open now.
    public var connected: [String] { tunnels.withLock { Array($0.keys).sorted() } }

    /// Closes every tunnel (at shutdown, after the streams had their grace).
    public func closeAll() {
        opened.finish()
        for tunnel in tunnels.withLock({ $0.values }) { tunnel.channel.close(promise: nil) }
    }

    // MARK: Accepting

    /// Serves `tunnel_listen` until graceful shutdown; `authenticate` turns a worker's token
    /// into its name (or throws), `announce` gets the bound address.
    public func listen(host: String, port: Int, tls: NIOSSLContext?, runner: DataPlaneRunner,
                       authenticate: @escaping @Sendable (String) async throws -> String,
                       announce: @escaping @Sendable (SocketAddress?) -> Void) async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls { try sync.addHandler(NIOSSLServerHandler(context: tls)) }
                    try sync.addHandler(TunnelPreamble { line, context in
                        self.admit(line, context: context, runner: runner, authenticate: authenticate)
                    })
                }
            }
            .bind(host: host, port: port).get()
        announce(server.localAddress)
        try? await gracefulShutdown()
        try? await server.close()
    }

    /// Checks a worker's first line; on success the connection becomes its tunnel.
    private func admit(_ line: String, context: ChannelHandlerContext, runner: DataPlaneRunner,
                       authenticate: @escaping @Sendable (String) async throws -> String) {
        let channel = context.channel
        guard line.hasPrefix(TunnelHandshake.hello) else { return refuse(channel, "expected \(TunnelHandshake.hello)<token>") }
        let token = String(line.dropFirst(TunnelHandshake.hello.count))
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        runner.run(on: context.eventLoop) { try await authenticate(token) }.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let name): self.open(name, context: bound.value)
            case .failure(let error):
                self.logger.warning("tunnel refused", metadata: ["reason": "\(error)"])
                self.refuse(channel, "worker credential rejected")
            }
        }
    }

    private func refuse(_ channel: any Channel, _ reason: String) {
        channel.writeAndFlush(ByteBuffer(string: TunnelHandshake.refused + reason + "\n")).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    /// Says OK, turns the connection into an HTTP/2 client and records it as `name`'s tunnel.
    private func open(_ name: String, context: ChannelHandlerContext) {
        let channel = context.channel
        guard channel.isActive else { return }
        context.writeAndFlush(NIOAny(ByteBuffer(string: TunnelHandshake.accepted + "\n")), promise: nil)
        do {
            let sync = channel.pipeline.syncOperations
            let multiplexer = try sync.configureHTTP2Pipeline(
                mode: .client, connectionConfiguration: Self.connection, streamConfiguration: Self.stream,
                inboundStreamInitializer: { $0.close() })  // a worker opens no streams
            try TunnelKeepalive.add(to: sync, before: try sync.handler(type: NIOHTTP2Handler.self), interval: keepalive, logger: logger)
            let preamble = try sync.handler(type: TunnelPreamble.self)
            let tunnel = Tunnel(channel: channel, multiplexer: multiplexer)
            let old = tunnels.withLock { $0.updateValue(tunnel, forKey: name) }
            old?.channel.close(promise: nil)
            for waiter in waiting.withLock({ $0.removeValue(forKey: name) ?? [] }) { waiter.succeed(tunnel) }
            logger.info("tunnel open", metadata: ["worker": "\(name)", "peer": "\(channel.remoteAddress?.description ?? "?")"])
            opened.yield(name)
            channel.closeFuture.whenComplete { [self] _ in
                let removed = tunnels.withLock { tunnels -> Bool in
                    guard tunnels[name]?.channel === channel else { return false }
                    tunnels[name] = nil
                    return true
                }
                if removed { logger.info("tunnel closed", metadata: ["worker": "\(name)"]) }
            }
            preamble.handOver(try sync.context(handler: preamble))
        } catch {
            logger.error("tunnel setup failed", metadata: ["worker": "\(name)", "error": "\(error)"])
            channel.close(promise: nil)
        }
    }

    // MARK: Relaying

    /// Forwards one exchange over `worker`'s tunnel as a new HTTP/2 stream, relaying its
    /// answer to `writer` on the client's loop. Call on the writer's loop.
    func relay(to worker: String, head: HTTPRequestHead, body: ByteBuffer, limits: UpstreamConnectionStateMachine.Limits,
               writer: any RelayClient, options: UpstreamForwarder.Options, logger: Logger,
               onFirstByte: (@Sendable () -> Void)?, onFinish: @escaping @Sendable (UpstreamForwarder.Finish) -> Void)
        -> EventLoopFuture<RelayOutcome>
    {
        let clientLoop = writer.eventLoop
        guard let tunnel = tunnels.withLock({ $0[worker] }) else {
            return waitForTunnel(worker, on: clientLoop).flatMap { tunnel in
                guard let tunnel else { return clientLoop.makeSucceededFuture(.failed(nil, .connectTimeout)) }
                guard writer.isWaiting else { return clientLoop.makeSucceededFuture(.clientGone) }
                return self.relay(over: tunnel, head: head, body: body, limits: limits, writer: writer, options: options,
                                  logger: logger, onFirstByte: onFirstByte, onFinish: onFinish)
            }
        }
        return relay(over: tunnel, head: head, body: body, limits: limits, writer: writer, options: options, logger: logger,
                     onFirstByte: onFirstByte, onFinish: onFinish)
    }

    /// The worker's tunnel once it opens, or nil after the connect timeout.
    private func waitForTunnel(_ worker: String, on loop: any EventLoop) -> EventLoopFuture<Tunnel?> {
        let promise = loop.makePromise(of: Tunnel?.self)
        let open = tunnels.withLock { tunnels in
            waiting.withLock { waiting -> Tunnel? in
                if let tunnel = tunnels[worker] { return tunnel }
                waiting[worker, default: []].append(promise)
                return nil
            }
        }
        if let open { promise.succeed(open) }
        let timeout = loop.scheduleTask(in: connectTimeout) { [self] in
            let removed = waiting.withLock { waiting -> Bool in
                guard let index = waiting[worker]?.firstIndex(where: { $0.futureResult === promise.futureResult }) else { return false }
                waiting[worker]!.remove(at: index)
                return true
            }
            if removed { promise.succeed(nil) }
        }
        promise.futureResult.whenComplete { _ in timeout.cancel() }
        return promise.futureResult
    }

    private func relay(over tunnel: Tunnel, head: HTTPRequestHead, body: ByteBuffer, limits: UpstreamConnectionStateMachine.Limits,
                       writer: any RelayClient, options: UpstreamForwarder.Options, logger: Logger,
                       onFirstByte: (@Sendable () -> Void)?, onFinish: @escaping @Sendable (UpstreamForwarder.Finish) -> Void)
        -> EventLoopFuture<RelayOutcome>
    {
        let clientLoop = writer.eventLoop
        let relayLoop = tunnel.channel.eventLoop
        let hop = Handed(WriterHop(writer, relayLoop: relayLoop))
        let outcome = clientLoop.makePromise(of: RelayOutcome.self)
        relayLoop.execute {
            guard !hop.value.isGone else { return outcome.succeed(.clientGone) }
            tunnel.multiplexer.createStreamChannel { stream in
                stream.eventLoop.makeCompletedFuture {
                    let sync = stream.pipeline.syncOperations
                    try sync.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http))
                    try sync.addHandler(UpstreamConnection(key: nil, pool: nil))
                }
            }.flatMapThrowing { stream in
                try stream.pipeline.syncOperations.handler(type: UpstreamConnection.self)
            }.assumeIsolated().whenComplete { result in
                switch result {
                case .success(let connection):
                    let answer = relayLoop.makePromise(of: RelayOutcome.self)
                    connection.begin(Exchange(
                        head: head, body: body, limits: limits, writer: hop.value, promise: answer,
                        interceptRetryable: options.interceptRetryable, shutdown: options.shutdown,
                        onFirstByte: onFirstByte, onFinish: onFinish, logger: logger))
                    // The client left while the stream was being opened: the relay learns it now
                    // (it stops the stream: the worker cancels the request).
                    if hop.value.isGone { hop.value.onGone?() }
                    outcome.completeWith(answer.futureResult)
                case .failure(let error):
                    // The tunnel closed, or the worker's concurrent-stream limit is reached.
                    outcome.succeed(.failed(nil, .transport(error)))
                }
            }
        }
        return outcome.futureResult
    }

    /// HTTP/2 settings on both ends: many concurrent streams (one per forwarded request), and a
    /// connection window large enough that hundreds of streams do not wait on each other.
    static var connection: NIOHTTP2Handler.ConnectionConfiguration {
        var configuration = NIOHTTP2Handler.ConnectionConfiguration()
        configuration.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 100_000),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 1 << 20),
            HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20),
        ]
        configuration.targetWindowSize = 64 << 20
        configuration.maximumConnectionGlitches = 10_000
        // Frames already on the way for a stream this side reset (its client left) are ignored
        // only for the last N resets; past that NIO ends the connection (NoSuchStream, GOAWAY).
        // NIO's 32 is for one browser; a tunnel sees thousands of clients leave at once.
        configuration.maximumRecentlyResetStreams = 2_048
        return configuration
    }

    /// The peer is authenticated (its own credential, or the hub it dialled), so the reset
    /// limits that guard a public HTTP/2 server against rapid-reset floods are raised: a
    /// thousand clients hanging up at once cancel a thousand streams, and NIO's default (200
    /// resets in 30 s) would then end the whole tunnel with GOAWAY.
    static var stream: NIOHTTP2Handler.StreamConfiguration {
        var configuration = NIOHTTP2Handler.StreamConfiguration()
        configuration.targetWindowSize = 1 << 20
        configuration.streamResetFrameRateLimit.maximumCount = 1_000_000
        configuration.streamResetFrameRateLimit.windowLength = .seconds(1)
        configuration.streamErrorRateLimit.maximumCount = 1_000_000
        configuration.streamErrorRateLimit.windowLength = .seconds(1)
        return configuration
    }
}
