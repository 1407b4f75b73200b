import Config
import Foundation
import Logging
import ServiceLifecycle
import Store

/// Keeps the hub's managed keys in step with the store: reads them at start and again
/// whenever the store's key generation changes (checked every second), so a key made,
/// revoked or rotated by any process takes effect on every hub sharing the store within a
/// second. Budgets are seeded with what the store counted in their current period.
final class KeySync: Service, Sendable {
    private let store: any HubStore
    private let keys: ManagedKeys
    private let limiter: RateLimiter
    private let logger: Logger
    /// The budgets of credentials the config file declares (API keys), read at each load.
    private let configured: @Sendable () -> [(subject: String, budget: TokenBudget, tpm: Int?)]
    static let interval: Duration = .seconds(1)

    init(store: any HubStore, keys: ManagedKeys, limiter: RateLimiter, logger: Logger,
         configured: @escaping @Sendable () -> [(subject: String, budget: TokenBudget, tpm: Int?)] = { [] }) {
        self.store = store
        self.keys = keys
        self.limiter = limiter
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

    func run() async throws {
        var generation = try? await load()
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await Task.sleep(for: Self.interval)
            do {
                let current = try await store.keysGeneration()
                guard current != generation else { continue }
                generation = try await load()
                logger.info("managed keys reloaded", metadata: ["keys": "\(keys.all.count)"])
            } catch {
                logger.warning("managed keys: the store could not be read; keeping the keys in force", metadata: ["reason": "\(error)"])
            }
        }
    }
}
