import Wire
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import Server

/// The data plane's HTTP/1.1 client: one request per pooled connection, the answer relayed
/// straight to the client's connection (``UpstreamConnection``).
///
/// Connections are pooled per (upstream, event loop) and taken on the client's own loop, so
/// a relayed answer never changes threads. With `warm`, a few connections per (upstream,
/// loop) are opened ahead of need, so a burst does not pay the connect. At most
/// ``ConnectGate/limit`` connects per (upstream, loop) are in progress at once: a burst of
/// new streams waits its turn (or takes a connection freed meanwhile) instead of flooding
/// the upstream's accept queue.
public final class UpstreamClient: Sendable {
    private let connectTimeout: TimeAmount
    private let maxIdle: TimeAmount
    private let warm: Int
    private let tls: TLSConfiguration?
    private let sslContext = Mutex<NIOSSLContext?>(nil)
    private let pool = ConnectionPool()
    private let exchanges = Atomic<Int>(0)
    private let logger: Logger
    /// Workers reached through their own tunnel to this process (`tunnel://name` URLs).
    private let tunnels: Tunnels?

    /// - Parameters:
    ///   - maxIdle: a pooled connection idle longer than this is closed rather than reused; the
    ///     upstream may be closing it at that very moment (llama-server does after 5 s).
    ///   - warm: idle connections kept open ahead of need per (upstream, event loop); 0 for
    ///     llama-server, whose HTTP threads an idle connection would hold.
    ///   - tls: trust settings for `https` upstreams (hubs reaching TLS workers).
    ///   - logger: where a retry on a new connection is noted (debug level).
    ///   - tunnels: the tunnels of workers behind NAT, for `tunnel://` URLs (the hub's).
    public init(connectTimeout: Duration, maxIdle: Duration = .seconds(2), warm: Int = 0, tls: TLSConfiguration? = nil,
                logger: Logger = Logger(label: "caravan.upstream"), tunnels: Tunnels? = nil) {
        self.logger = logger
        self.tunnels = tunnels
        self.connectTimeout = TimeAmount(connectTimeout)
        self.maxIdle = TimeAmount(maxIdle)
        self.warm = warm
        self.tls = tls
    }

    /// Sends `request` and relays its answer to `writer`, on the writer's event loop.
    func relay(_ request: UpstreamRequest, to writer: any RelayClient, options: UpstreamForwarder.Options, logger: Logger,
               onFirstByte: (@Sendable () -> Void)?, onFinish: @escaping @Sendable (UpstreamForwarder.Finish) -> Void)
        -> EventLoopFuture<RelayOutcome>
    {
        let loop = writer.eventLoop
        let target: UpstreamTarget
        do {
            target = try UpstreamTarget(request.url)
        } catch {
            return loop.makeSucceededFuture(.failed(nil, error))
        }
        let key = ConnectionPool.Key(upstream: target.key, loop: loop)
        let start = NIODeadline.now()
        let head = request.head(for: target)
        let limits = UpstreamConnectionStateMachine.Limits(
            id: exchanges.wrappingAdd(1, ordering: .relaxed).newValue,
            headDeadline: start + TimeAmount(options.headTimeout),  // a retry gets what is left, not a new timeout
            headTimeout: options.headTimeout, idleTimeout: TimeAmount(options.idleTimeout),
            stallTimeout: TimeAmount(options.clientWriteTimeout ?? options.idleTimeout),
            maxBufferedBody: options.maxBufferedBody, start: start,
            keepAlive: !head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "close" },
            readUsage: options.readUsage)
        if target.tunnel {
            guard let tunnels else { return loop.makeSucceededFuture(.failed(nil, .badURL(request.url))) }
            var limits = limits
            limits.keepAlive = false  // a stream serves one exchange
            return tunnels.relay(to: target.host, head: head, body: request.body, limits: limits, writer: writer,
                                 options: options, logger: logger, onFirstByte: onFirstByte, onFinish: onFinish)
        }
        let outcome = loop.makePromise(of: RelayOutcome.self)

