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

/// Forwards one buffered request to an upstream and relays the answer unchanged.
///
/// Used on both hops (hub -> worker, worker -> llama-server), so there is one relay:
/// - nothing throws; a failure *before the client saw a byte* comes back as
///   ``Result/failed(reply:error:)`` so the caller can retry elsewhere;
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
        /// Body chunks received, and when the last one came (from the request's start).
        public var chunks = 0
        public var lastByte: Duration?
        /// Tokens in and out, from the answer's final `usage` (or `timings`), when asked for.
        public var usage: TokenUsage?

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
        case response(Response)
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

        public var response: Response {
            Response(status: status, headers: headers, body: .init(byteBuffer: body))
        }
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
        /// Longest a write to the client may wait for it to read; then its connection is
        /// closed and the stream ends as ``Finish/clientGone(_:)`` at once (nil: no limit).
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

    public func forward(
        url: String,
        method: HTTPRequest.Method,
        headers: [(String, String)],
        body: ByteBuffer,
        options: Options,
        logger: Logger,
        clientDeparture: ClientDeparture? = nil,
        onFirstByte: (@Sendable () -> Void)? = nil,
        onFinish: @escaping @Sendable (Finish) -> Void = { _ in }
    ) async -> Result {
        let request = UpstreamRequest(url: url, method: HTTPMethod(rawValue: method.rawValue), headers: headers, body: body)
        let upstream: UpstreamResponse
        do {
            // A non-streamed answer's head comes only after the whole generation: a client
            // that leaves meanwhile must stop it, not leave the GPU working for nobody.
            upstream = try await client.execute(request, headTimeout: options.headTimeout, idleTimeout: options.idleTimeout,
                                                maxBufferedBody: options.maxBufferedBody, departure: clientDeparture,
                                                onFirstByte: onFirstByte, readUsage: options.readUsage, shutdown: options.shutdown)
        } catch is ClientDeparted {
            return .clientGone
        } catch let error as UpstreamError where error.kind == .shuttingDown {
            return .shuttingDown
        } catch {
            return .failed(reply: nil, error: .transport(error))
        }
        let status = Int(upstream.head.status.code)
        let responseStatus = HTTPResponse.Status(code: status, reasonPhrase: upstream.head.status.reasonPhrase)
        let responseHeaders = HTTPForwarding.responseHeaders(upstream.head.headers)
        // 501 is the engine saying it cannot do this at all (llama-server without --reranking, a
        // model without FIM tokens): another worker's copy would say the same.
        let retryable = options.interceptRetryable && (status >= 500 && status != 501 || status == 429)
        switch upstream.body {
        case .complete(let bytes):
            if retryable {
                return .failed(reply: ErrorReply(status: responseStatus, headers: responseHeaders, body: bytes),
                               error: .httpStatus(status))
            }
            // No first-byte time: llama-server sends a non-streamed head only after generating
            // every token, so that time measures the whole generation, not the worker's health.
            var timing = Timing()
            if options.readUsage { timing.usage = ResponseTail.usage(in: bytes) }
            onFinish(Self.finish(status: status, timing: timing))
            return .response(Response(status: responseStatus, headers: responseHeaders, body: .init(byteBuffer: bytes)))
        case .stream(let events) where retryable:
            var bytes = ByteBuffer()
            do {
                for try await chunk in events where bytes.readableBytes < 1024 * 1024 { bytes.writeImmutableBuffer(chunk) }
            } catch {
                return .failed(reply: nil, error: UpstreamError(.httpStatus, "HTTP \(status), body unreadable", status: status))
            }
            return .failed(reply: ErrorReply(status: responseStatus, headers: responseHeaders, body: bytes),
                           error: .httpStatus(status))
        case .stream(let events):
            let finish = FinishOnce(onFinish)
            let relay = ResponseBody { writer in
                // A client that stops reading blocks `write` for as long as its connection
                // lives. The deadline closes that connection, which fails the write, and ends
                // the request at once (lease, limits and breaker sample back), even if the
                // write were never to return.
                let deadline = WriteDeadline(timeout: options.clientWriteTimeout, departure: clientDeparture) {
                    logger.warning("client stopped reading a stream; connection closed",
                                   metadata: ["client_write_timeout": "\(options.clientWriteTimeout.map { "\($0)" } ?? "")"])
                    finish(.clientGone(events.timing))
                }
                defer { deadline?.stop() }
                let watch = options.shutdown?.onExpiry { events.abort(.shuttingDown) }
                defer { options.shutdown?.cancel(watch) }
                var clientGone = false
                do {
                    for try await chunk in events {
                        do {
                            deadline?.begin()
                            try await writer.write(chunk)
                            deadline?.end()
                        } catch {
                            clientGone = true
                            throw error
                        }
                    }
                    finish(Self.finish(status: status, timing: events.timing))
                } catch let error as UpstreamError where error.kind == .readerStalled {
                    // The client stopped reading: its problem, not the upstream's.
                    logger.warning("client stopped reading a stream; upstream stopped", metadata: ["error": "\(error)"])
                    finish(.clientGone(events.timing))
                    clientDeparture?.closeConnection()
                    throw error
                } catch let error as UpstreamError where error.kind == .shuttingDown && !clientGone {
                    // Not the upstream's failure: this process ran out of shutdown grace.
                    logger.notice("stream ended: shutdown grace is over", metadata: ["url": "\(url)"])
                    deadline?.begin()
                    try await writer.write(OpenAIError.shuttingDown.sseEvent)
                    deadline?.end()
                    finish(.clientGone(events.timing))
                } catch where !clientGone {
                    let failure = UpstreamError.transport(error)
                    logger.warning("upstream stream failed", metadata: ["url": "\(url)", "error": "\(failure)"])
                    deadline?.begin()
                    try await writer.write(OpenAIError.upstream("The upstream failed while streaming: \(failure)",
                                                                 code: "upstream_stream_error").sseEvent)
                    deadline?.end()
                    finish(.upstreamFailed(failure, events.timing))
                } catch {
                    finish(.clientGone(events.timing))
                    throw error
                }
                try await writer.finish(nil)
            }
            return .response(Response(status: responseStatus, headers: responseHeaders, body: relay))
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
