import Foundation
import Yams

/// The whole cluster in one YAML file: the hub and every worker.
///
/// The hub reads all of it (it learns which models exist, so an unknown model is a 404
/// while a known model with no live worker is a 503); each worker picks its own entry
/// with ``ClusterConfig/worker(named:environment:)``. See `cluster.example.yaml`.
public struct ClusterConfig: Decodable, Sendable {
    public var hub: HubConfig
    public var workers: [WorkerConfig]

    enum CodingKeys: String, CodingKey { case hub, workers }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hub = try c.optional(HubConfig.self, .hub) ?? HubConfig()
        workers = try c.optional([WorkerConfig].self, .workers) ?? []
    }

    /// Every model name and alias the configuration declares, mapped to its canonical name.
    public var declaredModels: [String: String] {
        var names: [String: String] = [:]
        for worker in workers {
            for model in worker.models {
                names[model.name] = model.name
                for alias in model.aliases { names[alias] = model.name }
            }
        }
        return names
    }
}

/// Settings of the hub process.
public struct HubConfig: Decodable, Sendable {
    /// Address the OpenAI-compatible API listens on.
    public var listen = ListenAddress(host: "0.0.0.0", port: 8080)
    /// How often workers report; also what expiry is counted in.
    public var heartbeatInterval: Duration = .seconds(2)
    /// Missed heartbeats after which a worker is dropped from routing.
    public var expireAfter = 3
    /// Largest request body accepted, in bytes (413 beyond it).
    public var maxBodyBytes = 32 * 1024 * 1024
    /// Time allowed for a streamed response's first byte (prefill plus llama-server's own slot wait).
    public var firstByteTimeout: Duration = .seconds(300)
    /// Time allowed to connect to a worker.
    public var connectTimeout: Duration = .seconds(2)
    /// Longest silence between two chunks of a streamed response.
    public var idleTimeout: Duration = .seconds(60)
    /// Total time allowed for a non-streamed request.
    public var requestTimeout: Duration = .seconds(600)
    /// Extra attempts on other workers after a failure before the first byte.
    public var retries = 2
    public var queue = QueueConfig()
    public var breaker = BreakerConfig()
    public var auth = AuthConfig()
    public var limits = LimitsConfig()
    /// Origins allowed to call the API from a browser (none by default).
    public var corsOrigins: [String] = []
    /// Close a client connection after this long without a request (slow or idle clients).
    public var clientIdleTimeout: Duration = .seconds(60)
    /// Longest a write to a client may wait for the client to read (a client that stops
    /// reading); then its connection is closed and everything the request held is released.
    public var clientWriteTimeout: Duration = .seconds(30)
    /// Longest time to receive a whole request body (a client trickling one byte at a time
    /// never trips the idle timeout); then 408 and the connection is closed.
    public var clientBodyTimeout: Duration = .seconds(60)
    /// Largest request header block, in KiB (431 beyond).
    public var maxHeaderKB = 32
    /// Serve HTTPS with this certificate and key.
    public var tls: TLSConfig?
    /// CA that signed the workers' certificates, when they serve HTTPS.
    public var workerCAFile: String?
    /// Whether workers that the cluster file does not list may join with a join token
    /// (`caravan-hub join-token`); off by default.
    public var join = false
    /// Where `GET /metrics` is served (admin credential on the API listener by default).
    public var metrics = MetricsConfig()
    /// On SIGTERM: how long in-flight requests and streams may run on before they are ended
    /// (a stream with a final SSE error event). Workers use the same grace.
    public var shutdownGrace: Duration = .seconds(30)

    enum CodingKeys: String, CodingKey {
        case metrics, shutdownGrace = "shutdown_grace"
        case listen, heartbeatInterval = "heartbeat_interval", expireAfter = "expire_after"
        case maxBodyMB = "max_body_mb", firstByteTimeout = "first_byte_timeout", auth
        case connectTimeout = "connect_timeout", idleTimeout = "idle_timeout", requestTimeout = "request_timeout"
        case retries, queue, breaker, limits, corsOrigins = "cors_origins", clientIdleTimeout = "client_idle_timeout"
        case clientWriteTimeout = "client_write_timeout", clientBodyTimeout = "client_body_timeout"
        case maxHeaderKB = "max_header_kb", tls, workerCAFile = "worker_ca_file", join
    }

