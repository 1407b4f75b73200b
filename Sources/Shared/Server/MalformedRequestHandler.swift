import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes

/// Answers a request the HTTP parser rejects (oversized headers, broken framing) with an
/// OpenAI error envelope instead of Hummingbird's bare `400` with no body, then closes the
/// connection (the byte stream cannot be trusted after a parse error).
///
/// Installed through HTTP/1's `additionalChannelHandlers`, between the HTTP codec and
/// Hummingbird's request loop, it sees the parser's error before that loop does and keeps
/// it from going further. It writes only when every earlier request on the connection has
/// its complete response. Otherwise a response is in progress (the handler answered before
/// the request ended: a body that stopped arriving got its 408, then the connection stopped
/// reading): that response is finished first, then the connection closes.
public final class MalformedRequestHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = HTTPRequestPart
    public typealias InboundOut = HTTPRequestPart
    public typealias OutboundIn = HTTPResponsePart
    public typealias OutboundOut = HTTPResponsePart

    private var requests = 0
    private var responses = 0
    /// The latest request's end arrived (its body is whole).
    private var requestEnded = true
    /// A response's head went out and its end has not.
    private var responding = false
    private var failed = false
    /// Close once the response in progress has been written.
    private var closeAfterResponse = false

    public init() {}

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if failed { return }
        switch unwrapInboundIn(data) {
        case .head:
            requests += 1
            requestEnded = false
        case .end: requestEnded = true
        case .body: break
        }
        context.fireChannelRead(data)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else {
            if case .head(let head) = unwrapOutboundIn(data), head.status.code >= 200 { responding = true }
            return context.write(data, promise: promise)
        }
        responses += 1
        responding = false
        guard closeAfterResponse, responses == requests else { return context.write(data, promise: promise) }
        let written = promise ?? context.eventLoop.makePromise()
        let channel = context.channel
        written.futureResult.whenComplete { _ in channel.close(promise: nil) }
        context.write(data, promise: written)
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        guard !failed else { return }
        failed = true
        // The body of the request in progress broke (a chunk size that is not hex, say) and
        // nothing has been answered to it: it can never end, so it is answered here, at once,
        // instead of leaving its reader waiting for the rest until a timeout.
        let brokenBody = requests == responses + 1 && !requestEnded && !responding
        guard requests == responses || brokenBody else {
            closeAfterResponse = true
            // Bounded: a handler that never answers does not keep the connection.
            let channel = context.channel
            context.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
            return
        }
        let envelope = Self.envelope(for: parserError)
        let body = ByteBuffer(bytes: envelope.body)
        let head = HTTPResponse(status: envelope.status, headerFields: [
            .contentType: "application/json", .contentLength: String(body.readableBytes), .connection: "close",
        ])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        // Lingering close: stop sending, let the client's unsent rest arrive and be dropped,
        // then close. Closing at once, with its bytes unread, would reset the connection and
        // the client could lose the answer before reading it.
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
            channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        }
    }

    /// The status and envelope for a parse error: 431 for headers over the limit, 400 otherwise.
    static func envelope(for error: HTTPParserError) -> (status: HTTPResponse.Status, body: [UInt8]) {
        let error: OpenAIError = switch error {
        case .headerOverflow:
            OpenAIError(.headersTooLarge, message: "The request headers are larger than this server accepts (max_header_kb)")
        default:
            OpenAIError(.malformedHTTP, message: "The request is not valid HTTP/1.1 (\(HTTPParserError.phrase(error)))")
        }
        return (error.status, Array(error.body))
    }
}

extension HTTPParserError {
    /// Plain words for a parse error, for messages that reach clients (the enum's case names,
    /// `invalidHeaderToken`, are internal).
    public static func phrase(_ error: HTTPParserError) -> String {
        switch error {
        case .invalidURL, .invalidPath, .invalidQueryString, .invalidFragment: "invalid character in the target"
        case .invalidHeaderToken, .invalidCharactersUsed: "invalid character in a header"
        case .headerOverflow: "headers too large"
        case .invalidContentLength, .unexpectedContentLength: "invalid Content-Length"
        case .invalidChunkSize: "invalid chunk size"
        case .invalidMethod: "invalid method"
        case .invalidVersion: "invalid HTTP version"
        case .invalidStatus: "invalid status line"
        default: "malformed message"
        }
    }
}
