import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// Forwards one buffered request to an upstream and relays the answer unchanged.
///
/// Used on both hops (hub -> worker, worker -> llama-server), so there is one relay:
/// - nothing throws; a failure *before the client saw a byte* comes back as
///   ``Result/failed(status:reason:)`` so the caller can retry elsewhere;
/// - a non-streamed answer is read whole first (llama-server sends it in one piece at
///   the end anyway), so a failure while reading it is still a clean 502 or a retry;
/// - an event stream is relayed chunk by chunk as it arrives, never buffered; if it
///   breaks or stays silent longer than the idle timeout, the client gets a final
///   `data: {"error":...}` event and a clean end instead of a hang.
public struct UpstreamForwarder: Sendable {
    /// When the first body byte arrived and the longest silence between two chunks.
    public struct Timing: Sendable, Equatable {
        public var firstByte: Duration?
        public var maxGap: Duration = .zero
    }

    /// How a relayed response ended, reported exactly once.
    public enum Finish: Sendable, Equatable {
        case completed(Timing)
        /// The upstream failed or went silent after the client had bytes.
        case upstreamFailed(String, Timing)
        /// The client went away.
        case clientGone(Timing)
    }

    public enum Result: Sendable {
        case response(Response)
        /// No byte reached the client. `reply` is the upstream's intercepted error answer
        /// (nil for transport errors), kept so the last one can still be passed on.
        case failed(reply: ErrorReply?, reason: String)
        /// The client left while the upstream was still working on the answer; the upstream
        /// request was cancelled (its connection closed, so llama-server stops generating).
        case clientGone
    }

    /// An upstream error answer (5xx, 429) held back for a retry.
    public struct ErrorReply: Sendable {
        public var status: HTTPResponse.Status
        public var headers: HTTPFields
        public var body: ByteBuffer

        public var response: Response {
            Response(status: status, headers: headers, body: .init(byteBuffer: body))
        }
    }

    public struct Options: Sendable {
        /// Deadline for the response head.
        public var headTimeout: Duration
        /// Longest silence between chunks of an event stream.
        public var idleTimeout: Duration
        /// Turn 5xx and 429 heads into ``Result/failed(status:reason:)`` instead of passing them on.
        public var interceptRetryable: Bool
        /// Largest non-streamed body read into memory.
        public var maxBufferedBody: Int

        public init(headTimeout: Duration, idleTimeout: Duration, interceptRetryable: Bool = false,
                    maxBufferedBody: Int = 256 * 1024 * 1024) {
            self.headTimeout = headTimeout
            self.idleTimeout = idleTimeout
            self.interceptRetryable = interceptRetryable
            self.maxBufferedBody = maxBufferedBody
        }
    }

    public let client: HTTPClient

    public init(client: HTTPClient) { self.client = client }

    /// An HTTP client tuned for proxying: no redirects, no decompression, a large pool,
    /// connect failures reported at once (the caller fails over). `readTimeout` must cover
    /// the longest wait for a response head; silences inside streams are bounded by
    /// ``Options/idleTimeout`` instead.
    /// Connections a client may open to one host (a worker, or an engine): as many as the
    /// streams Caravan will carry at once. AsyncHTTPClient's default (8) would queue the
    /// ninth concurrent stream inside the client, invisible to routing; connections are only
    /// opened when needed and idle ones are closed.
    public static let connectionsPerHost = 16_384

