import Config
import Foundation

/// An admin's request to add a hub-managed model (`POST /admin/models`, `caravan-hub models
/// add`): checked here, once for both, before its source is read.
struct ModelRequest: Decodable, Sendable {
    var name: String
    var source: String
    var projector: String?
    var sha256: String?
    /// Replicas or workers, ctx, parallel, args, aliases: the same fields `models set` changes.
    var settings = ModelBook.Changes()

    enum CodingKeys: String, CodingKey { case name, source, projector, sha256 }

    init(name: String, source: String, projector: String? = nil, sha256: String? = nil, settings: ModelBook.Changes = .init()) {
        self.name = name
        self.source = source
        self.projector = projector
        self.sha256 = sha256
        self.settings = settings
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        source = try c.decode(String.self, forKey: .source)
        projector = try c.decodeIfPresent(String.self, forKey: .projector)
        sha256 = try c.decodeIfPresent(String.self, forKey: .sha256)
        settings = try ModelBook.Changes(from: decoder)
    }

    struct Invalid: Error, CustomStringConvertible {
        var description: String
        var param: String
    }

    /// The new model, not yet resolved or placed.
    func validated(now: Date = Date()) throws -> ManagedModel {
        try Self.check(name: name, param: "name")
        do {
            _ = try ModelSource(parsing: source)
            if let projector { _ = try ModelSource(parsing: projector) }
        } catch let error as ModelSource.Invalid {
            throw Invalid(description: error.description, param: projector == nil ? "source" : "source or projector")
        }
        if let sha256, sha256.count != 64 || !sha256.allSatisfy(\.isHexDigit) {
            throw Invalid(description: "sha256 must be 64 hex digits", param: "sha256")
        }
        let s = settings
        if s.replicas != nil && s.workers != nil { throw Invalid(description: "give replicas or workers, not both", param: "replicas") }
        try Self.check(s)
        return ManagedModel(
            name: name, source: source, projector: projector, sha256: sha256?.lowercased(), replicas: s.replicas ?? s.workers?.count ?? 1,
            workers: s.workers, ctx: s.ctx, parallel: s.parallel, args: s.args ?? [], aliases: s.aliases ?? [], createdAt: now, updatedAt: now,
            files: [], projectorFile: nil, estimate: nil, placement: [], problem: nil)
    }

    static func check(name: String, param: String) throws {
        guard (1...128).contains(name.utf8.count), !name.contains(where: { $0.isWhitespace || $0 == "/" || $0.isNewline }) else {
            throw Invalid(description: "\(param) must be 1 to 128 characters without spaces or slashes", param: param)
        }
    }

    /// The settings both adding and `models set` accept.
    static func check(_ settings: ModelBook.Changes) throws {
        let (replicas, workers, ctx, parallel, args, aliases) = (settings.replicas, settings.workers, settings.ctx, settings.parallel,
                                                                settings.args, settings.aliases)
        if let replicas, !(1...64).contains(replicas) { throw Invalid(description: "replicas must be 1 to 64", param: "replicas") }
        if let workers {
            guard (1...64).contains(workers.count), Set(workers).count == workers.count else {
                throw Invalid(description: "workers must name 1 to 64 different workers", param: "workers")
            }
            for worker in workers { try check(name: worker, param: "workers") }
        }
        if let ctx, !(1...10_000_000).contains(ctx) { throw Invalid(description: "ctx must be 1 to 10000000 tokens", param: "ctx") }
        if let parallel, !(1...1024).contains(parallel) { throw Invalid(description: "parallel must be 1 to 1024", param: "parallel") }
        if let args {
            let taken = ModelConfig.reservedArguments + ["-c", "--ctx-size", "--parallel", "-np", "--mmproj", "-mm"]
            if let clash = args.first(where: { taken.contains($0) }) {
                throw Invalid(description: "\(clash) is set by the worker (use ctx, parallel or projector)", param: "args")
            }
            guard args.count <= 256 else { throw Invalid(description: "at most 256 args", param: "args") }
        }
        for alias in aliases ?? [] { try check(name: alias, param: "aliases") }
    }
}
