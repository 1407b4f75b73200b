import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// Forwards one buffered request to an upstream and streams the answer back unchanged.
///
/// Used on both hops (hub -> worker, worker -> llama-server), so there is one relay:
/// response bytes are written to the client as they arrive (SSE events are never
/// buffered), and when an event stream breaks after its head was sent the client gets a
/// final `data: {"error":...}` event and a clean end instead of a hang.
public struct UpstreamForwarder: Sendable {
    /// How a relayed response ended, reported once per forwarded request.
    public enum Outcome: Sendable, Equatable {
        case completed
        /// The upstream failed after the head was sent.
        case upstreamFailed
        /// The client went away.
        case clientGone
    }

    public let client: HTTPClient

    public init(client: HTTPClient) { self.client = client }

    /// An HTTP client tuned for proxying: no redirects, no decompression, a large pool,
    /// connect failures reported at once (the caller fails over), `idle` bounding the gap
    /// between streamed chunks.
    public static func makeClient(connectTimeout: Duration, idleTimeout: Duration, poolSize: Int) -> HTTPClient {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .init(connectTimeout), read: .init(idleTimeout)),
            decompression: .disabled
        )
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = poolSize
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.httpVersion = .http1Only
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// Sends the request and returns a response that streams the upstream body.
    ///
    /// Throws before the head (connect error, timeout, reset) so the caller can retry;
    /// after the head nothing throws here: failures end the relayed body.
    public func forward(
        url: String,
        method: HTTPRequest.Method,
        headers: [(String, String)],
        body: ByteBuffer,
        headTimeout: Duration,
        logger: Logger,
        onFinish: @escaping @Sendable (Outcome) -> Void = { _ in }
    ) async throws -> Response {
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method.rawValue)
        request.headers = HTTPHeaders(headers)
        if body.readableBytes > 0 || method == .post || method == .put {
            request.body = .bytes(body)
        }
        let upstream = try await client.execute(request, timeout: .init(headTimeout))
        let isEventStream = upstream.headers.first(name: "content-type")?.hasPrefix("text/event-stream") ?? false
        let upstreamBody = upstream.body
        let responseBody = ResponseBody { writer in
            var clientGone = false
            do {
                for try await chunk in upstreamBody {
                    do {
                        try await writer.write(chunk)
                    } catch {
                        clientGone = true
                        throw error
                    }
                }
            } catch {
                if clientGone {
                    onFinish(.clientGone)
                    throw error
                }
                logger.warning("upstream failed mid-response", metadata: ["url": "\(url)", "error": "\(error)"])
                onFinish(.upstreamFailed)
                guard isEventStream else { throw error }
                let event = OpenAIError.upstream("The upstream failed while streaming: \(Self.describe(error))",
                                                 code: "upstream_stream_error").sseEvent
                try await writer.write(event)
                try await writer.finish(nil)
                return
            }
            onFinish(.completed)
            try await writer.finish(nil)
        }
        return Response(
            status: HTTPResponse.Status(code: Int(upstream.status.code), reasonPhrase: upstream.status.reasonPhrase),
            headers: HTTPForwarding.responseHeaders(upstream.headers.map { ($0.name, $0.value) }),
            body: responseBody
        )
    }

    /// A short, secret-free description of a transport error for envelopes and logs.
    public static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout: return "connect timeout"
            case .readTimeout: return "idle timeout"
            case .deadlineExceeded: return "timed out waiting for the response head"
            case .remoteConnectionClosed: return "connection closed by upstream"
            default: return "\(error)"
            }
        }
        if error is NIOConnectionError { return "connection refused" }
        if let error = error as? IOError { return "I/O error (\(error.errnoCode))" }
        if let error = error as? ChannelError { return "channel error (\(error))" }
        return String(describing: type(of: error))
    }
}

extension TimeAmount {
    /// Converts a Swift `Duration` to NIO's `TimeAmount`.
    public init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
