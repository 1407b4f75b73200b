import Config
import HTTPTypes
import Foundation
import Testing
@testable import Hub

/// Token limits as pure bookkeeping over an injected clock.
@Suite("Token quotas")
struct TokenQuotasTests {
    let start = Date(timeIntervalSince1970: 1_765_000_800)  // 2025-12-06 06:00 UTC

    @Test("tokens per minute: reserved by estimate, settled by usage, refilled by time; a burst overshoots by one underestimate at most")
    func tokensPerMinute() {
        var quotas = TokenQuotas()
        let limits = TokenQuotas.Limits(tpm: 1000, budget: nil)
        var admitted = 0
        for _ in 0..<20 {
            if case .success = quotas.reserve("a", estimate: 100, limits: limits, now: start) { admitted += 1 }
        }
        #expect(admitted == 10)
        let refused = quotas.reserve("a", estimate: 100, limits: limits, now: start)
        guard case .failure(let refusal) = refused else { Issue.record("expected a refusal"); return }
        #expect(refusal.kind == .tokensPerMinute)
        #expect(refusal.retryAfter == 6)  // 100 tokens at 1000/min
        #expect(refusal.window?.remaining == 0)
        // One request used 300, not 100: the bucket owes 200, paid before the next admission
        // (100 tokens come back every 6 s).
        _ = quotas.settle("a", reserved: 100, used: 300, limits: limits, now: start)
        let owing = quotas.reserve("a", estimate: 100, limits: limits, now: start.addingTimeInterval(12))
        #expect(!Self.admitted(owing))
        let paid = quotas.reserve("a", estimate: 100, limits: limits, now: start.addingTimeInterval(18))
        #expect(Self.admitted(paid))
        let refilled = quotas.reserve("a", estimate: 100, limits: limits, now: start.addingTimeInterval(78))
        #expect((try? refilled.get())??.remaining == 900)
        // Another subject has its own bucket.
        let other = quotas.reserve("b", estimate: 100, limits: limits, now: start)
        #expect(Self.admitted(other))
    }

    @Test("a request larger than a minute's tokens is refused with its size named")
    func tooLarge() {
        var quotas = TokenQuotas()
        let result = quotas.reserve("a", estimate: 5000, limits: .init(tpm: 1000, budget: nil), now: start)
        guard case .failure(let refusal) = result else { Issue.record("expected a refusal"); return }
        #expect(refusal.reason.contains("about 5000 tokens, more than the 1000 tokens per minute"))
    }

    @Test("a hard budget refuses until its period renews, counting reservations in flight")
    func hardBudget() {
        var quotas = TokenQuotas()
        let limits = TokenQuotas.Limits(tpm: nil, budget: TokenBudget(tokens: 1000, period: .day))
        #expect(Self.admitted(quotas.reserve("a", estimate: 600, limits: limits, now: start)))
        // 600 in flight: another 600 would pass the budget.
        let second = quotas.reserve("a", estimate: 600, limits: limits, now: start)
        guard case .failure(let refusal) = second else { Issue.record("expected a refusal"); return }
        #expect(refusal.kind == .budget)
        #expect(refusal.retryAfter == 18 * 3600)  // to midnight UTC
        let spentNow = quotas.settle("a", reserved: 600, used: 700, limits: limits, now: start)
        #expect(!spentNow)
        #expect(quotas.spent("a") == 700)
        #expect(Self.admitted(quotas.reserve("a", estimate: 300, limits: limits, now: start)))
        _ = quotas.settle("a", reserved: 300, used: 300, limits: limits, now: start)
        #expect(!Self.admitted(quotas.reserve("a", estimate: 1, limits: limits, now: start)))
        // The next day starts afresh.
        #expect(Self.admitted(quotas.reserve("a", estimate: 900, limits: limits, now: start.addingTimeInterval(18 * 3600))))
    }

    @Test("a soft budget never refuses and reports being spent once per period")
    func softBudget() {
        var quotas = TokenQuotas()
        let limits = TokenQuotas.Limits(tpm: nil, budget: TokenBudget(tokens: 100, period: .month, hard: false))
        var reports = 0
        for _ in 0..<5 {
            #expect(Self.admitted(quotas.reserve("a", estimate: 60, limits: limits, now: start)))
            if quotas.settle("a", reserved: 60, used: 60, limits: limits, now: start) { reports += 1 }
        }
        #expect(reports == 1)
        let nextMonth = TokenBudget(tokens: 1, period: .month).periodEnd(containing: start)
        _ = quotas.reserve("a", estimate: 60, limits: limits, now: nextMonth)
        let first = quotas.settle("a", reserved: 60, used: 60, limits: limits, now: nextMonth)
        let second = quotas.settle("a", reserved: 0, used: 60, limits: limits, now: nextMonth)
        #expect(!first && second)
    }

    @Test("budgets parse and print as written; periods follow the UTC calendar")
    func budgets() {
        #expect(TokenBudget(parsing: "5M/month") == TokenBudget(tokens: 5_000_000, period: .month))
        #expect(TokenBudget(parsing: "200k/day")?.tokens == 200_000)
        #expect(TokenBudget(parsing: "1.5k/day")?.tokens == 1500)
        #expect(TokenBudget(parsing: "5M/week") == nil)
        #expect(TokenBudget(parsing: "-1/day") == nil)
        #expect(TokenBudget(parsing: "5M/month")?.description == "5M/month")
        let month = TokenBudget(tokens: 1, period: .month)
        #expect(month.periodStart(containing: start).formatted(.iso8601) == "2025-12-01T00:00:00Z")
        #expect(month.periodEnd(containing: start).formatted(.iso8601) == "2026-01-01T00:00:00Z")
    }

    @Test("rate-limit headers: OpenAI's names and reset format")
    func headers() {
        let fields = RateLimitHeaders.fields(requests: QuotaWindow(limit: 600, remaining: 599, reset: 0.1),
                                             tokens: QuotaWindow(limit: 100_000, remaining: 90_000, reset: 366))
        #expect(fields.map { "\($0.name)=\($0.value)" } == [
            "x-ratelimit-limit-requests=600", "x-ratelimit-remaining-requests=599", "x-ratelimit-reset-requests=100ms",
            "x-ratelimit-limit-tokens=100000", "x-ratelimit-remaining-tokens=90000", "x-ratelimit-reset-tokens=6m6s",
        ])
        let refusal = RateLimitHeaders.refusal(retryAfter: 7, retry: false)
        #expect(refusal[.retryAfter] == "7")
        #expect(refusal[RateLimitHeaders.shouldRetry] == "false")
    }

    static func admitted(_ result: Result<QuotaWindow?, TokenQuotas.Refusal>) -> Bool {
        if case .success = result { return true }
        return false
    }
}
