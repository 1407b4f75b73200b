import Foundation

/// A coding key that accepts any string, used to find keys a schema does not know.
struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init(intValue: Int) {
        self.stringValue = String(intValue)
        self.intValue = intValue
    }
}

extension Decoder {
    /// Fails on any key that `Keys` does not declare: a typo in a config file must not be ignored.
    func rejectUnknownKeys<Keys: CodingKey>(_ keys: Keys.Type) throws {
        let container = try container(keyedBy: AnyCodingKey.self)
        for key in container.allKeys where Keys(stringValue: key.stringValue) == nil {
            throw ConfigError(key: renderKeyPath(codingPath + [key]), "unknown key")
        }
    }
}

extension KeyedDecodingContainer {
    /// Decodes an optional key and validates it, attributing any failure to that key.
    func optional<T: Decodable>(_ type: T.Type, _ key: Key) throws -> T? {
        try decodeIfPresent(type, forKey: key)
    }

    /// Decodes a required key with a one-line error when it is missing.
    func required<T: Decodable>(_ type: T.Type, _ key: Key) throws -> T {
        guard contains(key) else {
            throw ConfigError(key: renderKeyPath(codingPath + [key]), "required key is missing")
        }
        return try decode(type, forKey: key)
    }

    /// Decodes an optional duration that must be greater than zero.
    func positiveDuration(_ key: Key) throws -> Duration? {
        guard let value = try decodeIfPresent(ConfigDuration.self, forKey: key) else { return nil }
        guard value.duration > .zero else { throw error(key, "must be greater than 0") }
        return value.duration
    }

    /// Builds a `ConfigError` located at `key`.
    func error(_ key: Key, _ problem: String) -> ConfigError {
        ConfigError(key: renderKeyPath(codingPath + [key]), problem)
    }
}

/// A duration written as `500ms`, `2s`, `1m`, `1h` or a bare number of seconds.
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
                "expected a duration like 500ms, 2s, 1m or 1h, got \"\(text)\""
            )
        }
        self.duration = parsed
    }

    /// Parses `500ms`, `2s`, `1.5s`, `1m`, `1h`; nil for anything else.
    public static func parse(_ text: String) -> Duration? {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
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

/// A `host:port` listen address; port 0 asks the system for a free port.
public struct ListenAddress: Decodable, Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let parsed = ListenAddress.parse(text) else {
            throw ConfigError(
                key: renderKeyPath(decoder.codingPath),
                "expected host:port (port 0-65535), got \"\(text)\""
            )
        }
        self = parsed
    }

    /// Parses `host:port`, `[v6]:port` or `:port` (all interfaces).
    public static func parse(_ text: String) -> ListenAddress? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        guard let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return ListenAddress(host: host.isEmpty ? "0.0.0.0" : host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// An inclusive port range written `20000-20099`.
public struct PortRange: Decodable, Equatable, Sendable {
    public var lower: Int
    public var upper: Int

    public init(_ lower: Int, _ upper: Int) {
        self.lower = lower
        self.upper = upper
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        let parts = text.split(separator: "-").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, let lower = parts[0], let upper = parts[1],
            1 <= lower, lower <= upper, upper <= 65535
        else {
            throw ConfigError(
                key: renderKeyPath(decoder.codingPath),
                "expected a port range like 20000-20099, got \"\(text)\""
            )
        }
        self.init(lower, upper)
    }

    public var ports: ClosedRange<Int> { lower...upper }
}
