/// Smooth weighted round-robin, the nginx algorithm: deterministic, interleaved, no bursts.
///
/// Every pick adds each eligible peer's weight to its running score, takes the peer with
/// the highest score and subtracts the sum of weights from it. With weights 5:1:1 the
/// order is `a a b a c a a`, not `a a a a a b c`. Peers with weight 0 are skipped and keep
/// their score. Scores live in a flat array indexed by a small integer peer id, so a pick
/// is one allocation-free pass over the candidates.
struct SmoothWeightedRoundRobin: Sendable {
    private var scores: [Double] = []

    /// The running state of one pick, so callers can offer candidates from their own loop
    /// without building an array.
    struct Round {
        var best: Int?
        var bestScore = -Double.infinity
        var total = 0.0
    }

    /// Offers one candidate to the current pick; weight 0 means "not eligible now".
    mutating func offer(_ peer: Int, weight: Double, to round: inout Round) {
        guard weight > 0 else { return }
        if peer >= scores.count { scores.append(contentsOf: repeatElement(0, count: peer - scores.count + 1)) }
        scores[peer] += weight
        round.total += weight
        if scores[peer] > round.bestScore {
            round.bestScore = scores[peer]
            round.best = peer
        }
    }

    /// Ends the pick: the chosen peer pays the round's total weight; nil when nobody was eligible.
    mutating func finish(_ round: Round) -> Int? {
        guard let best = round.best else { return nil }
        scores[best] -= round.total
        return best
    }

    /// Picks among `(peer, weight)` pairs; nil when every weight is 0.
    mutating func pick(_ candidates: some Sequence<(Int, Double)>) -> Int? {
        var round = Round()
        for (peer, weight) in candidates { offer(peer, weight: weight, to: &round) }
        return finish(round)
    }

    /// Forgets a peer's score (it left, or its id is reused).
    mutating func reset(_ peer: Int) {
        if peer < scores.count { scores[peer] = 0 }
    }
}