    public init() {}

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let v = try c.optional(ListenAddress.self, .listen) { listen = v }
        heartbeatInterval = try c.positiveDuration(.heartbeatInterval) ?? heartbeatInterval
        if let v = try c.optional(Int.self, .expireAfter) {
            guard v >= 1 else { throw c.error(.expireAfter, "must be at least 1 (missed heartbeats)") }
            expireAfter = v
        }
        if let v = try c.optional(Double.self, .maxBodyMB) {
            guard v > 0 else { throw c.error(.maxBodyMB, "must be greater than 0") }
            maxBodyBytes = Int(v * 1024 * 1024)
        }
        firstByteTimeout = try c.positiveDuration(.firstByteTimeout) ?? firstByteTimeout
        connectTimeout = try c.positiveDuration(.connectTimeout) ?? connectTimeout
        idleTimeout = try c.positiveDuration(.idleTimeout) ?? idleTimeout
        requestTimeout = try c.positiveDuration(.requestTimeout) ?? requestTimeout
        if let v = try c.optional(Int.self, .retries) {
            guard (0...10).contains(v) else { throw c.error(.retries, "must be between 0 and 10") }
            retries = v
        }
        queue = try c.optional(QueueConfig.self, .queue) ?? QueueConfig()
        breaker = try c.optional(BreakerConfig.self, .breaker) ?? BreakerConfig()
        limits = try c.optional(LimitsConfig.self, .limits) ?? LimitsConfig()
        corsOrigins = try c.optional([String].self, .corsOrigins) ?? []
        join = try c.optional(Bool.self, .join) ?? false
        metrics = try c.optional(MetricsConfig.self, .metrics) ?? MetricsConfig()
        shutdownGrace = try c.optional(ConfigDuration.self, .shutdownGrace)?.duration ?? shutdownGrace
        for (index, origin) in corsOrigins.enumerated() where !isHTTPURL(origin) || origin.hasSuffix("/") {
            throw ConfigError(key: renderKeyPath(c.codingPath + [CodingKeys.corsOrigins]) + "[\(index)]",
                              "expected an origin like https://app.example.com, got \"\(origin)\"")
        }
        clientIdleTimeout = try c.positiveDuration(.clientIdleTimeout) ?? clientIdleTimeout
        clientWriteTimeout = try c.positiveDuration(.clientWriteTimeout) ?? clientWriteTimeout
        clientBodyTimeout = try c.positiveDuration(.clientBodyTimeout) ?? clientBodyTimeout
        if let v = try c.optional(Int.self, .maxHeaderKB) {
            guard (1...1024).contains(v) else { throw c.error(.maxHeaderKB, "must be between 1 and 1024") }
            maxHeaderKB = v
        }
        tls = try c.optional(TLSConfig.self, .tls)
        workerCAFile = try c.optional(String.self, .workerCAFile)
        auth = try c.optional(AuthConfig.self, .auth) ?? AuthConfig()
    }

    /// How long after its last heartbeat a worker stops being routed to.
    public var expiry: Duration { heartbeatInterval * expireAfter }
}

/// `GET /metrics` (Prometheus text format).
public struct MetricsConfig: Decodable, Sendable, Equatable {
    /// Also serve `/metrics` without a credential on `listen` (for a Prometheus on a private
    /// network); the API listener's `/metrics` keeps asking for one.
    public var `public` = false
    /// The address of the open `/metrics` listener; required with `public: true`.
    public var listen: ListenAddress?

    enum CodingKeys: String, CodingKey { case `public`, listen }

    public init() {}

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        `public` = try c.optional(Bool.self, .public) ?? false
        listen = try c.optional(ListenAddress.self, .listen)
        if `public` && listen == nil {
            throw c.error(.listen, "required with public: true (a separate address, e.g. 127.0.0.1:9100)")
        }
    }
}

/// The per-model wait queue used when every worker is at capacity.
public struct QueueConfig: Decodable, Sendable, Equatable {
    /// Requests that may wait per model (429 beyond).
    public var size = 64
    /// Longest wait for capacity (503 after).
    public var timeout: Duration = .seconds(30)
    /// Requests per slot the hub may send to a worker whose slots are all busy, to wait in
    /// llama-server's own queue so a freed slot starts its next request at once instead of
    /// idling for a round trip through hub and worker. 0: send only to free slots.
    public var aheadPerSlot = 1

