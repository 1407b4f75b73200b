import Foundation

/// JSON coding shared by hub and worker: snake_case keys on the wire.
///
/// Foundation's own snake-casing splits "MiB" into "mi_b"; these strategies treat a unit
/// such as `MiB` or `Ms` as one word, so `vramEstimateMiB` is `vram_estimate_mib` and
/// decodes back to the same property.
public enum WireCoding {
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .custom { path in WireKey(snakeCase(path.last!.stringValue)) }
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .custom { path in WireKey(camelCase(path.last!.stringValue)) }
        return decoder
    }

    /// Units written as one word; everything else splits before each capital letter.
    private static let units = ["MiB": "mib"]

    /// `vramEstimateMiB` -> `vram_estimate_mib`, `heartbeatIntervalMs` -> `heartbeat_interval_ms`.
    public static func snakeCase(_ key: String) -> String {
        var words: [String] = []
        var current = ""
        var rest = Substring(key)
        while let first = rest.first {
            if let (unit, word) = units.first(where: { rest.hasPrefix($0.key) }) {
                if !current.isEmpty { words.append(current) }
                words.append(word)
                current = ""
                rest = rest.dropFirst(unit.count)
                continue
            }
            if first.isUppercase && !current.isEmpty {
                words.append(current)
                current = ""
            }
            current.append(Character(first.lowercased()))
            rest = rest.dropFirst()
        }
        if !current.isEmpty { words.append(current) }
        return words.joined(separator: "_")
    }

    /// The inverse of ``snakeCase(_:)``: `vram_estimate_mib` -> `vramEstimateMiB`.
    public static func camelCase(_ key: String) -> String {
        let words = key.split(separator: "_", omittingEmptySubsequences: true)
        guard let first = words.first else { return key }
        return String(first) + words.dropFirst().map { word in
            units.first(where: { $0.value == word }).map(\.key) ?? word.prefix(1).uppercased() + word.dropFirst()
        }.joined()
    }
}

private struct WireKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
