import Wire
import Foundation

/// Cluster credentials. Secrets come from files or environment variables, never inline.
public struct AuthConfig: Decodable, Sendable {
    /// File holding the HS256 secret that client JWTs are signed with (`CARAVAN_CLIENT_SECRET` overrides).
    public var clientSecretFile: String?
    /// File holding the cluster's worker key, on the hub only (`CARAVAN_WORKER_SECRET`
    /// overrides): each worker's credential is derived from it (``WorkerKey``).
    public var workerSecretFile: String?
    /// The worker key being rotated out: workers' credentials derived from it stay valid
    /// while it is set (`CARAVAN_PREVIOUS_WORKER_SECRET` overrides).
    public var previousWorkerSecretFile: String?
    /// Required `iss` claim of client tokens, when set.
    public var issuer: String?
    /// Required `aud` claim of client tokens, when set.
    public var audience: String?
    /// Clock skew tolerated on `exp` and `nbf`.
    public var leeway: Duration = .seconds(30)

    /// More keys for client tokens (several algorithms, selected by `kid`).
    public var keys: [KeyConfig] = []
    /// A JWKS file of client-token keys; re-read when it changes (key rotation).
    public var jwksFile: String?
    /// Static API keys for simple setups, stored as SHA-256 hashes.
    public var apiKeys: [APIKeyConfig] = []

    /// Resolved secrets (filled by ``ClusterConfig/load(path:environment:)``).
    public var clientSecret: Secret?
    public var workerSecret: Secret?
    public var previousWorkerSecret: Secret?
    /// The folder relative key files are read from.
    public var baseDirectory = "."

    enum CodingKeys: String, CodingKey {
        case clientSecretFile = "client_secret_file", workerSecretFile = "worker_secret_file"
        case previousWorkerSecretFile = "previous_worker_secret_file"
        case issuer, audience, leeway, keys, jwksFile = "jwks_file", apiKeys = "api_keys"
    }

    /// A path from this section, resolved against the config file's folder.
    public func path(_ file: String) -> String {
        ConfigFile.path(file, relativeTo: baseDirectory)
    }

    public init() {}

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        clientSecretFile = try c.optional(String.self, .clientSecretFile)
        workerSecretFile = try c.optional(String.self, .workerSecretFile)
        previousWorkerSecretFile = try c.optional(String.self, .previousWorkerSecretFile)
        issuer = try c.optional(String.self, .issuer)
        audience = try c.optional(String.self, .audience)
        if let v = try c.optional(ConfigDuration.self, .leeway) { leeway = v.duration }
        keys = try c.optional([KeyConfig].self, .keys) ?? []
        if keys.count + (clientSecretFile == nil ? 0 : 1) > 1, let index = keys.firstIndex(where: { $0.kid == nil }) {
            throw ConfigError(key: renderKeyPath(c.codingPath + [CodingKeys.keys]) + "[\(index)].kid",
                              "required when there is more than one client key")
        }
        jwksFile = try c.optional(String.self, .jwksFile)
        apiKeys = try c.optional([APIKeyConfig].self, .apiKeys) ?? []
    }
}

/// One key that client tokens may be signed with. The algorithm is fixed here: a token
/// naming any other algorithm is rejected, whatever its header says.
public struct KeyConfig: Decodable, Sendable, Equatable {
    public static let algorithms = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]

    public var kid: String?
    public var alg: String
    /// HS*: file with the shared secret (at least 32 bytes).
    public var secretFile: String?
    /// RS*, PS256, ES*, EdDSA: file with the PEM public key.
    public var publicKeyFile: String?

    enum CodingKeys: String, CodingKey { case kid, alg, secretFile = "secret_file", publicKeyFile = "public_key_file" }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kid = try c.optional(String.self, .kid)
        alg = try c.required(String.self, .alg)
        guard Self.algorithms.contains(alg) else {
            throw c.error(.alg, "expected one of \(Self.algorithms.joined(separator: ", ")) (never \"none\")")
        }
        secretFile = try c.optional(String.self, .secretFile)
        publicKeyFile = try c.optional(String.self, .publicKeyFile)
        if alg.hasPrefix("HS") {
            guard secretFile != nil else { throw c.error(.secretFile, "required for \(alg)") }
            guard publicKeyFile == nil else { throw c.error(.publicKeyFile, "not used by \(alg); use secret_file") }
        } else {
            guard publicKeyFile != nil else { throw c.error(.publicKeyFile, "required for \(alg)") }
            guard secretFile == nil else { throw c.error(.secretFile, "not used by \(alg); use public_key_file") }
        }
    }
}

