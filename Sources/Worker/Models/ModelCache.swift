import Foundation
import Config
import Wire
#if canImport(Glibc)
import Glibc
#endif

/// The folder hub-placed models are downloaded into, content-addressed:
///
/// ```
/// blobs/sha256-<hex>          verified files, named by their content
/// partial/<key>.part          downloads in progress (resumed from their length)
/// models/<name>/<file name>   links to the blobs, named as the source names them
///                             (llama-server finds a split model's parts by name)
/// placements.json             the last set of models the hub sent (kept across restarts)
/// ```
///
/// A file no placement needs stays, for a later placement, until the cache is over its budget:
/// then the least recently used go first.
struct ModelCache: Sendable {
    let root: String
    let budgetBytes: Int?

    init(root: String, budgetMiB: Int?) {
        self.root = root
        budgetBytes = budgetMiB.map { $0 << 20 }
    }

    /// The worker's cache folder: `model_cache_dir`, else `models` in the state folder (the one
    /// folder a hardened unit or a container is sure to let the worker write).
    init(worker: WorkerConfig) {
        let root = worker.modelCacheDir
            ?? ((worker.stateDir ?? ConfigFile.defaultStateDirectory()) as NSString).appendingPathComponent("models")
        self.init(root: root, budgetMiB: worker.modelCacheMaxMiB)
    }

    var blobs: String { (root as NSString).appendingPathComponent("blobs") }
    var partials: String { (root as NSString).appendingPathComponent("partial") }
    var placementsFile: String { (root as NSString).appendingPathComponent("placements.json") }

    func prepare() throws {
        for folder in [root, blobs, partials, (root as NSString).appendingPathComponent("models")] {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        }
    }

    /// The name a file is stored under: its sha256, or (unknown content) a hash of its URL.
    static func key(_ file: PlacedFile) -> String {
        if let sha = file.sha256 { return "sha256-\(sha)" }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in file.url.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return "url-" + String(hash, radix: 16)
    }

    func blob(_ file: PlacedFile) -> String { (blobs as NSString).appendingPathComponent(Self.key(file)) }
    func partial(_ file: PlacedFile) -> String { (partials as NSString).appendingPathComponent(Self.key(file) + ".part") }
    func modelFolder(_ name: String) -> String {
        ((root as NSString).appendingPathComponent("models") as NSString).appendingPathComponent(name)
    }

    /// The path llama-server loads a file from: the link in the model's folder, or a local source as it is.
    func path(of file: PlacedFile, model: String) -> String {
        file.isLocal ? file.url : (modelFolder(model) as NSString).appendingPathComponent(file.fileName)
    }

    func has(_ file: PlacedFile) -> Bool {
        file.isLocal ? FileManager.default.fileExists(atPath: file.url) : FileManager.default.fileExists(atPath: blob(file))
    }

    /// Links the model's downloaded files into its folder (and marks the blobs used now).
    func link(_ model: PlacedModel) throws {
        let folder = modelFolder(model.name)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        for file in model.allFiles where !file.isLocal {
            let link = (folder as NSString).appendingPathComponent(file.fileName)
            if (try? FileManager.default.destinationOfSymbolicLink(atPath: link)) != blob(file) {
                try? FileManager.default.removeItem(atPath: link)
                try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: blob(file))
            }
            touch(blob(file))
        }
    }

    /// Removes the link folders of models no longer placed here.
    func unlink(keeping names: Set<String>) {
        let folder = (root as NSString).appendingPathComponent("models")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] where !names.contains(name) {
            try? FileManager.default.removeItem(atPath: (folder as NSString).appendingPathComponent(name))
        }
    }

    func touch(_ path: String) {
        try? FileManager.default.setAttributes([.modificationDate: Date()], ofItemAtPath: path)
    }

    /// sha256 of every verified file here.
    func digests() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: blobs)) ?? []).filter { $0.hasPrefix("sha256-") }
            .map { String($0.dropFirst(7)) }.sorted()
    }

    /// Every file held (blobs and partial downloads): its key, path, size and last use.
    private func entries() -> [(key: String, path: String, bytes: Int, used: Date)] {
        [blobs, partials].flatMap { folder in
            ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).map { name in
                let path = (folder as NSString).appendingPathComponent(name)
                let attributes = try? FileManager.default.attributesOfItem(atPath: path)
                return (name.hasSuffix(".part") ? String(name.dropLast(5)) : name, path, attributes?[.size] as? Int ?? 0,
                        attributes?[.modificationDate] as? Date ?? .distantPast)
            }
        }
    }

    /// Space for more downloads, in MiB: what the budget leaves beside the files placements
    /// need (files nobody needs can be deleted to make room), within the disk's free space
    /// plus those files.
    func freeMiB(needed: Set<String>) -> Int? {
        var stats = statvfs()
        let all = entries()
        let reclaimable = all.filter { !needed.contains($0.key) }.map(\.bytes).reduce(0, +)
        let disk = statvfs(root, &stats) == 0 ? Int(stats.f_bavail) * Int(stats.f_frsize) + reclaimable : nil
        let left = budgetBytes.map { max(0, $0 - all.filter { needed.contains($0.key) }.map(\.bytes).reduce(0, +)) }
        return [disk, left].compactMap { $0 }.min().map { $0 >> 20 }
    }

    /// Makes room for `incoming` more bytes: deletes files no placement needs (`needed`: keys),
    /// partial downloads first, then the least recently used, until the cache fits its budget
    /// (and the disk). Returns what went.
    @discardableResult
    func evict(needed: Set<String>, incoming: Int = 0) -> [String] {
        var stats = statvfs()
        let diskFree = statvfs(root, &stats) == 0 ? Int(stats.f_bavail) * Int(stats.f_frsize) : Int.max
        let all = entries()
        var used = all.map(\.bytes).reduce(0, +)
        var freed = 0
        var removed: [String] = []
        let unneeded = all.filter { !needed.contains($0.key) }
            .sorted { ($0.path.hasSuffix(".part") ? 0 : 1, $0.used) < ($1.path.hasSuffix(".part") ? 0 : 1, $1.used) }
        for entry in unneeded {
            let overBudget = budgetBytes.map { used + incoming > $0 } ?? false
            let overDisk = incoming > diskFree + freed
            guard overBudget || overDisk || entry.path.hasSuffix(".part") else { break }
            try? FileManager.default.removeItem(atPath: entry.path)
            used -= entry.bytes
            freed += entry.bytes
            removed.append((entry.path as NSString).lastPathComponent)
        }
        return removed
    }

    static func size(_ path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
    }
}
