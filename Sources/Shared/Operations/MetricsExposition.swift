/// Prometheus text exposition for series read off live state at scrape time (workers,
/// models, queues) and for re-exported engine metrics: each family's samples together
/// under one `# HELP` and `# TYPE`, label values escaped.
///
/// Event counters and histograms live in a `PrometheusCollectorRegistry`; this is for
/// values that are a view of current state, which must vanish with what they describe (a
/// worker that left has no heartbeat age).
public struct MetricsExposition: Sendable {
    private struct Family: Sendable {
        var name: String
        var type: String
        var help: String
        var lines: [String] = []
    }

    private var families: [Family] = []
    private var index: [String: Int] = [:]

    public init() {}

    public var isEmpty: Bool { families.isEmpty }

    /// One sample of the family `name` (declared on first use).
    public mutating func add(_ name: String, _ value: Double, labels: [(String, String)] = [], type: String = "gauge",
                             help: String) {
        let position = family(name, type: type, help: help)
        families[position].lines.append(name + Self.labelText(labels) + " " + Self.format(value))
    }

    /// Adds another exporter's exposition, with `label` added to every sample (an engine's
    /// `/metrics` with `model="..."`), merging families of the same name.
    public mutating func merge(_ text: String, adding label: (String, String)) {
        var current: Int?
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("#") {
                let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: true)
                guard parts.count >= 3, parts[1] == "HELP" || parts[1] == "TYPE" else { continue }
                let name = String(parts[2])
                let rest = parts.count > 3 ? String(parts[3]) : ""
                let position = family(name, type: parts[1] == "TYPE" ? rest : "untyped", help: parts[1] == "HELP" ? rest : "")
                if parts[1] == "TYPE" { families[position].type = rest }
                if parts[1] == "HELP", families[position].help.isEmpty { families[position].help = rest }
                current = position
                continue
            }
            let nameEnd = line.firstIndex(where: { $0 == "{" || $0 == " " }) ?? line.endIndex
            let name = String(line[..<nameEnd])
            guard !name.isEmpty else { continue }
            let position: Int
            if let current, name.hasPrefix(families[current].name) {
                position = current
            } else {
                position = family(name, type: "untyped", help: "")
            }
            let extra = "\(label.0)=\"\(Self.escape(label.1))\""
            let relabelled: String
            if nameEnd < line.endIndex, line[nameEnd] == "{" {
                let inner = line[line.index(after: nameEnd)...]
                relabelled = name + "{" + extra + (inner.hasPrefix("}") ? "" : ",") + inner
            } else {
                relabelled = name + "{" + extra + "}" + line[nameEnd...]
            }
            families[position].lines.append(relabelled)
        }
    }

    public func render() -> String {
        var text = ""
        for family in families where !family.lines.isEmpty {
            if !family.help.isEmpty { text += "# HELP \(family.name) \(family.help)\n" }
            text += "# TYPE \(family.name) \(family.type)\n"
            for line in family.lines { text += line + "\n" }
        }
        return text
    }

    private mutating func family(_ name: String, type: String, help: String) -> Int {
        if let position = index[name] { return position }
        families.append(Family(name: name, type: type, help: help))
        index[name] = families.count - 1
        return families.count - 1
    }

    static func labelText(_ labels: [(String, String)]) -> String {
        guard !labels.isEmpty else { return "" }
        return "{" + labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
    }

    /// Escapes a label value: backslash, double quote and newline.
    public static func escape(_ value: String) -> String {
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }
}
