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

    /// The worker's cache folder: `model_cache_dir`, else `.caravan-models` in the first
    /// `models_dir` (discovery skips dot folders), else `models` in the state folder.
    init(worker: WorkerConfig) {
        let root = worker.modelCacheDir
            ?? worker.modelsDirs.first.map { ($0 as NSString).appendingPathComponent(".caravan-models") }
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

    /// Bytes held: blobs and partial downloads.
    func usedBytes() -> Int {
        [blobs, partials].flatMap { folder in
            ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).map { (folder as NSString).appendingPathComponent($0) }
        }.compactMap { Self.size($0) }.reduce(0, +)
    }

    /// Space for more downloads, in MiB: the disk's free space, within the budget's remainder.
    func freeMiB() -> Int? {
        var stats = statvfs()
        let disk = statvfs(root, &stats) == 0 ? Int(stats.f_bavail) * Int(stats.f_frsize) : nil
        let left = budgetBytes.map { max(0, $0 - usedBytes()) }
        let free = [disk, left].compactMap { $0 }.min()
        return free.map { $0 >> 20 }
    }

    /// Deletes files no placement needs (`needed`: keys), least recently used first, until
    /// the cache is within its budget; partial downloads nobody needs go at once. Returns what went.
    @discardableResult
    func evict(needed: Set<String>) -> [String] {
        var removed: [String] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: partials)) ?? [] {
            let key = name.hasSuffix(".part") ? String(name.dropLast(5)) : name
            if !needed.contains(key) {
                try? FileManager.default.removeItem(atPath: (partials as NSString).appendingPathComponent(name))
                removed.append(name)
            }
        }
        guard let budgetBytes else { return removed }
        var used = usedBytes()
        let unneeded = ((try? FileManager.default.contentsOfDirectory(atPath: blobs)) ?? []).filter { !needed.contains($0) }
            .map { (name: $0, path: (blobs as NSString).appendingPathComponent($0)) }
            .sorted { Self.modified($0.path) < Self.modified($1.path) }
        for blob in unneeded where used > budgetBytes {
            used -= Self.size(blob.path) ?? 0
            try? FileManager.default.removeItem(atPath: blob.path)
            removed.append(blob.name)
        }
        return removed
    }

    static func size(_ path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
    }

    private static func modified(_ path: String) -> Date {
        ((try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date) ?? nil) ?? .distantPast
    }
}
