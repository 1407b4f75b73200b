/// Why one exchange with an upstream (a worker, or a worker's engine) failed.
///
/// The one outcome vocabulary of the data plane: the proxy raises it, the circuit breaker
/// counts it and the retry policy classifies it, always by ``kind``, never by text. The
/// ``description`` is short and secret-free, for logs, events and error envelopes. A public
/// struct around a kind, as async-http-client's `HTTPClientError` is, so new kinds can come
/// without breaking a `switch`, and `kind.rawValue` is safe as a metric label.
public struct UpstreamError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// The upstream's URL is not `http(s)://host[:port]/...`.
        case badURL = "bad_url"
        case connectTimeout = "connect_timeout"
        case connectionRefused = "connection_refused"
        /// The connection closed or was reset after the request went out, before any answer.
        case resetBeforeHead = "reset_before_head"
        /// No response head within the head timeout.
        case headTimeout = "head_timeout"
        /// A stream stayed silent longer than the idle timeout.
        case gapTimeout = "gap_timeout"
        /// The connection closed in the middle of a stream.
        case closedMidStream = "closed_mid_stream"
        /// A non-streamed answer larger than the proxy buffers.
        case tooLarge = "too_large"
        /// The upstream answered with a 5xx (or a 429 that was intercepted for a retry).
        case httpStatus = "http_status"
        /// The breaker's judgement of an answer that did come: its first byte was too slow.
        case slowFirstByte = "slow_first_byte"
        /// The breaker's judgement of a stream that did come: a gap between events was too slow.
        case slowGap = "slow_gap"
        /// TLS failures, I/O errors on an open connection.
        case transport
        /// The upstream's answer is not valid HTTP. A request can cause it (a hop that could not
        /// parse what it was sent and answered badly), so it is judged by comparison (``Blame``).
        case badResponse = "bad_response"
        /// The stream's reader (the client, through the relay) took nothing for too long: the
        /// upstream is stopped so a stalled client cannot hold an engine slot. The client's fault.
        case readerStalled = "reader_stalled"
        /// This process is shutting down and the exchange outlived its grace. Nobody's fault.
        case shuttingDown = "shutting_down"
        /// The worker answered "full" (``admissionHeader``): it holds as many requests for the
        /// model as it admits. Not a failure: the request goes elsewhere or waits in the queue.
        case workerFull = "worker_full"
    }

    public let kind: Kind
    public let description: String
    /// The upstream's status, for ``Kind/httpStatus``.
    public let status: Int?

    public init(_ kind: Kind, _ description: String, status: Int? = nil) {
        self.kind = kind
        self.description = description
        self.status = status
    }

    /// Whether the upstream is to blame: what its circuit breaker counts as a failure.
    /// A 429 (busy) says nothing about its health; a stalled reader or a shutdown is not its doing.
    public var blamesUpstream: Bool {
        switch kind {
        case .readerStalled, .shuttingDown, .badURL, .workerFull: false
        case .httpStatus: status != 429
        default: true
        }
    }

    public static func badURL(_ url: String) -> Self { Self(.badURL, "not an http(s) URL: \(url)") }
    public static let connectTimeout = Self(.connectTimeout, "connect timeout")
    public static let connectionRefused = Self(.connectionRefused, "connection refused")
    public static let resetBeforeHead = Self(.resetBeforeHead, "connection closed by upstream before it answered")
    public static func headTimeout(_ limit: Duration) -> Self { Self(.headTimeout, "timed out waiting for the response") }
    public static func gapTimeout(_ limit: Duration) -> Self { Self(.gapTimeout, "no data for \(limit)") }
    public static let closedMidStream = Self(.closedMidStream, "connection closed by upstream")
    public static func tooLarge(_ limit: Int) -> Self { Self(.tooLarge, "response larger than \(limit) bytes") }
    public static func httpStatus(_ status: Int) -> Self { Self(.httpStatus, "HTTP \(status)", status: status) }
    /// The first byte came (or is still due) later than `limit` (`slow_ttfb`).
    public static func slowFirstByte(_ limit: Duration) -> Self { Self(.slowFirstByte, "first byte slower than \(limit)") }
    /// A gap between a stream's events was longer than `limit` (`slow_gap`).
    public static func slowGap(_ limit: Duration) -> Self { Self(.slowGap, "slow gap between events (over \(limit))") }
    public static func transport(_ reason: String) -> Self { Self(.transport, reason) }
    public static func badResponse(_ reason: String) -> Self { Self(.badResponse, "the answer is not valid HTTP (\(reason))") }
    public static func readerStalled(_ limit: Duration) -> Self { Self(.readerStalled, "the client read nothing for \(limit)") }
    public static let shuttingDown = Self(.shuttingDown, "the server is shutting down")
    public static let workerFull = Self(.workerFull, "worker full", status: 429)
}
