import Foundation

/// Who should serve one request, among the workers that may (``Registry`` decides who may:
/// live, not draining, breaker allows, VRAM fits, capacity in the tier being tried).
///
/// Two policies, chosen by `hub.routing.policy`:
/// - `weightedRoundRobin`: smooth weighted round-robin by routing weight (the nginx
///   algorithm): deterministic and even, blind to what engines have cached.
/// - `cacheAware` (the default): a conversation's next turn goes where its prefix already
///   is (``CacheAwarePolicy``), with a load guard; a request with no prefix to go by (no
///   prompt, or an embedding) is placed by round-robin as before.
package enum RoutingPolicy: Sendable, Equatable {
    case weightedRoundRobin
    case cacheAware(CacheAwarePolicy)
}

/// The prefix- and load-aware choice, after SGLang's cache-aware router and llm-d's
/// prefix scorer, for one request over the candidates that may serve it.
///
/// ```
/// imbalanced (max load − min load > balanceAbsolute and max > balanceRelative × min)
///     → the least loaded candidate
/// best prefix match ≥ minMatch of the request's blocks
///     → the best match (ties: least loaded, then rendezvous)
/// otherwise (no prompt in common)
///     → weighted rendezvous hashing of the request's first block over the candidates
/// ```
///
/// Load is what the engine holds: this hub's in-flight requests plus the ones the worker
/// reported for others (running or in the engine's queue). The rendezvous pick gives a new
/// conversation a worker that every hub computes alike (the worker's name and static weight,
/// not this hub's counters), so its later turns find their prefix through any hub. Pure:
/// the caller passes every fact in.
package struct CacheAwarePolicy: Sendable, Equatable {
    /// Fraction of the request's blocks a worker must hold to be chosen for its cache.
    package var minMatch = 0.3
    /// The load guard: requests more on the busiest candidate than on the idlest...
    package var balanceAbsolute = 4
    /// ...and the busiest holding more than this multiple of the idlest.
    package var balanceRelative = 1.5

    package init(minMatch: Double = 0.3, balanceAbsolute: Int = 4, balanceRelative: Double = 1.5) {
        self.minMatch = minMatch
        self.balanceAbsolute = balanceAbsolute
        self.balanceRelative = balanceRelative
    }

    /// One candidate, as the policy sees it.
    package struct Candidate: Sendable, Equatable {
        /// Leading blocks of the request this candidate holds (``PrefixIndex``).
        package var matched: Int
        /// Requests its engine holds now.
        package var load: Int
        /// The worker's static weight (rendezvous).
        package var weight: Double
        /// A stable hash of the worker's name (rendezvous; the same on every hub).
        package var key: UInt64

        package init(matched: Int, load: Int, weight: Double, key: UInt64) {
            self.matched = matched
            self.load = load
            self.weight = weight
            self.key = key
        }
    }

    /// Why a candidate was chosen, for the access log and metrics.
    package enum Reason: String, Sendable, Equatable {
        /// It holds the longest prefix of the request.
        case prefix
        /// Load was imbalanced: the least loaded candidate.
        case load
        /// Nothing in common with any candidate: rendezvous by the first block.
        case noMatch = "no_match"
        /// The request had no prompt to go by: round-robin.
        case roundRobin = "round_robin"
    }

    /// The chosen index into `candidates` (nil when empty) and why. `blocks` is the
    /// request's block count, `firstBlock` its first block hash.
    package func choose(_ candidates: [Candidate], blocks: Int, firstBlock: UInt64) -> (index: Int, reason: Reason)? {
        guard !candidates.isEmpty else { return nil }
        let loads = candidates.map(\.load)
        let (least, most) = (loads.min()!, loads.max()!)
        if most - least > balanceAbsolute && Double(most) > balanceRelative * Double(least) {
            return (leastLoaded(candidates, among: Array(candidates.indices), firstBlock: firstBlock), .load)
        }
        let best = candidates.map(\.matched).max()!
        if best > 0 && Double(best) >= minMatch * Double(max(1, blocks)) {
            let holders = candidates.indices.filter { candidates[$0].matched == best }
            return (leastLoaded(candidates, among: holders, firstBlock: firstBlock), .prefix)
        }
        return (Self.rendezvous(candidates, among: Array(candidates.indices), key: firstBlock), .noMatch)
    }

    /// The least loaded of `among`; ties go to rendezvous.
    private func leastLoaded(_ candidates: [Candidate], among: [Int], firstBlock: UInt64) -> Int {
        let least = among.map { candidates[$0].load }.min()!
        let tied = among.filter { candidates[$0].load == least }
        return tied.count == 1 ? tied[0] : Self.rendezvous(candidates, among: tied, key: firstBlock)
    }

    /// Weighted rendezvous (highest random weight) hashing: the candidate whose
    /// `weight / -ln(u)` is largest, `u` a uniform draw from `hash(key, worker)`. Removing a
    /// candidate moves only the keys it held; a weight twice another's gets twice the keys.
    package static func rendezvous(_ candidates: [Candidate], among: [Int], key: UInt64) -> Int {
        var best = among[0]
        var bestScore = -Double.infinity
        for index in among {
            let draw = PrefixFingerprint.mix(key ^ candidates[index].key)
            let unit = (Double(draw >> 11) + 0.5) / Double(1 << 53)  // (0, 1)
            let score = max(candidates[index].weight, 1e-9) / -Foundation.log(unit)
            if score > bestScore { (best, bestScore) = (index, score) }
        }
        return best
    }
}
