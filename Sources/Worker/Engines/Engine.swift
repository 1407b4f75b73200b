import Foundation
import Config
import Server
import Wire

/// A running engine (llama-server, or the model's `cmd`) serving one model.
struct Engine: Sendable {
    let model: String
    let port: Int
    let apiKey: String
    let process: any EngineProcess
    /// Where readiness is read, and the status that means ready.
    var healthPath = "/health"
    var readyStatus = 200
    /// Fixed slot count for an engine without llama-server's `/slots` (a `cmd` engine).
    var fixedSlots: Int?
    /// llama-server (it has `/slots` and knows `--api-key`), or another engine.
    var isLlamaServer = true
    /// Its `--slot-save-path` (``PromptCacheStore``), nil when it saves no prompt caches.
    var cacheFolder: String?
    var baseURL: String { "http://127.0.0.1:\(port)" }
}

/// What one llama-server slot holds (`/slots`): its tokens, the last task that used it (a
/// new task means new content to save) and whether a request runs in it now.
struct SlotContent: Sendable, Equatable {
    var tokens: Int
    var task: Int?
    var busy = false
}

/// Why a model could not be served.
///
/// `description` is the whole story (engine output included) for logs and the admin API;
/// `publicReason` is what an API client may read. Engine output (paths, build details) never
/// reaches clients: without a public reason they get a pointer to the worker's logs.
struct EngineError: Error, CustomStringConvertible, Equatable {
    /// What kind of failure, for what the client is told (never decided by the text).
    enum Kind: Sendable, Equatable {
        /// This worker does not serve the model (any more): 404.
        case notServed
        /// It could not be started: it exited, hung, or its port was taken.
        case startFailed
        /// It crashed too often; no start until a reset or a new command line.
        case crashLoop
        /// No room under `max_loaded` or the VRAM budget.
        case noRoom
        /// The operation is not available here (a reload without a cluster file).
        case unsupported
    }

    let description: String
    var publicReason: String?
    var kind: Kind

    init(description: String, publicReason: String? = nil, kind: Kind = .startFailed) {
        self.description = description
        self.publicReason = publicReason
        self.kind = kind
    }

    /// A reason that is safe to show anyone (it is all of the description).
    static func plain(_ text: String, kind: Kind) -> EngineError { EngineError(description: text, publicReason: text, kind: kind) }
}