    enum CodingKeys: String, CodingKey { case size, timeout, aheadPerSlot = "ahead_per_slot" }

    public init() {}

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let v = try c.optional(Int.self, .size) {
            guard v >= 0 else { throw c.error(.size, "must not be negative (0 disables queueing)") }
            size = v
        }
        timeout = try c.positiveDuration(.timeout) ?? timeout
        if let v = try c.optional(Int.self, .aheadPerSlot) {
            guard (0...16).contains(v) else { throw c.error(.aheadPerSlot, "must be between 0 and 16") }
            aheadPerSlot = v
        }
    }
}

/// Circuit-breaker thresholds, per (worker, model).
public struct BreakerConfig: Decodable, Sendable, Equatable {
    /// Sliding window the failure rate is computed over.
    public var window: Duration = .seconds(30)
    /// Samples needed in the window before the breaker may open.
    public var minSamples = 5
    /// Failure fraction (0-1) above which the breaker opens.
    public var failureRate = 0.5
    /// A first byte later than this counts as a failure.
    public var slowTTFB: Duration = .seconds(30)
    /// A gap between streamed events longer than this counts as a failure.
    public var slowGap: Duration = .seconds(10)
    /// First open period; doubles on each consecutive re-open.
    public var openFor: Duration = .seconds(5)
    /// Cap of the doubling.
    public var maxOpenFor: Duration = .seconds(120)
    /// Consecutive successful probes that close a half-open breaker.
    public var closeAfter = 2
    /// Failures in a row that open the breaker whatever the rate (0: off).
    public var consecutiveFailures = 5

    enum CodingKeys: String, CodingKey {
        case window, minSamples = "min_samples", failureRate = "failure_rate", slowTTFB = "slow_ttfb"
        case slowGap = "slow_gap", openFor = "open_for", maxOpenFor = "max_open_for", closeAfter = "close_after"
        case consecutiveFailures = "consecutive_failures"
    }

    public init() {}

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        window = try c.positiveDuration(.window) ?? window
        if let v = try c.optional(Int.self, .minSamples) {
            guard v >= 1 else { throw c.error(.minSamples, "must be at least 1") }
            minSamples = v
        }
        if let v = try c.optional(Double.self, .failureRate) {
            guard (0..<1).contains(v) else { throw c.error(.failureRate, "must be at least 0 and below 1") }
            failureRate = v
        }
        slowTTFB = try c.positiveDuration(.slowTTFB) ?? slowTTFB
        slowGap = try c.positiveDuration(.slowGap) ?? slowGap
        openFor = try c.positiveDuration(.openFor) ?? openFor
        maxOpenFor = try c.positiveDuration(.maxOpenFor) ?? maxOpenFor
        guard maxOpenFor >= openFor else { throw c.error(.maxOpenFor, "must not be shorter than open_for") }
        if let v = try c.optional(Int.self, .closeAfter) {
            guard v >= 1 else { throw c.error(.closeAfter, "must be at least 1") }
            closeAfter = v
        }
        if let v = try c.optional(Int.self, .consecutiveFailures) {
            guard v >= 0 else { throw c.error(.consecutiveFailures, "must be 0 (off) or more") }
            consecutiveFailures = v
        }
    }
}

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
        file.hasPrefix("/") ? file : URL(fileURLWithPath: baseDirectory).appendingPathComponent(file).path
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

    enum CodingKeys: String, CodingKey { case name, sha256, role, models }

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

    enum CodingKeys: String, CodingKey { case requestsPerSecond = "requests_per_second", burst, concurrent }

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
    }
}

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

