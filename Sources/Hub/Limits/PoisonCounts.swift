/// Requests per client that failed alike on every worker (poison, ``Blame``) in the last
/// minute, and the 429 once a client has sent too many. Pure bookkeeping over an injected `now`.
///
/// A poison request costs every worker it was tried on an engine's time and, before blame
/// needed evidence, their breakers. Its sender is slowed down; everyone else is not.
struct PoisonCounts: Sendable {
    typealias Instant = ContinuousClock.Instant

    static let window: Duration = .seconds(60)
    /// Clients remembered before old entries are swept.
    private static let sweepAbove = 1024

    /// When each client's recent poison requests ended, oldest first (at most `limit` kept).
    private var recent: [String: [Instant]] = [:]

    /// Counts one poison request of `client`. `limit` 0: counting is off.
    mutating func record(_ client: String, limit: Int, now: Instant) {
        guard limit > 0 else { return }
        var times = live(client, now: now)
        times.append(now)
        if times.count > limit { times.removeFirst(times.count - limit) }
        recent[client] = times
        if recent.count > Self.sweepAbove {
            recent = recent.filter { now - ($0.value.last ?? now) < Self.window }
        }
    }

    /// Whether `client` may send another request: nil, or the seconds until its oldest
    /// counted poison request leaves the window.
    func retryAfter(_ client: String, limit: Int, now: Instant) -> Int? {
        guard limit > 0 else { return nil }
        let times = live(client, now: now)
        guard times.count >= limit, let oldest = times.first else { return nil }
        let wait = Self.window - (now - oldest)
        return max(1, Int((Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18).rounded(.up)))
    }

    /// Clients held back now (for metrics and the dashboard).
    func throttled(limit: Int, now: Instant) -> Int {
        guard limit > 0 else { return 0 }
        return recent.keys.count { retryAfter($0, limit: limit, now: now) != nil }
    }

    private func live(_ client: String, now: Instant) -> [Instant] {
        (recent[client] ?? []).filter { now - $0 < Self.window }
    }
}
