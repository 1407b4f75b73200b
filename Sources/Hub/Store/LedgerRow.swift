import Foundation

/// One finished API request, as the ledger records it.
public struct LedgerRow: Sendable, Equatable {
    public var at: Date
    public var requestID: String
    /// `key:NAME` for an API key, the token's `sub` for a JWT, `anonymous` without auth.
    public var subject: String
    public var model: String?
    public var worker: String?
    public var outcome: String
    public var status: Int
    public var code: String?
    public var promptTokens: Int
    public var completionTokens: Int
    public var cachedTokens: Int
    public var ttftMilliseconds: Double?
    public var durationMilliseconds: Double

    public init(at: Date, requestID: String, subject: String, model: String?, worker: String?, outcome: String, status: Int,
                code: String?, promptTokens: Int, completionTokens: Int, cachedTokens: Int, ttftMilliseconds: Double?,
                durationMilliseconds: Double) {
        self.at = at
        self.requestID = requestID
        self.subject = subject
        self.model = model
        self.worker = worker
        self.outcome = outcome
        self.status = status
        self.code = code
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedTokens = cachedTokens
        self.ttftMilliseconds = ttftMilliseconds
        self.durationMilliseconds = durationMilliseconds
    }

    /// The hour bucket it adds to.
    public var bucket: UsageBucket.Key { UsageBucket.Key(hour: UsageBucket.hour(of: at), subject: subject, model: model ?? "") }
}

/// Requests and tokens of one (hour, subject, model): what usage reports read, and what
/// requests that found the ledger's queue full are folded into (counted, never dropped).
public struct UsageBucket: Sendable, Equatable {
    public struct Key: Hashable, Sendable {
        /// Unix time of the hour's start.
        public var hour: Int64
        public var subject: String
        public var model: String

        public init(hour: Int64, subject: String, model: String) {
            self.hour = hour
            self.subject = subject
            self.model = model
        }
    }

    public var key: Key
    public var requests = 0
    /// Answers that were not a success (status 400 and above, or a stream that broke).
    public var errors = 0
    public var promptTokens = 0
    public var completionTokens = 0
    public var cachedTokens = 0

    public init(key: Key) { self.key = key }

    public mutating func add(_ row: LedgerRow) {
        requests += 1
        if row.outcome != "ok" { errors += 1 }
        promptTokens += row.promptTokens
        completionTokens += row.completionTokens
        cachedTokens += row.cachedTokens
    }

    public mutating func add(_ other: UsageBucket) {
        requests += other.requests
        errors += other.errors
        promptTokens += other.promptTokens
        completionTokens += other.completionTokens
        cachedTokens += other.cachedTokens
    }

    public static func hour(of date: Date) -> Int64 {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        return seconds - seconds % 3600
    }
}

/// What a usage report groups by and covers.
public struct UsageQuery: Sendable, Equatable {
    public enum Dimension: String, Sendable, CaseIterable { case key, model, hour }

    public var groupBy: [Dimension]
    public var from: Date?
    public var to: Date?

    public init(groupBy: [Dimension], from: Date? = nil, to: Date? = nil) {
        self.groupBy = groupBy
        self.from = from
        self.to = to
    }
}

/// One line of a usage report: the grouped dimensions (absent ones nil) and the sums.
public struct UsageLine: Sendable, Equatable {
    public var subject: String?
    public var model: String?
    public var hour: Date?
    public var requests: Int
    public var errors: Int
    public var promptTokens: Int
    public var completionTokens: Int
    public var cachedTokens: Int

    public var totalTokens: Int { promptTokens + completionTokens }
}
