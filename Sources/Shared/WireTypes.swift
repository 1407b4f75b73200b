import Foundation
import HTTPTypes

/// Paths of the hub's control plane, used by workers.
public enum ControlPath {
    public static let register = "/internal/v1/workers/register"
    public static let heartbeat = "/internal/v1/workers/heartbeat"
    public static let deregister = "/internal/v1/workers/deregister"
    /// A worker the cluster file does not list exchanges a join token for its credential.
    public static let join = "/internal/v1/workers/join"
}

/// A dynamic worker asking to join (with a join token as its bearer credential).
public struct JoinRequest: Codable, Sendable {
    public var name: String
    public init(name: String) { self.name = name }
}

/// The hub's answer to a join: the worker's own credential (``WorkerKey``).
public struct JoinResponse: Codable, Sendable {
    public var credential: String
    public init(credential: String) { self.credential = credential }
}

/// Header the hub sets on forwarded requests: the canonical model name it routed by,
/// so the worker does not parse the body a second time.
public let modelHeaderName = "X-Caravan-Model"

/// ``modelHeaderName`` as a field name.
public let modelHeader = HTTPField.Name(modelHeaderName)!

/// Header the hub sets on forwarded requests: "true" when the request asks for a stream,
/// which the worker needs to know before it talks to llama-server (see `DataPlane`).
public let streamHeaderName = "X-Caravan-Stream"

/// ``streamHeaderName`` as a field name.
public let streamHeader = HTTPField.Name(streamHeaderName)!

/// What a worker tells the hub on register and on every heartbeat.
///
/// The hub stamps the time of receipt itself; worker clocks are never trusted.
public struct WorkerReport: Codable, Sendable, Equatable {
    /// Worker name; must equal the `sub` of the worker's credential.
    public var name: String
    /// Base URL of the worker's data plane.
    public var url: String
    /// Caravan version of the worker.
    public var version: String
    /// Increases by one on every report, so the hub can drop reordered ones.
    public var sequence: UInt64
    public var models: [ModelReport]
    public var gpus: [GPUReport]
    /// Requests the worker is forwarding right now.
    public var inFlight: Int
    /// Static routing weight: the config entry's number, or with `weight: auto` (the
    /// default) the VRAM budget in GiB (``VRAMBudget/autoWeight``).
    public var weight: Double
    /// The VRAM budget the worker admits models against (`vram_budget_mb`, else its GPUs'
    /// total); absent when it has none. The hub judges fit with the same ``VRAMBudget``.
    public var vramBudgetMiB: Int?
    /// An admin drained the worker: it takes no new requests and finishes those in flight.
    public var draining: Bool?

    /// The worker's budget as the worker itself computes it.
    public var budget: VRAMBudget { VRAMBudget(totalMiB: vramBudgetMiB ?? VRAMBudget(gpus: gpus).totalMiB) }

    public init(name: String, url: String, version: String, sequence: UInt64,
                models: [ModelReport], gpus: [GPUReport], inFlight: Int, weight: Double = 1) {
        self.name = name
        self.url = url
        self.version = version
        self.sequence = sequence
        self.models = models
        self.gpus = gpus
        self.inFlight = inFlight
        self.weight = weight
    }
}

/// Engine state of one model on a worker.
public enum ModelState: String, Codable, Sendable, Equatable {
    case notLoaded = "not-loaded"
    case loading
    case ready
    /// Loaded, but its replacement (a reload changed its command line) starts once the
    /// requests in progress end: send new requests elsewhere while another worker serves it.
    case draining
    /// Being stopped (ttl, eviction, reload); it can be started again afterwards.
    case stopping
    case failed
}

/// One model a worker serves and how it is doing.
public struct ModelReport: Codable, Sendable, Equatable {
    public var name: String
    public var aliases: [String]
    public var state: ModelState
    /// Slots of the running llama-server (0 when not loaded).
    public var slotsTotal: Int
    public var slotsBusy: Int
    /// Why the model failed, or why it last stopped on its own (a crash).
    public var reason: String?
    /// VRAM the model is expected to need (configured, or GGUF size + 20 %), when known.
    public var vramEstimateMiB: Int?
    /// Seconds since the model last served a request (or became ready).
    public var idleSeconds: Double?
    /// Kept loaded: never evicted or unloaded.
    public var pinned: Bool?
    /// Served but not listed in `/v1/models`.
    public var unlisted: Bool?
    /// Engine exits within the worker's crash window.
    public var recentCrashes: Int?
    /// True when the engine's `/slots` did not answer in time and the slot counts are the
    /// last good reading (not zeros: a busy engine must not look like it lost its capacity).
    public var slotsStale: Bool?

