import Wire
import Foundation
import JWTKit
import Config

/// Verifies (and, with an HMAC key, signs) JWTs against a fixed set of keys.
///
/// Before any signature check the header is read here, not by the library: `alg: none`
/// is refused, a `kid` must name a configured key (no fallback to a default key), and the
/// header's `alg` must equal that key's algorithm, so neither `none` nor algorithm
/// confusion (an HS256 token "signed" with an RSA public key) can pass.
///
/// Clients send the same token on every request, so a token whose signature verified is
/// remembered (by its exact bytes, at most `cacheLimit` of them) and later requests skip
/// the header parse and the signature check; the time-dependent claims (`exp`, `nbf`) and
/// the role are still checked every time. A new key set is a new verifier, so key rotation
/// starts an empty cache.
public struct TokenVerifier: Sendable {
    let keys: JWTKeyCollection
    let verified = VerifiedTokens()
    let algorithms: [String: String]
    let defaultAlgorithm: String?
    let issuer: String?
    let audience: String?
    let leeway: Duration

    /// One HS256 secret (cluster credentials, or the client secret shorthand).
    public init(secret: Secret, issuer: String? = nil, audience: String? = nil, leeway: Duration = .seconds(30)) async {
        // An HMAC key cannot fail to load.
        try! await self.init(keys: [VerificationKey(alg: "HS256", material: .hmac(secret))],
                             issuer: issuer, audience: audience, leeway: leeway)
    }

    /// Several keys; at most one without `kid` (used by tokens that carry no `kid`).
    public init(keys list: [VerificationKey], issuer: String? = nil, audience: String? = nil,
                leeway: Duration = .seconds(30)) async throws {
        keys = JWTKeyCollection()
        var algorithms: [String: String] = [:]
        var defaultAlgorithm: String?
        for key in list {
            let kid = key.kid.map { JWKIdentifier(string: $0) }
            switch (key.alg, key.material) {
            case (let alg, .hmac(let secret)) where alg.hasPrefix("HS"):
                let digest: DigestAlgorithm = alg == "HS512" ? .sha512 : alg == "HS384" ? .sha384 : .sha256
                await keys.add(hmac: HMACKey(from: secret.value), digestAlgorithm: digest, kid: kid)
            case (let alg, .publicKeyPEM(let pem)) where alg.hasPrefix("RS") || alg == "PS256":
                let digest: DigestAlgorithm = alg == "RS512" ? .sha512 : alg == "RS384" ? .sha384 : .sha256
                let rsa = try Insecure.RSA.PublicKey(pem: pem)
                if alg == "PS256" {
                    await keys.add(pss: rsa, digestAlgorithm: digest, kid: kid)
                } else {
                    await keys.add(rsa: rsa, digestAlgorithm: digest, kid: kid)
                }
            case ("ES256", .publicKeyPEM(let pem)):
                await keys.add(ecdsa: try ES256PublicKey(pem: pem), kid: kid)
            case ("ES384", .publicKeyPEM(let pem)):
                await keys.add(ecdsa: try ES384PublicKey(pem: pem), kid: kid)
            case ("EdDSA", .publicKeyPEM(let pem)):
                await keys.add(eddsa: try EdDSA.PublicKey(pem: pem), kid: kid)
            case (_, .jwk(let json)):
                try await keys.add(jwk: try JSONDecoder().decode(JWK.self, from: Data(json.utf8)))
            default:
                throw TokenError("key \(key.kid ?? "(no kid)"): algorithm \(key.alg) does not fit this key material")
            }
            if let id = key.kid {
                algorithms[id] = key.alg
            } else {
                guard defaultAlgorithm == nil else { throw TokenError("only one key may omit kid") }
                defaultAlgorithm = key.alg
            }
        }
        self.algorithms = algorithms
        self.defaultAlgorithm = defaultAlgorithm
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
    }

