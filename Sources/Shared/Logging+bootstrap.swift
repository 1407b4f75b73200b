import Foundation
import Logging
import Synchronization

/// How log lines are written.
public enum LogFormat: String, Sendable, CaseIterable {
    /// swift-log's text lines.
    case text
    /// One JSON object per line: `time`, `level`, `logger`, `message`, `metadata`.
    case json
}

/// Sets up swift-log once per process: lines on stderr at the requested level.
public func bootstrapLogging(level: Logger.Level, format: LogFormat = .text) {
    LoggingSystem.bootstrap { label in
        switch format {
        case .text:
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        case .json:
            var handler = JSONLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

/// Writes each log event as one JSON object per line on stderr (for log shippers).
public struct JSONLogHandler: LogHandler {
    public let label: String
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?

    /// One write per line, so lines from concurrent tasks never interleave.
    private static let lock = Mutex(())

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = self.metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        var text = "{\"time\":" + Self.quote(Self.timestamp()) + ",\"level\":" + Self.quote(event.level.rawValue)
            + ",\"logger\":" + Self.quote(label) + ",\"message\":" + Self.quote(event.message.description)
        if !merged.isEmpty { text += ",\"metadata\":" + Self.render(.dictionary(merged)) }
        text += "}\n"
        let data = Data(text.utf8)
        Self.lock.withLock { _ in FileHandle.standardError.write(data) }
    }

    static func render(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): return quote(text)
        case .stringConvertible(let value): return quote(value.description)
        case .array(let values): return "[" + values.map(render).joined(separator: ",") + "]"
        case .dictionary(let values):
            return "{" + values.sorted { $0.key < $1.key }.map { quote($0.key) + ":" + render($0.value) }.joined(separator: ",") + "}"
        }
    }

    /// A JSON string literal.
    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    static func timestamp() -> String {
        let formatter = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        return Date().formatted(formatter)
    }
}

extension Logger.Level {
    /// Reads a level from `CARAVAN_LOG_LEVEL`-style text, defaulting to `.info`.
    public init(text: String?) {
        self = text.flatMap { Logger.Level(rawValue: $0.lowercased()) } ?? .info
    }
}

/// Writes one line to stdout unbuffered: scripts and tests wait for "listening on" lines.
public func announce(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