/// One worker machine: where it reports, where its data plane listens, and its models.
public struct WorkerConfig: Decodable, Sendable {
    public var name: String
    /// Hub base URLs this worker registers with (every one of them).
    public var hubs: [String]
    /// Address the worker's data plane listens on (the hub forwards requests here).
    public var listen: ListenAddress
    /// URL the hub uses to reach the data plane; derived from `listen` when absent.
    public var advertise: String?
    /// Path of the llama-server executable.
    public var llamaServer: String
    /// Ports handed to llama-server processes, one per loaded model.
    public var ports: PortRange
    /// Start every model at boot instead of on first request.
    public var preload: Bool
    /// Longest time a model may take to answer `/health` with 200.
    public var loadTimeout: Duration
    /// GPUs reported when `nvidia-smi` is absent (e.g. CPU boxes, other vendors).
    public var gpus: [GPUConfig]
    /// Static routing weight, multiplied by the worker's free capacity (see README); nil is
    /// `auto` (the default): proportional to the worker's VRAM budget (``VRAMBudget/autoWeight``).
    public var weight: Double?
    /// Serve the data plane over HTTPS with this certificate and key.
    public var tls: TLSConfig?
    /// CA to verify the hub's certificate with (https hub URLs); the system roots otherwise.
    public var hubCAFile: String?
    /// Models declared one by one; they override discovered models of the same name.
    public var models: [ModelConfig]
    /// Folders searched recursively for `*.gguf` files, each one a model (see docs/worker.md).
    public var modelsDirs: [String]
    /// Most models loaded at once (nil: no limit); the least recently used idle one makes room.
    public var maxLoaded: Int?
    /// VRAM the loaded models may use together, in MiB (nil: the GPUs' total when known).
    public var vramBudgetMiB: Int?
    /// Unload a model after this long without requests (nil: never); a model's `ttl` overrides it.
    public var ttl: Duration?
    /// How long a stopping llama-server gets between SIGTERM and SIGKILL.
    public var stopGrace: Duration
    /// First wait before restarting a crashed engine; doubles per crash in the window, capped at 60 s.
    public var restartBackoff: Duration
    /// This many engine crashes within `crash_window` is a crash loop: no more automatic restarts.
    public var crashLimit: Int
    public var crashWindow: Duration
    /// Engine output lines kept per model for `GET /logs`.
    public var logLines: Int
    /// Level at which engine output goes to the worker's own log (prefixed with the model name).
    public var engineLogLevel: String
    /// Where the worker records its engines' PIDs, to clean up after a crash of its own.
    public var stateDir: String?
    /// How often a ready engine's `/health` is checked.
    public var healthInterval: Duration
    /// Failed checks in a row after which an engine is restarted as unhealthy (0: no checks).
    public var healthFailures: Int
    /// File holding this worker's own credential (``WorkerKey``; `CARAVAN_WORKER_CREDENTIAL` overrides).
    public var credentialFile: String?
    /// Resolved by ``ClusterConfig/loadWorker(path:name:environment:)``.
    public var credential: Secret?
    public var credentialSource = CredentialSource.own
    /// Where the worker's `GET /metrics` is served (the hub's credential by default).
    public var metrics = MetricsConfig()

    /// The host the worker's reported data-plane URL must be on: its `advertise` URL's host,
    /// else its `listen` host when that is one address; nil (any host) when it listens on
    /// every address without an `advertise` (then only its credential vouches for it).
    public var requiredURLHost: String? {
        if let advertise, let host = URLComponents(string: advertise)?.host { return host.lowercased() }
        let host = listen.host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")).lowercased()
        return ["0.0.0.0", "::", ""].contains(host) ? nil : host
    }

    /// Where a worker's credential came from.
    public enum CredentialSource: Sendable, Equatable {
        /// Its own (`credential_file` or `CARAVAN_WORKER_CREDENTIAL`): it holds nothing else.
        case own
        /// Derived from the cluster worker key it was given: that key could sign for any
        /// worker, so this is the compatibility case, logged as a warning.
        case derivedFromClusterKey
        /// None yet: the worker joins with this token (`CARAVAN_JOIN_TOKEN`) and gets its own.
        case join(Secret)
    }

