import Foundation
import Wire

/// One worker machine: where it reports, where its data plane listens, and its models.
public struct WorkerConfig: Decodable, Sendable {
    public var name: String
    /// Hub base URLs this worker registers with (every one of them).
    public var hubs: [String]
    /// Address the worker's data plane listens on (the hub forwards requests here).
    public var listen: ListenAddress
    /// URL the hub uses to reach the data plane; derived from `listen` when absent.
    public var advertise: String?
    /// How the hub reaches the data plane: `inbound` (it connects to `advertise`) or
    /// `outbound` (this worker dials each hub's `tunnel_listen` and serves the hub's
    /// requests over that connection: a worker behind NAT).
    public var connect = ConnectMode.inbound
    /// With `connect: outbound`: the port dialled on each hub's host (nil: the port of
    /// `hub.tunnel_listen`; set it when a port forward or load balancer sits in between).
    public var tunnelPort: Int?
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
    /// `debug` by default: it stays in the per-model ring buffer (the logs API, the dashboard),
    /// and a request costs no log writes of llama-server's lines; `info` forwards them.
    public var engineLogLevel: String
    /// Where the worker records its engines' PIDs, to clean up after a crash of its own.
    public var stateDir: String?
    /// Where llama-server engines save their prompt caches before a planned stop, to restore
    /// them on the next start (nil: `kv-cache` in the state folder). Private to the worker's user:
    /// the files are the model's activations and can reveal prompts.
    public var kvCacheDir: String?
    /// Most MiB of saved prompt caches kept, least recently used first out (0: none saved).
    public var kvCacheMaxMiB: Int
    /// Saves the prompt caches of idle slots whose content changed this often (nil: only at
    /// planned stops): a crash then loses at most this much, and a conversation that lost its
    /// slot to another is still on disk.
    public var kvCacheCheckpoint: Duration?
    /// How often a ready engine's `/health` is checked.
    public var healthInterval: Duration
    /// Where hub-placed models are downloaded (content-addressed: `blobs/sha256-…`, and a
    /// folder of links per model). Nil: `models` in the state folder. Inside a `models_dir`,
    /// name a dot folder (discovery skips those).
    public var modelCacheDir: String?
    /// Most MiB the download cache may hold; files no placement needs go first, least
    /// recently used first (nil: no limit but the disk).
    public var modelCacheMaxMiB: Int?
    /// A Hugging Face token for private `hf://` models (`HF_TOKEN` overrides it).
    public var hfTokenFile: String?
    /// Failed checks in a row after which an engine is restarted as unhealthy (0: no checks).
    public var healthFailures: Int
    /// File holding this worker's own credential (``WorkerKey``; `CARAVAN_WORKER_CREDENTIAL` overrides).
    public var credentialFile: String?
    /// Resolved by ``ClusterConfig/loadWorker(path:name:environment:)`` (nil when derived or joined).
    public var credential: Secret?
    public var credentialSource = CredentialSource.own
    /// Where the worker's `GET /metrics` is served (the hub's credential by default).
    public var metrics = MetricsConfig()

    /// The host the worker's reported data-plane URL must be on: its `advertise` URL's host,
    /// else its `listen` host when that is one address; nil (any host) when it listens on
    /// every address without an `advertise` (then only its credential vouches for it).
    public var requiredURLHost: String? {
        if connect == .outbound { return name.lowercased() }
        if let advertise, let host = URLComponents(string: advertise)?.host { return host.lowercased() }
        let host = listen.host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")).lowercased()
        return ["0.0.0.0", "::", ""].contains(host) ? nil : host
    }

    /// Where a worker's credential came from.
    public enum CredentialSource: Sendable, Equatable {
        /// Its own (`credential_file` or `CARAVAN_WORKER_CREDENTIAL`): it holds nothing else.
        case own
        /// The cluster worker key it was given, from which the worker derives its own
        /// (``WorkerKey``): that key could sign for any worker, so this is the compatibility
        /// case, logged as a warning.
        case derivedFromClusterKey(Secret)
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
        case kvCacheDir = "kv_cache_dir", kvCacheMaxMiB = "kv_cache_max_mb", kvCacheCheckpoint = "kv_cache_checkpoint"
        case healthInterval = "health_interval", healthFailures = "health_failures", metrics
        case connect, tunnelPort = "tunnel_port"
        case modelCacheDir = "model_cache_dir", modelCacheMaxMiB = "model_cache_max_mb", hfTokenFile = "hf_token_file"
    }

    /// How the hub reaches a worker's data plane.
    public enum ConnectMode: String, Sendable, Equatable {
        case inbound, outbound
    }

    /// The URL an outbound worker reports: the hub sends its requests through this worker's tunnel.
    public var tunnelURL: String { "tunnel://\(name)" }

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
        if let mode = try c.optional(String.self, .connect) {
            guard let parsed = ConnectMode(rawValue: mode) else { throw c.error(.connect, "expected inbound or outbound") }
            connect = parsed
        }
        tunnelPort = try c.optional(Int.self, .tunnelPort)
        if let tunnelPort, !(1...65535).contains(tunnelPort) { throw c.error(.tunnelPort, "must be a port, 1 to 65535") }
        models = try c.optional([ModelConfig].self, .models) ?? []
        if let single = try? c.decodeIfPresent(String.self, forKey: .modelsDir) {
            modelsDirs = [single]
        } else {
            modelsDirs = try c.optional([String].self, .modelsDir) ?? []
        }
        modelCacheDir = try c.optional(String.self, .modelCacheDir)
        modelCacheMaxMiB = try c.optional(Int.self, .modelCacheMaxMiB)
        if let modelCacheMaxMiB, modelCacheMaxMiB < 1 { throw c.error(.modelCacheMaxMiB, "must be at least 1") }
        hfTokenFile = try c.optional(String.self, .hfTokenFile)
        guard !models.isEmpty || !modelsDirs.isEmpty || modelCacheDir != nil else {
            throw c.error(.models, "a worker needs at least one model (or a models_dir), or a model_cache_dir for models the hub places")
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
        engineLogLevel = try c.optional(String.self, .engineLogLevel) ?? "debug"
        let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
        guard levels.contains(engineLogLevel) else {
            throw c.error(.engineLogLevel, "expected one of \(levels.joined(separator: ", "))")
        }
        stateDir = try c.optional(String.self, .stateDir)
        kvCacheDir = try c.optional(String.self, .kvCacheDir)
        kvCacheMaxMiB = try c.optional(Int.self, .kvCacheMaxMiB) ?? 4096
        guard kvCacheMaxMiB >= 0 else { throw c.error(.kvCacheMaxMiB, "must be 0 (no saved caches) or more") }
        kvCacheCheckpoint = try c.positiveDuration(.kvCacheCheckpoint)
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
        if connect == .outbound { return tunnelURL }
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
