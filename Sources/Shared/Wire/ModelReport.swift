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
