import Wire
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Server

/// Forwards one claimed request to an upstream and relays the answer to its client.
///
/// Used on both hops (hub -> worker, worker -> llama-server), so there is one relay:
/// - nothing throws; a failure *before the client saw a byte* comes back as
///   ``Result/failed(reply:error:)`` so the caller can retry elsewhere;
/// - a non-streamed answer is read whole first (llama-server sends it in one piece at
///   the end anyway), so a failure while reading it is still a clean 502 or a retry;
/// - an event stream is relayed chunk by chunk as it arrives, on the client's event loop
///   (``UpstreamConnection``), never buffered; if it breaks or stays silent longer than the
///   idle timeout, the client gets a final `data: {"error":...}` event and a clean end
///   instead of a hang.
public struct UpstreamForwarder: Sendable {
    /// When the first body byte arrived and the longest silence between two chunks.
    public struct Timing: Sendable, Equatable {
        public var firstByte: Duration?
        public var maxGap: Duration = .zero
        /// Body chunks received, and when the last one came (from the request's start).
        public var chunks = 0
        public var lastByte: Duration?
        /// Tokens in and out, from the answer's final `usage` (or `timings`), when asked for.
        public var usage: TokenUsage?
        /// The status of a whole (non-streamed) answer; nil for a stream, which begins only with a 2xx.
        public var status: Int?

        /// The mean silence between chunks after the first (nil with fewer than two chunks).
        public var meanGap: Duration? {
            guard chunks > 1, let firstByte, let lastByte else { return nil }
            return (lastByte - firstByte) / (chunks - 1)
        }
    }

    /// How a relayed response ended, reported exactly once.
    public enum Finish: Sendable, Equatable {
        case completed(Timing)
        /// The upstream failed or went silent after the client had bytes, or its 5xx answer
        /// was passed on (the last attempt): a failure of the upstream either way.
        case upstreamFailed(UpstreamError, Timing)
        /// The upstream's 429 (busy) or 501 (not supported) was passed on: nothing about its health.
        case busy
        /// The client went away, or stopped reading until `clientWriteTimeout`.
        case clientGone(Timing)

        /// The stream's timing, when there was a stream.
        public var timing: Timing? {
            switch self {
            case .completed(let timing), .upstreamFailed(_, let timing), .clientGone(let timing): timing
            case .busy: nil
            }
        }
    }

    public enum Result: Sendable {
        /// The answer is on its way to the client (whole, or a stream's head); its end is
        /// reported to `onFinish`.
        case relayed
        /// No byte reached the client. `reply` is the upstream's intercepted error answer
        /// (nil for transport errors), kept so the last one can still be passed on.
        case failed(reply: ErrorReply?, error: UpstreamError)
        /// The client left while the upstream was still working on the answer; the upstream
        /// request was cancelled (its connection closed, so llama-server stops generating).
        case clientGone
        /// The shutdown grace ended before the answer began (no retry: this process is leaving).
        case shuttingDown
    }

    /// An upstream error answer (5xx, 429) held back for a retry.
    public struct ErrorReply: Sendable {
        public var status: HTTPResponse.Status
        public var headers: HTTPFields
        public var body: ByteBuffer
    }

    public struct Options: Sendable {
        /// Deadline for the response head.
        public var headTimeout: Duration
        /// Longest silence between chunks of an event stream.
        public var idleTimeout: Duration
        /// Turn 5xx and 429 heads into ``Result/failed(reply:error:)`` instead of passing them on.
        public var interceptRetryable: Bool
        /// Largest non-streamed body read into memory.
        public var maxBufferedBody: Int
        /// Longest a stream's client may take nothing (its connection not writable); then its
        /// connection is closed and the stream ends as ``Finish/clientGone(_:)`` (nil: the
        /// idle timeout).
        public var clientWriteTimeout: Duration?
        /// Read the answer's token usage into ``Timing/usage`` (the hub's metrics and access log).
        public var readUsage: Bool
        /// Ends streams still running when this process's shutdown grace is over.
        public var shutdown: ShutdownGrace?

        public init(headTimeout: Duration, idleTimeout: Duration, interceptRetryable: Bool = false,
                    maxBufferedBody: Int = 256 * 1024 * 1024, clientWriteTimeout: Duration? = nil,
                    readUsage: Bool = false, shutdown: ShutdownGrace? = nil) {
            self.readUsage = readUsage
            self.shutdown = shutdown
            self.headTimeout = headTimeout
            self.idleTimeout = idleTimeout
            self.interceptRetryable = interceptRetryable
            self.maxBufferedBody = maxBufferedBody
            self.clientWriteTimeout = clientWriteTimeout
        }
    }

    public let client: UpstreamClient

    public init(client: UpstreamClient) { self.client = client }

    /// Sends the request upstream and relays the answer to `exchange`'s client. Call on the
    /// exchange's event loop; the result comes back there.
    /// - Parameters:
    ///   - onFirstByte: called when a stream's first body byte arrives.
    ///   - onFinish: called once with how a relayed answer ended (not for the other results).
    public func forward(
        url: String,
        method: HTTPRequest.Method,
        headers: [(String, String)],
        body: ByteBuffer,
        options: Options,
        to exchange: ClientExchange,
        logger: Logger,
        onFirstByte: (@Sendable () -> Void)? = nil,
        onFinish: @escaping @Sendable (Finish) -> Void = { _ in }
    ) -> EventLoopFuture<Result> {
        exchange.eventLoop.preconditionInEventLoop()
        let request = UpstreamRequest(url: url, method: HTTPMethod(rawValue: method.rawValue), headers: headers, body: body)
        return client.relay(request, to: exchange.writer.value, options: options, logger: logger, onFirstByte: onFirstByte,
                            onFinish: onFinish).map { outcome in
            switch outcome {
            case .relayed: .relayed
            case .clientGone: .clientGone
            case .failed(_, let error) where error.kind == .shuttingDown: .shuttingDown
            case .failed(let reply, let error): .failed(reply: reply, error: error)
            }
        }
    }

    /// How an answer that was passed on ends for the breaker: a 5xx is the upstream's
    /// failure even when no retry is left to intercept it; a 429 says it was busy and a 501
    /// that it does not support the request, neither of which is about its health (a client
    /// calling /rerank on a model without reranking must not open the breaker for everyone).
    static func finish(status: Int, timing: Timing) -> Finish {
        if status == 429 || status == 501 { return .busy }
        if status >= 500 { return .upstreamFailed(.httpStatus(status), timing) }
        return .completed(timing)
    }
}
