import Foundation
import Synchronization
import Wire

/// Per (worker, model) request rate, token rate and median TTFT over the last tick, for the
/// dashboard's sparklines. Fed by finished requests; emptied by each tick.
final class LiveStats: Sendable {
    struct Rates: Encodable, Sendable {
        var requestsPerSecond: Double
        var tokensPerSecond: Double
        var ttftP50Ms: Double?
    }

    private struct Tally {
        var requests = 0
        var tokens = 0
        var ttfts: [Double] = []
    }

    private let tallies = Mutex<(since: ContinuousClock.Instant, byPair: [String: Tally])>((.now, [:]))

    func record(worker: String, model: String, ttft: Duration?, tokens: Int) {
        tallies.withLock { state in
            var tally = state.byPair["\(worker)/\(model)"] ?? Tally()
            tally.requests += 1
            tally.tokens += tokens
            if let ttft, tally.ttfts.count < 10_000 { tally.ttfts.append(ttft.milliseconds) }
            state.byPair["\(worker)/\(model)"] = tally
        }
    }

    /// The rates since the last call, keyed `worker/model`.
    func take() -> [String: Rates] {
        let (since, byPair) = tallies.withLock { state in
            defer { state = (.now, [:]) }
            return state
        }
        let elapsed = max(0.001, Double((ContinuousClock.now - since) / .milliseconds(1)) / 1000)
        return byPair.mapValues { tally in
            let sorted = tally.ttfts.sorted()
            return Rates(requestsPerSecond: Double(tally.requests) / elapsed, tokensPerSecond: Double(tally.tokens) / elapsed,
                         ttftP50Ms: sorted.isEmpty ? nil : (sorted[sorted.count / 2] * 10).rounded() / 10)
        }
    }
}
