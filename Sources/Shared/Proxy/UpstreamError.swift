import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import Wire

extension UpstreamError {
    /// A short, secret-free ``UpstreamError/Kind/transport`` error for an error raised on an
    /// upstream connection.
    package static func transport(_ error: any Error) -> UpstreamError {
        switch error {
        case let error as UpstreamError: error
        case let error as NIOSSLError: .transport("TLS: \(error)")
        case let error as BoringSSLError: .transport("TLS: \(error)")
        case let error as HTTPParserError: .transport("invalid HTTP from upstream: \(error)")
        case let error as IOError: .transport("I/O error (errno \(error.errnoCode))")
        case let error as ChannelError: .transport("channel error (\(error))")
        case let error as NIOHTTP2Errors.StreamClosed: .transport("HTTP/2 stream reset (\(error.errorCode))")
        default: .transport(String(describing: type(of: error)))
        }
    }
}

