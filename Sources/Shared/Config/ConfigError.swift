import Wire
/// A configuration problem, rendered as one line that names the key and the problem.
///
/// Operators read this at start-up, so it must point at the exact key
/// (`workers[1].models[0].path`) and never be a stack trace.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    /// Dotted path to the offending key, e.g. `hub.heartbeat_interval`.
    public let key: String
    public let problem: String

    public init(key: String, _ problem: String) {
        self.key = key
        self.problem = problem
    }

    public var description: String {
        key.isEmpty ? "config error: \(problem)" : "config error: \(key): \(problem)"
    }
}

/// Renders a coding path the way the YAML file reads: `workers[0].models[1].path`.
func renderKeyPath(_ path: [any CodingKey]) -> String {
    var out = ""
    for key in path {
        if let index = key.intValue {
            out += "[\(index)]"
        } else {
            out += out.isEmpty ? key.stringValue : ".\(key.stringValue)"
        }
    }
    return out
}
