import Foundation

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
    /// Placed on this worker by the hub, its files still coming (or their download failed:
    /// ``ModelReport/download`` says why). Requests wait for it like for a loading model.
    case downloading
}

/// How far a model's files have come to a worker (hub-placed models).
public struct DownloadProgress: Codable, Sendable, Equatable {
    public var bytes: Int
    /// All files' size; nil until the source said.
    public var total: Int?
    /// Recent rate in bytes per second.
    public var bytesPerSecond: Double
    /// Why the download stopped (checksum mismatch, a full disk, the source's 404...); it is
    /// tried again later.
    public var error: String?

    public init(bytes: Int, total: Int?, bytesPerSecond: Double, error: String? = nil) {
        self.bytes = bytes
        self.total = total
        self.bytesPerSecond = bytesPerSecond
        self.error = error
    }

    /// Share done, 0...1 (nil: the total is unknown).
    public var fraction: Double? { total.map { $0 > 0 ? min(1, Double(bytes) / Double($0)) : 0 } }

    /// "45 % (120.0 of 260.0 MiB) at 12.0 MiB/s", for messages and logs.
    public var summary: String {
        let mib = { (bytes: Double) in String(format: "%.1f", bytes / 1_048_576) }
        let done = fraction.map { "\(Int($0 * 100)) % (\(mib(Double(bytes))) of \(mib(Double(total ?? 0))) MiB)" } ?? "\(mib(Double(bytes))) MiB"
        return "\(done) at \(mib(bytesPerSecond)) MiB/s"
    }

    /// Seconds until done at the current rate (nil: unknown).
    public var secondsLeft: Double? {
        guard let total, bytesPerSecond > 0 else { return nil }
        return Double(max(0, total - bytes)) / bytesPerSecond
    }
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
    /// Requests the worker holds for the model now: running in a slot or waiting in the
    /// engine's queue (`slotsBusy` counts only the first). Hubs subtract the other hubs'
    /// share from their capacity with it; absent from workers before it existed.
    public var requests: Int?
    /// Prompt caches the worker saved for the model at a planned stop and restores at its
    /// next start: while there are any, the hub keeps routing their conversations here.
    public var promptCaches: Int?
    /// Their size on disk, and the conversations restored into the running engine's slots at
    /// its start (the operator's view of what the caches are worth).
    public var promptCacheBytes: Int?
    public var promptCacheRestored: Int?
    /// A hub-placed model's download, while its state is ``ModelState/downloading``.
    public var download: DownloadProgress?

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
