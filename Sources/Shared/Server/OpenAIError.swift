import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// An error in the OpenAI envelope: `{"error":{"message","type","code","param"}}`.
///
/// Every error the hub or a worker returns to a client goes through this type, so
/// clients (and the `openai` SDK) always see the same shape with the right status.
public struct OpenAIError: HTTPResponseError, Equatable {
    public var status: HTTPResponse.Status
    public var message: String
    public var type: ErrorType
    public var code: ErrorCode
    public var param: String?
    /// Extra response headers, e.g. `Retry-After` or `WWW-Authenticate`.
    public var headers: HTTPFields

    /// An error with `code`'s status and type.
    public init(_ code: ErrorCode, message: String, param: String? = nil, headers: HTTPFields = [:]) {
        self.status = code.status
        self.message = message
        self.type = code.type
        self.code = code
        self.param = param
        self.headers = headers
    }

    /// The JSON body of the envelope.
    public var body: Data {
        var error: [String: String] = ["message": message, "type": type.rawValue, "code": code.rawValue]
        if let param { error["param"] = param }
        // Sorted keys keep the output stable for logs and tests.
        return (try? JSONSerialization.data(withJSONObject: ["error": error], options: [.sortedKeys])) ?? Data()
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = self.headers
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// An SSE event carrying this error, for failures after a stream has started.
    public var sseEvent: ByteBuffer {
        var buffer = ByteBuffer(string: "data: ")
        buffer.writeBytes(body)
        buffer.writeString("\n\n")
        return buffer
    }
}

extension OpenAIError {
    public static func unauthorized(_ message: String) -> OpenAIError {
        OpenAIError(.invalidAPIKey, message: message, headers: [.wwwAuthenticate: "Bearer"])
    }

    public static func modelNotFound(_ model: String) -> OpenAIError {
        OpenAIError(.modelNotFound, message: "The model '\(model)' does not exist on this cluster", param: "model")
    }

    /// No live worker can take a request for `model`; `draining` names the ones that serve it
    /// but are draining (an admin's drain, or their own shutdown), so the answer says why.
    public static func noWorker(_ model: String, draining: [String] = []) -> OpenAIError {
        guard !draining.isEmpty else {
            return OpenAIError(.noWorkerAvailable, message: "No live worker serves the model '\(model)' right now", param: "model")
        }
        let names = draining.prefix(8).joined(separator: ", ") + (draining.count > 8 ? " and \(draining.count - 8) more" : "")
        return OpenAIError(.noWorkerAvailable, message: "Every live worker that serves the model '\(model)' is draining (\(names)); undrain one, or wait for another to join",
                           param: "model", headers: [.retryAfter: "5"])
    }

    /// The process is shutting down and its grace is over (`shutdown_grace`).
    public static let shuttingDown = OpenAIError(.serverShuttingDown, message: "The server is shutting down; retry the request",
                                                 headers: [.retryAfter: "1"])

    /// Maps any error thrown inside a handler to an envelope (framework errors included).
    public static func from(_ error: any Error) -> OpenAIError {
        if let error = error as? OpenAIError { return error }
        if error is NIOTooManyBytesError {
            return OpenAIError(.requestTooLarge, message: "Request body is larger than the configured limit")
        }
        if let error = error as? HTTPError {
            let code: ErrorCode = switch error.status {
            case .notFound: .notFound
            case .methodNotAllowed: .methodNotAllowed
            case .contentTooLarge: .requestTooLarge
            case .unauthorized: .invalidAPIKey
            default: error.status.code >= 500 ? .internalError : .badRequest
            }
            let message = error.body ?? (error.status == .contentTooLarge
                ? "Request body is larger than the configured limit" : error.status.reasonPhrase)
            var envelope = OpenAIError(code, message: message, headers: error.headers)
            envelope.status = error.status
            return envelope
        }
        return OpenAIError(.internalError, message: "Internal error")
    }
}
