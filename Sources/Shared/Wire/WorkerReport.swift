import Foundation

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
    /// The digest of the hub-placed models the worker holds (``PlacementSet/digest``); a hub
    /// whose desired set differs sends its own. Absent: none were ever sent.
    public var placementDigest: String?
    /// sha256 of every model file in the worker's download cache: placement prefers workers
    /// that have a model's files already.
    public var cachedFiles: [String]?
    /// Free space for downloads, in MiB (the cache's budget left, or the disk's free space).
    public var diskFreeMiB: Int?

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
            placementDigest.flatMap { outside($0.utf8.count, 0...128, "placement_digest length") },
            cachedFiles.flatMap { outside($0.count, 0...4096, "cached_files count") },
            cachedFiles.flatMap { $0.contains { $0.utf8.count > 128 } ? "cached_files: each at most 128 bytes" : nil },
            diskFreeMiB.flatMap { outside($0, 0...(1 << 40), "disk_free_mib") },
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
                model.promptCaches.flatMap { outside($0, 0...65_536, "\(field).prompt_caches") },
                model.promptCacheBytes.flatMap { outside($0, 0...(1 << 50), "\(field).prompt_cache_bytes") },
                model.promptCacheRestored.flatMap { outside($0, 0...65_536, "\(field).prompt_cache_restored") },
                model.download.flatMap { outside($0.bytes, 0...(1 << 50), "\(field).download.bytes") },
                model.download?.total.flatMap { outside($0, 0...(1 << 50), "\(field).download.total") },
                model.download.flatMap { $0.bytesPerSecond.isFinite && $0.bytesPerSecond >= 0 ? nil : "\(field).download.bytes_per_second must be finite" },
                model.download?.error.flatMap { outside($0.utf8.count, 0...4096, "\(field).download.error length") },
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
