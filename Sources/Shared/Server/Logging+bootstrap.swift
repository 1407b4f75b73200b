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

/// Sets up swift-log once per process: lines on stderr at the requested level; those of the
/// labels in `batched` (the access log) through ``LogBuffer`` (flushed at exit).
public func bootstrapLogging(level: Logger.Level, format: LogFormat = .text, batched: Set<String> = ["caravan.access"]) {
    atexit { LogBuffer.standardError.flush() }
    // With TZ unset, glibc checks /etc/localtime on every local-time conversion, which each
    // text log line makes: ~35 µs of CPU per access line (scripts/bench-operate.sh). Naming
    // the same file once keeps the same zone without the per-line system calls.
    setenv("TZ", ":/etc/localtime", 0)
    LoggingSystem.bootstrap { label in
        switch format {
        case .text:
            var handler = batched.contains(label)
                ? StreamLogHandler(label: label, stream: BufferedStream(buffer: .standardError))
                : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        case .json:
            var handler = JSONLogHandler(label: label, buffer: batched.contains(label) ? .standardError : nil)
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

    /// Where the lines are batched, nil to write each at once.
    let buffer: LogBuffer?

    public init(label: String, buffer: LogBuffer? = nil) {
        self.label = label
        self.buffer = buffer
    }

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
        if let buffer { return buffer.append(text) }
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

    /// UTC, ISO 8601 with milliseconds (`2026-11-30T12:00:00.123Z`), without Foundation's
    /// formatters (several microseconds a line).
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return pad(parts.tm_year + 1900, 4) + "-" + pad(parts.tm_mon + 1, 2) + "-" + pad(parts.tm_mday, 2) + "T"
            + pad(parts.tm_hour, 2) + ":" + pad(parts.tm_min, 2) + ":" + pad(parts.tm_sec, 2) + "."
            + pad(Int32(now.tv_nsec / 1_000_000), 3) + "Z"
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
