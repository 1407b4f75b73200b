import Foundation
import Synchronization
import Config

/// The configuration in force, which a reload (SIGHUP, `POST /admin/reload`) replaces
/// between requests: routes, middlewares and the control plane read it per request.
final class HubSettings: Sendable {
    struct Current: Sendable {
        var cluster: ClusterConfig
        /// Nil under `--no-auth`.
        var authenticator: ClientAuthenticator?
        var hub: HubConfig { cluster.hub }
        /// The cluster file's worker entries by name.
        var entries: [String: WorkerConfig] {
            Dictionary(cluster.workers.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        }
    }

    private let state: Mutex<Current>

    init(_ current: Current) { state = Mutex(current) }

    var current: Current { state.withLock { $0 } }

    /// The hub section alone (read per request; cheaper than the whole cluster).
    var hub: HubConfig { state.withLock { $0.cluster.hub } }

    var authenticator: ClientAuthenticator? { state.withLock { $0.authenticator } }

    func replace(_ next: Current) { state.withLock { $0 = next } }
}
