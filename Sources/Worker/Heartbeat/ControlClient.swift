import Proxy
import AsyncHTTPClient
import NIOSSL

/// The worker's control-plane HTTP client (heartbeats to hubs, joins, engine probes): no
/// redirects, no decompression, connect failures reported at once. The data plane uses
/// ``UpstreamClient``.
enum ControlClient {
    static func make(connectTimeout: Duration, readTimeout: Duration, tls: TLSConfiguration? = nil) -> HTTPClient {
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tls,
            redirectConfiguration: .disallow,
            timeout: .init(connect: .init(connectTimeout), read: .init(readTimeout)),
            decompression: .disabled
        )
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.httpVersion = .http1Only
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }
}
