import Foundation
import Wire

/// A hub-managed model (`caravan-hub models add`): what the admin asked for, what reading
/// its source found, and where it is placed. Kept in the store as one JSON document, so
/// every hub sharing the store sees the same desired state.
struct ManagedModel: Codable, Equatable, Sendable {
    // What the admin asked for.
    var name: String
    var source: String
    /// A multimodal projector's source (`--mmproj`).
    var projector: String?
    /// The first file's sha256, when the admin gave it (else the source's LFS sha256 / ETag).
    var sha256: String?
    /// Copies on different workers (ignored when ``workers`` names them).
    var replicas: Int
    /// Exactly these workers.
    var workers: [String]?
    /// Tokens per slot; the engine gets `-c ctx x parallel`.
    var ctx: Int?
    var parallel: Int?
    var args: [String]
    var aliases: [String]
    var createdAt: Date
    var updatedAt: Date

    // What its source said.
    var files: [PlacedFile]
    var projectorFile: PlacedFile?
    var estimate: VRAMEstimate?

    // Where it is.
    var placement: [Assignment]
    /// Why it has fewer replicas than asked (nil: fully placed).
    var problem: String?

    /// One replica: the worker and why it was chosen.
    struct Assignment: Codable, Equatable, Sendable {
        var worker: String
        var reason: String
        var since: Date
        /// When the hub last saw the worker gone (its replica moves after `replace_after`).
        var goneSince: Date?
    }

    var totalBytes: Int { (files + (projectorFile.map { [$0] } ?? [])).compactMap(\.size).reduce(0, +) }

    /// What a worker holding a replica runs.
    var placed: PlacedModel {
        PlacedModel(name: name, aliases: aliases, files: files, projector: projectorFile, ctx: ctx, parallel: parallel, args: args,
                    vramMiB: estimate?.totalMiB)
    }
}
