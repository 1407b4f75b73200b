import Foundation
import HTTPTypes

/// Paths of the hub's control plane, used by workers.
public enum ControlPath {
    public static let register = "/internal/v1/workers/register"
    public static let heartbeat = "/internal/v1/workers/heartbeat"
    public static let deregister = "/internal/v1/workers/deregister"
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
    /// Static routing weight from the worker's config entry.
    public var weight: Double

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
public enum WireCoding {
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}

/// The Caravan version both executables report.
public let caravanVersion = "0.1.0"
