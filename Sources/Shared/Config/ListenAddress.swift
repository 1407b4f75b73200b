import Foundation

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