    public init(name: String, aliases: [String] = [], state: ModelState, slotsTotal: Int = 0,
                slotsBusy: Int = 0, reason: String? = nil, vramEstimateMiB: Int? = nil) {
        self.vramEstimateMiB = vramEstimateMiB
        self.name = name
        self.aliases = aliases
        self.state = state
        self.slotsTotal = slotsTotal
        self.slotsBusy = slotsBusy
        self.reason = reason
    }
}

/// One GPU and its memory, in MiB (as `nvidia-smi` reports it).
public struct GPUReport: Codable, Sendable, Equatable {
    public var index: Int
    public var name: String
    public var memoryTotalMiB: Int
    public var memoryFreeMiB: Int
    /// True when the last measurement failed (a hung `nvidia-smi`) and these are older values.
    public var stale: Bool?

    public init(index: Int, name: String, memoryTotalMiB: Int, memoryFreeMiB: Int) {
        self.index = index
        self.name = name
        self.memoryTotalMiB = memoryTotalMiB
        self.memoryFreeMiB = memoryFreeMiB
    }
}

/// The hub's answer to a register call.
public struct RegisterResponse: Codable, Sendable {
    /// How often the hub expects heartbeats.
    public var heartbeatIntervalMs: Int

    public init(heartbeatIntervalMs: Int) { self.heartbeatIntervalMs = heartbeatIntervalMs }
}

/// A worker leaving on purpose.
public struct DeregisterRequest: Codable, Sendable {
    public var name: String
    public init(name: String) { self.name = name }
}

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

/// The Caravan version both executables report.
public let caravanVersion = "0.1.0"

extension WorkerReport {
    /// The largest VRAM figure accepted, in MiB (1 PiB).
    public static let maxMiB = 1 << 30

    /// What is out of bounds in this report, or nil when every field is acceptable.
    ///
    /// A report is input from the network: a compromised or broken worker must not make the
    /// hub trap on arithmetic, hold unbounded lists, or win all traffic with an absurd weight
    /// or slot count. The hub refuses a report with a problem (400 `invalid_report`).
    public var problem: String? {
        func outside<T: Comparable>(_ value: T, _ range: ClosedRange<T>, _ field: String) -> String? {
            range.contains(value) ? nil : "\(field) must be within \(range.lowerBound)...\(range.upperBound), got \(value)"
        }
        let checks: [String?] = [
            outside(name.utf8.count, 1...128, "name length"),
            outside(url.utf8.count, 1...2048, "url length"),
            outside(version.utf8.count, 0...64, "version length"),
            weight.isFinite ? outside(weight, 0.000_001...1_000_000, "weight") : "weight must be a finite number",
            outside(inFlight, 0...1_000_000, "in_flight"),
            outside(models.count, 0...4096, "models count"),
            outside(gpus.count, 0...256, "gpus count"),
            vramBudgetMiB.flatMap { outside($0, 0...Self.maxMiB, "vram_budget_mib") },
        ]
        if let problem = checks.compactMap({ $0 }).first { return problem }
        for (index, model) in models.enumerated() {
            let field = "models[\(index)]"
            let checks: [String?] = [
                outside(model.name.utf8.count, 1...256, "\(field).name length"),
                outside(model.aliases.count, 0...64, "\(field).aliases count"),
                model.aliases.contains { !(1...256).contains($0.utf8.count) } ? "\(field).aliases: each 1...256 bytes" : nil,
                outside(model.slotsTotal, 0...65_536, "\(field).slots_total"),
                outside(model.slotsBusy, 0...max(0, model.slotsTotal), "\(field).slots_busy"),
                model.vramEstimateMiB.flatMap { outside($0, 0...Self.maxMiB, "\(field).vram_estimate_mib") },
                model.reason.flatMap { outside($0.utf8.count, 0...16_384, "\(field).reason length") },
                model.idleSeconds.flatMap { $0.isFinite ? outside($0, 0...1e12, "\(field).idle_seconds") : "\(field).idle_seconds must be finite" },
                model.recentCrashes.flatMap { outside($0, 0...1_000_000, "\(field).recent_crashes") },
            ]
            if let problem = checks.compactMap({ $0 }).first { return problem }
        }
        for (index, gpu) in gpus.enumerated() {
            let field = "gpus[\(index)]"
            let checks: [String?] = [
                outside(gpu.name.utf8.count, 0...256, "\(field).name length"),
                outside(gpu.memoryTotalMiB, 0...Self.maxMiB, "\(field).memory_total_mib"),
                outside(gpu.memoryFreeMiB, 0...Self.maxMiB, "\(field).memory_free_mib"),
            ]
            if let problem = checks.compactMap({ $0 }).first { return problem }
        }
        return nil
    }
}
