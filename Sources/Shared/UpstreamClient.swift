import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

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
            let exchange = Exchange(
                id: exchanges.wrappingAdd(1, ordering: .relaxed).newValue, head: request.head(for: target), body: request.body,
                headDeadline: headDeadline, headTimeout: headTimeout, idleTimeout: TimeAmount(idleTimeout),
                maxBufferedBody: maxBufferedBody, start: start, promise: loop.makePromise(of: UpstreamResponse.self),
                onFirstByte: onFirstByte, readUsage: readUsage)
            let handler = connection.handler
            loop.execute { handler.value.begin(exchange) }
            let watch = departure?.onDeparture { loop.execute { handler.value.abandon(exchange.id) } }
            defer { departure?.cancel(watch) }
            // An answer still awaited when the shutdown grace is over ends then, too.
            let stop = shutdown?.onExpiry { loop.execute { handler.value.abort(exchange.id, .shuttingDown) } }
            defer { shutdown?.cancel(stop) }
            do {
                return try await exchange.promise.futureResult.get()
            } catch UpstreamError.closedBeforeAnswer where reused {
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
            throw UpstreamError.connectionError(error)  // an unreadable CA file, say
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
            throw UpstreamError.protocolError("cannot resolve \(target.host)")
        } catch is NIOConnectionError {
            throw UpstreamError.connectionRefused
        } catch let error as IOError where error.errnoCode == ECONNREFUSED {
            throw UpstreamError.connectionRefused
        } catch let error as IOError {
            throw UpstreamError.connectionError(error)
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

/// One request for ``UpstreamClient``: the body is sent whole, with its length.
public struct UpstreamRequest: Sendable {
    public var url: String
    public var method: HTTPMethod
    public var headers: [(String, String)]
    public var body: ByteBuffer

    public init(url: String, method: HTTPMethod, headers: [(String, String)], body: ByteBuffer) {
        self.url = url
        self.method = method
        self.headers = headers
        self.body = body
    }

    func head(for target: UpstreamTarget) -> HTTPRequestHead {
        var fields = HTTPHeaders()
        fields.reserveCapacity(headers.count + 2)
        fields.add(name: "Host", value: target.hostHeader)
        for (name, value) in headers { fields.add(name: name, value: value) }
        if body.readableBytes > 0 || method == .POST || method == .PUT {
            fields.add(name: "Content-Length", value: String(body.readableBytes))
        }
        return HTTPRequestHead(version: .http1_1, method: method, uri: target.pathAndQuery, headers: fields)
    }
}

/// An upstream's answer.
public struct UpstreamResponse: Sendable {
    public enum Body: Sendable {
        case complete(ByteBuffer)
        case stream(UpstreamEventStream)
    }

    public var head: HTTPResponseHead
    public var body: Body
}

/// The chunks of an event stream as they arrive; reading slowly slows the upstream down
/// (reads pause above a few chunks), leaving the loop stops the upstream (its connection closes).
public struct UpstreamEventStream: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    typealias Producer = NIOThrowingAsyncSequenceProducer<
        ByteBuffer, any Error, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, StreamDelegate
    >

    let producer: Producer
    let timingBox: TimingBox
    let delegate: StreamDelegate

    /// First-byte time and the longest silence; final once the loop has ended.
    public var timing: UpstreamForwarder.Timing { timingBox.value }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: producer.makeAsyncIterator()) }

    /// Ends the stream now with `error` (the reader's next chunk throws it) and closes the
    /// upstream connection: a process shutting down ends the streams its grace did not cover
    /// (an answer not begun yet is ended by ``UpstreamClient/execute(_:headTimeout:idleTimeout:maxBufferedBody:departure:onFirstByte:readUsage:shutdown:)``).
    public func abort(_ error: UpstreamError) {
        let delegate = self.delegate
        delegate.handler.eventLoop.execute { delegate.handler.value.abort(delegate.id, error) }
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: Producer.AsyncIterator
        public mutating func next() async throws -> ByteBuffer? { try await base.next() }
    }
}

/// Why an upstream exchange failed; all of them happen before the caller saw any body byte,
/// except ``idle(_:)`` and ``closed`` while a stream is being relayed.
public enum UpstreamError: Error, Sendable, Equatable, CustomStringConvertible {
    case badURL(String)
    case connectTimeout
    case connectionRefused
    case headTimeout(Duration)
    case idle(Duration)
    /// The stream's reader (the client, through the relay) took nothing for this long; the
    /// upstream is stopped so a stalled client cannot hold an engine slot.
    case readerStalled(Duration)
    case closed
    /// The connection closed (or was reset) after the request was sent and before any answer.
    case closedBeforeAnswer
    case tooLarge(Int)
    /// This process is shutting down and the stream outlived its grace.
    case shuttingDown
    /// TLS failures, unparsable HTTP, I/O errors on an open connection.
    case protocolError(String)

