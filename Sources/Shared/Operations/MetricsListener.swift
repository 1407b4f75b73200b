import Server
import Hummingbird
import Logging
import ServiceLifecycle
import Config

/// The open `/metrics` listener of `metrics.public: true`: a separate address that serves
/// only the exposition, without a credential, for a Prometheus on a private network.
public enum MetricsListener {
    public static func application(address: ListenAddress, serverName: String, logger: Logger,
                                   render: @escaping @Sendable () async -> Response) -> some Service {
        let router = Router()
        router.get("/metrics") { _, _ in await render() }
        return Application(
            router: router,
            configuration: .init(address: .hostname(address.host, port: address.port), serverName: serverName),
            onServerRunning: { channel in
                announce("\(serverName) metrics on http://\(address.host):\(channel.localAddress?.port ?? address.port)/metrics")
            },
            logger: logger)
    }
}
