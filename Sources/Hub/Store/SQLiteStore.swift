import Config
import Foundation
import Logging
import NIOCore
import NIOPosix
import SQLiteNIO

/// The embedded store: one SQLite file in WAL mode (several processes may read and write it:
/// the hub and `caravan-hub keys`). Its calls run on NIO's thread pool, never on an event loop.
public final class SQLiteStore: HubStore {
    public let path: String
    private let connection: SQLiteConnection
    private let gate = SerialGate()

    private init(path: String, connection: SQLiteConnection) {
        self.path = path
        self.connection = connection
    }

    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    /// Refuses a file or folder another user could write, and a schema newer than this binary.
    public static func open(path: String, logger: Logger) async throws -> SQLiteStore {
        let folder = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: folder.isEmpty ? "." : folder, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        try checkOwnership(folder.isEmpty ? "." : folder, what: "folder")
        let existed = FileManager.default.fileExists(atPath: path)
        if existed { try checkOwnership(path, what: "file") }
        let connection = try await SQLiteConnection.open(storage: .file(path: path), logger: logger)
        let store = SQLiteStore(path: path, connection: connection)
        do {
            if !existed { _ = chmod(path, 0o600) }
            for pragma in ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL", "PRAGMA busy_timeout = 5000"] {
                _ = try await connection.query(pragma)
            }
            try await store.migrate()
        } catch {
            try? await connection.close()
            throw error
        }
        return store
    }

    /// The file holds every key's digest and everyone's usage: only its owner may write it.
    private static func checkOwnership(_ path: String, what: String) throws {
        var info = stat()
        guard stat(path, &info) == 0 else { throw StoreError("cannot read the store \(what) \(path): \(String(cString: strerror(errno)))") }
        if info.st_uid != geteuid() {
            throw StoreError("the store \(what) \(path) belongs to user \(info.st_uid), not to this hub's user (\(geteuid())): refused")
        }
        if info.st_mode & 0o022 != 0 {
            throw StoreError("the store \(what) \(path) is writable by other users (mode \(String(info.st_mode & 0o777, radix: 8))): "
                             + "refused; chmod go-w \(path)")
        }
    }

    func migrate() async throws {
        try await gate.run {
            let found = Int(try await self.connection.query("PRAGMA user_version").first?.column("user_version")?.integer ?? 0)
            guard found <= StoreSchema.latest else { throw StoreError.newerSchema(found, known: StoreSchema.latest, path: self.path) }
            for version in found..<StoreSchema.latest {
                try await self.transaction {
                    for statement in StoreSchema.migrations[version] { _ = try await self.connection.query(statement) }
                    _ = try await self.connection.query("PRAGMA user_version = \(version + 1)")
                }
            }
        }
    }

    /// Runs `body` in one write transaction (`BEGIN IMMEDIATE`: takes the write lock first,
    /// so a second process waits for it under `busy_timeout` instead of failing at commit).
    private func transaction(_ body: () async throws -> Void) async throws {
        _ = try await connection.query("BEGIN IMMEDIATE")
        do {
            try await body()
            _ = try await connection.query("COMMIT")
        } catch {
            _ = try? await connection.query("ROLLBACK")
            throw error
        }
    }

    public func schemaVersion() async throws -> Int {
        Int(try await connection.query("PRAGMA user_version").first?.column("user_version")?.integer ?? 0)
    }

    // MARK: Keys

    public func keys() async throws -> [ManagedKey] {
        try await gate.run {
            try await self.connection.query("SELECT * FROM keys ORDER BY created_at, name").map(Self.key)
        }
    }

    public func keysGeneration() async throws -> Int64 {
        try await gate.run {
            Int64(try await self.connection.query("SELECT value FROM meta WHERE name = 'keys_generation'").first?
                .column("value")?.integer ?? 0)
        }
    }

    public func insert(_ key: ManagedKey) async throws {
        try await gate.run {
            try await self.transaction {
                do {
                    _ = try await self.connection.query("""
                        INSERT INTO keys (id, name, digest, models, rpm, tpm, budget_tokens, budget_period, budget_hard,
                                          parallel, created_at, expires_at, revoked_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """, Self.binds(key))
                } catch let error as SQLiteError where [.constraint, .constraintUniqueFailed, .constraintPrimaryKeyFailed].contains(error.reason) {
                    throw StoreError("a key named '\(key.name)' exists already")
                }
                try await self.bumpKeysGeneration()
            }
        }
    }

    public func update(_ key: ManagedKey) async throws {
        try await gate.run {
            try await self.transaction {
                var binds = Array(Self.binds(key).dropFirst())
                binds.append(.text(key.id))
                _ = try await self.connection.query("""
                    UPDATE keys SET name = ?, digest = ?, models = ?, rpm = ?, tpm = ?, budget_tokens = ?, budget_period = ?,
                                    budget_hard = ?, parallel = ?, created_at = ?, expires_at = ?, revoked_at = ?
                    WHERE id = ?
                    """, binds)
                try await self.bumpKeysGeneration()
            }
        }
    }

    private func bumpKeysGeneration() async throws {
        _ = try await connection.query("UPDATE meta SET value = value + 1 WHERE name = 'keys_generation'")
    }

    private static func binds(_ key: ManagedKey) -> [SQLiteData] {
        [.text(key.id), .text(key.name), .text(key.digest), optional(key.models?.joined(separator: ",")),
         optional(key.rpm), optional(key.tpm), optional(key.budget?.tokens), optional(key.budget?.period.rawValue),
         optional(key.budget.map { $0.hard ? 1 : 0 }), optional(key.parallel), .float(key.createdAt.timeIntervalSince1970),
         optional(key.expiresAt?.timeIntervalSince1970), optional(key.revokedAt?.timeIntervalSince1970)]
    }

    private static func key(_ row: SQLiteRow) -> ManagedKey {
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
                for chunk in stride(from: 0, to: rows.count, by: 256).map({ rows[$0..<min($0 + 256, rows.count)] }) {
                    let values = Array(repeating: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", count: chunk.count).joined(separator: ", ")
                    _ = try await self.connection.query("""
                        INSERT INTO ledger (at, request_id, subject, model, worker, outcome, status, code, prompt_tokens,
                                            completion_tokens, cached_tokens, ttft_ms, duration_ms) VALUES \(values)
                        """, chunk.flatMap(Self.binds))
                }
                for bucket in sums.values {
                    _ = try await self.connection.query("""
                        INSERT INTO usage_hourly (hour, subject, model, requests, errors, prompt_tokens, completion_tokens, cached_tokens)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT (hour, subject, model) DO UPDATE SET requests = requests + excluded.requests,
                            errors = errors + excluded.errors, prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                            completion_tokens = completion_tokens + excluded.completion_tokens,
                            cached_tokens = cached_tokens + excluded.cached_tokens
                        """, [.integer(Int(bucket.key.hour)), .text(bucket.key.subject), .text(bucket.key.model),
                              .integer(bucket.requests), .integer(bucket.errors), .integer(bucket.promptTokens),
                              .integer(bucket.completionTokens), .integer(bucket.cachedTokens)])
                }
            }
        }
    }

    private static func binds(_ row: LedgerRow) -> [SQLiteData] {
        [.float(row.at.timeIntervalSince1970), .text(row.requestID), .text(row.subject), optional(row.model), optional(row.worker),
         .text(row.outcome), .integer(row.status), optional(row.code), .integer(row.promptTokens), .integer(row.completionTokens),
         .integer(row.cachedTokens), optional(row.ttftMilliseconds), .float(row.durationMilliseconds)]
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
        var binds: [SQLiteData] = []
        if let from = query.from { conditions.append("hour >= ?"); binds.append(.integer(Int(UsageBucket.hour(of: from)))) }
        if let to = query.to { conditions.append("hour < ?"); binds.append(.float(to.timeIntervalSince1970)) }
        let select = (columns + ["SUM(requests) AS requests", "SUM(errors) AS errors", "SUM(prompt_tokens) AS prompt_tokens",
                                 "SUM(completion_tokens) AS completion_tokens", "SUM(cached_tokens) AS cached_tokens"])
        let sql = "SELECT \(select.joined(separator: ", ")) FROM usage_hourly"
            + (conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND "))
            + (columns.isEmpty ? "" : " GROUP BY \(columns.joined(separator: ", ")) ORDER BY \(columns.joined(separator: ", "))")
        let values = binds
        let rows = try await gate.run { try await self.connection.query(sql, values) }
        return rows.compactMap { row in
            let requests = row.int("requests") ?? 0
            guard requests > 0 else { return nil }  // no buckets at all: SUM over nothing
            return UsageLine(subject: columns.contains("subject") ? row.string("subject") : nil,
                             model: columns.contains("model") ? row.string("model") : nil,
                             hour: columns.contains("hour") ? row.int("hour").map { Date(timeIntervalSince1970: Double($0)) } : nil,
                             requests: requests, errors: row.int("errors") ?? 0, promptTokens: row.int("prompt_tokens") ?? 0,
                             completionTokens: row.int("completion_tokens") ?? 0, cachedTokens: row.int("cached_tokens") ?? 0)
        }
    }

    public func tokensUsed(subject: String, since start: Date) async throws -> Int {
        try await gate.run {
            try await self.connection.query(
                "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS used FROM usage_hourly WHERE subject = ? AND hour >= ?",
                [.text(subject), .integer(Int(UsageBucket.hour(of: start)))]
            ).first?.int("used") ?? 0
        }
    }

    public func prune(rowsBefore rows: Date, bucketsBefore buckets: Date) async throws {
        try await gate.run {
            try await self.transaction {
                _ = try await self.connection.query("DELETE FROM ledger WHERE at < ?", [.float(rows.timeIntervalSince1970)])
                _ = try await self.connection.query("DELETE FROM usage_hourly WHERE hour < ?",
                                                    [.integer(Int(UsageBucket.hour(of: buckets)))])
            }
        }
    }

    public func rows(limit: Int) async throws -> [LedgerRow] {
        try await gate.run {
            try await self.connection.query("SELECT * FROM ledger ORDER BY at DESC LIMIT ?", [.integer(limit)]).map { row in
                LedgerRow(at: row.date("at") ?? Date(timeIntervalSince1970: 0), requestID: row.string("request_id") ?? "",
                          subject: row.string("subject") ?? "", model: row.string("model"), worker: row.string("worker"),
                          outcome: row.string("outcome") ?? "", status: row.int("status") ?? 0, code: row.string("code"),
                          promptTokens: row.int("prompt_tokens") ?? 0, completionTokens: row.int("completion_tokens") ?? 0,
                          cachedTokens: row.int("cached_tokens") ?? 0, ttftMilliseconds: row.column("ttft_ms")?.double,
                          durationMilliseconds: row.column("duration_ms")?.double ?? 0)
            }
        }
    }

    public func close() async throws {
        try await gate.run { try await self.connection.close() }
    }
}

private func optional(_ value: String?) -> SQLiteData { value.map { .text($0) } ?? .null }
private func optional(_ value: Int?) -> SQLiteData { value.map { .integer($0) } ?? .null }
private func optional(_ value: Double?) -> SQLiteData { value.map { .float($0) } ?? .null }

extension SQLiteRow {
    fileprivate func string(_ name: String) -> String? { column(name)?.string }
    fileprivate func int(_ name: String) -> Int? { column(name)?.integer.map { Int($0) } }
    fileprivate func date(_ name: String) -> Date? { column(name)?.double.map { Date(timeIntervalSince1970: $0) } }
}

extension SQLiteStore {
    /// Sets the schema version as a newer hub would have (tests of the refusal).
    func setSchemaVersionForTests(_ version: Int) async throws {
        try await gate.run { _ = try await self.connection.query("PRAGMA user_version = \(version)") }
    }
}
