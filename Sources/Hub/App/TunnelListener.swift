import Proxy
import ServiceLifecycle

/// Serves `hub.tunnel_listen`, where workers behind NAT dial in (``Tunnels``), until
/// graceful shutdown; then closes the tunnels left.
struct TunnelListener: Service {
    let tunnels: Tunnels
    let serve: @Sendable () async throws -> Void

    init(tunnels: Tunnels, _ serve: @escaping @Sendable () async throws -> Void) {
        self.tunnels = tunnels
        self.serve = serve
    }

    func run() async throws {
        try await serve()
        tunnels.closeAll()
    }
}
