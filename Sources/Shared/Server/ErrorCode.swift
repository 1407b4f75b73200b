import HTTPTypes

/// The `type` of an OpenAI error envelope.
public enum ErrorType: String, Sendable {
    case invalidRequest = "invalid_request_error"
    case authentication = "authentication_error"
    case permission = "permission_error"
    case rateLimit = "rate_limit_error"
    case server = "server_error"
}

/// Every error code Caravan answers with, each with its status and type: the one vocabulary
/// of its errors, so a code is never misspelled at a call site, and the access log classifies
/// rejections by what they are rather than by their text.
public struct ErrorCode: Hashable, Sendable, CustomStringConvertible {
    /// Why a request was refused before any worker saw it (the access log's `outcome`).
    public enum Rejection: Sendable {
        /// Over a client's rate, concurrency or poison limit.
        case limit
        /// The model's queue was full, or the request waited past its timeout.
        case queue
    }

    public let rawValue: String
    public let status: HTTPResponse.Status
    public let type: ErrorType
    public let rejection: Rejection?

    public init(_ rawValue: String, _ status: HTTPResponse.Status, _ type: ErrorType, rejection: Rejection? = nil) {
        self.rawValue = rawValue
        self.status = status
        self.type = type
        self.rejection = rejection
    }

    public var description: String { rawValue }

    public static func == (lhs: ErrorCode, rhs: ErrorCode) -> Bool { lhs.rawValue == rhs.rawValue }
    public func hash(into hasher: inout Hasher) { hasher.combine(rawValue) }

    public static let adminClosed = ErrorCode("admin_closed", .forbidden, .permission)
    public static let hostNotAllowed = ErrorCode("host_not_allowed", .forbidden, .permission)
    public static let insufficientRole = ErrorCode("insufficient_role", .forbidden, .permission)
    public static let originNotAllowed = ErrorCode("origin_not_allowed", .forbidden, .permission)
    public static let modelNotAllowed = ErrorCode("model_not_allowed", .forbidden, .permission)
    public static let unknownWorkerName = ErrorCode("unknown_worker_name", .forbidden, .permission)
    public static let upstreamNotAllowed = ErrorCode("upstream_not_allowed", .forbidden, .permission)
    public static let workerNameMismatch = ErrorCode("worker_name_mismatch", .forbidden, .permission)
    public static let workerNameTaken = ErrorCode("worker_name_taken", .forbidden, .permission)
    public static let workerUrlMismatch = ErrorCode("worker_url_mismatch", .forbidden, .permission)
    public static let invalidAPIKey = ErrorCode("invalid_api_key", .unauthorized, .authentication)
    public static let badRequest = ErrorCode("bad_request", .badRequest, .invalidRequest)
    public static let invalidJSON = ErrorCode("invalid_json", .badRequest, .invalidRequest)
    public static let invalidLines = ErrorCode("invalid_lines", .badRequest, .invalidRequest)
    public static let invalidModel = ErrorCode("invalid_model", .badRequest, .invalidRequest)
    public static let invalidReport = ErrorCode("invalid_report", .badRequest, .invalidRequest)
    public static let invalidRequestBody = ErrorCode("invalid_request_body", .badRequest, .invalidRequest)
    public static let invalidRequestTarget = ErrorCode("invalid_request_target", .badRequest, .invalidRequest)
    public static let invalidWorkerName = ErrorCode("invalid_worker_name", .badRequest, .invalidRequest)
    public static let malformedHTTP = ErrorCode("malformed_http", .badRequest, .invalidRequest)
    public static let missingModel = ErrorCode("missing_model", .badRequest, .invalidRequest)
    public static let reloadFailed = ErrorCode("reload_failed", .badRequest, .invalidRequest)
    public static let requestFailedEverywhere = ErrorCode("request_failed_everywhere", .badRequest, .invalidRequest)
    public static let notFound = ErrorCode("not_found", .notFound, .invalidRequest)
    public static let modelNotFound = ErrorCode("model_not_found", .notFound, .invalidRequest)
    public static let unknownWorker = ErrorCode("unknown_worker", .notFound, .invalidRequest)
    public static let workerNotFound = ErrorCode("worker_not_found", .notFound, .invalidRequest)
    public static let methodNotAllowed = ErrorCode("method_not_allowed", .methodNotAllowed, .invalidRequest)
    public static let requestBodyTimeout = ErrorCode("request_body_timeout", .requestTimeout, .invalidRequest)
    public static let requestTooLarge = ErrorCode("request_too_large", .contentTooLarge, .invalidRequest)
    public static let headersTooLarge = ErrorCode("headers_too_large", .requestHeaderFieldsTooLarge, .invalidRequest)
    public static let rateLimitExceeded = ErrorCode("rate_limit_exceeded", .tooManyRequests, .rateLimit, rejection: .limit)
    public static let tokensPerMinuteExceeded = ErrorCode("tokens_per_minute_exceeded", .tooManyRequests, .rateLimit, rejection: .limit)
    public static let budgetExceeded = ErrorCode("budget_exceeded", .tooManyRequests, .rateLimit, rejection: .limit)
    public static let poisonLimitExceeded = ErrorCode("poison_limit_exceeded", .tooManyRequests, .rateLimit, rejection: .limit)
    public static let queueFull = ErrorCode("queue_full", .tooManyRequests, .rateLimit, rejection: .queue)
    public static let workerFull = ErrorCode("worker_full", .tooManyRequests, .server)
    public static let internalError = ErrorCode("internal_error", .internalServerError, .server)
    public static let engineError = ErrorCode("engine_error", .badGateway, .server)
    public static let upstreamError = ErrorCode("upstream_error", .badGateway, .server)
    public static let upstreamStreamError = ErrorCode("upstream_stream_error", .badGateway, .server)
    public static let workerUnreachable = ErrorCode("worker_unreachable", .badGateway, .server)
    public static let modelDoesNotFit = ErrorCode("model_does_not_fit", .serviceUnavailable, .server)
    public static let modelUnavailable = ErrorCode("model_unavailable", .serviceUnavailable, .server)
    public static let noHealthyWorker = ErrorCode("no_healthy_worker", .serviceUnavailable, .server)
    public static let storeUnavailable = ErrorCode("store_unavailable", .serviceUnavailable, .server)
    public static let noWorkerAvailable = ErrorCode("no_worker_available", .serviceUnavailable, .server)
    /// The model's files are still coming to its workers (hub-placed models): the message has
    /// the progress, `Retry-After` the expected time left.
    public static let modelDownloading = ErrorCode("model_downloading", .serviceUnavailable, .server, rejection: .queue)
    /// Admin API: a hub-managed model that fits no worker's VRAM, or has no worker to go to.
    public static let modelDoesNotPlace = ErrorCode("model_does_not_place", .conflict, .invalidRequest)
    public static let modelExists = ErrorCode("model_exists", .conflict, .invalidRequest)
    /// Admin API: the model's source cannot be read (404, 401, timeout, not a GGUF, not allowed).
    public static let invalidSource = ErrorCode("invalid_source", .badRequest, .invalidRequest)
    public static let queueTimeout = ErrorCode("queue_timeout", .serviceUnavailable, .server, rejection: .queue)
    public static let serverShuttingDown = ErrorCode("server_shutting_down", .serviceUnavailable, .server)
    public static let workerDraining = ErrorCode("worker_draining", .serviceUnavailable, .server)
}
