import Store
import Crypto
import Foundation
import Synchronization
import Auth
import Config
import Server
import Wire

/// Checks client credentials: JWTs against the configured keys (HS secret, PEM public
/// keys, a JWKS file re-read when it changes), static API keys stored as SHA-256, and the
/// managed keys of the hub's store.
final class ClientAuthenticator: Sendable {
    private let auth: AuthConfig
    private let apiKeys: [(digest: [UInt8], config: APIKeyConfig)]
    private let managed: ManagedKeys
    private let state: Mutex<(verifier: TokenVerifier, jwksStamp: Date?, checkedAt: ContinuousClock.Instant)>

    init(auth: AuthConfig, managed: ManagedKeys = ManagedKeys()) async throws {
        self.auth = auth
        self.managed = managed
        self.apiKeys = auth.apiKeys.map { (Array(hexBytes($0.sha256)), $0) }
        let stamp = auth.jwksFile.flatMap { Self.modified(auth.path($0)) }
        let verifier = try await Self.makeVerifier(auth)
        self.state = Mutex((verifier, stamp, .now))
    }

    /// Builds the verifier from every configured key source.
    static func makeVerifier(_ auth: AuthConfig) async throws -> TokenVerifier {
        var keys: [VerificationKey] = []
        if let secret = auth.clientSecret { keys.append(VerificationKey(alg: "HS256", material: .hmac(secret))) }
        for (index, key) in auth.keys.enumerated() {
            let label = "hub.auth.keys[\(index)]"
            if let file = key.secretFile {
                guard let text = try? String(contentsOfFile: auth.path(file), encoding: .utf8) else {
                    throw ConfigError(key: "\(label).secret_file", "cannot read \(auth.path(file))")
                }
                let secret = text.trimmingCharacters(in: .whitespacesAndNewlines)
                guard secret.utf8.count >= ClusterConfig.minimumSecretBytes else {
                    throw ConfigError(key: "\(label).secret_file", "secret must be at least 32 bytes")
                }
                keys.append(VerificationKey(kid: key.kid, alg: key.alg, material: .hmac(Secret(secret))))
            } else if let file = key.publicKeyFile {
                guard let pem = try? String(contentsOfFile: auth.path(file), encoding: .utf8) else {
                    throw ConfigError(key: "\(label).public_key_file", "cannot read \(auth.path(file))")
                }
                keys.append(VerificationKey(kid: key.kid, alg: key.alg, material: .publicKeyPEM(pem)))
            }
        }
        if let file = auth.jwksFile { keys += try jwks(auth.path(file)) }
        do {
            return try await TokenVerifier(keys: keys, issuer: auth.issuer, audience: auth.audience, leeway: auth.leeway)
        } catch let error as TokenError {
            throw ConfigError(key: "hub.auth", error.reason)
        } catch {
            throw ConfigError(key: "hub.auth", "a key could not be loaded (\(type(of: error)))")
        }
    }

    /// Keys of a JWKS file; each must name its `kid` and `alg` (the algorithm is never
    /// taken from a token).
    static func jwks(_ path: String) throws -> [VerificationKey] {
        guard let data = FileManager.default.contents(atPath: path),
            let document = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
            let entries = document["keys"] as? [[String: Any]]
        else { throw ConfigError(key: "hub.auth.jwks_file", "\(path) is not a JWKS document ({\"keys\": [...]})") }
        return try entries.enumerated().map { index, entry in
            guard let kid = entry["kid"] as? String, let alg = entry["alg"] as? String,
                KeyConfig.algorithms.contains(alg)
            else {
                throw ConfigError(key: "hub.auth.jwks_file", "key \(index) needs a kid and a supported alg")
            }
            let json = String(decoding: try JSONSerialization.data(withJSONObject: entry), as: UTF8.self)
            return VerificationKey(kid: kid, alg: alg, material: .jwk(json))
        }
    }