    /// A short, secret-free name for an error raised on an upstream connection.
    static func connectionError(_ error: any Error) -> UpstreamError {
        switch error {
        case let error as NIOSSLError: .protocolError("TLS: \(error)")
        case let error as BoringSSLError: .protocolError("TLS: \(error)")
        case let error as HTTPParserError: .protocolError("invalid HTTP from upstream: \(error)")
        case let error as IOError: .protocolError("I/O error (errno \(error.errnoCode))")
        default: .protocolError(String(describing: type(of: error)))
        }
    }

    public var description: String {
        switch self {
        case .badURL(let url): "not an http(s) URL: \(url)"
        case .connectTimeout: "connect timeout"
        case .connectionRefused: "connection refused"
        case .headTimeout: "timed out waiting for the response"
        case .idle(let limit): "no data for \(limit)"
        case .readerStalled(let limit): "the client read nothing for \(limit)"
        case .closed: "connection closed by upstream"
        case .closedBeforeAnswer: "connection closed by upstream before it answered"
        case .tooLarge(let limit): "response larger than \(limit) bytes"
        case .protocolError(let reason): reason
        case .shuttingDown: "the server is shutting down"
        }
    }
}

/// The client left before the upstream's answer began.
public struct ClientDeparted: Error {}

/// Scheme, host and port of an upstream URL, parsed without Foundation (this runs per request).
struct UpstreamTarget: Sendable {
    var tls: Bool
    var host: String
    var port: Int
    var pathAndQuery: String
    /// The pool key: connections are shared per scheme, host and port.
    var key: String
    var hostHeader: String

    /// The name for SNI and certificate checks; nil for IP literals, which SNI forbids.
    var serverName: String? {
        host.contains(":") || host.allSatisfy({ $0.isNumber || $0 == "." }) ? nil : host
    }

    init(_ url: String) throws(UpstreamError) {
        let rest: Substring
        if url.hasPrefix("http://") {
            (tls, rest) = (false, url.dropFirst(7))
        } else if url.hasPrefix("https://") {
            (tls, rest) = (true, url.dropFirst(8))
        } else {
            throw .badURL(url)
        }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        pathAndQuery = slash == rest.endIndex ? "/" : String(rest[slash...])
        let hostPart: Substring
        let portPart: Substring?
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {  // [IPv6]:port
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            portPart = after.hasPrefix(":") ? after.dropFirst() : nil
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            portPart = authority[authority.index(after: colon)...]
        } else {
            (hostPart, portPart) = (authority, nil)
        }
        guard !hostPart.isEmpty else { throw .badURL(url) }
        host = String(hostPart)
        if let portPart {
            guard let number = Int(portPart), (1...65535).contains(number) else { throw .badURL(url) }
            port = number
        } else {
            port = tls ? 443 : 80
        }
        hostHeader = String(authority)
        key = (tls ? "https://" : "http://") + hostHeader
    }
}

/// One exchange on a connection, created by the caller and run on the connection's loop.
struct Exchange: Sendable {
    var id: Int
    var head: HTTPRequestHead
    var body: ByteBuffer
    /// When the head must have arrived (one deadline across a retry on a new connection).
    var headDeadline: NIODeadline
    /// The caller's head timeout, for the error.
    var headTimeout: Duration
    var idleTimeout: TimeAmount
    var maxBufferedBody: Int
    var start: NIODeadline
    var promise: EventLoopPromise<UpstreamResponse>
    /// Called on the connection's loop when an event stream's first body byte arrives.
    var onFirstByte: (@Sendable () -> Void)?
    /// Keep an event stream's last bytes and read its token usage at the end (``ResponseTail``).
    var readUsage = false
}

/// A connection in the pool, with its handler (usable only on the connection's loop).
struct PooledConnection: Sendable {
    var channel: any Channel
    var handler: NIOLoopBound<UpstreamConnection>
}

/// Idle connections per upstream, most recently used first out (the least likely to be stale).
final class ConnectionPool: Sendable {
    private struct Parked {
        var connection: PooledConnection
        var since: NIODeadline
    }

    /// More idle connections than this to one upstream are closed instead of kept.
    static let maxIdlePerUpstream = 512

    private let idle = Mutex<[String: [Parked]]>([:])

    func take(_ key: String, maxIdle: TimeAmount) -> PooledConnection? {
        let now = NIODeadline.now()
        var stale: [PooledConnection] = []
        let found = idle.withLock { idle -> PooledConnection? in
            while let parked = idle[key]?.popLast() {
                if now - parked.since < maxIdle, parked.connection.channel.isActive { return parked.connection }
                stale.append(parked.connection)
            }
            return nil
        }
        for connection in stale { connection.channel.close(promise: nil) }
        return found
    }