    enum CodingKeys: String, CodingKey {
        case name, hubs, listen, advertise, llamaServer = "llama_server", ports, preload
        case loadTimeout = "load_timeout", gpus, models, weight, tls, hubCAFile = "hub_ca_file"
        case modelsDir = "models_dir", maxLoaded = "max_loaded", vramBudgetMiB = "vram_budget_mb", ttl
        case stopGrace = "stop_grace", restartBackoff = "restart_backoff", crashLimit = "crash_limit"
        case crashWindow = "crash_window", logLines = "log_lines", engineLogLevel = "engine_log_level"
        case stateDir = "state_dir", credentialFile = "credential_file"
        case healthInterval = "health_interval", healthFailures = "health_failures", metrics
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.required(String.self, .name)
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw c.error(.name, "must be non-empty letters, digits, '-', '_' or '.'")
        }
        hubs = try c.optional([String].self, .hubs) ?? []
        for (index, hub) in hubs.enumerated() where !isHTTPURL(hub) {
            throw ConfigError(key: renderKeyPath(c.codingPath + [CodingKeys.hubs]) + "[\(index)]",
                              "expected an http:// or https:// URL, got \"\(hub)\"")
        }
        listen = try c.optional(ListenAddress.self, .listen) ?? ListenAddress(host: "127.0.0.1", port: 9090)
        metrics = try c.optional(MetricsConfig.self, .metrics) ?? MetricsConfig()
        advertise = try c.optional(String.self, .advertise)
        if let advertise, !isHTTPURL(advertise) {
            throw c.error(.advertise, "expected an http:// or https:// URL, got \"\(advertise)\"")
        }
        llamaServer = try c.optional(String.self, .llamaServer) ?? "llama-server"
        ports = try c.optional(PortRange.self, .ports) ?? PortRange(20000, 20999)
        preload = try c.optional(Bool.self, .preload) ?? false
        loadTimeout = try c.optional(ConfigDuration.self, .loadTimeout)?.duration ?? .seconds(120)
        gpus = try c.optional([GPUConfig].self, .gpus) ?? []
        if (try? c.decodeIfPresent(String.self, forKey: .weight)) == "auto" {
            weight = nil
        } else {
            do {
                weight = try c.optional(Double.self, .weight)
            } catch {
                throw c.error(.weight, "expected auto or a number")
            }
            if let weight, !(weight > 0 && weight <= 1_000_000) {
                throw c.error(.weight, "must be auto, or greater than 0 and at most 1000000")
            }
        }
        tls = try c.optional(TLSConfig.self, .tls)
        hubCAFile = try c.optional(String.self, .hubCAFile)
        models = try c.optional([ModelConfig].self, .models) ?? []
        if let single = try? c.decodeIfPresent(String.self, forKey: .modelsDir) {
            modelsDirs = [single]
        } else {
            modelsDirs = try c.optional([String].self, .modelsDir) ?? []
        }
        guard !models.isEmpty || !modelsDirs.isEmpty else {
            throw c.error(.models, "a worker needs at least one model (or a models_dir)")
        }
        maxLoaded = try c.optional(Int.self, .maxLoaded)
        if let maxLoaded, maxLoaded < 1 { throw c.error(.maxLoaded, "must be at least 1") }
        vramBudgetMiB = try c.optional(Int.self, .vramBudgetMiB)
        if let vramBudgetMiB, vramBudgetMiB < 1 { throw c.error(.vramBudgetMiB, "must be at least 1") }
        ttl = try c.positiveDuration(.ttl)
        stopGrace = try c.positiveDuration(.stopGrace) ?? .seconds(10)
        restartBackoff = try c.positiveDuration(.restartBackoff) ?? .seconds(1)
        crashLimit = try c.optional(Int.self, .crashLimit) ?? 3
        guard crashLimit >= 1 else { throw c.error(.crashLimit, "must be at least 1") }
        crashWindow = try c.positiveDuration(.crashWindow) ?? .seconds(300)
        logLines = try c.optional(Int.self, .logLines) ?? 1000
        guard logLines >= 1 else { throw c.error(.logLines, "must be at least 1") }
        engineLogLevel = try c.optional(String.self, .engineLogLevel) ?? "info"
        let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
        guard levels.contains(engineLogLevel) else {
            throw c.error(.engineLogLevel, "expected one of \(levels.joined(separator: ", "))")
        }
        stateDir = try c.optional(String.self, .stateDir)
        credentialFile = try c.optional(String.self, .credentialFile)
        healthInterval = try c.positiveDuration(.healthInterval) ?? .seconds(5)
        healthFailures = try c.optional(Int.self, .healthFailures) ?? 3
        guard healthFailures >= 0 else { throw c.error(.healthFailures, "must be 0 (no checks) or more") }
        var seen: Set<String> = []
        for (index, model) in models.enumerated() {
            for label in [model.name] + model.aliases {
                guard seen.insert(label).inserted else {
                    throw ConfigError(key: renderKeyPath(c.codingPath + [CodingKeys.models]) + "[\(index)]",
                                      "name or alias \"\(label)\" is used twice on this worker")
                }
            }
        }
        guard ports.ports.count >= models.count else {
            throw c.error(.ports, "range has \(ports.ports.count) ports for \(models.count) models")
        }
    }

    /// The URL the hub should use for this worker's data plane.
    public func advertisedURL(boundPort: Int) -> String {
        if let advertise { return advertise.hasSuffix("/") ? String(advertise.dropLast()) : advertise }
        let host = (listen.host == "0.0.0.0" || listen.host == "::") ? "127.0.0.1" : listen.host
        let scheme = tls == nil ? "http" : "https"
        return host.contains(":") ? "\(scheme)://[\(host)]:\(boundPort)" : "\(scheme)://\(host):\(boundPort)"
    }
}

