/// Server-sent events as the control plane exchanges them (a worker's reports over its
/// tunnel): `event:` and `data:` lines, an empty line ends an event, `:` lines are comments
/// (keepalives). Parsing takes chunks as they arrive, split anywhere.
public struct ServerSentEvents: Sendable {
    public struct Event: Sendable, Equatable {
        public var name: String?
        public var data: String

        public init(name: String? = nil, data: String) {
            self.name = name
            self.data = data
        }

        /// The event as it is written on the wire.
        public var encoded: String {
            (name.map { "event: \($0)\n" } ?? "") + data.split(separator: "\n", omittingEmptySubsequences: false)
                .map { "data: \($0)\n" }.joined() + "\n"
        }
    }

    private var pending: [UInt8] = []
    private var name: String?
    private var data: [String] = []
    /// Longest line kept while waiting for its end (a report is far smaller).
    public static let maxLine = 4 << 20

    public init() {}

    /// Adds a chunk of bytes (split anywhere, even inside a character); returns the events it
    /// completed. Throws on a line over ``maxLine``.
    public mutating func append(_ chunk: some Sequence<UInt8>) throws(SSEError) -> [Event] {
        pending += chunk
        var events: [Event] = []
        var start = 0
        while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
            var end = newline
            if end > start, pending[end - 1] == UInt8(ascii: "\r") { end -= 1 }
            let line = String(decoding: pending[start..<end], as: UTF8.self)
            start = newline + 1
            if line.isEmpty {
                if !data.isEmpty || name != nil { events.append(Event(name: name, data: data.joined(separator: "\n"))) }
                (name, data) = (nil, [])
            } else if line.hasPrefix("data:") {
                data.append(String(line.dropFirst(5).drop { $0 == " " }))
            } else if line.hasPrefix("event:") {
                name = String(line.dropFirst(6).drop { $0 == " " })
            }
        }
        pending.removeFirst(start)
        guard pending.count <= Self.maxLine else { throw SSEError(reason: "an event line is longer than \(Self.maxLine) bytes") }
        return events
    }
}

public struct SSEError: Error, Sendable, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}
