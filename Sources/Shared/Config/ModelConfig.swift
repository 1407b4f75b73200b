import Foundation

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

    /// llama-server arguments the worker sets itself, refused in `args`.
    public static let reservedArguments = ["--host", "--port", "--alias", "--api-key", "-m", "--model"]

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
        if let clash = args.first(where: { Self.reservedArguments.contains($0) }) {
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
