import Config
import Foundation
import Synchronization

/// The shared limiter: one lock around the buckets.
final class RateLimiter: Sendable {
    private let buckets = Mutex(RateBuckets())
    private let configured: Mutex<RateBuckets.Limits>
    private let poison = Mutex(PoisonCounts())
    private let poisonLimit: Mutex<Int>
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

    /// Limits for a caller: its token's claims override the configured defaults.
    func limits(for identity: Identity) -> RateBuckets.Limits {
        RateBuckets.Limits(rps: identity.rps ?? defaults.rps, burst: identity.burst ?? identity.rps ?? defaults.burst,
                           concurrent: identity.concurrency ?? defaults.concurrent)
    }

    func acquire(_ identity: Identity) -> Result<Permit?, RateBuckets.RetryAfter> {
        let limits = limits(for: identity)
        if limits.isUnlimited { return .success(nil) }
        let now = ContinuousClock.now
        return buckets.withLock { $0.acquire(identity.subject, limits: limits, now: now) }
            .map { Permit(subject: identity.subject, limiter: self) }
    }

    fileprivate func release(_ subject: String) { buckets.withLock { $0.release(subject) } }

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
}
