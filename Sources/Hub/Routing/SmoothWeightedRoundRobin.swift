/// Smooth weighted round-robin, the nginx algorithm: deterministic, interleaved, no bursts.
///
/// Every pick adds each eligible peer's weight to its running score, takes the peer with
/// the highest score (the first one on a tie) and subtracts the sum of weights from it.
/// With weights 5:1:1 the order is `a a b a c a a`, not `a a a a a b c`. Peers with
/// weight 0 are skipped and keep their score.
///
/// Peers are small dense integers (positions in a route) and weights are integers, as in
/// nginx. A pick is three branch-free passes over flat arrays (add, find the best score,
/// find its first peer) that the compiler turns into SIMD loops: routing stays well under
/// a microsecond at hundreds of workers.
package struct SmoothWeightedRoundRobin: Sendable {
    private var scores: [Int64]

    package init(peers: Int = 0) {
        scores = Array(repeating: 0, count: peers)
    }

    /// Picks among peers `0..<weights.count` (weight 0 = not eligible now); nil when every
    /// weight is 0.
    package mutating func pick(weights: UnsafeBufferPointer<Int64>) -> Int? {
        let count = weights.count
        if count > scores.count { scores.append(contentsOf: repeatElement(0, count: count - scores.count)) }
        return scores.withUnsafeMutableBufferPointer { scores in
            var total: Int64 = 0
            for peer in 0..<count {
                scores[peer] &+= weights[peer]
                total &+= weights[peer]
            }
            guard total > 0 else { return nil }
            var bestScore = Int64.min
            for peer in 0..<count {
                let score = weights[peer] > 0 ? scores[peer] : Int64.min
                bestScore = score > bestScore ? score : bestScore
            }
            for peer in 0..<count where weights[peer] > 0 && scores[peer] == bestScore {
                scores[peer] &-= total
                return peer
            }
            return nil
        }
    }

    /// Picks among `(peer, weight)` pairs; nil when every weight is 0.
    package mutating func pick(_ candidates: some Sequence<(Int, Int64)>) -> Int? {
        var weights: [Int64] = []
        for (peer, weight) in candidates {
            if peer >= weights.count { weights.append(contentsOf: repeatElement(0, count: peer - weights.count + 1)) }
            weights[peer] = max(0, weight)
        }
        return weights.withUnsafeBufferPointer { pick(weights: $0) }
    }
}
