import Wire
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import Server

/// The data plane's HTTP/1.1 client: one request per pooled connection, answers handed
/// over whole or, for event streams, as a back-pressured stream of chunks.
///
/// Why not AsyncHTTPClient: a proxy hop with it cost several hundred microseconds of CPU per
/// request (a task group, a connection-pool state machine, a hop per body part). Here a
/// non-streamed answer crosses from the event loop to the caller once, complete; the head
/// deadline, the silence limit of a stream, client departure and pooling all live on the
/// connection's event loop, without locks or extra tasks.
public final class UpstreamClient: Sendable {
    private let group: any EventLoopGroup
    private let connectTimeout: TimeAmount
    private let maxIdle: TimeAmount
    private let tls: TLSConfiguration?
    private let sslContext = Mutex<NIOSSLContext?>(nil)
    private let pool = ConnectionPool()
    private let exchanges = Atomic<Int>(0)
    private let logger: Logger

    /// - Parameters:
    ///   - maxIdle: a pooled connection idle longer than this is closed rather than reused; the
    ///     upstream may be closing it at that very moment (llama-server does after 5 s).
    ///   - tls: trust settings for `https` upstreams (hubs reaching TLS workers).
    ///   - logger: where a retry on a new connection is noted (debug level).
    public init(connectTimeout: Duration, maxIdle: Duration = .seconds(2), tls: TLSConfiguration? = nil,
                logger: Logger = Logger(label: "caravan.upstream"),
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.group = group
        self.logger = logger
        self.connectTimeout = TimeAmount(connectTimeout)
        self.maxIdle = TimeAmount(maxIdle)
        self.tls = tls
    }

    /// Sends `request` and returns the answer's head and body. The body is complete unless the
    /// answer is an event stream. Throws ``UpstreamError`` (or
    /// ``ClientDeparted`` when `departure` completes before the answer was handed over).
    public func execute(_ request: UpstreamRequest, headTimeout: Duration, idleTimeout: Duration,
                        maxBufferedBody: Int, departure: ClientDeparture? = nil,
                        onFirstByte: (@Sendable () -> Void)? = nil, readUsage: Bool = false,
                        shutdown: ShutdownGrace? = nil) async throws -> UpstreamResponse {
        let target = try UpstreamTarget(request.url)
        let start = NIODeadline.now()
        let headDeadline = start + TimeAmount(headTimeout)  // a retry gets what is left, not a new timeout
        var (connection, reused) = try await connection(to: target, reuse: true)
        while true {
            let loop = connection.handler.eventLoop
            let head = request.head(for: target)
            let limits = UpstreamConnectionStateMachine.Limits(
                id: exchanges.wrappingAdd(1, ordering: .relaxed).newValue, headDeadline: headDeadline, headTimeout: headTimeout,
                idleTimeout: TimeAmount(idleTimeout), maxBufferedBody: maxBufferedBody, start: start,
                keepAlive: !head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "close" }, readUsage: readUsage)
            let exchange = Exchange(head: head, body: request.body, limits: limits,
                                    promise: loop.makePromise(of: UpstreamResponse.self), onFirstByte: onFirstByte)
            let handler = connection.handler
            loop.execute { handler.value.begin(exchange) }
            let watch = departure?.onDeparture { loop.execute { handler.value.abandon(exchange.id) } }
            defer { departure?.cancel(watch) }
            // An answer still awaited when the shutdown grace is over ends then, too.
            let stop = shutdown?.onExpiry { loop.execute { handler.value.abort(exchange.id, UpstreamError.shuttingDown) } }
            defer { shutdown?.cancel(stop) }
            do {
                return try await exchange.promise.futureResult.get()
            } catch let error as UpstreamError where error.kind == .resetBeforeHead && reused {
                // A pooled connection that the upstream closed as we reused it (its idle close
                // crossed our request): nothing was answered, so the request goes again, once,
                // on a new connection. A new connection closed unanswered is a real failure.
                logger.debug("pooled connection closed before answering; retrying on a new one", metadata: ["upstream": "\(target.key)"])
                (connection, reused) = try await self.connection(to: target, reuse: false)
            }
        }
    }

    /// Idle pooled connections to the upstream of `url` (for tests).
    func idleConnections(to url: String) -> Int {
        (try? UpstreamTarget(url)).map { pool.count($0.key) } ?? 0
    }

    /// Closes every pooled connection (at shutdown; exchanges in flight finish on their own).
    public func shutdown() {
        for connection in pool.drain() { connection.channel.close(promise: nil) }
    }

    /// A pooled connection (`reused`) when `reuse` allows and one is idle, else a new one.
    private func connection(to target: UpstreamTarget, reuse: Bool) async throws -> (PooledConnection, reused: Bool) {
        if reuse, let parked = pool.take(target.key, maxIdle: maxIdle) { return (parked, true) }
        let context: NIOSSLContext?
        do {
            context = try target.tls ? self.context() : nil
        } catch {
            throw UpstreamError.transport(error)  // an unreadable CA file, say
        }
        let pool = self.pool
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
        do {
            let connection = try await bootstrap.connect(host: target.host, port: target.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let context {
                        try sync.addHandler(NIOSSLClientHandler(context: context, serverHostname: target.serverName))
                    }
                    try sync.addHTTPClientHandlers()
                    let handler = UpstreamConnection(key: target.key, pool: pool)
                    try sync.addHandler(handler)
                    return PooledConnection(channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
                }
            }
            return (connection, false)
        } catch ChannelError.connectTimeout {
            throw UpstreamError.connectTimeout
        } catch let error as NIOConnectionError where error.connectionErrors.isEmpty {
            throw UpstreamError.transport("cannot resolve \(target.host)")
        } catch is NIOConnectionError {
            throw UpstreamError.connectionRefused
        } catch let error as IOError where error.errnoCode == ECONNREFUSED {
            throw UpstreamError.connectionRefused
        } catch let error as IOError {
            throw UpstreamError.transport(error)
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
