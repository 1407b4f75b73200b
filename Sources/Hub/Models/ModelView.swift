import Foundation
import Wire

/// A hub-managed model as `models ls`, `GET /admin/models` and the dashboard show it: what
/// was asked, the estimate with its parts, each replica with why it is there and how it is
/// doing on its worker, and why replicas are missing.
struct ModelView: Codable, Sendable {
    var name: String
    var source: String
    var projector: String?
    var replicas: Int
    var workers: [String]?
    var ctx: Int?
    var parallel: Int?
    var args: [String]
    var aliases: [String]
    var sizeBytes: Int
    var files: [FileView]
    var estimate: Estimate?
    var placement: [Replica]
    var problem: String?
    var updatedAt: Date

    struct FileView: Codable, Sendable {
        var name: String
        var size: Int?
        var sha256: String?
    }

    struct Estimate: Codable, Sendable {
        var totalMiB: Int
        var weightsMiB: Int
        var kvCacheMiB: Int
        var computeMiB: Int
        var kvTokens: Int
    }

    struct Replica: Codable, Sendable {
        var worker: String
        var reason: String
        var since: Date
        var goneSince: Date?
        /// The model's state on the worker (nil: the worker has not reported it yet).
        var state: ModelState?
        var download: DownloadProgress?
    }

    /// `states`: per worker, its report of this model.
    init(_ model: ManagedModel, reports: [String: ModelReport]) {
        name = model.name
        source = model.source
        projector = model.projector
        replicas = model.replicas
        workers = model.workers
        ctx = model.ctx
        parallel = model.parallel
        args = model.args
        aliases = model.aliases
        sizeBytes = model.totalBytes
        files = model.placed.allFiles.map { FileView(name: $0.fileName, size: $0.size, sha256: $0.sha256) }
        estimate = model.estimate.map {
            Estimate(totalMiB: $0.totalMiB, weightsMiB: $0.weightsMiB, kvCacheMiB: $0.kvCacheMiB, computeMiB: $0.computeMiB, kvTokens: $0.kvTokens)
        }
        placement = model.placement.map {
            Replica(worker: $0.worker, reason: $0.reason, since: $0.since, goneSince: $0.goneSince, state: reports[$0.worker]?.state,
                    download: reports[$0.worker]?.download)
        }
        problem = model.problem
        updatedAt = model.updatedAt
    }
}
