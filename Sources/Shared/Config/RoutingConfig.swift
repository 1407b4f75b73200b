/// `hub.routing`: who should serve a request among the workers that may.
public struct RoutingConfig: Decodable, Sendable, Equatable {
    public enum Policy: String, Decodable, Sendable, Equatable, CaseIterable {
        /// A conversation's next turn goes where its prefix is cached, with a load guard.
        case cacheAware = "cache_aware"
        /// Smooth weighted round-robin by routing weight, blind to caches.
        case weightedRoundRobin = "weighted_round_robin"
    }

    public var policy = Policy.cacheAware
    /// Fraction of a request's prompt a worker must hold to be chosen for its cache.
    public var minMatch = 0.3
    /// The load guard: a request goes to the least loaded worker when the busiest holds more
    /// than `balance_absolute` requests more than the idlest, and more than
    /// `balance_relative` times as many.
    public var balanceAbsolute = 4
    public var balanceRelative = 1.5
    /// Prompt blocks (256 bytes each) remembered per model, about 64 bytes each.
    public var indexBlocks = 1_000_000

    enum CodingKeys: String, CodingKey {
        case policy, minMatch = "min_match", balanceAbsolute = "balance_absolute", balanceRelative = "balance_relative"
        case indexBlocks = "index_blocks"
    }

    public init() {}

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let name = try c.optional(String.self, .policy) {
            guard let value = Policy(rawValue: name) else {
                throw c.error(.policy, "expected one of \(Policy.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(name)\"")
            }
            policy = value
        }
        if let v = try c.optional(Double.self, .minMatch) {
            guard v > 0, v <= 1 else { throw c.error(.minMatch, "must be above 0 and at most 1") }
            minMatch = v
        }
        if let v = try c.optional(Int.self, .balanceAbsolute) {
            guard v >= 0 else { throw c.error(.balanceAbsolute, "must not be negative") }
            balanceAbsolute = v
        }
        if let v = try c.optional(Double.self, .balanceRelative) {
            guard v >= 1 else { throw c.error(.balanceRelative, "must be at least 1") }
            balanceRelative = v
        }
        if let v = try c.optional(Int.self, .indexBlocks) {
            guard v >= 1024 else { throw c.error(.indexBlocks, "must be at least 1024") }
            indexBlocks = v
        }
    }
}
