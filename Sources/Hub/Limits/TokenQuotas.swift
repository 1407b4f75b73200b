import Config
import Foundation

/// Tokens per minute and token budgets per subject. A request reserves an estimate of its
/// tokens before it is routed and settles with the engine's usage after it, so a burst of
/// requests cannot pass a limit by more than one request's underestimate. Pure bookkeeping
/// over an injected `now` (wall time: budgets follow the calendar).
struct TokenQuotas: Sendable {
    struct Limits: Sendable, Equatable {
        var tpm: Int?
        var budget: TokenBudget?
        /// Hubs sharing the credential's tokens per minute: each holds this share of them.
        var hubs = 1
        var isUnlimited: Bool { tpm == nil && budget == nil }
        /// This hub's bucket: its share of the tokens per minute.
        var bucket: Double? { tpm.map { Double($0) / Double(max(1, hubs)) } }
    }

    /// Why a request was refused, with the seconds to wait.
    struct Refusal: Error, Equatable {
        enum Kind: Equatable { case tokensPerMinute, budget }
        var kind: Kind
        var retryAfter: Int
        var reason: String
        var window: QuotaWindow?
    }

    private struct Account: Sendable {
        /// The per-minute bucket.
        var tokens: Double
        var updated: Date
        /// Tokens spent in the budget's period so far (settled), and reserved by requests in flight.
        var spent = 0
        var reserved = 0
        var periodStart: Date?
        /// A soft budget was reported spent in this period.
        var reportedSpent = false
        /// The budget it was last counted under (what a sync with the store reads).
        var budget: TokenBudget?
        var tpm: Int?
        /// Tokens settled since the last ``mark()``: not yet in what the store counted.
        var sinceMark = 0
        /// Every hub's spending rate as the syncs see it (tokens a second, smoothed).
        var rate = 0.0
        var lastSync: (spent: Int, at: Date)?
    }

    private var accounts: [String: Account] = [:]

    /// Reserves `estimate` tokens for a request of `subject`, or refuses it. The window says
    /// what is left of its tokens per minute (the `x-ratelimit-*-tokens` headers).
    mutating func reserve(_ subject: String, estimate: Int, limits: Limits, now: Date) -> Result<QuotaWindow?, Refusal> {
        var account = refreshed(subject, limits: limits, now: now)
        defer { accounts[subject] = account }
        if let budget = limits.budget, budget.hard, account.spent + account.reserved + estimate > budget.tokens {
            let end = budget.periodEnd(containing: now)
            return .failure(Refusal(kind: .budget, retryAfter: max(1, Int(end.timeIntervalSince(now).rounded(.up))),
                                    reason: "the token budget of \(budget) is spent (\(account.spent) used"
                                        + (account.reserved > 0 ? ", \(account.reserved) reserved" : "") + "); it renews at "
                                        + end.formatted(.iso8601)))
        }
        var window: QuotaWindow?
        if let tpm = limits.tpm, let bucket = limits.bucket {
            let rate = bucket / 60
            // A request larger than this hub's share goes when the bucket is full (the debt is
            // paid before the next); one larger than the whole limit never does.
            guard estimate <= tpm, Double(estimate) <= account.tokens || account.tokens >= bucket else {
                let wait = estimate > tpm ? 60 : (min(Double(estimate), bucket) - account.tokens) / rate
                return .failure(Refusal(kind: .tokensPerMinute, retryAfter: max(1, Int(wait.rounded(.up))),
                                        reason: estimate > tpm
                                            ? "this request needs about \(estimate) tokens, more than the \(tpm) tokens per minute allowed"
                                            : "over \(tpm) tokens per minute",
                                        window: Self.window(account, limits: limits)))
            }
            account.tokens -= Double(estimate)
            window = Self.window(account, limits: limits)
        }
        account.reserved += estimate
        return .success(window)
    }

