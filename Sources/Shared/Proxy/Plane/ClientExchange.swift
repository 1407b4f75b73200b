import HTTPTypes
import NIOCore
import Synchronization
import Server

/// One request the data plane claimed: its head and whole body, its access record, and
/// the way to its client. Handed to a ``DataPlane``'s ``DataPlane/answer(_:)``; the answer
/// goes back through ``UpstreamForwarder`` (relayed on the client's event loop) or one of
/// the `respond` methods.
public final class ClientExchange: Sendable {
    public let request: HTTPRequest
    public let body: ByteBuffer
    public let access: AccessRecord
    /// The client's connection's departure (also used by waits before any answer: the queue).
    public let departure: ClientDeparture?
    /// The client connection's event loop: upstream connections for this exchange are taken there.
    public let eventLoop: any EventLoop
    /// The client's IP address (who is asking, when no credential says so).
    public let peer: String?
    let writer: NIOLoopBound<ClientWriter>
    private let extraHeaders: ExtraHeaders
    private let runner: DataPlaneRunner

    init(request: HTTPRequest, body: ByteBuffer, access: AccessRecord, departure: ClientDeparture?, peer: String?,
         writer: NIOLoopBound<ClientWriter>, headers: ExtraHeaders, runner: DataPlaneRunner) {
        self.peer = peer
        self.runner = runner
        self.request = request
        self.body = body
        self.access = access
        self.departure = departure
        self.eventLoop = writer.eventLoop
        self.writer = writer
        self.extraHeaders = headers
    }

    /// The request's path without its query.
    public var path: Substring { Self.requestPath(request.path) }

    /// The path of a request target, without its query.
    public static func requestPath(_ target: String?) -> Substring {
        let full = target ?? "/"
        return full.firstIndex(of: "?").map { full[..<$0] } ?? full[...]
    }

    /// The request's query (after `?`), if any.
    public var query: Substring? {
        guard let full = request.path, let mark = full.firstIndex(of: "?") else { return nil }
        return full[full.index(after: mark)...]
    }

    /// Adds a header to the answer, whoever writes it (set before the answer begins).
    public func addResponseHeader(_ name: HTTPField.Name, _ value: String) {
        extraHeaders.fields.withLock { $0[name] = value }
    }

    /// Runs a step that must wait (a token verification, an engine start) as a
    /// child task of the data plane's runner; the result comes back on this exchange's loop.
    public func run<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) -> EventLoopFuture<T> {
        runner.run(on: eventLoop, body)
    }

    /// Answers with `error`'s envelope, or not at all when the client has left
    /// (`CancellationError`, ``UpstreamForwarder/Result/clientGone``).
    public func fail(_ error: any Error) {
        if error is CancellationError { return }
        respond(OpenAIError.from(error))
    }

    /// Answers with an OpenAI error envelope; the access record notes its code.
    public func respond(_ error: OpenAIError) {
        access.update { $0.code = error.code }
        var headers = error.headers
        headers[.contentType] = "application/json"
        respond(status: error.status, headers: headers, body: ByteBuffer(bytes: error.body))
    }

    /// Answers with a whole response.
    public func respond(status: HTTPResponse.Status, headers: HTTPFields, body: ByteBuffer) {
        let writer = self.writer
        let response = HTTPResponse(status: status, headerFields: headers)
        if eventLoop.inEventLoop { return writer.value.complete(response, body: body) }
        eventLoop.execute { writer.value.complete(response, body: body) }
    }
}

/// Headers every answer of one exchange carries (request id, CORS), whoever writes it.
final class ExtraHeaders: Sendable {
    let fields: Mutex<HTTPFields>

    init(_ fields: HTTPFields) { self.fields = Mutex(fields) }

    var current: HTTPFields { fields.withLock { $0 } }
}
