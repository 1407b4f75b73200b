import Prometheus
import Proxy

/// The series of keys, limits and the ledger. Per-key series are labelled by the names of
/// API keys only (configured and managed: a bounded set an operator chose), never by a
/// token's subject, which any issuer of tokens could vary without end.
extension HubMetrics {
    /// A request refused under a token limit (`tokens_per_minute` or `budget`).
    func quotaRefused(_ limit: String) {
        counter("caravan_hub_quota_rejections_total", [("limit", limit)],
                help: "Requests refused (429) under a credential's token limits: tokens_per_minute or budget").increment()
    }

    /// A soft budget spent (once per credential and period).
    func softBudgetSpent() {
        counter("caravan_hub_soft_budgets_spent_total", [],
                help: "Credentials whose soft token budget was spent (once per period; requests go on)").increment()
    }

    /// Ledger rows: `written` to the store, `aggregated` into hourly sums in memory because the
    /// queue was full, or `failed` (a batch the store refused, retried with the next one).
    func ledger(_ result: String, rows: Int) {
        counter("caravan_hub_ledger_rows_total", [("result", result)],
                help: "Ledger rows by what became of them: written, aggregated (queue full: folded into hourly sums), retried")
            .increment(by: Int64(rows))
    }

    /// One finished API request of a named API key: requests and tokens per key.
    func keyUsage(_ fields: AccessRecord.Fields) {
        guard let subject = fields.subject, subject.hasPrefix("key:") else { return }
        let key = String(subject.dropFirst(4))
        counter("caravan_hub_key_requests_total", [("key", key)], help: "API requests per named API key").increment()
        guard let usage = fields.usage else { return }
        counter("caravan_hub_key_tokens_total", [("key", key), ("kind", "prompt")],
                help: "Tokens per named API key, prompt and completion").increment(by: Int64(usage.prompt))
        counter("caravan_hub_key_tokens_total", [("key", key), ("kind", "completion")],
                help: "Tokens per named API key, prompt and completion").increment(by: Int64(usage.completion))
    }
}
