import ArgumentParser
import Config
import Foundation
import Logging
import Operations
import Store
import Wire

/// `caravan-hub models`: hub-managed models in the hub's store. `add` reads the source's
/// header (the VRAM estimate) and stores the model; a running hub places it within a second,
/// and `add` waits for that decision and prints it (or the refusal, with the numbers).
struct ModelsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models", abstract: "Add, list, change and remove models the hub places on workers and they download.",
        subcommands: [Add.self, List.self, Set.self, Remove.self])

    /// Runs `body` with a desk over the store of the cluster file at `path` (no placer: the running hub places).
    static func run(_ path: String, _ body: (ModelDesk) async throws -> Void) async throws {
        let cluster = try loadConfigOrExit(path)
        let store: SQLStore
        do {
            store = try await SQLStore.open(try cluster.hub.storeLocation(relativeTo: cluster.hub.auth.baseDirectory),
                                            logger: Logger(label: "caravan.store"))
        } catch let error as StoreError {
            throw ValidationError(error.description)
        }
        let desk = ModelDesk(book: ModelBook(store: store), reader: SourceReader(hub: cluster.hub, base: cluster.hub.auth.baseDirectory),
                             placer: nil)
        do {
            try await body(desk)
            try? await store.close()
        } catch {
            try? await store.close()
            switch error {
            case let error as ModelDesk.Refusal: throw ValidationError(error.description)
            case let error as ModelRequest.Invalid: throw ValidationError("\(error.param): \(error.description)")
            case let error as ModelBook.NotFound: throw ValidationError(error.description)
            case let error as StoreError: throw ValidationError(error.description)
            default: throw error
            }
        }
    }

    static func list(_ items: String?) -> [String]? { items.map { $0.split(separator: ",").map(String.init) } }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a model to the cluster: its workers download it, then serve it like any other.")
        @Option(name: .long, help: "Cluster YAML file.") var config: String
        @Argument(help: "The name clients put in `model`.") var name: String
        @Option(name: .long, help: "hf://ORG/REPO/FILE.gguf[@REVISION], an https:// URL, or a path on the workers.") var source: String
        @Option(name: .long, help: "A multimodal projector's source (--mmproj).") var projector: String?
        @Option(name: .long, help: "The file's sha256 (default: the source's LFS sha256 or ETag).") var sha256: String?
        @Option(name: .long, help: "Copies on different workers (default 1).") var replicas: Int?
        @Option(name: .long, help: "Exactly these workers, comma-separated.") var workers: String?
        @Option(name: .long, help: "Context tokens per slot.") var ctx: Int?
        @Option(name: .long, help: "Slots (concurrent requests per copy).") var parallel: Int?
        @Option(name: .long, parsing: .unconditional, help: "Extra llama-server arguments, one string (e.g. \"-ngl 99 -fa on\").") var args: String?
        @Option(name: .long, help: "Other names, comma-separated.") var aliases: String?
        @Option(name: .long, help: "Seconds to wait for a running hub to place it (0: do not wait).") var wait: Int = 30

        func run() async throws {
            let settings = ModelBook.Changes(replicas: replicas, workers: ModelsCommand.list(workers), ctx: ctx, parallel: parallel,
                                             args: args.map { $0.split(separator: " ").map(String.init) }, aliases: ModelsCommand.list(aliases))
            let request = ModelRequest(name: name, source: source, projector: projector, sha256: sha256, settings: settings)
            try await ModelsCommand.run(config) { desk in
                let model = try await desk.add(request)
                let estimate = model.estimate.map { "\($0.totalMiB) MiB of VRAM (weights \($0.weightsMiB), KV \($0.kvCacheMiB) for \($0.kvTokens) tokens, compute \($0.computeMiB))" } ?? "an unknown amount of VRAM"
                FileHandle.standardError.write(Data("added \(model.name): \(model.totalBytes) bytes in \(model.files.count) file(s), needs \(estimate)\n".utf8))
                guard wait > 0 else { return }
                let deadline = ContinuousClock.now + .seconds(wait)
                while ContinuousClock.now < deadline {
                    // A running hub places it within a second: its decision is in the store.
                    try await Task.sleep(for: .milliseconds(200))
                    let placed = try await desk.book.find(model.name).model
                    if !placed.placement.isEmpty {
                        for replica in placed.placement { print("\(replica.worker)\t\(replica.reason)") }
                        if let problem = placed.problem { FileHandle.standardError.write(Data("warning: \(problem)\n".utf8)) }
                        return
                    }
                    if let problem = placed.problem {
                        try await desk.remove(model.name)
                        throw ValidationError("refused: \(problem)")
                    }
                }
                FileHandle.standardError.write(Data("stored; no running hub placed it within \(wait) s (it will when one runs)\n".utf8))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the models, their estimates and placement.")
        @Option(name: .long, help: "Cluster YAML file.") var config: String
        @Flag(name: .long, help: "JSON instead of a table.") var json = false

        func run() async throws {
            try await ModelsCommand.run(config) { desk in
                let views = try await desk.views(reports: [:])
                if json { return try KeysCommand.printJSON(["models": views]) }
                print(["NAME", "SOURCE", "SIZE_MIB", "VRAM_MIB", "REPLICAS", "WORKERS", "PROBLEM"].joined(separator: "\t"))
                for view in views {
                    let workers = view.placement.map { "\($0.worker) (\($0.reason))" }.joined(separator: "; ")
                    print([view.name, view.source, String(view.sizeBytes >> 20), view.estimate.map { String($0.totalMiB) } ?? "-",
                           "\(view.placement.count)/\(view.replicas)", workers.isEmpty ? "-" : workers, view.problem ?? "-"]
                        .joined(separator: "\t"))
                }
            }
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a model's replicas, workers, ctx, parallel, args or aliases.")
        @Option(name: .long, help: "Cluster YAML file.") var config: String
        @Argument(help: "The model's name.") var name: String
        @Option(name: .long) var replicas: Int?
        @Option(name: .long, help: "Comma-separated.") var workers: String?
        @Option(name: .long) var ctx: Int?
        @Option(name: .long) var parallel: Int?
        @Option(name: .long, parsing: .unconditional, help: "One string.") var args: String?
        @Option(name: .long, help: "Comma-separated.") var aliases: String?

        func run() async throws {
            let changes = ModelBook.Changes(replicas: replicas, workers: ModelsCommand.list(workers), ctx: ctx, parallel: parallel,
                                            args: args.map { $0.split(separator: " ").map(String.init) }, aliases: ModelsCommand.list(aliases))
            try await ModelsCommand.run(config) { desk in
                let model = try await desk.set(name, changes)
                FileHandle.standardError.write(Data("changed \(model.name); the running hub places it again within a second\n".utf8))
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a model: its workers stop it and free its files.")
        @Option(name: .long, help: "Cluster YAML file.") var config: String
        @Argument(help: "The model's name.") var name: String

        func run() async throws {
            try await ModelsCommand.run(config) { desk in
                try await desk.remove(name)
                FileHandle.standardError.write(Data("removed \(name)\n".utf8))
            }
        }
    }
}
