import Foundation
import Yams

extension ClusterConfig {
    /// Environment variables that override the file (secrets and addresses).
    public enum Environment {
        public static let clientSecret = "CARAVAN_CLIENT_SECRET"
        public static let workerSecret = "CARAVAN_WORKER_SECRET"
        /// The cluster worker key being rotated out (hub only).
        public static let previousWorkerSecret = "CARAVAN_PREVIOUS_WORKER_SECRET"
        /// A worker's own credential (``WorkerKey``).
        public static let workerCredential = "CARAVAN_WORKER_CREDENTIAL"
        /// A join token (`caravan-hub join-token`) for a worker the hub's cluster file does not list.
        public static let joinToken = "CARAVAN_JOIN_TOKEN"
        public static let hubListen = "CARAVAN_HUB_LISTEN"
        public static let hubURL = "CARAVAN_HUB_URL"
        public static let workerListen = "CARAVAN_WORKER_LISTEN"
        public static let workerAdvertise = "CARAVAN_WORKER_ADVERTISE"
        public static let llamaServer = "CARAVAN_LLAMA_SERVER"
    }

    /// Reads, validates and resolves a cluster file as the hub does (every secret of
    /// `hub.auth`). Every failure is a one-line ``ConfigError``.
    public static func load(
        path: String,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) -> ClusterConfig {
        var config = try read(path)
        let base = URL(fileURLWithPath: path).deletingLastPathComponent()
        try config.applyEnvironment(environment, relativeTo: base)
        return config
    }

    /// Reads a cluster file as worker `name` does: its own entry with its address overrides
    /// and its own credential, and none of the hub's secrets (a worker never needs the
    /// client secret, and reads the cluster worker key only when it was given no credential
    /// of its own: see ``WorkerConfig/credentialSource``).
    public static func loadWorker(
        path: String, name: String,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) -> (cluster: ClusterConfig, worker: WorkerConfig) {
        var config = try read(path)
        let base = URL(fileURLWithPath: path).deletingLastPathComponent()
        config.hub.auth.baseDirectory = base.path
        var worker = try config.worker(named: name, environment: environment)
        let index = config.workers.firstIndex { $0.name == name }!
        for (modelIndex, model) in worker.models.enumerated() {
            guard let file = model.apiKeyFile else { continue }
            let path = ConfigFile.path(file, relativeTo: base.path)
            guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                throw ConfigError(key: "workers[\(index)].models[\(modelIndex)].api_key_file", "cannot read \(path)")
            }
            worker.models[modelIndex].apiKey = Secret(text.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let joinToken = environment[Environment.joinToken].flatMap { $0.isEmpty ? nil : Secret($0) }
        // A worker joining with a token has no credential file yet: it writes it once joined.
        let credentialFile = worker.credentialFile.flatMap { file in
            joinToken != nil && !FileManager.default.fileExists(atPath: ConfigFile.path(file, relativeTo: base.path)) ? nil : file
        }
        if let own = try secret(env: environment[Environment.workerCredential], file: credentialFile,
                                key: "workers[\(index)].credential_file", envName: Environment.workerCredential, base: base) {
            worker.credential = own
            worker.credentialSource = .own
        } else if let joinToken {
            worker.credentialSource = .join(joinToken)
        } else if let clusterKey = try secret(
            env: environment[Environment.workerSecret], file: config.hub.auth.workerSecretFile,
            key: "hub.auth.worker_secret_file", envName: Environment.workerSecret, base: base)
        {
            worker.credentialSource = .derivedFromClusterKey(clusterKey)
        } else {
            throw ConfigError(key: "workers[\(index)].credential_file",
                              "required: the worker's own credential (caravan-hub worker-secret --name \(name); or set \(Environment.workerCredential))")
        }
        return (config, worker)
    }

    private static func read(_ path: String) throws(ConfigError) -> ClusterConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(key: "", "cannot read config file \(path)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(key: "", "config file \(path) is not UTF-8")
        }
        return try parse(text)
    }

    /// Parses YAML text into a validated config (no environment, no secret files).
    public static func parse(_ text: String) throws(ConfigError) -> ClusterConfig {
        if text.allSatisfy(\.isWhitespace) { throw ConfigError(key: "", "config file is empty") }
        let config: ClusterConfig
        do {
            config = try YAMLDecoder().decode(ClusterConfig.self, from: text)
        } catch let error as ConfigError {
            throw error
        } catch DecodingError.dataCorrupted(let context) where context.underlyingError != nil {
            // Yams wraps errors thrown inside decoding, our own ones included.
            switch context.underlyingError {
            case let error as ConfigError: throw error
            case let error as YamlError: throw ConfigError(key: "", "invalid YAML: \(oneLine(String(describing: error)))")
            default: throw ConfigError(key: "", "invalid config: \(oneLine(String(describing: context.underlyingError!)))")
            }
        } catch let error as DecodingError {
            throw ConfigError(decoding: error)
        } catch let error as YamlError {
            throw ConfigError(key: "", "invalid YAML: \(oneLine(String(describing: error)))")
        } catch {
            throw ConfigError(key: "", "invalid config: \(oneLine(String(describing: error)))")
        }
        var names: Set<String> = []
        for (index, worker) in config.workers.enumerated() where !names.insert(worker.name).inserted {
            throw ConfigError(key: "workers[\(index)].name", "worker name \"\(worker.name)\" is used twice")
        }
        if config.hub.tunnelListen == nil, let index = config.workers.firstIndex(where: { $0.connect == .outbound }) {
            throw ConfigError(key: "workers[\(index)].connect", "outbound needs hub.tunnel_listen (where such workers dial in)")
        }
        return config
    }