/// A statically declared GPU, for machines without `nvidia-smi`.
public struct GPUConfig: Decodable, Sendable, Equatable {
    public var name: String
    public var vramMB: Int

    enum CodingKeys: String, CodingKey { case name, vramMB = "vram_mb" }

    public init(name: String, vramMB: Int) {
        self.name = name
        self.vramMB = vramMB
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.optional(String.self, .name) ?? "gpu"
        vramMB = try c.required(Int.self, .vramMB)
        guard vramMB >= 0 else { throw c.error(.vramMB, "must not be negative") }
    }
}

/// One model a worker can serve.
public struct ModelConfig: Decodable, Sendable, Equatable {
    /// The name clients put in `model`.
    public var name: String
    /// Path of the GGUF file (the first part of a split model).
    public var path: String
    /// Extra llama-server arguments (e.g. `["-ngl", "99"]`).
    public var args: [String]
    /// Other names clients may use for this model.
    public var aliases: [String]
    /// Extra environment for the llama-server process.
    public var env: [String: String]
    /// Unload after this long without requests (nil: the worker's `ttl`).
    public var ttl: Duration?
    /// Keep loaded: started with the worker, never evicted or unloaded, restarted after a crash.
    public var pin: Bool
    /// Served, but not listed in `/v1/models`.
    public var unlisted: Bool
    /// Request slots (llama-server `--parallel`).
    public var parallel: Int?
    /// Context size in tokens (llama-server `-c`).
    public var ctx: Int?
    /// VRAM the model needs, in MiB; estimated from the GGUF size when absent (docs/worker.md).
    public var vramMiB: Int?
    /// Another engine than llama-server: the executable and its arguments, with `${PORT}`,
    /// `${MODEL_PATH}`, `${API_KEY}` and `${MODEL}` filled in (vLLM, SGLang, whisper.cpp's
    /// server, an older llama-server...). The worker supervises it the same way.
    public var cmd: [String]?
    /// The path that answers `readyStatus` once the engine is ready (default `/health`).
    public var healthPath = "/health"
    public var readyStatus = 200
    /// Request slots, for an engine without llama-server's `/slots` (and a remote upstream).
    public var slots: Int?
    /// A remote OpenAI-compatible API root (`https://api.example.com/v1`) serving this model
    /// instead of a local engine; its key (`api_key_file`) stays on the worker.
    public var upstream: String?
    public var apiKeyFile: String?
    /// Resolved by ``ClusterConfig/loadWorker(path:name:environment:)``.
    public var apiKey: Secret?
    /// What the worker changes in request bodies for this model (`strip_params`,
    /// `set_params`, `default_params`, `use_model_name`).
    public var rewrite = BodyRewrite()

    enum CodingKeys: String, CodingKey {
        case name, path, args, aliases, env, ttl, pin, unlisted, parallel, ctx, vramMiB = "vram_mb"
        case stripParams = "strip_params", setParams = "set_params", defaultParams = "default_params"
        case useModelName = "use_model_name", cmd, healthPath = "health_path", readyStatus = "ready_status", slots
        case upstream, apiKeyFile = "api_key_file"
    }

