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
    public var type: String
    public var code: String
    public var param: String?
    /// Extra response headers, e.g. `Retry-After` or `WWW-Authenticate`.
    public var headers: HTTPFields

    public init(_ status: HTTPResponse.Status, type: String, code: String, message: String,
                param: String? = nil, headers: HTTPFields = [:]) {
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers
    }

    /// The JSON body of the envelope.
    public var body: Data {
        var error: [String: String] = ["message": message, "type": type, "code": code]
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
    public static func invalidRequest(_ message: String, code: String, param: String? = nil) -> OpenAIError {
        OpenAIError(.badRequest, type: "invalid_request_error", code: code, message: message, param: param)
    }

    public static func unauthorized(_ message: String) -> OpenAIError {
        OpenAIError(.unauthorized, type: "authentication_error", code: "invalid_api_key", message: message,
                    headers: [.wwwAuthenticate: "Bearer"])
    }

    public static func modelNotFound(_ model: String) -> OpenAIError {
        OpenAIError(.notFound, type: "invalid_request_error", code: "model_not_found",
                    message: "The model '\(model)' does not exist on this cluster", param: "model")
    }

    public static func noWorker(_ model: String) -> OpenAIError {
        OpenAIError(.serviceUnavailable, type: "server_error", code: "no_worker_available",
                    message: "No live worker serves the model '\(model)' right now", param: "model")
    }

    /// The process is shutting down and its grace is over (`shutdown_grace`).
    public static let shuttingDown = OpenAIError(
        .serviceUnavailable, type: "server_error", code: "server_shutting_down",
        message: "The server is shutting down; retry the request", headers: [.retryAfter: "1"])

    public static func upstream(_ message: String, code: String = "upstream_error") -> OpenAIError {
        OpenAIError(.badGateway, type: "server_error", code: code, message: message)
    }

    /// Maps any error thrown inside a handler to an envelope (framework errors included).
    public static func from(_ error: any Error) -> OpenAIError {
        if let error = error as? OpenAIError { return error }
        if error is NIOTooManyBytesError {
            return OpenAIError(.contentTooLarge, type: "invalid_request_error", code: "request_too_large",
                               message: "Request body is larger than the configured limit")
        }
        if let error = error as? HTTPError {
            let code: String
            let type: String
            switch error.status {
            case .notFound: (type, code) = ("invalid_request_error", "not_found")
            case .methodNotAllowed: (type, code) = ("invalid_request_error", "method_not_allowed")
            case .contentTooLarge: (type, code) = ("invalid_request_error", "request_too_large")
            case .unauthorized: (type, code) = ("authentication_error", "invalid_api_key")
            default:
                (type, code) = error.status.code >= 500 ? ("server_error", "internal_error") : ("invalid_request_error", "bad_request")
            }
            let message = error.body ?? (error.status == .contentTooLarge
                ? "Request body is larger than the configured limit" : error.status.reasonPhrase)
            return OpenAIError(error.status, type: type, code: code, message: message, headers: error.headers)
        }
        return OpenAIError(.internalServerError, type: "server_error", code: "internal_error",
                           message: "Internal error")
    }
}
