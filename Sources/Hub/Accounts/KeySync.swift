import Config
import Foundation
import Logging
import ServiceLifecycle
import Store

/// Keeps the hub in step with the store, every 250 ms: its managed keys (read again whenever
/// the store's key generation changes, so a key made, revoked or rotated by any process
/// takes effect on every hub sharing the store within a second), and its token budgets
/// (this hub's ledger written, then every hub's spending read back: several hubs share one
/// budget, each about half a second behind the others; every 25 ms while a hard budget is
/// 90 % spent, when seeing the others late would let it overshoot).
final class KeySync: Service, Sendable {
    private let store: any HubStore
    private let keys: ManagedKeys
    private let limiter: RateLimiter
    /// This hub's ledger, written before budgets are read (nil: the ledger is off, and
    /// budgets count this hub's requests only).
    private let ledger: LedgerWriter?
    private let logger: Logger
    /// The budgets of credentials the config file declares (API keys), read at each load.
    private let configured: @Sendable () -> [(subject: String, budget: TokenBudget, tpm: Int?)]
    static let interval: Duration = .milliseconds(250)
    /// This hub among those sharing the store (a new one each start).
    let hubID = ManagedKeys.newID().replacingOccurrences(of: "key_", with: "hub_")
    /// A hub not seen for this long no longer holds a share of the limits.
    static let hubExpiry: TimeInterval = 2
    /// The interval while a hard budget is nearly spent.
    static let closeInterval: Duration = .milliseconds(25)

    init(store: any HubStore, keys: ManagedKeys, limiter: RateLimiter, ledger: LedgerWriter? = nil, logger: Logger,
         configured: @escaping @Sendable () -> [(subject: String, budget: TokenBudget, tpm: Int?)] = { [] }) {
        self.store = store
        self.keys = keys
        self.limiter = limiter
        self.ledger = ledger
        self.logger = logger
        self.configured = configured
    }

    /// Loads the keys now; returns the generation read.
    @discardableResult
    func load() async throws -> Int64 {
        let generation = try await store.keysGeneration()
        let all = try await store.keys()
        keys.replace(all)
        let now = Date()
        let budgets = all.filter { $0.isActive(at: now) }.compactMap { key in key.budget.map { (key.subject, $0, key.tpm) } }
        for (subject, budget, tpm) in budgets + configured() {
            let spent = try await store.tokensUsed(subject: subject, since: budget.periodStart(containing: now))
            limiter.seedBudget(subject, spent: spent, budget: budget, tpm: tpm)
        }
        return generation
    }

    /// Brings in what every hub sharing the store spent of each budget counted here.
    func syncBudgets() async throws {
        guard let ledger else { return }
        let budgeted = limiter.budgeted
        guard !budgeted.isEmpty else { return }
        limiter.markBudgets()
        await ledger.flush()
        let now = Date()
        for (subject, budget, tpm) in budgeted {
            let stored = try await store.tokensUsed(subject: subject, since: budget.periodStart(containing: now))
            limiter.syncBudget(subject, stored: stored, budget: budget, tpm: tpm)
        }
    }

    /// How long reads may fail before the store counts as unavailable.
    static let unavailableAfter: Duration = .seconds(1)

    func run() async throws {
        var generation = try? await load()
        var lastRead = ContinuousClock.now
        var failing = false
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await Task.sleep(for: limiter.budgetNearlySpent ? Self.closeInterval : Self.interval)
            do {
                let current = try await store.keysGeneration()
                if current != generation {
                    generation = try await load()
                    logger.info("managed keys reloaded", metadata: ["keys": "\(keys.all.count)"])
                }
                try await syncBudgets()
                let now = Date()
                limiter.hubs = try await store.heartbeat(hub: hubID, now: now, since: now.addingTimeInterval(-Self.hubExpiry))
                if !limiter.storeAvailable { logger.notice("the store answers again") }
                lastRead = .now
                failing = false
                limiter.storeAvailable = true
            } catch {
                if !failing { logger.warning("the store could not be read", metadata: ["reason": "\(error)"]) }
                failing = true
                if limiter.storeAvailable, ContinuousClock.now - lastRead >= Self.unavailableAfter {
                    limiter.storeAvailable = false  // the limits' shares stay as last seen
                    logger.error("the store cannot be read; keys stay as last read, budgets are counted by this hub alone",
                                 metadata: ["reason": "\(error)"])
                }
            }
        }
        try? await store.leave(hub: hubID)
    }
}
