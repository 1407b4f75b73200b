import Config
import Foundation
import Logging
import Testing
import TestSupport
@testable import Store

/// The store against real databases: SQLite files in temporary folders, and a PostgreSQL
/// server each test starts (Debian's, as an unprivileged user, on a free loopback port).
@Suite("Store", .serialized)
struct StoreTests {
    enum Backend: String, CaseIterable, CustomTestStringConvertible {
        case sqlite, postgres
        var testDescription: String { rawValue }
    }

    /// A fresh store of `backend`, a way to open it again, and what deletes it.
    static func fresh(_ backend: Backend) async throws -> (store: SQLStore, reopen: () async throws -> SQLStore, cleanup: () -> Void) {
        switch backend {
        case .sqlite:
            let dir = try folder()
            let path = dir.appendingPathComponent("hub.db").path
            return (try await open(path), { try await open(path) }, { try? FileManager.default.removeItem(at: dir) })
        case .postgres:
            let server = try PostgresServer.start()
            let location = StoreLocation.postgres(try #require(try StoreLocation.postgres(url: server.url)))
            let open = { try await SQLStore.open(location, logger: Logger(label: "test")) }
            do {
                return (try await open(), open, { server.stop() })
            } catch {
                server.stop()
                throw error
            }
        }
    }
    static func folder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        return url
    }

    static func open(_ path: String) async throws -> SQLStore {
        try await SQLStore.open(.sqlite(path: path), logger: Logger(label: "test"))
    }

    static func key(_ name: String, budget: TokenBudget? = nil) -> ManagedKey {
        ManagedKey(id: "key_\(name)", name: name, digest: String(repeating: name.first.map(String.init) ?? "0", count: 64),
                   models: ["tiny", "llama*"], rpm: 60, tpm: 1000, budget: budget, parallel: 2, createdAt: Date(timeIntervalSince1970: 1_700_000_000),
                   expiresAt: Date(timeIntervalSince1970: 1_800_000_000))
    }

    static func row(_ subject: String, model: String = "tiny", at: Date, prompt: Int = 10, completion: Int = 5, outcome: String = "ok") -> LedgerRow {
        LedgerRow(at: at, requestID: UUID().uuidString, subject: subject, model: model, worker: "a", outcome: outcome,
                  status: outcome == "ok" ? 200 : 502, code: nil, promptTokens: prompt, completionTokens: completion, cachedTokens: 3,
                  ttftMilliseconds: 12.5, durationMilliseconds: 40)
    }

    @Test("a new store is created private and at the latest schema; reopening keeps its contents")
    func createAndReopen() async throws {
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("state/hub.db").path
        let store = try await Self.open(path)
        #expect(try await store.schemaVersion() == StoreSchema.latest)
        try await store.insert(Self.key("team-a", budget: TokenBudget(tokens: 5_000_000, period: .month)))
        try await store.close()
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let again = try await Self.open(path)
        let keys = try await again.keys()
        #expect(keys == [Self.key("team-a", budget: TokenBudget(tokens: 5_000_000, period: .month))])
        try await again.close()
    }

