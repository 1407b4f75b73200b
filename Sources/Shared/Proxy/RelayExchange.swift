import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import Server
import Wire

/// How a relay ended before or when its answer began.
enum RelayOutcome {
    /// The answer is on its way to the client (whole, or its head for a stream); its end
    /// is reported through the exchange's `onFinish`.
    case relayed
    /// No byte reached the client: `reply` is the upstream's error answer when one was held
    /// back for a retry (nil for transport errors).
    case failed(UpstreamForwarder.ErrorReply?, UpstreamError)
    /// The client left before the answer began; the upstream request was stopped.
    case clientGone
}

/// One exchange on a connection, on the connection's (and the client's) event loop: the
/// request, what the state machine needs to know, the client's writer and where the
/// outcome goes. A class: the relay reads it for every chunk, and a copy of this many
/// references would cost as many retains.
final class Exchange {
    let head: HTTPRequestHead
    let body: ByteBuffer
    let limits: UpstreamConnectionStateMachine.Limits
    let writer: any ResponseSink
    let promise: EventLoopPromise<RelayOutcome>
    /// Hold back 5xx (but 501) and 429 answers for a retry instead of passing them on.
    let interceptRetryable: Bool
    let shutdown: ShutdownGrace?
    let onFirstByte: (@Sendable () -> Void)?
    let onFinish: @Sendable (UpstreamForwarder.Finish) -> Void
    let logger: Logger

    init(head: HTTPRequestHead, body: ByteBuffer, limits: UpstreamConnectionStateMachine.Limits, writer: any ResponseSink,
         promise: EventLoopPromise<RelayOutcome>, interceptRetryable: Bool, shutdown: ShutdownGrace?,
         onFirstByte: (@Sendable () -> Void)?, onFinish: @escaping @Sendable (UpstreamForwarder.Finish) -> Void, logger: Logger) {
        self.head = head
        self.body = body
        self.limits = limits
        self.writer = writer
        self.promise = promise
        self.interceptRetryable = interceptRetryable
        self.shutdown = shutdown
        self.onFirstByte = onFirstByte
        self.onFinish = onFinish
        self.logger = logger
    }

    var id: Int { limits.id }
}
