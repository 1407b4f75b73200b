import Proxy
import ServiceLifecycle

/// Serves `hub.tunnel_listen`, where workers behind NAT dial in (``Tunnels``), and reads
/// the reports of each worker whose tunnel opens (`follow`) until graceful shutdown; then
/// closes the tunnels left, which ends their reports.
struct TunnelListener: Service {
    let tunnels: Tunnels
    let serve: @Sendable () async throws -> Void
    let follow: @Sendable (String) async -> Void

    init(tunnels: Tunnels, follow: @escaping @Sendable (String) async -> Void, _ serve: @escaping @Sendable () async throws -> Void) {
        self.tunnels = tunnels
        self.follow = follow
        self.serve = serve
    }

    func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                defer { tunnels.closeAll() }
                try await serve()
            }
            for await name in tunnels.openings { group.addTask { await follow(name) } }
        }
    }
}
