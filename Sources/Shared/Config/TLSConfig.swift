import Foundation

/// A certificate and private key (PEM) to serve HTTPS with.
public struct TLSConfig: Decodable, Sendable, Equatable {
    public var certFile: String
    public var keyFile: String

    enum CodingKeys: String, CodingKey { case certFile = "cert_file", keyFile = "key_file" }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        certFile = try c.required(String.self, .certFile)
        keyFile = try c.required(String.self, .keyFile)
    }
}
