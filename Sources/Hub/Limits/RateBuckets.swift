import Foundation

/// Token bucket (requests per second with a burst) and a cap on concurrent requests,
/// per subject. Pure bookkeeping over an injected `now`.
struct RateBuckets: Sendable {
    struct Limits: Sendable, Equatable {
        var rps: Double
        var burst: Double
        var concurrent: Int
        var isUnlimited: Bool { rps <= 0 && concurrent <= 0 }
    }

    private struct Bucket: Sendable {
        var tokens: Double
        var updated: ContinuousClock.Instant
        var active = 0
    }

    private var buckets: [String: Bucket] = [:]

    /// Admits one request or says how long to wait.
    mutating func acquire(_ subject: String, limits: Limits, now: ContinuousClock.Instant) -> Result<Void, RetryAfter> {
        var bucket = buckets[subject] ?? Bucket(tokens: limits.burst, updated: now)
        if limits.rps > 0 {
            let elapsed = Double((now - bucket.updated) / .milliseconds(1)) / 1000
            bucket.tokens = min(limits.burst, bucket.tokens + elapsed * limits.rps)
            bucket.updated = now
        }
        if limits.concurrent > 0 && bucket.active >= limits.concurrent {
            buckets[subject] = bucket
            return .failure(RetryAfter(seconds: 1, reason: "more than \(limits.concurrent) requests in progress"))
        }
        if limits.rps > 0 {
            guard bucket.tokens >= 1 else {
                buckets[subject] = bucket
                let wait = (1 - bucket.tokens) / limits.rps
                return .failure(RetryAfter(seconds: max(1, Int(wait.rounded(.up))), reason: "over \(limits.rps) requests per second"))
            }
            bucket.tokens -= 1
        }
        bucket.active += 1
        buckets[subject] = bucket
        return .success(())
    }

    mutating func release(_ subject: String) {
        buckets[subject]?.active -= 1
    }

    struct RetryAfter: Error, Equatable {
        var seconds: Int
        var reason: String
    }
}