    private static func modified(_ path: String) -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
    }

    /// The current verifier, reloading the JWKS file when it changed (checked at most once a second).
    private func verifier() async -> TokenVerifier {
        guard let file = auth.jwksFile else { return state.withLock { $0.verifier } }
        let now = ContinuousClock.now
        let (current, stamp, due) = state.withLock { state in
            let due = now - state.checkedAt >= .seconds(1)
            if due { state.checkedAt = now }
            return (state.verifier, state.jwksStamp, due)
        }
        guard due, let modified = Self.modified(auth.path(file)), modified != stamp else { return current }
        do {
            let fresh = try await Self.makeVerifier(auth)
            state.withLock { $0 = (fresh, modified, now) }
            return fresh
        } catch {
            return current  // a half-written file keeps the previous keys until it parses
        }
    }

    /// Authenticates an `Authorization` header value; `roles` the endpoint accepts.
    func authenticate(_ header: String?, roles: Set<TokenRole>) async throws(TokenError) -> Identity {
        if let identity = try cachedIdentity(header, roles: roles) { return identity }
        let credential = try bearerToken(header)
        return Self.identity(try await verifier().verify(credential, roles: roles))
    }

    /// The caller, when that needs no signature check: an API key, or a token already
    /// verified by the keys in force (nil: call ``authenticate(_:roles:)``). Synchronous, for
    /// the data plane: the token a client sends with every request is checked once.
    func cachedIdentity(_ header: String?, roles: Set<TokenRole>) throws(TokenError) -> Identity? {
        let credential = try bearerToken(header)
        // (Byte search: `String.contains(String)` is Foundation's NSString search, 1 % of the hub's CPU.)
        if !credential.utf8.contains(UInt8(ascii: ".")), !apiKeys.isEmpty || !managed.isEmpty {
            return try apiKeyIdentity(credential, roles: roles)
        }
        guard let verifier = currentVerifier(), let claims = try verifier.cachedClaims(credential, roles: roles) else { return nil }
        return Self.identity(claims)
    }

    /// The caller of an API key: a configured one (compared with every key in constant time:
    /// no early exit, no timing signal), else a managed one (looked up by its digest).
    private func apiKeyIdentity(_ credential: String, roles: Set<TokenRole>) throws(TokenError) -> Identity {
        let digest = Array(SHA256.hash(data: Data(credential.utf8)))
        var match: APIKeyConfig?
        for (candidate, config) in apiKeys where constantTimeEqual(candidate, digest) { match = config }
        if let match {
            guard roles.contains(match.role) else { throw TokenError.roleRejected }
            var identity = Identity(subject: "key:\(match.name)", role: match.role, models: match.models,
                                    concurrency: match.parallel, tpm: match.tpm, budget: match.budget, upstream: match.role == .admin)
            identity.limit(rpm: match.rpm)
            return identity
        }
        guard let key = managed.key(digest: ManagedKeys.hex(digest)) else {
            throw TokenError("invalid API key")
        }
        if key.revokedAt != nil { throw TokenError("this API key was revoked") }
        guard key.isActive(at: Date()) else { throw TokenError("this API key expired") }
        guard roles.contains(.client) else { throw TokenError.roleRejected }
        var identity = Identity(subject: key.subject, role: .client, models: key.models, concurrency: key.parallel,
                                tpm: key.tpm, budget: key.budget)
        identity.limit(rpm: key.rpm)
        return identity
    }

    private static func identity(_ claims: CaravanClaims) -> Identity {
        var identity = Identity(subject: claims.subject, role: claims.role ?? .client, models: claims.models,
                                rps: claims.rps, burst: claims.burst, concurrency: claims.concurrency, tpm: claims.tpm,
                                budget: claims.budget.flatMap { TokenBudget(parsing: $0) },
                                upstream: claims.upstream == true || claims.role == .admin)
        identity.limit(rpm: claims.rpm)
        return identity
    }

    /// The verifier in force when the JWKS file (if any) is known unchanged; nil when it is
    /// due for a check and changed (``verifier()`` reloads it).
    private func currentVerifier() -> TokenVerifier? {
        guard let file = auth.jwksFile else { return state.withLock { $0.verifier } }
        let now = ContinuousClock.now
        let (current, stamp, due) = state.withLock { state in (state.verifier, state.jwksStamp, now - state.checkedAt >= .seconds(1)) }
        guard due else { return current }
        guard Self.modified(auth.path(file)) == stamp else { return nil }
        state.withLock { $0.checkedAt = now }
        return current
    }
}
