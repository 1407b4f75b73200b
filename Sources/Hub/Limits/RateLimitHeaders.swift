import HTTPTypes

/// OpenAI's rate-limit headers, which clients and SDKs read to pace themselves:
/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` on every answer of a limited
/// credential, and `Retry-After` (whole seconds) on a 429.
enum RateLimitHeaders {
    static let shouldRetry = HTTPField.Name("x-should-retry")!
    private static let names: [String: HTTPField.Name] = {
        var names: [String: HTTPField.Name] = [:]
        for part in ["limit", "remaining", "reset"] {
            for kind in ["requests", "tokens"] { names["\(part)-\(kind)"] = HTTPField.Name("x-ratelimit-\(part)-\(kind)")! }
        }
        return names
    }()

    /// The headers of what is left of a per-minute request and token limit.
    static func fields(requests: QuotaWindow?, tokens: QuotaWindow?) -> [HTTPField] {
        var fields: [HTTPField] = []
        for (kind, window) in [("requests", requests), ("tokens", tokens)] {
            guard let window else { continue }
            fields.append(HTTPField(name: names["limit-\(kind)"]!, value: String(window.limit)))
            fields.append(HTTPField(name: names["remaining-\(kind)"]!, value: String(window.remaining)))
            fields.append(HTTPField(name: names["reset-\(kind)"]!, value: window.resetText))
        }
        return fields
    }

    /// A 429's headers: `Retry-After`, the exhausted window's, and `x-should-retry: false`
    /// when waiting is pointless for an SDK's retry loop (a budget renews in hours or days).
    static func refusal(retryAfter: Int, requests: QuotaWindow? = nil, tokens: QuotaWindow? = nil, retry: Bool = true) -> HTTPFields {
        var headers = HTTPFields(fields(requests: requests, tokens: tokens))
        headers[.retryAfter] = String(retryAfter)
        if !retry { headers[shouldRetry] = "false" }
        return headers
    }
}
