import Config
import Foundation
import Logging

/// The hub's store over SQL: one implementation of ``HubStore`` for SQLite and PostgreSQL,
/// whose differences stay in their ``SQLDriver``. Calls take turns (a transaction's
/// statements are separate calls on one connection).
public final class SQLStore: HubStore {
    /// Where it is (never a password).
    public let location: String
    let driver: any SQLDriver
    let gate = SerialGate()

    init(driver: any SQLDriver, location: String) {
        self.driver = driver
        self.location = location
    }

    /// Opens the store `location` names and brings its schema up to date.
    public static func open(_ location: StoreLocation, logger: Logger) async throws -> SQLStore {
        let driver: any SQLDriver = switch location {
        case .sqlite(let path): try await SQLiteDriver.open(path: path, logger: logger)
        case .postgres(let database): try await PostgresDriver.open(database, logger: logger)
        }
        let store = SQLStore(driver: driver, location: location.description)
        do {
            try await store.migrate()
        } catch {
            try? await driver.close()
            throw error
        }
        return store
    }

    func migrate() async throws {
        try await gate.run {
            try await self.transaction {
                try await self.driver.lockForMigration()
                let found = try await self.driver.schemaVersion()
                let migrations = StoreSchema.migrations
                guard found <= migrations.count else {
                    throw StoreError.newerSchema(found, known: migrations.count, path: self.location)
                }
                for version in found..<migrations.count {
                    for statement in migrations[version] { _ = try await self.driver.execute(statement, []) }
                    try await self.driver.setSchemaVersion(version + 1)
                }
            }
        }
    }

    /// Runs `body` in one write transaction.
    func transaction(_ body: () async throws -> Void) async throws {
        _ = try await driver.execute(driver.begin, [])
        do {
            try await body()
            _ = try await driver.execute("COMMIT", [])
        } catch {
            _ = try? await driver.execute("ROLLBACK", [])
            throw error
        }
    }

    public func schemaVersion() async throws -> Int { try await gate.run { try await self.driver.schemaVersion() } }

    // MARK: Keys

    public func keys() async throws -> [ManagedKey] {
        try await gate.run { try await self.driver.execute("SELECT * FROM keys ORDER BY created_at, name", []).map(Self.key) }
    }

    public func keysGeneration() async throws -> Int64 {
        try await gate.run {
            Int64(try await self.driver.execute("SELECT value FROM meta WHERE name = 'keys_generation'", []).first?.int("value") ?? 0)
        }
    }

