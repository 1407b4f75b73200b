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

    public init(model: String, stream: Bool) {
        self.model = model
        self.stream = stream
    }

    /// Reads `model` and `stream` from a JSON body, or throws a 400 in the OpenAI envelope.
    /// A duplicated key counts with its last value; a `stream` that is not a boolean reads as false.
    public static func parse(_ body: ByteBuffer) throws(OpenAIError) -> RoutingFields {
        guard body.readableBytes > 0 else {
            throw .invalidRequest("The request body is empty; expected a JSON object", code: "invalid_json")
        }
        let fields = body.readableBytesView.withContiguousStorageIfAvailable { bytes in
            var scanner = JSONScanner(bytes)
            return scanner.topLevelFields()
        } ?? {
            let bytes = Array(body.readableBytesView)
            return bytes.withUnsafeBufferPointer { bytes in
                var scanner = JSONScanner(bytes)
                return scanner.topLevelFields()
            }
        }()
        switch fields {
        case .invalid:
            throw .invalidRequest("The request body is not valid JSON (UTF-8)", code: "invalid_json")
        case .notAnObject:
            throw .invalidRequest("The request body must be a JSON object", code: "invalid_json")
        case .object(let model, let stream):
            switch model {
            case .absent, .null:
                throw .invalidRequest("The request is missing the 'model' field", code: "missing_model", param: "model")
            case .notAString:
                throw .invalidRequest("'model' must be a string", code: "invalid_model", param: "model")
            case .string(let name) where name.isEmpty:
                throw .invalidRequest("'model' must not be empty", code: "invalid_model", param: "model")
            case .string(let name):
                return RoutingFields(model: name, stream: stream)
            }
        }
    }
}
