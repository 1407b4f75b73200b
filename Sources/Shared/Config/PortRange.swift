import Foundation

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
