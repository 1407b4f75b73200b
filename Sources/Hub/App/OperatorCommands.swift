import Wire
import ArgumentParser
import Crypto
import Foundation
import Auth
import Config

/// A random secret as hex (32 random bytes = 64 characters).
func randomHexSecret(bytes count: Int = 32) -> String {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
}

/// Writes `text` to `path` readable by the owner only.
func writePrivate(_ text: String, to path: String) throws {
    guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
    else { throw ValidationError("cannot write \(path)") }
}

/// `caravan-hub init`: a starter cluster file with freshly generated secrets.
struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init", abstract: "Write a starter cluster.yaml with fresh random secrets.")

    @Option(name: .long, help: "Folder to write cluster.yaml, client.secret and worker.secret into.")
    var dir: String = "."

    @Flag(name: .long, help: "Overwrite existing files.")
    var force = false

    func run() throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let files = ["cluster.yaml", "client.secret", "worker.secret", "gpu-a.credential"]
            .map { (dir as NSString).appendingPathComponent($0) }
        if !force, let existing = files.first(where: { FileManager.default.fileExists(atPath: $0) }) {
            throw ValidationError("\(existing) exists (use --force to overwrite)")
        }
        let workerKey = randomHexSecret()
        try writePrivate(randomHexSecret() + "\n", to: files[1])
        try writePrivate(workerKey + "\n", to: files[2])
        // The worker's own credential: copy only this file (and cluster.yaml) to the GPU box.
        try writePrivate(WorkerKey.derive(clusterKey: Secret(workerKey), worker: "gpu-a").value + "\n", to: files[3])
        try writePrivate(Self.template, to: files[0])
        print("wrote \(files.joined(separator: ", "))")
        print("next: edit the workers section, then: caravan-hub --config \(files[0])")
    }

    static let template = """
        # Caravan cluster (written by caravan-hub init). Every key: cluster.example.yaml.
        hub:
          listen: "0.0.0.0:8080"
          heartbeat_interval: 2s
          expire_after: 3
          auth:
            # Random secrets, readable by their owner only, on the hub only. Keep them out of
            # version control. More workers: caravan-hub worker-secret --name NAME > NAME.credential
            client_secret_file: client.secret
            worker_secret_file: worker.secret
          limits:
            requests_per_second: 20
            burst: 40
            concurrent: 16
        workers:
          - name: gpu-a
            hubs: ["http://127.0.0.1:8080"]
            # The worker's own credential: the only secret its machine needs.
            credential_file: gpu-a.credential
            listen: "127.0.0.1:9101"
            llama_server: llama-server
            ports: "20000-20099"
            models:
              - name: my-model
                path: /models/my-model.gguf
                args: ["-c", "4096", "-ngl", "99"]

        """
}

/// `caravan-hub api-key`: a new static API key, shown once, and its config entry.
struct APIKeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api-key", abstract: "Generate a static API key and the hub.auth.api_keys entry that accepts it.")

    @Option(name: .long, help: "Who the key is for.")
    var name: String

    @Option(name: .long, help: "client or admin.")
    var role: String = "client"

    func run() throws {
        guard role == "client" || role == "admin" else { throw ValidationError("--role: expected client or admin") }
        let key = "cvn_" + randomHexSecret(bytes: 24)
        let digest = SHA256.hash(data: Data(key.utf8)).map { String(format: "%02x", $0) }.joined()
        print("key (shown once; give it to \(name)): \(key)")
        print("add to hub.auth.api_keys:")
        print("  - {name: \(name), role: \(role), sha256: \(digest)}")
    }
}

/// `caravan-hub join-token`: a token with which workers the cluster file does not list can
/// join (the hub must have `hub.join: true`); each gets its own credential in exchange.
struct JoinTokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "join-token", abstract: "Mint a join token for workers the cluster file does not list (hub.join).")

    @Option(name: .long, help: "Cluster YAML file (its hub.auth.worker_secret_file is read).")
    var config: String

    @Option(name: .long, help: "How long the token admits new workers, e.g. 30m, 1h, 24h.")
    var ttl: String = "1h"

    func run() async throws {
        let lifetime = try tokenLifetime(ttl)
        let key = try clusterWorkerKey(loadConfigOrExit(config))
        let now = Date()
        let signer = await TokenVerifier(secret: WorkerKey.joinKey(clusterKey: key))
        print(try await signer.sign(CaravanClaims(sub: "join", expires: now.addingTimeInterval(lifetime.inSeconds),
                                                  issuedAt: now, role: .join)))
    }
}

/// `caravan-hub worker-secret`: one worker's own credential, derived from the cluster's
/// worker key (``WorkerKey``). Give each worker only its own, as its `credential_file`.
struct WorkerSecretCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker-secret", abstract: "Print a worker's own credential (for its credential_file).")

    @Option(name: .long, help: "Cluster YAML file (its hub.auth.worker_secret_file is read).")
    var config: String

    @Option(name: .long, help: "The worker's name.")
    var name: String

    func run() throws {
        let cluster = try loadConfigOrExit(config)
        guard cluster.workers.contains(where: { $0.name == name }) else {
            throw ValidationError("no worker named \(name) in \(config)")
        }
        print(WorkerKey.derive(clusterKey: try clusterWorkerKey(cluster), worker: name).value)
    }
}