    public init(name: String, path: String, args: [String] = [], aliases: [String] = [], env: [String: String] = [:],
                ttl: Duration? = nil, pin: Bool = false, unlisted: Bool = false, parallel: Int? = nil, ctx: Int? = nil,
                vramMiB: Int? = nil) {
        self.name = name
        self.path = path
        self.args = args
        self.aliases = aliases
        self.env = env
        self.ttl = ttl
        self.pin = pin
        self.unlisted = unlisted
        self.parallel = parallel
        self.ctx = ctx
        self.vramMiB = vramMiB
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.required(String.self, .name)
        guard !name.isEmpty else { throw c.error(.name, "must not be empty") }
        upstream = try c.optional(String.self, .upstream)
        if let upstream, !isHTTPURL(upstream) { throw c.error(.upstream, "expected an http:// or https:// URL, got \"\(upstream)\"") }
        path = try upstream == nil ? c.required(String.self, .path) : (c.optional(String.self, .path) ?? "")
        guard !path.isEmpty || upstream != nil else { throw c.error(.path, "must not be empty") }
        apiKeyFile = try c.optional(String.self, .apiKeyFile)
        args = try c.optional([String].self, .args) ?? []
        let reserved = ["--host", "--port", "--alias", "--api-key", "-m", "--model"]
        if let clash = args.first(where: { reserved.contains($0) }) {
            throw c.error(.args, "\(clash) is set by the worker and must not appear in args")
        }
        aliases = try c.optional([String].self, .aliases) ?? []
        env = try c.optional([String: String].self, .env) ?? [:]
        ttl = try c.positiveDuration(.ttl)
        pin = try c.optional(Bool.self, .pin) ?? false
        unlisted = try c.optional(Bool.self, .unlisted) ?? false
        parallel = try c.optional(Int.self, .parallel)
        if let parallel {
            guard parallel >= 1 else { throw c.error(.parallel, "must be at least 1") }
            if let clash = args.first(where: { ["--parallel", "-np"].contains($0) }) {
                throw c.error(.args, "\(clash) conflicts with parallel: set one of them")
            }
        }
        ctx = try c.optional(Int.self, .ctx)
        if let ctx {
            guard ctx >= 1 else { throw c.error(.ctx, "must be at least 1") }
            if let clash = args.first(where: { ["-c", "--ctx-size"].contains($0) }) {
                throw c.error(.args, "\(clash) conflicts with ctx: set one of them")
            }
        }
        vramMiB = try c.optional(Int.self, .vramMiB)
        if let vramMiB, vramMiB < 0 { throw c.error(.vramMiB, "must not be negative") }
        cmd = try c.optional([String].self, .cmd)
        if upstream != nil && cmd != nil { throw c.error(.cmd, "a model is served by upstream or by cmd, not both") }
        if let cmd {
            guard let first = cmd.first, !first.isEmpty else { throw c.error(.cmd, "needs an executable") }
            guard args.isEmpty, ctx == nil, parallel == nil else {
                throw c.error(.cmd, "args, ctx and parallel are llama-server's; with cmd, put the engine's arguments in cmd")
            }
        }
        healthPath = try c.optional(String.self, .healthPath) ?? "/health"
        guard healthPath.hasPrefix("/") else { throw c.error(.healthPath, "must start with /") }
        readyStatus = try c.optional(Int.self, .readyStatus) ?? 200
        guard (200...299).contains(readyStatus) else { throw c.error(.readyStatus, "must be a 2xx status") }
        slots = try c.optional(Int.self, .slots)
        if let slots, !(1...65_536).contains(slots) { throw c.error(.slots, "must be within 1...65536") }
        rewrite = BodyRewrite(
            strip: Set(try c.optional([String].self, .stripParams) ?? []),
            set: (try c.optional([String: JSONText].self, .setParams) ?? [:]).mapValues(\.text),
            defaults: (try c.optional([String: JSONText].self, .defaultParams) ?? [:]).mapValues(\.text),
            modelName: try c.optional(String.self, .useModelName))
        if let clash = rewrite.strip.first(where: { rewrite.set[$0] != nil || rewrite.defaults[$0] != nil }) {
            throw c.error(.stripParams, "\"\(clash)\" is also set; strip it or set it, not both")
        }
    }

    /// The llama-server arguments after the worker's own (`-m`, `--host`, `--port`, `--alias`).
    public var engineArguments: [String] {
        (ctx.map { ["-c", String($0)] } ?? []) + (parallel.map { ["--parallel", String($0)] } ?? []) + args
    }
}

func isHTTPURL(_ text: String) -> Bool {
    guard let url = URL(string: text), let scheme = url.scheme, url.host != nil else { return false }
    return scheme == "http" || scheme == "https"
}
