import Foundation

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
    /// Who should serve a request among those who may (cache-aware by default).
    public var routing = RoutingConfig()
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
    /// Where workers with `connect: outbound` dial in (workers behind NAT): each keeps one
    /// connection open, and the hub sends their requests over it as HTTP/2 streams. TLS
    /// with the hub's `tls` when set. Nil: no tunnels.
    public var tunnelListen: ListenAddress?
    /// On SIGTERM: how long in-flight requests and streams may run on before they are ended
    /// (a stream with a final SSE error event). Workers use the same grace.
    public var shutdownGrace: Duration = .seconds(30)
    /// The hub's own folder (0700): the store's file. Default: systemd's `$STATE_DIRECTORY`,
    /// else `$XDG_STATE_HOME/caravan`, else `~/.local/state/caravan`.
    public var stateDir: String?
    /// Where managed keys and the usage ledger live: a SQLite file (default `hub.db` in
    /// `state_dir`; relative paths from the config's folder; hubs on one machine may share it),
    /// or `postgres://USER@HOST:PORT/DATABASE` for hubs on several machines.
    public var store: String?
    /// The PostgreSQL store's password (`CARAVAN_STORE_PASSWORD` overrides); never in the URL.
    public var storePasswordFile: String?
    /// While the store cannot be read: `serve` keeps admitting budgeted credentials on this
    /// hub's own counts (budgets fail open), `refuse` answers them 503 `store_unavailable`
    /// (fail closed). Credentials without a budget are served either way.
    public var storeUnavailable = StoreUnavailable.serve

    public enum StoreUnavailable: String, Sendable, Equatable { case serve, refuse }
    public var ledger = LedgerConfig()
    /// Hub-managed models: where their files come from (`caravan-hub models add`).
    public var modelSources = ModelSourcesConfig()

    enum CodingKeys: String, CodingKey {
        case metrics, shutdownGrace = "shutdown_grace"
        case listen, heartbeatInterval = "heartbeat_interval", expireAfter = "expire_after"
        case maxBodyMB = "max_body_mb", firstByteTimeout = "first_byte_timeout", auth
        case connectTimeout = "connect_timeout", idleTimeout = "idle_timeout", requestTimeout = "request_timeout"
        case retries, queue, breaker, routing, limits, corsOrigins = "cors_origins", clientIdleTimeout = "client_idle_timeout"
        case clientWriteTimeout = "client_write_timeout", clientBodyTimeout = "client_body_timeout"
        case maxHeaderKB = "max_header_kb", tls, workerCAFile = "worker_ca_file", join
        case tunnelListen = "tunnel_listen", stateDir = "state_dir", store, ledger, storePasswordFile = "store_password_file"
        case storeUnavailable = "store_unavailable", modelSources = "model_sources"
    }

    public init() {}

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let v = try c.optional(ListenAddress.self, .listen) { listen = v }
        tunnelListen = try c.optional(ListenAddress.self, .tunnelListen)
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
        routing = try c.optional(RoutingConfig.self, .routing) ?? RoutingConfig()
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
        stateDir = try c.optional(String.self, .stateDir)
        store = try c.optional(String.self, .store)
        if let store, let scheme = store.range(of: "://").map({ store[..<$0.lowerBound] }) {
            guard scheme == "postgres" || scheme == "postgresql" else {
                throw c.error(.store, "expected a SQLite file's path or a postgres:// URL, got a \(scheme):// URL")
            }
            if let url = URLComponents(string: store), url.password != nil {
                throw c.error(.store, "a password does not belong in the URL: use store_password_file or CARAVAN_STORE_PASSWORD")
            }
        }
        storePasswordFile = try c.optional(String.self, .storePasswordFile)
        if let text = try c.optional(String.self, .storeUnavailable) {
            guard let mode = StoreUnavailable(rawValue: text) else { throw c.error(.storeUnavailable, "expected serve or refuse") }
            storeUnavailable = mode
        }
        ledger = try c.optional(LedgerConfig.self, .ledger) ?? LedgerConfig()
        modelSources = try c.optional(ModelSourcesConfig.self, .modelSources) ?? ModelSourcesConfig()
    }

    /// The store's file: `store` resolved against `base` (the config's folder), else
    /// `hub.db` in the state folder.
    public func storePath(relativeTo base: String) -> String {
        if let store { return store.contains("://") ? store : ConfigFile.path(store, relativeTo: base) }
        let folder = stateDir.map { ConfigFile.path($0, relativeTo: base) } ?? ConfigFile.defaultStateDirectory()
        return (folder as NSString).appendingPathComponent("hub.db")
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

/// The usage ledger: a row per finished API request, and hourly sums per (key, model).
public struct LedgerConfig: Decodable, Sendable, Equatable {
    /// Record requests at all (limits and keys work without it; budgets then count from the hub's start).
    public var enabled = true
    /// How long request rows are kept.
    public var retention: Duration = .seconds(30 * 86_400)
    /// How long the hourly sums are kept (at least a month: monthly budgets read them).
    public var usageRetention: Duration = .seconds(400 * 86_400)
    /// Rows waiting to be written at most; beyond, requests are folded into hourly sums in
    /// memory (counted in `caravan_ledger_rows_total{result="aggregated"}`), never dropped.
    public var queueSize = 20_000

    enum CodingKeys: String, CodingKey { case enabled, retention, usageRetention = "usage_retention", queueSize = "queue_size" }

    public init() {}

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        enabled = try c.optional(Bool.self, .enabled) ?? true
        retention = try c.positiveDuration(.retention) ?? retention
        usageRetention = try c.positiveDuration(.usageRetention) ?? usageRetention
        guard usageRetention >= .seconds(32 * 86_400) else { throw c.error(.usageRetention, "must be at least 32d (monthly budgets read it)") }
        if let v = try c.optional(Int.self, .queueSize) {
            guard v >= 1 else { throw c.error(.queueSize, "must be at least 1") }
            queueSize = v
        }
    }
}
