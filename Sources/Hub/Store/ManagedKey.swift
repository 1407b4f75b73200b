import Config
import Foundation

/// An API key the hub manages (`caravan-hub keys create`): its limits and lifetime. The store
/// keeps the SHA-256 of the secret, never the secret, which is shown once when made.
public struct ManagedKey: Sendable, Equatable {
    /// Public and stable (`key_` and 12 hex digits): what lists, logs and the admin API name.
    public var id: String
    /// Unique; the subject `key:NAME` in logs, limits and the ledger.
    public var name: String
    /// Hex SHA-256 of the secret.
    public var digest: String
    /// Model names or `prefix*` patterns it may use; nil: every model.
    public var models: [String]?
    public var rpm: Int?
    public var tpm: Int?
    public var budget: TokenBudget?
    /// Requests in progress at once.
    public var parallel: Int?
    public var createdAt: Date
    public var expiresAt: Date?
    public var revokedAt: Date?

    public init(id: String, name: String, digest: String, models: [String]? = nil, rpm: Int? = nil, tpm: Int? = nil,
                budget: TokenBudget? = nil, parallel: Int? = nil, createdAt: Date, expiresAt: Date? = nil, revokedAt: Date? = nil) {
        self.id = id
        self.name = name
        self.digest = digest
        self.models = models
        self.rpm = rpm
        self.tpm = tpm
        self.budget = budget
        self.parallel = parallel
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
    }

    /// The subject its requests are counted under.
    public var subject: String { "key:\(name)" }

    /// Whether it authenticates at `now`: not revoked, not expired.
    public func isActive(at now: Date) -> Bool {
        revokedAt == nil && (expiresAt.map { now < $0 } ?? true)
    }

    /// `active`, `revoked` or `expired`.
    public func status(at now: Date) -> String {
        revokedAt != nil ? "revoked" : isActive(at: now) ? "active" : "expired"
    }
}