    func park(_ key: String, _ connection: PooledConnection) {
        let kept = idle.withLock { idle -> Bool in
            guard idle[key, default: []].count < Self.maxIdlePerUpstream else { return false }
            idle[key, default: []].append(Parked(connection: connection, since: .now()))
            return true
        }
        if !kept { connection.channel.close(promise: nil) }
    }

    func forget(_ key: String, _ channel: any Channel) {
        idle.withLock { idle in idle[key]?.removeAll { $0.connection.channel === channel } }
    }

    func count(_ key: String) -> Int { idle.withLock { $0[key]?.count ?? 0 } }

    func drain() -> [PooledConnection] {
        idle.withLock { idle in
            defer { idle = [:] }
            return idle.values.flatMap { $0.map(\.connection) }
        }
    }
}

/// Timing written by the event loop when a stream ends, read by the relay after it.
final class TimingBox: Sendable {
    private let state = Mutex(UpstreamForwarder.Timing())
    var value: UpstreamForwarder.Timing {
        get { state.withLock { $0 } }
        set { state.withLock { $0 = newValue } }
    }
}

/// Wakes the connection when the stream's reader wants more, or closes it when the reader left.
struct StreamDelegate: NIOAsyncSequenceProducerDelegate {
    let handler: NIOLoopBound<UpstreamConnection>
    let id: Int

    func produceMore() {
        let (handler, id) = (handler, id)
        handler.eventLoop.execute { handler.value.resumeReads(id) }
    }

    func didTerminate() {
        let (handler, id) = (handler, id)
        handler.eventLoop.execute { handler.value.readerLeft(id) }
    }
}

