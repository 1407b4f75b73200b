import Wire
import ArgumentParser
import Config
import Foundation
import Logging
import Server
import Store

/// `caravan-hub keys`: managed API keys in the hub's store (the file `hub.store` names, or
/// `hub.db` in `hub.state_dir`). A running hub sees each change within a second.
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Create, list, show, revoke and rotate managed API keys.",
        subcommands: [Create.self, List.self, Show.self, Revoke.self, Rotate.self])

    /// The store of the cluster file at `path`.
    static func book(_ path: String) async throws -> KeyBook {
        let cluster = try loadConfigOrExit(path)
        do {
            let location = try cluster.hub.storeLocation(relativeTo: cluster.hub.auth.baseDirectory)
            return KeyBook(store: try await SQLStore.open(location, logger: Logger(label: "caravan.store")))
        } catch let error as StoreError {
            throw ValidationError(error.description)
        }
    }

    /// Runs `body`, turning the store's refusals into a plain error line.
    static func run(_ path: String, _ body: (KeyBook) async throws -> Void) async throws {
        let book = try await book(path)
        do {
            try await body(book)
            try? await book.store.close()
        } catch let error as StoreError {
            try? await book.store.close()
            throw ValidationError(error.description)
        } catch let error as KeyBook.NotFound {
            try? await book.store.close()
            throw ValidationError(error.description)
        } catch {
            try? await book.store.close()
            throw error
        }
    }

    static func printJSON(_ value: some Encodable) throws {
        let encoder = WireCoding.encoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a key; prints it once (stdout), then what it may do (stderr).")

        @Option(name: .long, help: "Cluster YAML file.") var config: String
        @Option(name: .long, help: "Who the key is for (its subject in logs, limits and usage: key:NAME).") var name: String
        @Option(name: .long, help: "Models it may use, comma-separated (default: all; `prefix*` patterns).") var models: String?
        @Option(name: .long, help: "Requests per minute.") var rpm: Int?
        @Option(name: .long, help: "Tokens (prompt + completion) per minute.") var tpm: Int?
        @Option(name: .long, help: "Tokens per day or month, e.g. 5M/month, 200k/day.") var budget: String?
        @Flag(name: .long, help: "A soft budget: spending it is reported, requests go on.") var softBudget = false
        @Option(name: .long, help: "Requests in progress at once.") var parallel: Int?
        @Option(name: .long, help: "Lifetime, e.g. 90d, 12h (default: none).") var expires: String?

        func run() async throws {
            let terms: KeyBook.Terms
            do {
                terms = try AccountRoutes.terms(models: models.map { $0.split(separator: ",").map(String.init) }, rpm: rpm, tpm: tpm,
                                                budget: budget, soft: softBudget, parallel: parallel, expires: expires)
            } catch {
                throw ValidationError(error.message)
            }
            try await KeysCommand.run(config) { book in
                let (key, secret) = try await book.create(name: name, terms: terms)
                print(secret)
                FileHandle.standardError.write(Data("created \(key.id) (\(key.name)); the key is shown once, above\n".utf8))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the keys (never their secrets).")
        @Option(name: .long, help: "Cluster YAML file.") var config: String
        @Flag(name: .long, help: "JSON instead of a table.") var json = false

        static func text(_ value: Int?) -> String { value.map(String.init) ?? "-" }

        func run() async throws {
            try await KeysCommand.run(config) { book in
                let keys = try await book.list().map { KeyView($0) }
                if json { return try KeysCommand.printJSON(["keys": keys]) }
                print(["ID", "NAME", "STATUS", "MODELS", "RPM", "TPM", "BUDGET", "PARALLEL", "EXPIRES"].joined(separator: "\t"))
                for key in keys {
                    let models: String = key.models?.joined(separator: ",") ?? "*"
                    let budget: String = key.budget.map { "\($0) \(key.budgetMode ?? "")" } ?? "-"
                    let columns: [String] = [key.id, key.name, key.status, models, Self.text(key.rpm), Self.text(key.tpm), budget,
                                             Self.text(key.parallel), key.expiresAt ?? "-"]
                    print(columns.joined(separator: "\t"))
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One key, by id or name (JSON).")
        @Option(name: .long, help: "Cluster YAML file.") var config: String
        @Argument(help: "The key's id or name.") var key: String

        func run() async throws {
            try await KeysCommand.run(config) { book in try KeysCommand.printJSON(KeyView(try await book.find(key))) }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key: every hub refuses it within a second.")
        @Option(name: .long, help: "Cluster YAML file.") var config: String
        @Argument(help: "The key's id or name.") var key: String

        func run() async throws {
            try await KeysCommand.run(config) { book in
                let revoked = try await book.revoke(key)
                FileHandle.standardError.write(Data("revoked \(revoked.id) (\(revoked.name))\n".utf8))
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A new secret for a key, same limits; prints it once. The old one stops working within a second.")
        @Option(name: .long, help: "Cluster YAML file.") var config: String
        @Argument(help: "The key's id or name.") var key: String

        func run() async throws {
            try await KeysCommand.run(config) { book in
                let (rotated, secret) = try await book.rotate(key)
                print(secret)
                FileHandle.standardError.write(Data("rotated \(rotated.id) (\(rotated.name)); the new key is shown once, above\n".utf8))
            }
        }
    }
}