    /// The `alg` and `kid` of a token's header, read without trusting anything else.
    static func header(of token: String) throws(TokenError) -> (alg: String, kid: String?) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw TokenError("malformed token: expected three dot-separated parts")
        }
        guard let bytes = base64URLDecode(parts[0]),
            let header = (try? JSONSerialization.jsonObject(with: bytes)) as? [String: Any]
        else { throw TokenError("malformed token: header is not base64url JSON") }
        guard let alg = header["alg"] as? String else { throw TokenError("malformed token: header has no alg") }
        if alg.lowercased() == "none" { throw TokenError("unsigned tokens (alg none) are not accepted") }
        return (alg, header["kid"] as? String)
    }

    /// The `sub` and `role` of a token, read without checking anything: only to choose the
    /// key that then verifies it (per-worker credentials).
    public static func unverifiedClaims(of token: String) -> (subject: String, role: String?)? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let bytes = base64URLDecode(parts[1]),
            let payload = (try? JSONSerialization.jsonObject(with: bytes)) as? [String: Any],
            let subject = payload["sub"] as? String
        else { return nil }
        return (subject, payload["role"] as? String)
    }

    /// The claims of a token this verifier has already checked, with the checks that depend
    /// on time, configuration and the endpoint done again; nil when it was never verified
    /// (then ``verify(_:roles:now:)`` checks its signature). Synchronous: the data plane's
    /// path for the token a client sends with every request.
    public func cachedClaims(_ token: String, roles: Set<TokenRole>, now: Date = Date()) throws(TokenError) -> CaravanClaims? {
        guard let claims = verified.claims(for: token) else { return nil }
        return try check(claims, roles: roles, now: now)
    }

    /// Verifies header, signature and claims, and requires one of `roles` (a missing role reads as `.client`).
    public func verify(_ token: String, roles: Set<TokenRole>, now: Date = Date()) async throws(TokenError) -> CaravanClaims {
        if let claims = try cachedClaims(token, roles: roles, now: now) { return claims }
        let header = try Self.header(of: token)
        let expected: String?
        if let kid = header.kid {
            guard let alg = algorithms[kid] else { throw TokenError("unknown key id (kid)") }
            expected = alg
        } else {
            guard let alg = defaultAlgorithm else { throw TokenError("token has no kid and no default key exists") }
            expected = alg
        }
        guard header.alg == expected else { throw TokenError("algorithm \(header.alg) is not accepted for this key") }
        let claims: CaravanClaims
        do {
            claims = try await keys.verify(token, as: CaravanClaims.self)
        } catch {
            throw TokenError("invalid token: signature or claims rejected")
        }
        verified.remember(token, claims)
        return try check(claims, roles: roles, now: now)
    }

    /// The claim checks that depend on time, configuration and the endpoint.
    private func check(_ claims: CaravanClaims, roles: Set<TokenRole>, now: Date) throws(TokenError) -> CaravanClaims {
        let slack = leeway.inSeconds
        if claims.exp.value.addingTimeInterval(slack) < now { throw TokenError("token expired") }
        if let nbf = claims.nbf, nbf.value.addingTimeInterval(-slack) > now { throw TokenError("token not yet valid") }
        if let issuer, claims.iss?.value != issuer { throw TokenError("token issuer not accepted") }
        if let audience, !(claims.aud?.value.contains(audience) ?? false) {
            throw TokenError("token audience not accepted")
        }
        guard roles.contains(claims.role ?? .client) else { throw TokenError.roleRejected }
        return claims
    }

    /// Signs `claims` with the default key (an HMAC secret).
    public func sign(_ claims: CaravanClaims) async throws -> String {
        try await keys.sign(claims)
    }
}

/// Decodes unpadded base64url.
func base64URLDecode(_ text: some StringProtocol) -> Data? {
    var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while base64.count % 4 != 0 { base64 += "=" }
    return Data(base64Encoded: base64)
}