    /// Settles a reservation with the tokens the request used. True when this request spent a
    /// soft budget (reported once per period).
    mutating func settle(_ subject: String, reserved: Int, used: Int, limits: Limits, now: Date) -> Bool {
        var account = refreshed(subject, limits: limits, now: now)
        defer { accounts[subject] = account }
        account.reserved = max(0, account.reserved - reserved)
        account.tokens -= Double(used - reserved)  // an underestimate is paid for now
        if let bucket = limits.bucket { account.tokens = min(bucket, account.tokens) }
        account.spent += used
        account.sinceMark += used
        guard let budget = limits.budget, !budget.hard, !account.reportedSpent, account.spent >= budget.tokens else { return false }
        account.reportedSpent = true
        return true
    }

    /// Tokens `subject` spent in its budget's current period (the store's count, at start).
    mutating func seed(_ subject: String, spent: Int, limits: Limits, now: Date) {
        var account = refreshed(subject, limits: limits, now: now)
        account.spent = max(account.spent, spent)
        accounts[subject] = account
    }

    /// Spent tokens of `subject`'s current budget period.
    func spent(_ subject: String) -> Int { accounts[subject].map { $0.spent } ?? 0 }

    /// The subjects counted under a budget, with it: what a sync with a shared store reads.
    var budgeted: [(subject: String, budget: TokenBudget, tpm: Int?)] {
        accounts.compactMap { subject, account in account.budget.map { (subject, $0, account.tpm) } }
    }

    /// Whether a hard budget is close to spent: what is left would go within 2 s at the rate
    /// every hub together spends it (or less than a tenth is left). Hubs sharing it then sync
    /// far more often, since another hub's spending seen late is what overshoots it.
    var nearlySpent: Bool {
        accounts.values.contains { account in
            guard let budget = account.budget, budget.hard else { return false }
            let left = budget.tokens - account.spent - account.reserved
            return left > 0 && (Double(left) <= account.rate * 2 || left * 10 <= budget.tokens)
        }
    }

    /// Starts counting what is settled from now on apart: the ledger is written next, then
    /// the store read, and ``sync(_:stored:limits:now:)`` adds what settled meanwhile.
    mutating func mark() {
        for subject in accounts.keys { accounts[subject]?.sinceMark = 0 }
    }

    /// What every hub sharing the store counted for `subject`'s period, plus what this hub
    /// settled since ``mark()`` (counted twice at worst, never missed).
    mutating func sync(_ subject: String, stored: Int, limits: Limits, now: Date) {
        var account = refreshed(subject, limits: limits, now: now)
        account.spent = stored + account.sinceMark
        if let last = account.lastSync, now.timeIntervalSince(last.at) > 0.001 {
            let observed = Double(max(0, account.spent - last.spent)) / now.timeIntervalSince(last.at)
            account.rate = account.rate * 0.5 + observed * 0.5
        }
        account.lastSync = (account.spent, now)
        accounts[subject] = account
    }

    /// The account brought to `now`: the bucket refilled, a new budget period started afresh.
    private func refreshed(_ subject: String, limits: Limits, now: Date) -> Account {
        var account = accounts[subject] ?? Account(tokens: limits.bucket ?? 0, updated: now)
        if let bucket = limits.bucket {
            let elapsed = max(0, now.timeIntervalSince(account.updated))
            account.tokens = min(bucket, account.tokens + elapsed * bucket / 60)
        }
        account.updated = now
        account.budget = limits.budget
        account.tpm = limits.tpm
        if let budget = limits.budget {
            let start = budget.periodStart(containing: now)
            if account.periodStart != start {
                account.periodStart = start
                account.spent = 0
                account.reportedSpent = false
            }
        }
        return account
    }

    /// What is left of the tokens per minute, as the client knows the limit: this hub's
    /// bucket scaled by the hubs sharing it.
    private static func window(_ account: Account, limits: Limits) -> QuotaWindow {
        let bucket = limits.bucket ?? 0
        let hubs = Double(max(1, limits.hubs))
        return QuotaWindow(limit: limits.tpm ?? 0, remaining: max(0, Int((account.tokens * hubs).rounded(.down))),
                           reset: max(0, (bucket - account.tokens) / (bucket / 60)))
    }
}