/// The handler at the end of an upstream connection's pipeline: writes one request, collects
/// or streams its answer, enforces the deadlines, and parks the connection when it can be reused.
final class UpstreamConnection: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    private enum State {
        case idle
        case awaitingHead(Exchange)
        case collecting(Exchange, HTTPResponseHead, ByteBuffer)
        case streaming(Exchange, UpstreamEventStream.Producer.Source, TimingBox)
        case closed
    }

    private let key: String
    private let pool: ConnectionPool
    private var context: ChannelHandlerContext?
    private var state = State.idle
    private var reusable = true
    private var deadline: Scheduled<Void>?
    private var readsPaused = false
    private var pausedSince = NIODeadline.now()
    private var readPending = false
    private var timing = UpstreamForwarder.Timing()
    private var lastChunk = NIODeadline.now()
    /// The stream's last bytes, when its exchange reads usage.
    private var tail: ResponseTail?

    init(key: String, pool: ConnectionPool) {
        self.key = key
        self.pool = pool
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func begin(_ exchange: Exchange) {
        guard case .idle = state, let context, context.channel.isActive else {
            exchange.promise.fail(UpstreamError.closedBeforeAnswer)
            return
        }
        state = .awaitingHead(exchange)
        reusable = !exchange.head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "close" }
        timing = .init()
        tail = exchange.readUsage ? ResponseTail() : nil
        deadline = context.eventLoop.assumeIsolated().scheduleTask(deadline: exchange.headDeadline) { [self] in
            fail(.headTimeout(exchange.headTimeout))
        }
        context.write(wrapOutboundOut(.head(exchange.head)), promise: nil)
        if exchange.body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(exchange.body))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    /// The caller's client left: drop the exchange unless its answer is already handed over.
    func abandon(_ id: Int) {
        switch state {
        case .awaitingHead(let exchange) where exchange.id == id, .collecting(let exchange, _, _) where exchange.id == id:
            fail(ClientDeparted())
        default:
            break
        }
    }

    func resumeReads(_ id: Int) {
        guard case .streaming(let exchange, _, _) = state, exchange.id == id, readsPaused else { return }
        readsPaused = false
        lastChunk = .now()  // the pause was the reader's, not upstream silence
        if readPending, let context {
            readPending = false
            context.read()
        }
    }

    /// Ends a stream in progress with `error` (see ``UpstreamEventStream/abort(_:)``).
    func abort(_ id: Int, _ error: UpstreamError) {
        switch state {
        case .awaitingHead(let exchange) where exchange.id == id, .collecting(let exchange, _, _) where exchange.id == id,
            .streaming(let exchange, _, _) where exchange.id == id:
            fail(error)
        default:
            break
        }
    }

    /// The stream's reader stopped before the end (its client left): stop the upstream.
    func readerLeft(_ id: Int) {
        guard case .streaming(let exchange, _, let box) = state, exchange.id == id else { return }
        box.value = finalTiming()
        state = .closed
        deadline?.cancel()
        context?.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        if readsPaused { readPending = true } else { context.read() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard case .awaitingHead(let exchange) = state, head.status.code >= 200 else { return }
            reusable = reusable && head.isKeepAlive
            let isEventStream = head.headers.first(name: "content-type")?.hasPrefix("text/event-stream") ?? false
            if isEventStream {
                deadline?.cancel()
                let box = TimingBox()
                let delegate = StreamDelegate(handler: NIOLoopBound(self, eventLoop: context.eventLoop), id: exchange.id)
                let stream = UpstreamEventStream.Producer.makeSequence(
                    backPressureStrategy: .init(lowWatermark: 4, highWatermark: 32), finishOnDeinit: false,
                    delegate: delegate)
                state = .streaming(exchange, stream.source, box)
                lastChunk = .now()
                watchSilence(exchange.idleTimeout)
                exchange.promise.succeed(UpstreamResponse(head: head, body: .stream(
                    UpstreamEventStream(producer: stream.sequence, timingBox: box, delegate: delegate))))
            } else {
                state = .collecting(exchange, head, context.channel.allocator.buffer(capacity: 0))
            }
        case .body(var chunk):
            switch state {
            case .collecting(let exchange, let head, var collected):
                guard collected.readableBytes + chunk.readableBytes <= exchange.maxBufferedBody else {
                    return fail(.tooLarge(exchange.maxBufferedBody))
                }
                state = .idle  // keeps `collected` uniquely referenced while it grows
                collected.writeBuffer(&chunk)
                state = .collecting(exchange, head, collected)
            case .streaming(let exchange, let source, _):
                let now = NIODeadline.now()
                if timing.firstByte == nil {
                    timing.firstByte = .nanoseconds((now - exchange.start).nanoseconds)
                    exchange.onFirstByte?()
                } else {
                    timing.maxGap = max(timing.maxGap, .nanoseconds((now - lastChunk).nanoseconds))
                }
                lastChunk = now
                timing.chunks += 1
                timing.lastByte = .nanoseconds((now - exchange.start).nanoseconds)
                tail?.append(chunk)
                if case .stopProducing = source.yield(chunk), !readsPaused {
                    readsPaused = true
                    pausedSince = now
                }
            default:
                break
            }
        case .end:
            switch state {
            case .collecting(let exchange, let head, let collected):
                finished()
                exchange.promise.succeed(UpstreamResponse(head: head, body: .complete(collected)))
            case .streaming(_, let source, let box):
                box.value = finalTiming()
                finished()
                source.finish()
            default:
                break
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .awaitingHead = state { fail(.closedBeforeAnswer) } else { fail(.closed) }
        pool.forget(key, context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case .awaitingHead = state, let error = error as? IOError, [ECONNRESET, EPIPE].contains(error.errnoCode) {
            return fail(.closedBeforeAnswer)
        }
        fail(UpstreamError.connectionError(error))
    }

    /// The stream's timing with the usage read from its tail.
    private func finalTiming() -> UpstreamForwarder.Timing {
        var final = timing
        final.usage = tail?.usage()
        return final
    }

    /// The exchange ended cleanly: park the connection for the next one, or close it.
    private func finished() {
        deadline?.cancel()
        deadline = nil
        readsPaused = false
        guard let context else { return }
        if reusable {
            state = .idle
            pool.park(key, PooledConnection(channel: context.channel, handler: NIOLoopBound(self, eventLoop: context.eventLoop)))
            if readPending {
                readPending = false
                context.read()
            }
        } else {
            state = .closed
            context.close(promise: nil)
        }
    }

    /// Ends the exchange in progress with `error` and closes the connection.
    private func fail(_ error: UpstreamError) { fail(error as any Error) }

    private func fail(_ error: any Error) {
        deadline?.cancel()
        deadline = nil
        switch state {
        case .awaitingHead(let exchange), .collecting(let exchange, _, _):
            exchange.promise.fail(error)
        case .streaming(_, let source, let box):
            box.value = finalTiming()
            source.finish(error)
        case .idle, .closed:
            break
        }
        state = .closed
        context?.close(promise: nil)
    }

    /// Fails the stream when the upstream stays silent for `limit`, or when its reader takes
    /// nothing for `limit` while reads are paused (checked at most once per limit).
    private func watchSilence(_ limit: TimeAmount) {
        guard let context else { return }
        let next = (readsPaused ? pausedSince : lastChunk) + limit
        deadline = context.eventLoop.assumeIsolated().scheduleTask(deadline: next) { [self] in
            guard case .streaming = state else { return }
            let now = NIODeadline.now()
            if readsPaused, now - pausedSince >= limit {
                fail(.readerStalled(.nanoseconds(limit.nanoseconds)))
            } else if !readsPaused, now - lastChunk >= limit {
                fail(.idle(.nanoseconds(limit.nanoseconds)))
            } else {
                watchSilence(limit)
            }
        }
    }
}
