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
