import Wire
import Foundation
import JWTKit

/// Claims Caravan reads. Registered claims are checked by ``TokenVerifier`` (with leeway),
/// not by `verify(using:)`, so the checks can use the configured issuer, audience and leeway.
public struct CaravanClaims: JWTPayload, Equatable {
    public var sub: SubjectClaim
    public var exp: ExpirationClaim
    public var iat: IssuedAtClaim?
    public var nbf: NotBeforeClaim?
    public var iss: IssuerClaim?
    public var aud: AudienceClaim?
    public var role: TokenRole?
    /// Model names (or `prefix*` patterns) this client may use; absent means all.
    public var models: [String]?
    /// Per-subject overrides of `hub.limits`.
    public var rps: Double?
    public var burst: Double?
    public var concurrency: Int?
    /// Requests and tokens per minute, and a token budget (`5M/month`), as managed keys have.
    public var rpm: Int?
    public var tpm: Int?
    public var budget: String?
    /// May use `/upstream/{model}/...`, the raw pass-through to a model's engine (admins may anyway).
    public var upstream: Bool?

    public init(sub: String, expires: Date, issuedAt: Date? = nil, role: TokenRole? = nil,
                models: [String]? = nil, issuer: String? = nil, audience: String? = nil) {
        self.sub = SubjectClaim(value: sub)
        self.exp = ExpirationClaim(value: expires)
        self.iat = issuedAt.map { IssuedAtClaim(value: $0) }
        self.role = role
        self.models = models
        self.iss = issuer.map { IssuerClaim(value: $0) }
        self.aud = audience.map { AudienceClaim(value: [$0]) }
    }

    /// The `sub` claim.
    public var subject: String { sub.value }
    /// The `exp` claim.
    public var expires: Date { exp.value }

    public func verify(using algorithm: some JWTAlgorithm) async throws {
        // Deliberately empty: TokenVerifier.verify checks exp/nbf/iss/aud/role with config.
    }
}