    public func insert(_ key: ManagedKey) async throws {
        if try await keys().contains(where: { $0.name == key.name }) { throw StoreError("a key named '\(key.name)' exists already") }
        try await gate.run {
            try await self.transaction {
                _ = try await self.driver.execute("""
                    INSERT INTO keys (id, name, digest, models, rpm, tpm, budget_tokens, budget_period, budget_hard,
                                      parallel, created_at, expires_at, revoked_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, Self.values(key))
                try await self.bumpKeysGeneration()
            }
        }
    }

    public func update(_ key: ManagedKey) async throws {
        try await gate.run {
            try await self.transaction {
                _ = try await self.driver.execute("""
                    UPDATE keys SET name = ?, digest = ?, models = ?, rpm = ?, tpm = ?, budget_tokens = ?, budget_period = ?,
                                    budget_hard = ?, parallel = ?, created_at = ?, expires_at = ?, revoked_at = ?
                    WHERE id = ?
                    """, Array(Self.values(key).dropFirst()) + [.text(key.id)])
                try await self.bumpKeysGeneration()
            }
        }
    }

    private func bumpKeysGeneration() async throws {
        _ = try await driver.execute("UPDATE meta SET value = value + 1 WHERE name = 'keys_generation'", [])
    }

    private static func values(_ key: ManagedKey) -> [StoreValue] {
        [.text(key.id), .text(key.name), .text(key.digest), StoreValue(key.models?.joined(separator: ",")),
         StoreValue(key.rpm), StoreValue(key.tpm), StoreValue(key.budget?.tokens), StoreValue(key.budget?.period.rawValue),
         StoreValue(key.budget.map { $0.hard ? 1 : 0 }), StoreValue(key.parallel), .double(key.createdAt.timeIntervalSince1970),
         StoreValue(key.expiresAt?.timeIntervalSince1970), StoreValue(key.revokedAt?.timeIntervalSince1970)]
    }

    private static func key(_ row: StoreRow) -> ManagedKey {
        let budget: TokenBudget? = row.int("budget_tokens").flatMap { tokens in
            row.string("budget_period").flatMap(TokenBudget.Period.init(rawValue:)).map {
                TokenBudget(tokens: tokens, period: $0, hard: row.int("budget_hard") != 0)
            }
        }
        return ManagedKey(
            id: row.string("id") ?? "", name: row.string("name") ?? "", digest: row.string("digest") ?? "",
            models: row.string("models").map { $0.split(separator: ",").map(String.init) },
            rpm: row.int("rpm"), tpm: row.int("tpm"), budget: budget, parallel: row.int("parallel"),
            createdAt: row.date("created_at") ?? Date(timeIntervalSince1970: 0), expiresAt: row.date("expires_at"),
            revokedAt: row.date("revoked_at"))
    }

    // MARK: The ledger

    public func append(_ rows: [LedgerRow], buckets: [UsageBucket]) async throws {
        var totals: [UsageBucket.Key: UsageBucket] = [:]
        for row in rows { totals[row.bucket, default: UsageBucket(key: row.bucket)].add(row) }
        for bucket in buckets { totals[bucket.key, default: UsageBucket(key: bucket.key)].add(bucket) }
        guard !totals.isEmpty else { return }
        let sums = totals
        try await gate.run {
            try await self.transaction {
                for start in stride(from: 0, to: rows.count, by: 256) {
                    let chunk = rows[start..<min(start + 256, rows.count)]
                    let values = Array(repeating: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", count: chunk.count).joined(separator: ", ")
                    _ = try await self.driver.execute("""
                        INSERT INTO ledger (at, request_id, subject, model, worker, outcome, status, code, prompt_tokens,
                                            completion_tokens, cached_tokens, ttft_ms, duration_ms) VALUES \(values)
                        """, chunk.flatMap(Self.values))
                }
                for bucket in sums.values {
                    _ = try await self.driver.execute("""
                        INSERT INTO usage_hourly (hour, subject, model, requests, errors, prompt_tokens, completion_tokens, cached_tokens)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT (hour, subject, model) DO UPDATE SET requests = usage_hourly.requests + excluded.requests,
                            errors = usage_hourly.errors + excluded.errors,
                            prompt_tokens = usage_hourly.prompt_tokens + excluded.prompt_tokens,
                            completion_tokens = usage_hourly.completion_tokens + excluded.completion_tokens,
                            cached_tokens = usage_hourly.cached_tokens + excluded.cached_tokens
                        """, [.integer(Int(bucket.key.hour)), .text(bucket.key.subject), .text(bucket.key.model),
                              .integer(bucket.requests), .integer(bucket.errors), .integer(bucket.promptTokens),
                              .integer(bucket.completionTokens), .integer(bucket.cachedTokens)])
                }
            }
        }
    }

    private static func values(_ row: LedgerRow) -> [StoreValue] {
        [.double(row.at.timeIntervalSince1970), .text(row.requestID), .text(row.subject), StoreValue(row.model), StoreValue(row.worker),
         .text(row.outcome), .integer(row.status), StoreValue(row.code), .integer(row.promptTokens), .integer(row.completionTokens),
         .integer(row.cachedTokens), StoreValue(row.ttftMilliseconds), .double(row.durationMilliseconds)]
    }

    public func usage(_ query: UsageQuery) async throws -> [UsageLine] {
        let columns = query.groupBy.map { dimension in
            switch dimension {
            case .key: "subject"
            case .model: "model"
            case .hour: "hour"
            }
        }
        var conditions: [String] = []
        var values: [StoreValue] = []
        if let from = query.from { conditions.append("hour >= ?"); values.append(.integer(Int(UsageBucket.hour(of: from)))) }
        if let to = query.to { conditions.append("hour < ?"); values.append(.double(to.timeIntervalSince1970)) }
        let sums = ["requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens"].map { "CAST(SUM(\($0)) AS BIGINT) AS \($0)" }
        let sql = "SELECT \((columns + sums).joined(separator: ", ")) FROM usage_hourly"
            + (conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND "))
            + (columns.isEmpty ? "" : " GROUP BY \(columns.joined(separator: ", ")) ORDER BY \(columns.joined(separator: ", "))")
        let bound = values
        let rows = try await gate.run { try await self.driver.execute(sql, bound) }
        return rows.compactMap { row in
            let requests = row.int("requests") ?? 0
            guard requests > 0 else { return nil }  // no buckets at all: a SUM over nothing
            return UsageLine(subject: columns.contains("subject") ? row.string("subject") : nil,
                             model: columns.contains("model") ? row.string("model") : nil,
                             hour: columns.contains("hour") ? row.date("hour") : nil,
                             requests: requests, errors: row.int("errors") ?? 0, promptTokens: row.int("prompt_tokens") ?? 0,
                             completionTokens: row.int("completion_tokens") ?? 0, cachedTokens: row.int("cached_tokens") ?? 0)
        }
    }

    public func tokensUsed(subject: String, since start: Date) async throws -> Int {
        try await gate.run {
            try await self.driver.execute(
                "SELECT CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) AS used FROM usage_hourly "
                    + "WHERE subject = ? AND hour >= ?",
                [.text(subject), .integer(Int(UsageBucket.hour(of: start)))]
            ).first?.int("used") ?? 0
        }
    }

    public func prune(rowsBefore rows: Date, bucketsBefore buckets: Date) async throws {
        try await gate.run {
            try await self.transaction {
                _ = try await self.driver.execute("DELETE FROM ledger WHERE at < ?", [.double(rows.timeIntervalSince1970)])
                _ = try await self.driver.execute("DELETE FROM usage_hourly WHERE hour < ?", [.integer(Int(UsageBucket.hour(of: buckets)))])
            }
        }
    }

    public func heartbeat(hub id: String, now: Date, since: Date) async throws -> Int {
        try await gate.run {
            _ = try await self.driver.execute(
                "INSERT INTO hubs (id, seen_at) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
                [.text(id), .double(now.timeIntervalSince1970)])
            return try await self.driver.execute("SELECT CAST(COUNT(*) AS BIGINT) AS hubs FROM hubs WHERE seen_at >= ?",
                                                 [.double(since.timeIntervalSince1970)]).first?.int("hubs") ?? 1
        }
    }

    public func leave(hub id: String) async throws {
        try await gate.run {
            _ = try await self.driver.execute("DELETE FROM hubs WHERE id = ? OR seen_at < ?",
                                              [.text(id), .double(Date().timeIntervalSince1970 - 86_400)])
        }
    }

    public func rows(limit: Int) async throws -> [LedgerRow] {
        try await gate.run {
            try await self.driver.execute("SELECT * FROM ledger ORDER BY at DESC LIMIT ?", [.integer(limit)]).map { row in
                LedgerRow(at: row.date("at") ?? Date(timeIntervalSince1970: 0), requestID: row.string("request_id") ?? "",
                          subject: row.string("subject") ?? "", model: row.string("model"), worker: row.string("worker"),
                          outcome: row.string("outcome") ?? "", status: row.int("status") ?? 0, code: row.string("code"),
                          promptTokens: row.int("prompt_tokens") ?? 0, completionTokens: row.int("completion_tokens") ?? 0,
                          cachedTokens: row.int("cached_tokens") ?? 0, ttftMilliseconds: row.double("ttft_ms"),
                          durationMilliseconds: row.double("duration_ms") ?? 0)
            }
        }
    }

    public func close() async throws {
        try await gate.run { try await self.driver.close() }
    }

    /// Sets the schema version as a newer hub would have (tests of the refusal).
    func setSchemaVersionForTests(_ version: Int) async throws {
        try await gate.run { try await self.driver.setSchemaVersion(version) }
    }
}