    @Test("a store written by a newer hub is refused with both versions named; reopening an up-to-date one keeps its keys", arguments: Backend.allCases)
    func newerSchemaRefused(_ backend: Backend) async throws {
        let (store, reopen, cleanup) = try await Self.fresh(backend)
        defer { cleanup() }
        try await store.insert(Self.key("team-a"))
        try await store.close()
        let again = try await reopen()
        #expect(try await again.keys() == [Self.key("team-a")])
        try await again.setSchemaVersionForTests(StoreSchema.latest + 5)
        try await again.close()
        await #expect(throws: StoreError.newerSchema(StoreSchema.latest + 5, known: StoreSchema.latest, path: again.location)) {
            _ = try await reopen()
        }
    }

    @Test("a store file or folder other users can write is refused")
    func othersCanWrite() async throws {
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("hub.db").path
        try await Self.open(path).close()
        _ = chmod(path, 0o666)
        let error = await #expect(throws: StoreError.self) { _ = try await Self.open(path) }
        #expect(error?.description.contains("writable by other users") == true)
        _ = chmod(path, 0o600)
        _ = chmod(dir.path, 0o777)
        let folderError = await #expect(throws: StoreError.self) { _ = try await Self.open(path) }
        #expect(folderError?.description.contains("store folder") == true)
        _ = chmod(dir.path, 0o700)
        try await Self.open(path).close()
    }

    @Test("keys: a taken name is refused, every change moves the generation, revocation is kept", arguments: Backend.allCases)
    func keys(_ backend: Backend) async throws {
        let (store, _, cleanup) = try await Self.fresh(backend)
        defer { cleanup() }
        let start = try await store.keysGeneration()
        try await store.insert(Self.key("team-a"))
        var duplicate = Self.key("team-a")
        duplicate.id = "key_other"
        duplicate.digest = String(repeating: "f", count: 64)
        await #expect(throws: StoreError("a key named 'team-a' exists already")) { try await store.insert(duplicate) }
        var sameDigest = Self.key("team-b")
        sameDigest.digest = Self.key("team-a").digest
        await #expect(throws: (any Error).self) { try await store.insert(sameDigest) }  // the UNIQUE constraint
        var key = Self.key("team-a")
        key.revokedAt = Date(timeIntervalSince1970: 1_750_000_000)
        try await store.update(key)
        let generation = try await store.keysGeneration()
        #expect(generation == start + 2)
        let stored = try await store.keys()
        #expect(stored == [key])
        #expect(stored.first?.status(at: Date()) == "revoked")
        // The hubs sharing the store: each counted while seen recently, gone when it leaves.
        let now = Date()
        #expect(try await store.heartbeat(hub: "hub_a", now: now.addingTimeInterval(-10), since: now.addingTimeInterval(-20)) == 1)
        #expect(try await store.heartbeat(hub: "hub_b", now: now, since: now.addingTimeInterval(-2)) == 1)  // hub_a is stale
        #expect(try await store.heartbeat(hub: "hub_a", now: now, since: now.addingTimeInterval(-2)) == 2)
        try await store.leave(hub: "hub_a")
        #expect(try await store.heartbeat(hub: "hub_b", now: now, since: now.addingTimeInterval(-2)) == 1)
        try await store.close()
    }

    @Test("hub-managed models: written by compare-and-set, so of two writers at one revision only one wins", arguments: Backend.allCases)
    func models(_ backend: Backend) async throws {
        let (store, _, cleanup) = try await Self.fresh(backend)
        defer { cleanup() }
        let start = try await store.modelsGeneration()
        #expect(try await store.put(StoredModel(name: "m", document: #"{"v":1}"#), expected: nil))
        #expect(try await store.put(StoredModel(name: "m", document: #"{"v":"again"}"#), expected: nil) == false)  // taken
        let first = try #require(try await store.models().first)
        #expect(first.revision == 1 && first.document == #"{"v":1}"#)
        // Two hubs read revision 1; the first write wins, the second finds it moved.
        #expect(try await store.put(StoredModel(name: "m", document: #"{"v":2}"#), expected: 1))
        #expect(try await store.put(StoredModel(name: "m", document: #"{"v":"late"}"#), expected: 1) == false)
        #expect(try await store.models() == [StoredModel(name: "m", document: #"{"v":2}"#, revision: 2)])
        #expect(try await store.modelsGeneration() == start + 2)
        #expect(try await store.removeModel(named: "m"))
        #expect(try await store.removeModel(named: "m") == false)
        let left = try await store.models()
        let generation = try await store.modelsGeneration()
        #expect(left.isEmpty && generation == start + 3)
        try await store.close()
    }

    @Test("the ledger: rows and folded sums add up per hour, key and model; tokens since a time; pruning", arguments: Backend.allCases)
    func ledger(_ backend: Backend) async throws {
        let (store, _, cleanup) = try await Self.fresh(backend)
        defer { cleanup() }
        let hour = Date(timeIntervalSince1970: 1_765_000_800)  // an hour's start
        let rows = (0..<600).map { Self.row($0 % 3 == 0 ? "key:b" : "key:a", at: hour.addingTimeInterval(Double($0))) }
            + [Self.row("key:a", model: "big", at: hour.addingTimeInterval(3600 + 5), outcome: "upstream_error")]
        var folded = UsageBucket(key: .init(hour: UsageBucket.hour(of: hour), subject: "key:a", model: "tiny"))
        folded.add(Self.row("key:a", at: hour, prompt: 100, completion: 50))
        try await store.append(rows, buckets: [folded])
        let byKey = try await store.usage(UsageQuery(groupBy: [.key]))
        #expect(byKey.map(\.subject) == ["key:a", "key:b"])
        #expect(byKey.map(\.requests) == [402, 200])
        #expect(byKey.first?.errors == 1)
        #expect(byKey.first?.promptTokens == 401 * 10 + 100)
        let byModel = try await store.usage(UsageQuery(groupBy: [.key, .model], from: hour.addingTimeInterval(3600)))
        #expect(byModel.map { "\($0.subject!)/\($0.model!)=\($0.requests)" } == ["key:a/big=1"])
        #expect(try await store.tokensUsed(subject: "key:b", since: hour) == 200 * 15)
        #expect(try await store.tokensUsed(subject: "key:a", since: hour.addingTimeInterval(3600)) == 15)
        #expect(try await store.rows(limit: 1000).count == 601)
        try await store.prune(rowsBefore: hour.addingTimeInterval(3600), bucketsBefore: hour.addingTimeInterval(3600))
        #expect(try await store.rows(limit: 1000).count == 1)
        #expect(try await store.usage(UsageQuery(groupBy: [])).first?.requests == 1)
        try await store.close()
    }
}