        func begin(_ connection: PooledConnection, reused: Bool) {
            guard writer.isWaiting else { return outcome.succeed(.clientGone) }
            let answer = loop.makePromise(of: RelayOutcome.self)
            connection.handler.value.begin(Exchange(
                head: head, body: request.body, limits: limits, writer: writer, promise: answer,
                interceptRetryable: options.interceptRetryable, shutdown: options.shutdown,
                onFirstByte: onFirstByte, onFinish: onFinish, logger: logger))
            answer.futureResult.assumeIsolated().whenSuccess { result in
                // A pooled connection that the upstream closed as we reused it (its idle close
                // crossed our request): nothing was answered, so the request goes again, once,
                // on a new connection. A new connection closed unanswered is a real failure.
                if reused, case .failed(nil, let error) = result, error.kind == .resetBeforeHead {
                    self.logger.debug("pooled connection closed before answering; retrying on a new one",
                                      metadata: ["upstream": "\(target.key)"])
                    return connect()
                }
                outcome.succeed(result)
            }
        }
        let pool = self.pool
        func connect() {
            let gate = pool.gate(key, on: loop)
            gate.enter {
                // A connection freed while this request waited for a connect slot serves it at once.
                if writer.isWaiting, let parked = pool.take(key, maxIdle: self.maxIdle) {
                    gate.leave()
                    return begin(parked, reused: true)
                }
                guard writer.isWaiting else {
                    gate.leave()
                    return outcome.succeed(.clientGone)
                }
                self.open(target, key: key, on: loop).assumeIsolated().whenComplete { result in
                    gate.leave()
                    switch result {
                    case .success(let connection): begin(connection, reused: false)
                    case .failure(let error): outcome.succeed(.failed(nil, .transport(error)))
                    }
                }
            }
        }
        if let parked = pool.take(key, maxIdle: maxIdle) {
            begin(parked, reused: true)
        } else {
            connect()
        }
        prewarm(target, key: key, on: loop)
        return outcome.futureResult
    }

    /// Idle pooled connections to the upstream of `url` (for tests).
    func idleConnections(to url: String) -> Int {
        (try? UpstreamTarget(url)).map { pool.count(upstream: $0.key) } ?? 0
    }

    /// Closes every pooled connection (at shutdown; exchanges in flight finish on their own).
    public func shutdown() {
        for connection in pool.drain() { connection.channel.close(promise: nil) }
    }

    /// Opens a connection ahead of need while fewer than `warm` are idle or being opened for
    /// `key` (one at a time per request, so a burst does not double its connections).
    private func prewarm(_ target: UpstreamTarget, key: ConnectionPool.Key, on loop: any EventLoop) {
        guard warm > 0, pool.reserveWarm(key, target: warm) else { return }
        let pool = self.pool
        open(target, key: key, on: loop).whenComplete { result in
            pool.warmed(key)
            if case .success(let connection) = result { pool.park(key, connection) }
        }
    }

    /// A new connection to `target` on `loop`, with errors as ``UpstreamError``s.
    private func open(_ target: UpstreamTarget, key: ConnectionPool.Key, on loop: any EventLoop) -> EventLoopFuture<PooledConnection> {
        let context: NIOSSLContext?
        do {
            context = try target.tls ? self.context() : nil
        } catch {
            return loop.makeFailedFuture(UpstreamError.transport(error))  // an unreadable CA file, say
        }
        let pool = self.pool
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let context {
                        try sync.addHandler(NIOSSLClientHandler(context: context, serverHostname: target.serverName))
                    }
                    try sync.addHTTPClientHandlers()
                    try sync.addHandler(UpstreamConnection(key: key, pool: pool))
                }
            }
        // An IP literal (every worker's engine, most workers) is connected without resolving:
        // NIO resolves names with getaddrinfo on a shared thread pool, which a burst of new
        // connections queues behind.
        let connected = target.address.map { bootstrap.connect(to: $0) } ?? bootstrap.connect(host: target.host, port: target.port)
        return connected
            .flatMapThrowing { channel in
                let handler = try channel.pipeline.syncOperations.handler(type: UpstreamConnection.self)
                return PooledConnection(channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
            }
            .flatMapErrorThrowing { error in throw Self.connectError(error, host: target.host) }
    }

    private static func connectError(_ error: any Error, host: String) -> UpstreamError {
        switch error {
        case let error as UpstreamError: error
        case ChannelError.connectTimeout: .connectTimeout
        case let error as NIOConnectionError where error.connectionErrors.isEmpty: .transport("cannot resolve \(host)")
        case is NIOConnectionError: .connectionRefused
        case let error as IOError where error.errnoCode == ECONNREFUSED: .connectionRefused
        default: .transport(error)
        }
    }

    private func context() throws -> NIOSSLContext {
        try sslContext.withLock { cached in
            if let cached { return cached }
            let context = try NIOSSLContext(configuration: tls ?? .makeClientConfiguration())
            cached = context
            return context
        }
    }
}
