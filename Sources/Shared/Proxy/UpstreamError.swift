import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import Server
import Wire

extension UpstreamError {
    /// A short, secret-free ``UpstreamError/Kind/transport`` error for an error raised on an
    /// upstream connection.
    package static func transport(_ error: any Error) -> UpstreamError {
        switch error {
        case let error as UpstreamError: error
        case let error as NIOSSLError: .transport("TLS: \(error)")
        case let error as BoringSSLError: .transport("TLS: \(error)")
        case let error as HTTPParserError: .badResponse(HTTPParserError.phrase(error))
        case let error as IOError: .transport("I/O error (errno \(error.errnoCode))")
        case let error as ChannelError: .transport(ChannelError.phrase(error))
        case let error as NIOHTTP2Errors.StreamClosed: .transport("HTTP/2 stream reset (\(error.errorCode))")
        default: .transport("connection failed")  // never a type's name: this text reaches clients
        }
    }
}

extension ChannelError {
    /// Plain words for the channel errors an upstream connection meets.
    static func phrase(_ error: ChannelError) -> String {
        switch error {
        case .ioOnClosedChannel, .alreadyClosed, .outputClosed, .inputClosed, .eof: "connection closed"
        case .connectTimeout: "connect timeout"
        default: "connection failed"
        }
    }
}