    public static func makeClient(connectTimeout: Duration, readTimeout: Duration, poolSize: Int,
                                  tls: TLSConfiguration? = nil) -> HTTPClient {
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tls,
            redirectConfiguration: .disallow,
            timeout: .init(connect: .init(connectTimeout), read: .init(readTimeout)),
            decompression: .disabled
        )
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = poolSize
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.httpVersion = .http1Only
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public func forward(
        url: String,
        method: HTTPRequest.Method,
        headers: [(String, String)],
        body: ByteBuffer,
        options: Options,
        logger: Logger,
        clientDeparture: EventLoopFuture<Void>? = nil,
        onFinish: @escaping @Sendable (Finish) -> Void = { _ in }
    ) async -> Result {
        let start = ContinuousClock.now
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method.rawValue)
        request.headers = HTTPHeaders(headers)
        if body.readableBytes > 0 || method == .post || method == .put { request.body = .bytes(body) }
        let upstream: HTTPClientResponse
        do {
            // A non-streamed answer's head comes only after the whole generation: a client
            // that leaves meanwhile must stop it, not leave the GPU working for nobody.
            upstream = try await Self.unlessClientLeaves(clientDeparture) { [client, request] in
                try await client.execute(request, timeout: .init(options.headTimeout))
            }
        } catch is ClientDeparted {
            return .clientGone
        } catch {
            return .failed(reply: nil, reason: Self.describe(error))
        }
        let status = Int(upstream.status.code)
        let responseStatus = HTTPResponse.Status(code: status, reasonPhrase: upstream.status.reasonPhrase)
        let responseHeaders = HTTPForwarding.responseHeaders(upstream.headers.map { ($0.name, $0.value) })
        if options.interceptRetryable && (status >= 500 || status == 429) {
            guard let body = try? await upstream.body.collect(upTo: 1024 * 1024) else {
                return .failed(reply: nil, reason: "HTTP \(status), body unreadable")
            }
            return .failed(reply: ErrorReply(status: responseStatus, headers: responseHeaders, body: body),
                           reason: "HTTP \(status)")
        }
        let isEventStream = upstream.headers.first(name: "content-type")?.hasPrefix("text/event-stream") ?? false
        guard isEventStream else {
            let bytes: ByteBuffer
            do {
                bytes = try await upstream.body.collect(upTo: options.maxBufferedBody)
            } catch {
                return .failed(reply: nil, reason: "failed while reading the response: \(Self.describe(error))")
            }
            // No first-byte time: llama-server sends a non-streamed head only after generating
            // every token, so that time measures the whole generation, not the worker's health.
            onFinish(.completed(Timing()))
            return .response(Response(status: responseStatus, headers: responseHeaders, body: .init(byteBuffer: bytes)))
        }
        let upstreamBody = upstream.body
        let idleTimeout = options.idleTimeout
        let relay = ResponseBody { writer in
            let tracker = StreamTracker(start: start)
            let (chunks, feed) = AsyncThrowingStream<ByteBuffer, any Error>.makeStream()
            var clientGone = false
            let finish: Finish = try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        for try await chunk in upstreamBody {
                            tracker.received()
                            feed.yield(chunk)
                        }
                        feed.finish()
                    } catch {
                        feed.finish(throwing: error)
                    }
                }
                group.addTask {
                    let period = min(idleTimeout / 4, .seconds(1))
                    while true {
                        try await Task.sleep(for: period)
                        if tracker.silence() > idleTimeout {
                            feed.finish(throwing: IdleTimeout(limit: idleTimeout))
                            return
                        }
                    }
                }
                defer { group.cancelAll() }
                do {
                    for try await chunk in chunks {
                        do {
                            try await writer.write(chunk)
                        } catch {
                            clientGone = true
                            throw error
                        }
                    }
                    return .completed(tracker.timing)
                } catch where !clientGone {
                    let reason = Self.describe(error)
                    logger.warning("upstream stream failed", metadata: ["url": "\(url)", "error": "\(reason)"])
                    try await writer.write(OpenAIError.upstream("The upstream failed while streaming: \(reason)",
                                                                 code: "upstream_stream_error").sseEvent)
                    return .upstreamFailed(reason, tracker.timing)
                } catch {
                    onFinish(.clientGone(tracker.timing))
                    throw error
                }
            }
            onFinish(finish)
            try await writer.finish(nil)
        }
        return .response(Response(status: responseStatus, headers: responseHeaders, body: relay))
    }

    /// Runs `work`, cancelling it if `departure` completes first (then throws `ClientDeparted`).
    static func unlessClientLeaves<T: Sendable>(_ departure: EventLoopFuture<Void>?,
                                                _ work: @escaping @Sendable () async throws -> T) async throws -> T {
        guard let departure else { return try await work() }
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await work() }
            group.addTask {
                await departure.cancellableWait()
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else { throw ClientDeparted() }
            return value
        }
    }

    /// A short, secret-free description of a transport error for envelopes and logs.
    public static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout: return "connect timeout"
            case .readTimeout: return "read timeout"
            case .deadlineExceeded: return "timed out waiting for the response head"
            case .remoteConnectionClosed: return "connection closed by upstream"
            case .cancelled: return "cancelled"
            default: return "\(error)"
            }
        }
        if let error = error as? IdleTimeout { return "no data for \(error.limit)" }
        if error is NIOConnectionError { return "connection refused" }
        if let error = error as? IOError {
            return error.errnoCode == ECONNREFUSED ? "connection refused" : "I/O error (errno \(error.errnoCode))"
        }
        if let error = error as? ChannelError { return "channel error (\(error))" }
        if error is NIOTooManyBytesError { return "response too large" }
        return String(describing: type(of: error))
    }
}

/// The client left before the upstream's answer began.
struct ClientDeparted: Error {}

/// Raised when an event stream stays silent longer than the idle timeout.
struct IdleTimeout: Error {
    let limit: Duration
}

/// Arrival times of a relayed stream's chunks.
final class StreamTracker: Sendable {
    private let state: Mutex<(last: ContinuousClock.Instant, timing: UpstreamForwarder.Timing)>
    private let start: ContinuousClock.Instant

    init(start: ContinuousClock.Instant) {
        self.start = start
        self.state = Mutex((start, UpstreamForwarder.Timing()))
    }

    func received() {
        let now = ContinuousClock.now
        state.withLock { state in
            if state.timing.firstByte == nil {
                state.timing.firstByte = now - start
            } else {
                state.timing.maxGap = max(state.timing.maxGap, now - state.last)
            }
            state.last = now
        }
    }

    func silence() -> Duration { ContinuousClock.now - state.withLock { $0.last } }

    var timing: UpstreamForwarder.Timing { state.withLock { $0.timing } }
}

extension TimeAmount {
    /// Converts a Swift `Duration` to NIO's `TimeAmount`.
    public init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
