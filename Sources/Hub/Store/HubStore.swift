import Foundation

/// The hub's durable state: managed keys and the usage ledger. Callers keep it off the
/// request path (keys are read into memory, ledger rows are written in batches).
public protocol HubStore: Sendable {
    /// Every managed key, revoked and expired ones included.
    func keys() async throws -> [ManagedKey]
    /// A number that changes whenever a key is added, changed or revoked (by any process).
    func keysGeneration() async throws -> Int64
    /// Adds a key; its name and digest must be new.
    func insert(_ key: ManagedKey) async throws
    /// Replaces the key with `key.id` (limits, digest on rotation, revocation).
    func update(_ key: ManagedKey) async throws
    /// Appends finished requests and adds them, and `buckets` (requests already folded
    /// together), to the hourly usage.
    func append(_ rows: [LedgerRow], buckets: [UsageBucket]) async throws
    /// Usage summed over the hourly buckets.
    func usage(_ query: UsageQuery) async throws -> [UsageLine]
    /// Prompt plus completion tokens `subject` used since `start` (an hour boundary).
    func tokensUsed(subject: String, since start: Date) async throws -> Int
    /// Deletes ledger rows older than `rows` and hourly buckets older than `buckets`.
    func prune(rowsBefore rows: Date, bucketsBefore buckets: Date) async throws
    /// Records that hub `id` is serving at `now`; how many hubs were seen since `since`
    /// (this one included).
    func heartbeat(hub id: String, now: Date, since: Date) async throws -> Int
    /// Forgets hub `id` (it stops): the others take its share of the limits at once.
    func leave(hub id: String) async throws
    /// Every hub-managed model, by name.
    func models() async throws -> [StoredModel]
    /// A number that changes whenever a model is added, changed or removed (by any process).
    func modelsGeneration() async throws -> Int64
    /// Writes `model` when its stored revision is still `expected` (nil: it must be new);
    /// false when another writer came first. The stored revision becomes `expected + 1`.
    func put(_ model: StoredModel, expected: Int64?) async throws -> Bool
    /// Removes a model; false when there was none.
    func removeModel(named name: String) async throws -> Bool
    /// Ledger rows, newest first (tests and exports).
    func rows(limit: Int) async throws -> [LedgerRow]
    func close() async throws
}

/// Why a store cannot be used; each says what to do.
public struct StoreError: Error, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }

    static func newerSchema(_ found: Int, known: Int, path: String) -> StoreError {
        StoreError("the store \(path) has schema version \(found), newer than this caravan-hub knows (\(known)): "
                   + "run the caravan-hub that wrote it, or a newer one")
    }
}
