import ArgumentParser
import Foundation
import Logging
import Auth
import Config
import Server
import Wire

/// `caravan-hub`: the OpenAI-compatible front door of a Caravan cluster.
@main
struct HubCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "caravan-hub",
        abstract: "Caravan hub: one OpenAI-compatible URL in front of many llama.cpp workers.",
        version: caravanVersion,
        subcommands: [Serve.self, Token.self, InitCommand.self, APIKeyCommand.self, KeysCommand.self, ModelsCommand.self, WorkerSecretCommand.self, JoinTokenCommand.self],
        defaultSubcommand: Serve.self
    )
}

/// A token lifetime given as `--ttl` (30m, 1h, 24h...), or a validation error.
func tokenLifetime(_ ttl: String) throws -> Duration {
    guard let lifetime = ConfigDuration.parse(ttl), lifetime > .zero else {
        throw ValidationError("--ttl: expected a duration like 30m or 1h")
    }
    return lifetime
}

/// The cluster's worker key, which join tokens and worker credentials derive from.
func clusterWorkerKey(_ cluster: ClusterConfig) throws -> Secret {
    guard let key = cluster.hub.auth.workerSecret else {
        throw ValidationError("hub.auth.worker_secret_file is required: worker credentials and join tokens derive from it")
    }
    return key
}

/// Loads the cluster file or exits with the one-line error.
func loadConfigOrExit(_ path: String) throws -> ClusterConfig {
    do {
        return try ClusterConfig.load(path: path)
    } catch {
        FileHandle.standardError.write(Data("\(error)\n".utf8))
        throw ExitCode(2)
    }
}

extension HubCommand {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run the hub (the default).")

        @Option(name: .long, help: "Cluster YAML file.")
        var config: String

        @Flag(name: .long, help: "Accept requests without a token (listens on 127.0.0.1 only; admin routes stay closed).")
        var noAuth = false

        @Flag(name: .long, help: "With --no-auth: open the admin routes too.")
        var noAuthAdmin = false

        @Option(name: .long, help: "trace, debug, info, notice, warning, error, critical.")
        var logLevel: String = ProcessInfo.processInfo.environment["CARAVAN_LOG_LEVEL"] ?? "info"

        @Option(name: .long, help: "text or json (one JSON object per line).")
        var logFormat: String = ProcessInfo.processInfo.environment["CARAVAN_LOG_FORMAT"] ?? "text"

        func run() async throws {
            guard let format = LogFormat(rawValue: logFormat) else { throw ValidationError("--log-format: expected text or json") }
            bootstrapLogging(level: Logger.Level(text: logLevel), format: format)
            let cluster = try loadConfigOrExit(config)
            guard noAuth || !noAuthAdmin else { throw ValidationError("--no-auth-admin needs --no-auth") }
            let options = HubOptions(noAuth: noAuth, noAuthAdmin: noAuthAdmin, configPath: config)
            do {
                try HubApplication.checkSecrets(cluster, options: options)
            } catch {
                FileHandle.standardError.write(Data("\(error)\n".utf8))
                throw ExitCode(2)
            }
            let logger = Logger(label: "caravan.hub")
            OpenFileLimit.raise(logger: logger)
            try await HubApplication(config: cluster, options: options, logger: logger).run()
        }
    }

    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Mint a client JWT with the configured client secret.")

        @Option(name: .long, help: "Cluster YAML file.")
        var config: String

        @Option(name: .long, help: "Subject (who the token is for).")
        var sub: String

        @Option(name: .long, help: "Lifetime, e.g. 30m, 1h, 24h.")
        var ttl: String = "1h"

        @Option(name: .long, help: "client or admin.")
        var role: String = "client"

        @Option(name: .long, parsing: .upToNextOption, help: "Models the token may use (default: all).")
        var models: [String] = []

        func run() async throws {
            let cluster = try loadConfigOrExit(config)
            let lifetime = try tokenLifetime(ttl)
            guard let role = TokenRole(rawValue: role), role == .client || role == .admin else {
                throw ValidationError("--role: expected client or admin")
            }
            guard let secret = cluster.hub.auth.clientSecret else {
                FileHandle.standardError.write(Data("config error: hub.auth.client_secret_file: required to mint tokens\n".utf8))
                throw ExitCode(2)
            }
            let auth = cluster.hub.auth
            let signer = await TokenVerifier(secret: secret)
            let now = Date()
            let claims = CaravanClaims(
                sub: sub, expires: now.addingTimeInterval(lifetime.inSeconds), issuedAt: now,
                role: role == .client ? nil : role, models: models.isEmpty ? nil : models,
                issuer: auth.issuer, audience: auth.audience)
            print(try await signer.sign(claims))
        }
    }
}
