import Foundation

/// A model's request rewriting (goinfer, llama-swap): drop fields it must not receive,
/// set fields the client cannot change, fill defaults, and rename the model for the engine.
///
/// It edits only the named top-level members of the JSON body, byte for byte: every other
/// member keeps its exact bytes and order, and a body that names none of them passes
/// unchanged (the same buffer). A body that is not a JSON object passes unchanged too (the
/// engine answers it).
public struct BodyRewrite: Sendable, Equatable {
    /// Members removed (`strip_params`).
    public var strip: Set<String> = []
    /// Members set whatever the client sent (`set_params`), as JSON text.
    public var set: [String: String] = [:]
    /// Members added when the client sent none (`default_params`), as JSON text.
    public var defaults: [String: String] = [:]
    /// The `model` value the engine receives (`use_model_name`).
    public var modelName: String?

    public init(strip: Set<String> = [], set: [String: String] = [:], defaults: [String: String] = [:], modelName: String? = nil) {
        self.strip = strip
        self.set = set
        self.defaults = defaults
        self.modelName = modelName
    }

    public var isEmpty: Bool { strip.isEmpty && set.isEmpty && defaults.isEmpty && modelName == nil }

    /// `text` as a JSON string literal.
    package static func jsonString(_ text: String) -> String {
        String(decoding: (try? JSONSerialization.data(withJSONObject: text, options: .fragmentsAllowed)) ?? Data("\"\"".utf8),
               as: UTF8.self)
    }
}

/// Any YAML value of the cluster file, kept as the JSON text it stands for (`set_params`).
public struct JSONText: Decodable, Sendable, Equatable {
    public let text: String

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            text = "null"
        } else if let value = try? c.decode(Bool.self) {
            text = value ? "true" : "false"
        } else if let value = try? c.decode(Int.self) {
            text = String(value)
        } else if let value = try? c.decode(Double.self), value.isFinite {
            text = String(value)
        } else if let value = try? c.decode(String.self) {
            text = BodyRewrite.jsonString(value)
        } else if let values = try? c.decode([JSONText].self) {
            text = "[" + values.map(\.text).joined(separator: ",") + "]"
        } else {
            let members = try c.decode([String: JSONText].self)
            text = "{" + members.sorted { $0.key < $1.key }.map { BodyRewrite.jsonString($0.key) + ":" + $0.value.text }
                .joined(separator: ",") + "}"
        }
    }
}
