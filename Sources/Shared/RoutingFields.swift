import Foundation
import NIOCore


/// The only two request fields Caravan reads; the body itself is forwarded untouched.
public struct RoutingFields: Equatable, Sendable {
    public var model: String
    public var stream: Bool

    private struct Probe: Decodable {
        enum Keys: String, CodingKey { case model, stream }
        var model: Result<String, OpenAIError>
        var stream: Bool

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Keys.self)
            if try !c.contains(.model) || c.decodeNil(forKey: .model) {
                model = .failure(.invalidRequest("The request is missing the 'model' field", code: "missing_model", param: "model"))
            } else if let name = try? c.decode(String.self, forKey: .model) {
                model = name.isEmpty
                    ? .failure(.invalidRequest("'model' must not be empty", code: "invalid_model", param: "model"))
                    : .success(name)
            } else {
                model = .failure(.invalidRequest("'model' must be a string", code: "invalid_model", param: "model"))
            }
            stream = (try? c.decodeIfPresent(Bool.self, forKey: .stream)) ?? false
        }
    }

    /// Reads `model` and `stream` from a JSON body, or throws a 400 in the OpenAI envelope.
    public static func parse(_ body: ByteBuffer) throws(OpenAIError) -> RoutingFields {
        guard body.readableBytes > 0 else {
            throw .invalidRequest("The request body is empty; expected a JSON object", code: "invalid_json")
        }
        let probe: Probe
        do {
            probe = try JSONDecoder().decode(Probe.self, from: Data(body.readableBytesView))
        } catch DecodingError.typeMismatch {
            throw .invalidRequest("The request body must be a JSON object", code: "invalid_json")
        } catch {
            throw .invalidRequest("The request body is not valid JSON (UTF-8)", code: "invalid_json")
        }
        return RoutingFields(model: try probe.model.get(), stream: probe.stream)
    }
}
