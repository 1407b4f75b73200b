import Foundation
import JWTKit

/// Who a token speaks for. Client tokens and cluster tokens are signed with different
/// secrets *and* carry different roles, so neither can stand in for the other.
public enum TokenRole: String, Codable, Sendable {
    /// An application calling the OpenAI API (the default when a client token has no role).
    case client
    /// An operator: client rights plus admin endpoints.
    case admin
    /// A worker talking to the hub's control plane.
    case worker
    /// The hub forwarding a request to a worker's data plane.
    case hub
}

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
    /// Model names this client may use; absent means all.
    public var models: [String]?

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

/// Why a token was refused; the message is safe to show a client (it never echoes the token).
public struct TokenError: Error, Equatable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    /// A valid token whose role may not use this endpoint (403 rather than 401).
    public static let roleRejected = TokenError("token role not accepted here")
    public var description: String { reason }
}

/// Signs and verifies HS256 tokens for one secret. The algorithm is pinned by the key,
/// never taken from the token header, so `alg: none` and algorithm confusion fail.
public struct TokenVerifier: Sendable {
    let keys: JWTKeyCollection
    let issuer: String?
    let audience: String?
    let leeway: Duration

    public init(secret: Secret, issuer: String? = nil, audience: String? = nil, leeway: Duration = .seconds(30)) async {
        keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret.value), digestAlgorithm: .sha256)
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
    }

    /// Verifies signature and claims and requires one of `roles` (a missing role reads as `.client`).
    public func verify(_ token: String, roles: Set<TokenRole>, now: Date = Date()) async throws(TokenError) -> CaravanClaims {
        let claims: CaravanClaims
        do {
            claims = try await keys.verify(token, as: CaravanClaims.self)
        } catch {
            throw TokenError("invalid token: signature or format rejected")
        }
        let slack = Double(leeway.components.seconds)
        if claims.exp.value.addingTimeInterval(slack) < now { throw TokenError("token expired") }
        if let nbf = claims.nbf, nbf.value.addingTimeInterval(-slack) > now { throw TokenError("token not yet valid") }
        if let issuer, claims.iss?.value != issuer { throw TokenError("token issuer not accepted") }
        if let audience, !(claims.aud?.value.contains(audience) ?? false) {
            throw TokenError("token audience not accepted")
        }
        guard roles.contains(claims.role ?? .client) else { throw TokenError.roleRejected }
        return claims
    }

    /// Signs `claims` with this verifier's key.
    public func sign(_ claims: CaravanClaims) async throws -> String {
        try await keys.sign(claims)
    }
}

/// Extracts the token from an `Authorization: Bearer <token>` header value.
public func bearerToken(_ header: String?) throws(TokenError) -> String {
    guard let header, !header.isEmpty else { throw TokenError("missing Authorization header (expected: Bearer <token>)") }
    let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
    guard parts.count == 2, parts[0].lowercased() == "bearer" else {
        throw TokenError("Authorization header must use the Bearer scheme")
    }
    let token = parts[1].trimmingCharacters(in: .whitespaces)
    guard !token.isEmpty else { throw TokenError("empty bearer token") }
    return token
}
