import Config
import Foundation
import Synchronization

/// The shared limiter: requests (rate and concurrency), tokens (per minute and budgets) and
/// poison counts, each table behind its own lock.
final class RateLimiter: Sendable {
    private let buckets = Mutex(RateBuckets())
    private let tokens = Mutex(TokenQuotas())
    private let configured: Mutex<RateBuckets.Limits>
    private let poison = Mutex(PoisonCounts())
    private let poisonLimit: Mutex<Int>
    /// Hubs sharing the store and serving now (``KeySync``): each enforces this share of every
    /// per-credential rate, so two hubs do not give twice a limit.
    private let sharing = Atomic<Int>(1)
    var hubs: Int {
        get { sharing.load(ordering: .relaxed) }
        set { sharing.store(max(1, newValue), ordering: .relaxed) }
    }
    /// False while the store cannot be read (``KeySync``): budgets are then counted here alone.
    private let storeReadable = Atomic<Bool>(true)
    var storeAvailable: Bool {
        get { storeReadable.load(ordering: .relaxed) }
        set { storeReadable.store(newValue, ordering: .relaxed) }
    }
    /// Poison requests a client may send per minute before it gets 429 (`limits.poison_per_minute`; 0: off).
    var poisonPerMinute: Int {
        get { poisonLimit.withLock { $0 } }
        set { poisonLimit.withLock { $0 = newValue } }
    }
    /// The `hub.limits` in force (a reload replaces them).
    var defaults: RateBuckets.Limits {
        get { configured.withLock { $0 } }
        set { configured.withLock { $0 = newValue } }
    }

    init(defaults: RateBuckets.Limits, poisonPerMinute: Int = LimitsConfig().poisonPerMinute) {
        configured = Mutex(defaults)
        poisonLimit = Mutex(poisonPerMinute)
    }

    /// Counts a request of `client` that failed alike on every worker (``Blame``).
    func poisoned(_ client: String) {
        let (limit, now) = (poisonPerMinute, ContinuousClock.now)
        poison.withLock { $0.record(client, limit: limit, now: now) }
    }

    /// Whether `client` has sent too many poison requests this minute: the seconds to wait, or nil.
    func poisonRetryAfter(_ client: String) -> Int? {
        let (limit, now) = (poisonPerMinute, ContinuousClock.now)
        return poison.withLock { $0.retryAfter(client, limit: limit, now: now) }
    }

    /// Clients held back now for their poison requests.
    var poisonThrottled: Int {
        let (limit, now) = (poisonPerMinute, ContinuousClock.now)
        return poison.withLock { $0.throttled(limit: limit, now: now) }
    }

    /// Limits for a caller on this hub: its credential's own override the configured defaults,
    /// and each of the hubs sharing the store holds its share of them.
    func limits(for identity: Identity) -> RateBuckets.Limits {
        let share = Double(hubs)
        let concurrent = identity.concurrency ?? defaults.concurrent
        return RateBuckets.Limits(rps: (identity.rps ?? defaults.rps) / share,
                                  burst: max(1, (identity.burst ?? identity.rps ?? defaults.burst) / share),
                                  concurrent: concurrent > 0 ? max(1, Int((Double(concurrent) / share).rounded(.up))) : concurrent)
    }

    /// An admitted request: its concurrency slot (nil without limits) and what is left of its
    /// request rate (nil without one).
    struct Admission {
        var permit: Permit?
        var requests: QuotaWindow?
    }

    func acquire(_ identity: Identity) -> Result<Admission, RateBuckets.RetryAfter> {
        let limits = limits(for: identity)
        if limits.isUnlimited { return .success(Admission()) }
        let (now, share) = (ContinuousClock.now, hubs)
        // The headers speak of the credential's whole limit: this hub's share, scaled back.
        let scaled = { (window: QuotaWindow?) in
            window.map { QuotaWindow(limit: $0.limit * share, remaining: $0.remaining * share, reset: $0.reset) }
        }
        return buckets.withLock { $0.acquire(identity.subject, limits: limits, now: now) }
            .map { Admission(permit: Permit(subject: identity.subject, limiter: self), requests: scaled($0)) }
            .mapError { retry in
                var retry = retry
                retry.window = scaled(retry.window)
                if share > 1, retry.window != nil { retry.reason += " on this hub (1 of \(share) hubs sharing the limit)" }
                return retry
            }
    }

