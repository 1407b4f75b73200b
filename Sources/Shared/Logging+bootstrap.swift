import Foundation
import Logging

/// Sets up swift-log once per process: text lines on stderr at the requested level.
public func bootstrapLogging(level: Logger.Level) {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
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
