import Foundation
import Config
import Wire

/// The cache-aware choice (``CacheAwarePolicy``) over a route, and what answers say about the
/// engines' prompt caches.
extension Registry {
    mutating func newCacheEpoch() -> UInt32 {
        nextCacheEpoch &+= 1
        return nextCacheEpoch
    }

    /// What an answer's usage says about the engine's prompt cache: its reuse is counted, and
    /// when it reused nothing although the hub expected blocks there (`cache_n` 0), the index
    /// forgets that this pair holds the request's blocks (`blocks`); its other conversations
    /// keep theirs.
    package mutating func observeCache(_ pick: Pick, prompt: Int, cached: Int, blocks: [UInt64] = []) {
        guard isCurrent(pick) else { return }
        pairs[pick.pair].promptTokens += prompt
        pairs[pick.pair].cachedTokens += cached
        if pick.matchedBlocks > 0 && cached == 0 { prefixes[pick.model]?.forget(blocks, pair: pick.pair) }
    }


    /// The cache-aware choice (``CacheAwarePolicy``), tier by tier. In the first tier two
    /// busy engines (that may take requests *ahead*, to wait for a slot) compete with free
    /// ones: one that holds enough of the prompt (a cached prefill usually costs less than
    /// the wait), and the request's rendezvous *home* (the first block's rendezvous pick over
    /// every loaded engine with room, free or ahead): so every hub sends a new conversation to
    /// the same engine however their counts of free slots differ, and its next turn, through
    /// another hub that has not seen it, finds it there.
    mutating func chooseByCache(in route: Int, settings: CacheAwarePolicy, prompt: PrefixFingerprint, matched: [Int],
                                        now: Int64, excluding excluded: [Int]) -> (Int?, CacheAwarePolicy.Reason?) {
        if now >= routes[route].changesAt || now < routes[route].asOf { routes[route].reevaluate(at: now) }
        let count = routes[route].ids.count
        let enough = max(1, Int((settings.minMatch * Double(prompt.blocks.count)).rounded(.up)))
        let (loaded, ahead) = (Tier.loaded.rawValue, Tier.ahead.rawValue)
        var positions: [Int] = []
        var candidates: [CacheAwarePolicy.Candidate] = []
        func candidate(_ position: Int, weight: Int64) -> CacheAwarePolicy.Candidate {
            let pair = pairs[routes[route].ids[position]]
            let load = pair.inFlight + max(0, max(pair.requests, pair.slotsBusy) - pair.inFlightAtReport)
            // Rendezvous by the routing weight without its free-slot term (static weight x VRAM
            // headroom x latency): hubs count free slots differently, but see the same workers.
            let free = max(1, Self.capacity(pair, aheadPerSlot: aheadPerSlot).free)
            return .init(matched: matched[position], load: load, weight: Double(weight) / Double(free),
                         key: routes[route].keys[position])
        }
        // The home: rendezvous over the loaded engines with room (free or ahead).
        var home: Int?
        for position in 0..<count where !excluded.contains(routes[route].candidates[position].slot) {
            let weight = max(routes[route].eligible[loaded * count + position], routes[route].eligible[ahead * count + position])
            guard weight > 0 else { continue }
            positions.append(position)
            candidates.append(candidate(position, weight: weight))
        }
        if !candidates.isEmpty {
            home = positions[CacheAwarePolicy.rendezvous(candidates, among: Array(candidates.indices), key: prompt.blocks[0])]
        }
        for tier in 0..<Tier.allCases.count {
            positions.removeAll(keepingCapacity: true)
            candidates.removeAll(keepingCapacity: true)
            for position in 0..<count where !excluded.contains(routes[route].candidates[position].slot) {
                var weight = routes[route].eligible[tier * count + position]
                if weight == 0, tier == loaded, matched[position] >= enough || position == home {
                    weight = routes[route].eligible[ahead * count + position]
                    if weight == 0 { weight = affinityWeight(routes[route].ids[position], routes[route].candidates[position], now: now) }
                }
                guard weight > 0 else { continue }
                positions.append(position)
                candidates.append(candidate(position, weight: weight))
            }
            if let (index, reason) = settings.choose(candidates, blocks: prompt.blocks.count, firstBlock: prompt.blocks[0]) {
                return (routes[route].ids[positions[index]], reason)
            }
        }
        return (nil, nil)
    }

    /// The weight of a loaded engine that the request belongs to (its prefix or its home) but
    /// that has no room in this hub's view only because of other hubs' requests: this hub
    /// counts those as of the worker's last report, and they may have ended since. Allowed up
    /// to what the engine admits from this hub alone (`slots x (1 + ahead_per_slot)`); the
    /// worker, the authority on its own admission, answers "full" when it really is, and the
    /// request goes elsewhere. Nothing past a "full" answer until the worker reports again.
    func affinityWeight(_ id: Int, _ candidate: Candidate, now: Int64) -> Int64 {
        let pair = pairs[id]
        guard now <= candidate.expiresAt, now >= candidate.admitsFrom, pair.state == .ready, !pair.full, !pair.drained,
              pair.fullUntilReport == false else { return 0 }
        let total = pair.slotsTotal > 0 ? pair.slotsTotal : 1
        guard pair.inFlight < total * (1 + aheadPerSlot) else { return 0 }
        return Self.milliWeight(pair.weight)
    }

    /// FNV-1a of a worker's name: the same on every hub and every run (Swift's `Hasher` is
    /// seeded per process).
    package static func stableHash(_ name: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return PrefixFingerprint.mix(hash)
    }
}
