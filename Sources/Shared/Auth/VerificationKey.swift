import Foundation
import Config

/// A key tokens may be signed with; its algorithm is fixed here, never read from a token.
public struct VerificationKey: Sendable {
    public enum Material: Sendable {
        case hmac(Secret)
        /// PEM public key (RS*, PS256, ES*, EdDSA).
        case publicKeyPEM(String)
        /// A JWK from a JWKS document (JSON of one key).
        case jwk(String)
    }

    public var kid: String?
    public var alg: String
    public var material: Material

    public init(kid: String? = nil, alg: String, material: Material) {
        self.kid = kid
        self.alg = alg
        self.material = material
    }
}
