import Foundation
import Logging
import Config

/// Re-reads the cluster file and applies it to the running hub without dropping a
/// connection or a stream: workers added or removed, weights, breaker and queue settings,
/// client auth keys and API keys, limits and CORS origins. An invalid file changes nothing.
struct HubReloader: Sendable {
    /// What a reload did, for the log and `POST /admin/reload`'s answer.
    struct Summary: Encodable, Sendable {
        var workersAdded: [String] = []
        var workersRemoved: [String] = []
        /// Settings that changed but take effect only after a restart (listen address, TLS, ...).
        var restartNeeded: [String] = []
    }

    let path: String
    let options: HubOptions
    let settings: HubSettings
    let state: HubState
    let keys: WorkerKeys
    let limiter: RateLimiter
    /// The store's keys, which a new authenticator keeps using.
    let managed: ManagedKeys
    let logger: Logger

    /// Applies the file; throws the one-line config error and changes nothing when it is invalid.
    func reload() async throws -> Summary {
        let next = try ClusterConfig.load(path: path)
        try HubApplication.checkSecrets(next, options: options)
        let authenticator = options.noAuth ? nil : try await ClientAuthenticator(auth: next.hub.auth, managed: managed)
        let previous = settings.current
        var summary = Summary()
        let before = Set(previous.cluster.workers.map(\.name))
        let after = Set(next.workers.map(\.name))
        summary.workersAdded = after.subtracting(before).sorted()
        summary.workersRemoved = before.subtracting(after).sorted()
        let (old, new) = (previous.hub, next.hub)
        for (key, changed) in [
            ("hub.listen", old.listen != new.listen), ("hub.tls", old.tls != new.tls), ("hub.join", old.join != new.join),
            ("hub.metrics", old.metrics != new.metrics),
            ("hub.auth.worker_secret_file", old.auth.workerSecret?.value != new.auth.workerSecret?.value),
            ("hub.heartbeat_interval", old.heartbeatInterval != new.heartbeatInterval),
            ("hub.expire_after", old.expireAfter != new.expireAfter),
            ("hub.store", old.storePath(relativeTo: old.auth.baseDirectory) != new.storePath(relativeTo: new.auth.baseDirectory)
                || old.storePasswordFile != new.storePasswordFile),
            ("hub.ledger", old.ledger != new.ledger),
        ] where changed {
            summary.restartNeeded.append(key)
        }

        settings.replace(.init(cluster: next, authenticator: authenticator))
        keys.update(names: after, previous: new.auth.previousWorkerSecret)
        limiter.defaults = .init(rps: new.limits.requestsPerSecond, burst: new.limits.burst, concurrent: new.limits.concurrent)
        limiter.poisonPerMinute = new.limits.poisonPerMinute
        state.reconfigure(declaredModels: next.declaredModels,
                          discoveringWorkers: Set(next.workers.filter { !$0.modelsDirs.isEmpty }.map(\.name)),
                          breakerPolicy: HubApplication.breakerPolicy(new.breaker), aheadPerSlot: new.queue.aheadPerSlot,
                          routingPolicy: HubApplication.routingPolicy(new.routing), indexBlocks: new.routing.indexBlocks,
                          queueCapacity: new.queue.size)
        // A worker taken out of the file stops being routed to now; its next report is refused.
        for name in summary.workersRemoved { state.deregister(name) }
        logger.notice("configuration reloaded", metadata: [
            "workers_added": "\(summary.workersAdded)", "workers_removed": "\(summary.workersRemoved)",
            "restart_needed": "\(summary.restartNeeded)",
        ])
        state.events.publish(.init(type: "config_reloaded"))
        return summary
    }
}
