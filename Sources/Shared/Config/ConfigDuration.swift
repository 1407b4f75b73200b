import Foundation

/// A duration written as `500ms`, `2s`, `1m`, `1h`, `30d` or a bare number of seconds.
public struct ConfigDuration: Decodable, Equatable, Sendable, CustomStringConvertible {
    public let duration: Duration

    public init(_ duration: Duration) { self.duration = duration }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let seconds = try? container.decode(Double.self) {
            guard seconds >= 0 else {
                throw ConfigError(key: renderKeyPath(decoder.codingPath), "must not be negative")
            }
            self.duration = .milliseconds(Int64(seconds * 1000))
            return
        }
        let text = (try? container.decode(String.self)) ?? ""
        guard let parsed = ConfigDuration.parse(text) else {
            throw ConfigError(
                key: renderKeyPath(decoder.codingPath),
                "expected a duration like 500ms, 2s, 1m, 1h or 30d, got \"\(text)\""
            )
        }
        self.duration = parsed
    }

    /// Parses `500ms`, `2s`, `1.5s`, `1m`, `1h`, `30d`; nil for anything else.
    public static func parse(_ text: String) -> Duration? {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            // "ms" also ends in "s": only accept when the remainder is a number.
            guard let value = Double(number), value >= 0 else { continue }
            return .milliseconds(Int64((value * scale * 1000).rounded()))
        }
        return nil
    }

    public var description: String { "\(duration)" }
}
