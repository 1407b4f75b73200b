import NIOCore
import Server

/// The only two request fields Caravan reads; the body itself is forwarded untouched.
///
/// Read by a single validating pass over the bytes (`JSONScanner`) that builds nothing but
/// the `model` string: the hub's profile showed `JSONDecoder` at 3.7 % of its CPU per
/// request for two fields. The pass still validates the whole document as strict JSON
/// (RFC 8259, UTF-8), so a malformed body is a 400 here and never reaches an engine, whose
/// parse error would look like a worker failure.
public struct RoutingFields: Equatable, Sendable {
    public var model: String
    public var stream: Bool
    /// The completion's token cap (`max_tokens` or its kin) when the body sets one: what a
    /// token limit reserves for the answer before it is known.
    public var maxTokens: Int?

    public init(model: String, stream: Bool, maxTokens: Int? = nil) {
        self.model = model
        self.stream = stream
        self.maxTokens = maxTokens
    }

    /// Reads `model` and `stream` from a JSON body, or throws a 400 in the OpenAI envelope.
    /// A duplicated key counts with its last value.
    ///
    /// The same pass rejects, with a 400 naming the `param`, what llama-server would
    /// mis-answer rather than refuse: a `stream` that is not a boolean, a token count
    /// (`max_tokens`, `max_completion_tokens`, `n_predict`) that is not a whole number from -1
    /// to 2^31 - 1, and with `messages: true` (the chat endpoints) `messages` that is not a
    /// non-empty array of objects with a string `role` and a string, array or null `content`.
    /// Everything else (extra fields, tools) passes untouched.
    public static func parse(_ body: ByteBuffer, messages: Bool = false) throws(OpenAIError) -> RoutingFields {
        try scan(body, messages: messages).fields
    }

    /// ``parse(_:messages:)``, and where the prompt's raw JSON value (`messages`, else
    /// `prompt`) lies in the body's readable bytes: what the cache-aware policy hashes.
    public static func scan(_ body: ByteBuffer, messages: Bool = false) throws(OpenAIError)
        -> (fields: RoutingFields, prompt: Range<Int>?)
    {
        guard body.readableBytes > 0 else {
            throw OpenAIError(.invalidJSON, message: "The request body is empty; expected a JSON object")
        }
        let fields = body.readableBytesView.withContiguousStorageIfAvailable { bytes in
            var scanner = JSONScanner(bytes)
            scanner.checkMessages = messages
            return scanner.topLevelFields()
        } ?? {
            let bytes = Array(body.readableBytesView)
            return bytes.withUnsafeBufferPointer { bytes in
                var scanner = JSONScanner(bytes)
                scanner.checkMessages = messages
                return scanner.topLevelFields()
            }
        }()
        switch fields {
        case .invalid:
            throw OpenAIError(.invalidJSON, message: "The request body is not valid JSON (UTF-8)")
        case .notAnObject:
            throw OpenAIError(.invalidJSON, message: "The request body must be a JSON object")
        case .object(let model, let stream, let problem, let prompt, let maxTokens):
            switch model {
            case .absent, .null:
                throw OpenAIError(.missingModel, message: "The request is missing the 'model' field", param: "model")
            case .notAString:
                throw OpenAIError(.invalidModel, message: "'model' must be a string", param: "model")
            case .string(let name) where name.isEmpty:
                throw OpenAIError(.invalidModel, message: "'model' must not be empty", param: "model")
            case .string(let name):
                if let problem { throw OpenAIError(.invalidRequestBody, message: problem.message, param: problem.param) }
                return (RoutingFields(model: name, stream: stream, maxTokens: maxTokens), prompt)
            }
        }
    }
}
