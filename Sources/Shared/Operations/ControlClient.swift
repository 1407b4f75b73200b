import Server
import AsyncHTTPClient
import NIOCore
import NIOSSL

/// The control plane's HTTP client (a worker's heartbeats, joins and engine probes; the
/// hub's admin calls relayed to workers): no redirects, no decompression, connect failures
/// reported at once. The data plane relays with its own client (`UpstreamClient`).
public enum ControlClient {
    public static func make(connectTimeout: Duration, readTimeout: Duration, tls: TLSConfiguration? = nil) -> HTTPClient {
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
