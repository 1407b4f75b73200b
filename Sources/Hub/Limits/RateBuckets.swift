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

    /// Admits one request or says how long to wait. An admission under a rate says what is
    /// left of it (the `x-ratelimit-*-requests` headers).
    mutating func acquire(_ subject: String, limits: Limits, now: ContinuousClock.Instant) -> Result<QuotaWindow?, RetryAfter> {
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
        var window: QuotaWindow?
        if limits.rps > 0 {
            guard bucket.tokens >= 1 else {
                buckets[subject] = bucket
                let wait = (1 - bucket.tokens) / limits.rps
                return .failure(RetryAfter(seconds: max(1, Int(wait.rounded(.up))), reason: "over \(Self.rate(limits.rps))",
                                           window: QuotaWindow(limit: Int((limits.rps * 60).rounded()), remaining: 0,
                                                               reset: (limits.burst - bucket.tokens) / limits.rps)))
            }
            bucket.tokens -= 1
            window = QuotaWindow(limit: Int((limits.rps * 60).rounded()), remaining: Int(bucket.tokens.rounded(.down)),
                                 reset: (limits.burst - bucket.tokens) / limits.rps)
        }
        bucket.active += 1
        buckets[subject] = bucket
        return .success(window)
    }

    private static func rate(_ rps: Double) -> String {
        let perMinute = rps * 60
        return perMinute == perMinute.rounded() && perMinute < 600 ? "\(Int(perMinute)) requests per minute" : "\(rps) requests per second"
    }

    mutating func release(_ subject: String) {
        buckets[subject]?.active -= 1
    }

    struct RetryAfter: Error, Equatable {
        var seconds: Int
        var reason: String
        /// The exhausted rate, for the refusal's headers (nil for the concurrency cap).
        var window: QuotaWindow?
    }
}

/// What is left of a per-minute limit: OpenAI's `x-ratelimit-limit-*`, `-remaining-*` and
/// `-reset-*` headers (reset: seconds until the limit is whole again).
struct QuotaWindow: Sendable, Equatable {
    var limit: Int
    var remaining: Int
    var reset: Double

    /// OpenAI's duration format: `20ms`, `1s`, `6m0s`.
    var resetText: String {
        if reset < 1 { return "\(max(0, Int((reset * 1000).rounded(.up))))ms" }
        let seconds = Int(reset.rounded(.up))
        return seconds < 60 ? "\(seconds)s" : "\(seconds / 60)m\(seconds % 60)s"
    }
}