    /// Applies `CARAVAN_*` overrides and reads secret files (relative paths from the config's folder).
    mutating func applyEnvironment(_ env: [String: String], relativeTo base: URL) throws(ConfigError) {
        if let listen = env[Environment.hubListen] {
            guard let parsed = ListenAddress.parse(listen) else {
                throw ConfigError(key: Environment.hubListen, "expected host:port, got \"\(listen)\"")
            }
            hub.listen = parsed
        }
        hub.auth.clientSecret = try Self.secret(
            env: env[Environment.clientSecret], file: hub.auth.clientSecretFile,
            key: "hub.auth.client_secret_file", envName: Environment.clientSecret, base: base)
        hub.auth.baseDirectory = base.path
        hub.auth.workerSecret = try Self.secret(
            env: env[Environment.workerSecret], file: hub.auth.workerSecretFile,
            key: "hub.auth.worker_secret_file", envName: Environment.workerSecret, base: base)
        hub.auth.previousWorkerSecret = try Self.secret(
            env: env[Environment.previousWorkerSecret], file: hub.auth.previousWorkerSecretFile,
            key: "hub.auth.previous_worker_secret_file", envName: Environment.previousWorkerSecret, base: base)
    }

    /// The entry of the worker called `name`, with its address overrides applied.
    public func worker(
        named name: String,
        environment env: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) -> WorkerConfig {
        guard var worker = workers.first(where: { $0.name == name }) else {
            let known = workers.map(\.name).joined(separator: ", ")
            throw ConfigError(key: "workers", "no worker named \"\(name)\" (known: \(known.isEmpty ? "none" : known))")
        }
        if let hubs = env[Environment.hubURL] {
            worker.hubs = hubs.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            if let bad = worker.hubs.first(where: { !isHTTPURL($0) }) {
                throw ConfigError(key: Environment.hubURL, "expected http(s) URLs, got \"\(bad)\"")
            }
        }
        if let listen = env[Environment.workerListen] {
            guard let parsed = ListenAddress.parse(listen) else {
                throw ConfigError(key: Environment.workerListen, "expected host:port, got \"\(listen)\"")
            }
            worker.listen = parsed
        }
        if let advertise = env[Environment.workerAdvertise] {
            guard isHTTPURL(advertise) else {
                throw ConfigError(key: Environment.workerAdvertise, "expected an http(s) URL, got \"\(advertise)\"")
            }
            worker.advertise = advertise
        }
        if let path = env[Environment.llamaServer] { worker.llamaServer = path }
        guard !worker.hubs.isEmpty else {
            throw ConfigError(key: "workers[\(workers.firstIndex { $0.name == name }!)].hubs",
                              "a worker needs at least one hub URL (or \(Environment.hubURL))")
        }
        return worker
    }

    /// Minimum secret length: HS256 keys shorter than the hash are weak (and jwt-kit rejects them).
    public static let minimumSecretBytes = 32

    private static func secret(
        env: String?, file: String?, key: String, envName: String, base: URL
    ) throws(ConfigError) -> Secret? {
        let value: String
        let source: String
        if let env {
            value = env
            source = envName
        } else if let file {
            let url = URL(fileURLWithPath: ConfigFile.path(file, relativeTo: base.path))
            guard let data = FileManager.default.contents(atPath: url.path),
                let text = String(data: data, encoding: .utf8)
            else {
                throw ConfigError(key: key, "cannot read secret file \(url.path)")
            }
            value = text.trimmingCharacters(in: .whitespacesAndNewlines)
            source = key
        } else {
            return nil
        }
        guard value.utf8.count >= minimumSecretBytes else {
            throw ConfigError(key: source, "secret must be at least \(minimumSecretBytes) bytes (try: openssl rand -hex 32)")
        }
        return Secret(value)
    }
}

extension ConfigError {
    /// Turns a `DecodingError` into one line naming the key.
    init(decoding error: DecodingError) {
        switch error {
        case .keyNotFound(let key, let context):
            self.init(key: renderKeyPath(context.codingPath + [key]), "required key is missing")
        case .typeMismatch(let type, let context):
            self.init(key: renderKeyPath(context.codingPath), "expected \(describe(type))")
        case .valueNotFound(let type, let context):
            self.init(key: renderKeyPath(context.codingPath), "expected \(describe(type)), found nothing")
        case .dataCorrupted(let context):
            self.init(key: renderKeyPath(context.codingPath), oneLine(context.debugDescription))
        @unknown default:
            self.init(key: "", oneLine(String(describing: error)))
        }
    }
}

private func describe(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: "a string"
    case is Int.Type: "an integer"
    case is Double.Type: "a number"
    case is Bool.Type: "true or false"
    default:
        // Yams names its node kinds (Sequence, Mapping, Scalar) rather than Swift types.
        switch String(describing: type) {
        case let name where name.hasPrefix("Array") || name.contains("Sequence"): "a list"
        case let name where name.hasPrefix("Dictionary") || name.contains("Mapping"): "a mapping"
        default: "a \(type) value"
        }
    }
}

func oneLine(_ text: String) -> String {
    text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
}