/// A static API key, stored as the hex SHA-256 of the key (never the key itself).
public struct APIKeyConfig: Decodable, Sendable, Equatable {
    /// Who the key belongs to (the subject for rate limits and logs).
    public var name: String
    public var sha256: String
    public var role: TokenRole
    /// Models this key may use; absent means all.
    public var models: [String]?
    /// Requests and tokens per minute, requests at once, and a token budget (as managed keys have).
    public var rpm: Int?
    public var tpm: Int?
    public var parallel: Int?
    public var budget: TokenBudget?

    enum CodingKeys: String, CodingKey { case name, sha256, role, models, rpm, tpm, parallel, budget, budgetMode = "budget_mode" }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.required(String.self, .name)
        sha256 = try c.required(String.self, .sha256).lowercased()
        guard sha256.count == 64, sha256.allSatisfy(\.isHexDigit) else {
            throw c.error(.sha256, "expected 64 hex digits (echo -n KEY | sha256sum)")
        }
        let roleName = try c.optional(String.self, .role) ?? "client"
        guard let role = TokenRole(rawValue: roleName), role == .client || role == .admin else {
            throw c.error(.role, "expected client or admin")
        }
        self.role = role
        models = try c.optional([String].self, .models)
        for key in [CodingKeys.rpm, .tpm, .parallel] {
            if let value = try c.optional(Int.self, key), value < 1 { throw c.error(key, "must be at least 1") }
        }
        rpm = try c.optional(Int.self, .rpm)
        tpm = try c.optional(Int.self, .tpm)
        parallel = try c.optional(Int.self, .parallel)
        let mode = try c.optional(String.self, .budgetMode) ?? "hard"
        guard mode == "hard" || mode == "soft" else { throw c.error(.budgetMode, "expected hard or soft") }
        if let text = try c.optional(String.self, .budget) {
            guard let budget = TokenBudget(parsing: text, hard: mode == "hard") else {
                throw c.error(.budget, "expected tokens per day or month, like 5M/month or 200k/day")
            }
            self.budget = budget
        }
    }
}

/// Per-subject request limits (a token's `sub`, or an API key's name).
public struct LimitsConfig: Decodable, Sendable, Equatable {
    /// Sustained requests per second (0: unlimited). A token's `rps` claim overrides it.
    public var requestsPerSecond: Double = 0
    /// Requests allowed at once above the sustained rate. A token's `burst` claim overrides it.
    public var burst: Double = 0
    /// Requests in progress at once (0: unlimited). A token's `concurrency` claim overrides it.
    public var concurrent = 0
    /// Requests per minute a credential (or, without authentication, an address) may send that
    /// fail the same way on every worker (poison) before its next requests get 429 (0: no limit).
    public var poisonPerMinute = 10

    enum CodingKeys: String, CodingKey {
        case requestsPerSecond = "requests_per_second", burst, concurrent, poisonPerMinute = "poison_per_minute"
    }

    public init() {}

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        requestsPerSecond = try c.optional(Double.self, .requestsPerSecond) ?? 0
        guard requestsPerSecond >= 0 else { throw c.error(.requestsPerSecond, "must not be negative") }
        burst = try c.optional(Double.self, .burst) ?? max(1, requestsPerSecond)
        guard burst >= 0 else { throw c.error(.burst, "must not be negative") }
        concurrent = try c.optional(Int.self, .concurrent) ?? 0
        guard concurrent >= 0 else { throw c.error(.concurrent, "must not be negative") }
        poisonPerMinute = try c.optional(Int.self, .poisonPerMinute) ?? 10
        guard poisonPerMinute >= 0 else { throw c.error(.poisonPerMinute, "must not be negative") }
    }
}