    fileprivate func release(_ subject: String) { buckets.withLock { $0.release(subject) } }

    /// Reserves about `estimate` tokens for a request of `identity` (nil when it has no token
    /// limits): what is left of its tokens per minute, and the reservation to settle.
    func reserveTokens(_ identity: Identity, estimate: Int, now: Date = Date())
        -> Result<(window: QuotaWindow?, reservation: TokenReservation)?, TokenQuotas.Refusal>
    {
        let limits = TokenQuotas.Limits(tpm: identity.tpm, budget: identity.budget, hubs: hubs)
        guard !limits.isUnlimited else { return .success(nil) }
        return tokens.withLock { $0.reserve(identity.subject, estimate: estimate, limits: limits, now: now) }
            .map { ($0, TokenReservation(subject: identity.subject, limits: limits, estimate: estimate, limiter: self)) }
    }

    /// Settles a reservation: true when the request spent a soft budget.
    fileprivate func settle(_ reservation: TokenReservation, used: Int) -> Bool {
        let now = Date()
        return tokens.withLock {
            $0.settle(reservation.subject, reserved: reservation.estimate, used: used, limits: reservation.limits, now: now)
        }
    }

    /// Tokens a subject used in its current budget period, as the store counted them at start.
    func seedBudget(_ subject: String, spent: Int, budget: TokenBudget, tpm: Int?) {
        let now = Date()
        tokens.withLock { $0.seed(subject, spent: spent, limits: .init(tpm: tpm, budget: budget), now: now) }
    }

    func budgetSpent(_ subject: String) -> Int { tokens.withLock { $0.spent(subject) } }

    /// Budgets counted here, and the mark and sync that bring in other hubs' spending
    /// (``TokenQuotas/mark()``).
    var budgeted: [(subject: String, budget: TokenBudget, tpm: Int?)] { tokens.withLock { $0.budgeted } }
    func markBudgets() { tokens.withLock { $0.mark() } }
    var budgetNearlySpent: Bool { tokens.withLock { $0.nearlySpent } }
    func syncBudget(_ subject: String, stored: Int, budget: TokenBudget, tpm: Int?) {
        let now = Date()
        tokens.withLock { $0.sync(subject, stored: stored, limits: .init(tpm: tpm, budget: budget), now: now) }
    }

    /// One admitted request; gives its concurrency slot back exactly once.
    final class Permit: Sendable {
        let subject: String
        let limiter: RateLimiter
        private let released = Atomic<Bool>(false)

        init(subject: String, limiter: RateLimiter) {
            self.subject = subject
            self.limiter = limiter
        }

        func release() {
            if !released.exchange(true, ordering: .acquiringAndReleasing) { limiter.release(subject) }
        }

        deinit { release() }
    }

    /// Tokens reserved for one request; settled exactly once, with the engine's usage (a
    /// request dropped without an answer settles with nothing used).
    final class TokenReservation: Sendable {
        let subject: String
        let limits: TokenQuotas.Limits
        let estimate: Int
        private let limiter: RateLimiter
        private let settled = Atomic<Bool>(false)

        init(subject: String, limits: TokenQuotas.Limits, estimate: Int, limiter: RateLimiter) {
            self.subject = subject
            self.limits = limits
            self.estimate = estimate
            self.limiter = limiter
        }

        /// Returns true when this request spent a soft budget (once per period).
        @discardableResult
        func settle(used: Int) -> Bool {
            guard !settled.exchange(true, ordering: .acquiringAndReleasing) else { return false }
            return limiter.settle(self, used: used)
        }

        deinit { settle(used: 0) }
    }
}
