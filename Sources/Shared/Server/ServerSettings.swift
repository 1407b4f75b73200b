import NIOCore
import HummingbirdCore
import HummingbirdTLS
import NIOSSL
import Config

/// How a Caravan listener serves HTTP: HTTP/1.1 with limits against slow or oversized
/// clients, over TLS when a certificate is configured.
public enum ServerSettings {
    /// Pending-connection queue of a listener: a burst of clients (1,000 streams opening at
    /// once) waits in the kernel instead of being dropped and retried a second later.
    public static let backlog = 4096

    /// - Parameters:
    ///   - tls: certificate and key (PEM), or nil for plain HTTP.
    ///   - idleTimeout: close a connection that sends nothing for this long between requests.
    ///   - maxHeaderBytes: largest header block a request may send.
    ///   - http1: builds the HTTP/1 server from its configuration (the data plane adds its dispatcher).
    public static func server(tls: TLSConfig?, baseDirectory: String, idleTimeout: Duration, maxHeaderBytes: Int,
                              http1: (HTTP1Channel.Configuration) -> HTTPServerBuilder = { .http1(configuration: $0) })
        throws(ConfigError) -> HTTPServerBuilder
    {
        let http1 = http1(.init(
            additionalChannelHandlers: [MalformedRequestHandler(), ClientDepartureHandler()],
            idleTimeout: .init(idleTimeout),
            httpDecoderConfiguration: .init(maxHeaderFieldSize: maxHeaderBytes, maxHeaderListSize: maxHeaderBytes,
                                            maxHeaderFieldCount: 200)))
        guard let tls else { return http1 }
        let configuration = try serverTLS(tls, baseDirectory: baseDirectory)
        do {
            return try .tls(http1, tlsConfiguration: configuration)
        } catch {
            throw ConfigError(key: "tls", "cannot use certificate \(tls.certFile) or key \(tls.keyFile)")
        }
    }

    /// The server side of `tls`: its certificate chain and key, read now.
    public static func serverTLS(_ tls: TLSConfig, baseDirectory: String) throws(ConfigError) -> TLSConfiguration {
        let certPath = ConfigFile.path(tls.certFile, relativeTo: baseDirectory)
        let keyPath = ConfigFile.path(tls.keyFile, relativeTo: baseDirectory)
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(certPath).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
            return .makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        } catch {
            throw ConfigError(key: "tls", "cannot load certificate \(certPath) or key \(keyPath)")
        }
    }

    /// TLS settings for a client that must trust `caFile` (nil: the system roots).
    public static func clientTLS(caFile: String?, baseDirectory: String) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        if let caFile { configuration.trustRoots = .file(ConfigFile.path(caFile, relativeTo: baseDirectory)) }
        return configuration
    }


}
