import Config
import Foundation
import Store
import Wire

/// Managed keys as operators handle them: made, listed, revoked and rotated through the
/// store. One implementation for `caravan-hub keys` and the admin API.
struct KeyBook: Sendable {
    let store: any HubStore

    /// What a new key may do.
    struct Terms: Sendable {
        var models: [String]?
        var rpm: Int?
        var tpm: Int?
        var budget: TokenBudget?
        var parallel: Int?
        var expiresIn: Duration?
    }

    /// A new key: its record and its secret, which is shown once and never stored.
    func create(name: String, terms: Terms, now: Date = Date()) async throws -> (key: ManagedKey, secret: String) {
        try Self.check(name: name)
        for value in [terms.rpm, terms.tpm, terms.parallel] {
            if let value, value < 1 { throw StoreError("rpm, tpm and parallel must be at least 1") }
        }
        let (secret, digest) = ManagedKeys.newSecret()
        let key = ManagedKey(id: ManagedKeys.newID(), name: name, digest: digest, models: terms.models, rpm: terms.rpm,
                             tpm: terms.tpm, budget: terms.budget, parallel: terms.parallel, createdAt: now,
                             expiresAt: terms.expiresIn.map { now.addingTimeInterval($0.inSeconds) })
        try await store.insert(key)
        return (key, secret)
    }

    /// No managed key has this id or name (a 404 on the admin API).
    struct NotFound: Error, CustomStringConvertible {
        let reference: String
        var description: String { "no key has the id or name '\(reference)'" }
    }

    /// The key with this id or name.
    func find(_ reference: String) async throws -> ManagedKey {
        let keys = try await store.keys()
        guard let key = keys.first(where: { $0.id == reference }) ?? keys.first(where: { $0.name == reference }) else {
            throw NotFound(reference: reference)
        }
        return key
    }

    func list() async throws -> [ManagedKey] { try await store.keys() }

    /// Revokes a key: every hub refuses it within a second (``KeySync``).
    func revoke(_ reference: String, now: Date = Date()) async throws -> ManagedKey {
        var key = try await find(reference)
        guard key.revokedAt == nil else { return key }
        key.revokedAt = now
        try await store.update(key)
        return key
    }

    /// A new secret for a key, same limits: the old secret stops working.
    func rotate(_ reference: String) async throws -> (key: ManagedKey, secret: String) {
        var key = try await find(reference)
        guard key.revokedAt == nil else { throw StoreError("the key '\(key.name)' is revoked; create a new one") }
        let (secret, digest) = ManagedKeys.newSecret()
        key.digest = digest
        try await store.update(key)
        return (key, secret)
    }

    /// Names are what logs, limits and metrics call a key: short and plain.
    static func check(name: String) throws {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        guard (1...64).contains(name.count), name.allSatisfy(allowed.contains) else {
            throw StoreError("a key name is 1 to 64 letters, digits, '-', '_' or '.', got '\(name)'")
        }
    }
}

/// What lists and the admin API show of a key (never its digest).
struct KeyView: Encodable, Sendable {
    var id: String
    var name: String
    var status: String
    var models: [String]?
    var rpm: Int?
    var tpm: Int?
    var parallel: Int?
    var budget: String?
    var budgetTokens: Int?
    var budgetMode: String?
    /// Tokens used in the budget's current period, as this hub counts them.
    var budgetSpent: Int?
    var createdAt: String
    var expiresAt: String?
    var revokedAt: String?
    /// Only in the answer that made or rotated the key.
    var key: String?

    init(_ key: ManagedKey, now: Date = Date(), spent: Int? = nil, secret: String? = nil) {
        id = key.id
        name = key.name
        status = key.status(at: now)
        models = key.models
        rpm = key.rpm
        tpm = key.tpm
        parallel = key.parallel
        budget = key.budget?.description
        budgetTokens = key.budget?.tokens
        budgetMode = key.budget.map { $0.hard ? "hard" : "soft" }
        budgetSpent = key.budget == nil ? nil : spent
        createdAt = key.createdAt.formatted(.iso8601)
        expiresAt = key.expiresAt?.formatted(.iso8601)
        revokedAt = key.revokedAt?.formatted(.iso8601)
        self.key = secret
    }
}
