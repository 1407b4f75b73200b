import Foundation

/// The hub-managed models one worker is to hold (`PUT /admin/placements` on the worker): what
/// to download, from where, and how to run it. Every hub sharing a store computes the same
/// set for a worker; the worker reports the set's ``digest`` so a hub sends it only when it
/// changed (level-triggered: a worker that restarted or missed a call gets it again).
public struct PlacementSet: Codable, Sendable, Equatable {
    /// Names the content (the hub computes it: sha256 of the models, in name order).
    public var digest: String
    public var models: [PlacedModel]

    public init(digest: String, models: [PlacedModel]) {
        self.digest = digest
        self.models = models
    }
}

/// One hub-managed model on a worker.
public struct PlacedModel: Codable, Sendable, Equatable {
    public var name: String
    public var aliases: [String]
    /// The model's files in order (the first is loaded; a split model's parts follow).
    public var files: [PlacedFile]
    /// The multimodal projector, passed as `--mmproj`.
    public var projector: PlacedFile?
    public var ctx: Int?
    public var parallel: Int?
    public var args: [String]
    /// The hub's VRAM estimate (weights + KV cache), admitted against the worker's budget.
    public var vramMiB: Int?

    public init(name: String, aliases: [String] = [], files: [PlacedFile], projector: PlacedFile? = nil, ctx: Int? = nil,
                parallel: Int? = nil, args: [String] = [], vramMiB: Int? = nil) {
        self.name = name
        self.aliases = aliases
        self.files = files
        self.projector = projector
        self.ctx = ctx
        self.parallel = parallel
        self.args = args
        self.vramMiB = vramMiB
    }

    /// Every file, projector included.
    public var allFiles: [PlacedFile] { files + (projector.map { [$0] } ?? []) }
}

/// A file to fetch: where from, its name (llama-server finds a split model's parts by name),
/// and the content it must have.
public struct PlacedFile: Codable, Sendable, Equatable, Hashable {
    /// `https://…` or `http://…` (a resolved `hf://` source), or a path on the worker.
    public var url: String
    public var fileName: String
    /// Lowercase hex sha256 of the content: the download is verified against it and stored
    /// under it. Nil for a path on the worker (used as it is).
    public var sha256: String?
    public var size: Int?
    /// Send the worker's Hugging Face token with the request (a `hf://` source).
    public var huggingFace: Bool?
    /// The operator allows sources on loopback and link-local addresses
    /// (`hub.model_sources.allow_local`); the worker checks every hop of its download too.
    public var allowLocal: Bool?

    public init(url: String, fileName: String, sha256: String?, size: Int?, huggingFace: Bool? = nil) {
        self.url = url
        self.fileName = fileName
        self.sha256 = sha256
        self.size = size
        self.huggingFace = huggingFace
    }

    /// A path on the worker rather than something to download.
    public var isLocal: Bool { !(url.hasPrefix("https://") || url.hasPrefix("http://")) }
}
