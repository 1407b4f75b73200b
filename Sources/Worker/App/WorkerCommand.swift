import ArgumentParser
import Foundation
import Logging
import Auth
import Config
import Proxy
import Server
import Wire

/// `caravan-worker`: runs next to the GPUs, supervises llama-server and reports to the hub.
@main
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "caravan-worker",
        abstract: "Caravan worker: supervises llama-server processes and serves them to the hub.",
        version: caravanVersion
    )

    @Option(name: .long, help: "Cluster YAML file.")
    var config: String

    @Option(name: .long, help: "This worker's entry under `workers`.")
    var name: String

    @Option(name: .long, help: "trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = ProcessInfo.processInfo.environment["CARAVAN_LOG_LEVEL"] ?? "info"

    @Option(name: .long, help: "text or json (one JSON object per line).")
    var logFormat: String = ProcessInfo.processInfo.environment["CARAVAN_LOG_FORMAT"] ?? "text"

    @Flag(name: .long, help: "Delete every prompt cache this worker saved (kv_cache_dir), then exit.")
    var wipeCaches = false

    func run() async throws {
        guard let format = LogFormat(rawValue: logFormat) else { throw ValidationError("--log-format: expected text or json") }
        bootstrapLogging(level: Logger.Level(text: logLevel), format: format)
        let cluster: ClusterConfig
        let worker: WorkerConfig
        do {
            (cluster, worker) = try ClusterConfig.loadWorker(path: config, name: name)
        } catch {
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            throw ExitCode(2)
        }
        if wipeCaches {
            let store = PromptCacheStore(config: worker)
            store.wipe()
            print("caravan-worker: deleted the prompt caches in \(store.root)")
            return
        }
        let (path, name) = (config, self.name)
        let logger = Logger(label: "caravan.worker.\(worker.name)")
        OpenFileLimit.raise(logger: logger)
        try await WorkerApplication(
            cluster: cluster, worker: worker, logger: logger,
            loadConfig: { try ClusterConfig.loadWorker(path: path, name: name).worker }
        ).run()
    }
}
