import Foundation
import Config

/// The prompt caches llama-server saves before a planned stop (`--slot-save-path`,
/// `POST /slots/{id}?action=save`) and restores on the model's next start, so a conversation
/// resumed after a ttl unload, an eviction or an admin's unload skips its prefill.
///
/// One folder per model and *validity key* (`<kv_cache_dir>/<model>/<key>/`): the key is a
/// fingerprint of everything a cache depends on (the model file's size, mtime and first 64 KiB,
/// the llama-server binary's size and mtime, the command line with `ctx`, `parallel`, cache
/// types and every other argument). A start prepares its key's folder and deletes the model's
/// other ones: a cache of another model file, build or context is never restored. Files are
/// private to the worker's user (0700 folders): they are the model's activations and can
/// reveal prompts. A byte budget bounds the whole store, least recently written first out.
struct PromptCacheStore: Sendable {
    let root: String
    let budgetBytes: Int

    init(config: WorkerConfig) {
        root = config.kvCacheDir ?? ((config.stateDir ?? EngineRecord.defaultDirectory()) as NSString).appendingPathComponent("kv-cache")
        budgetBytes = config.kvCacheMaxMiB * 1_048_576
    }

    var enabled: Bool { budgetBytes > 0 }

    /// The folder `spec`'s llama-server saves into and restores from.
    func folder(for spec: ModelSpec, llamaServer: String) -> String {
        let command = spec.commandLine(executable: llamaServer)
        let key = EngineRecord.fingerprint([
            "\(command.arguments)", "\(command.environment.sorted { $0.key < $1.key })",
            Self.identity(of: command.path, headerBytes: 65_536), Self.identity(of: command.executable, headerBytes: 0),
        ].joined(separator: "\n"))
        return ((root as NSString).appendingPathComponent(Self.safeName(spec.name)) as NSString).appendingPathComponent(key)
    }

    /// Creates `folder` (0700, parents too) and deletes its model's folders of other keys.
    func prepare(_ folder: String) throws {
        let files = FileManager.default
        try files.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try files.setAttributes([.posixPermissions: 0o700], ofItemAtPath: root)
        let model = (folder as NSString).deletingLastPathComponent
        try files.setAttributes([.posixPermissions: 0o700], ofItemAtPath: model)
        for other in (try? files.contentsOfDirectory(atPath: model)) ?? [] where other != (folder as NSString).lastPathComponent {
            try? files.removeItem(atPath: (model as NSString).appendingPathComponent(other))
        }
    }

    /// A saved cache: its file name in its folder, size and when it was written.
    struct Saved: Equatable {
        var name: String
        var bytes: Int
        var written: Date
    }

    /// The caches saved in `folder`, newest first.
    func saved(in folder: String) -> [Saved] {
        let files = FileManager.default
        return ((try? files.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".bin") }.compactMap { name in
            guard let attributes = try? files.attributesOfItem(atPath: (folder as NSString).appendingPathComponent(name)) else { return nil }
            return Saved(name: name, bytes: (attributes[.size] as? Int) ?? 0, written: (attributes[.modificationDate] as? Date) ?? .distantPast)
        }.sorted { ($0.written, $0.name) > ($1.written, $1.name) }
    }

    /// The tokens a saved cache holds, read from its header (llama.cpp's `ggsq` sequence
    /// state: magic, version, a count, then the tokens; llama-server's own layout wraps them
    /// as `-1, 1, n, tokens…, 0`). Nil for a file it cannot read as one.
    static func tokens(ofFile path: String) -> [Int32]? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard let head = try? handle.read(upToCount: 12), head.count == 12 else { return nil }
        let words = head.withUnsafeBytes { raw in (0..<3).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self).littleEndian } }
        guard words[0] == 0x6767_7371, words[2] <= 4_194_304,
            let body = try? handle.read(upToCount: Int(words[2]) * 4), body.count == Int(words[2]) * 4
        else { return nil }
        let block = body.withUnsafeBytes { raw in (0..<Int(words[2])).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self).littleEndian } }
        if block.count >= 4, block[0] == -1, Int(block[2]) == block.count - 4 { return Array(block[3..<(3 + Int(block[2]))]) }
        return block
    }

    /// Deletes the older caches of `folder` that `newest` (just saved) makes redundant: those
    /// of the same conversation, whose tokens it repeats but for their last eighth (the reply a
    /// client sends back differs from the generated tokens at its edges). Caches of other
    /// conversations that share only a system prompt stay. Returns the files deleted.
    @discardableResult
    func supersede(by newest: String, in folder: String) -> Int {
        guard let tokens = Self.tokens(ofFile: (folder as NSString).appendingPathComponent(newest)) else { return 0 }
        var removed = 0
        for older in saved(in: folder) where older.name != newest {
            guard let other = Self.tokens(ofFile: (folder as NSString).appendingPathComponent(older.name)), !other.isEmpty else { continue }
            let shared = zip(tokens, other).prefix { $0 == $1 }.count
            if shared >= other.count - other.count / 8 {
                remove(older.name, in: folder)
                removed += 1
            }
        }
        return removed
    }

    /// Marks `folder`'s engine build as one whose restores claim success but leave the prompt
    /// to be computed again (llama.cpp has had such builds): its caches are no longer saved
    /// or restored. The folder's key includes the build, so a new build is tried afresh.
    func distrustRestores(in folder: String) {
        FileManager.default.createFile(atPath: (folder as NSString).appendingPathComponent(Self.distrustMarker), contents: Data())
    }

    /// Whether ``distrustRestores(in:)`` marked `folder`.
    func restoresDistrusted(in folder: String) -> Bool {
        FileManager.default.fileExists(atPath: (folder as NSString).appendingPathComponent(Self.distrustMarker))
    }

    private static let distrustMarker = "restores-unverified"

    /// A new file name for a slot's cache (newest sorts last by name too).
    static func fileName(slot: Int, at date: Date = Date()) -> String {
        String(format: "%016.0f-slot%d.bin", date.timeIntervalSince1970 * 1000, slot)
    }

    func remove(_ name: String, in folder: String) {
        try? FileManager.default.removeItem(atPath: (folder as NSString).appendingPathComponent(name))
    }

    /// Deletes the oldest caches, across every model, until the store fits its budget.
    /// Returns the files deleted.
    @discardableResult
    func prune() -> Int {
        let files = FileManager.default
        guard let enumerator = files.enumerator(atPath: root) else { return 0 }
        var all: [(path: String, saved: Saved)] = []
        while let relative = enumerator.nextObject() as? String {
            guard relative.hasSuffix(".bin") else { continue }
            let path = (root as NSString).appendingPathComponent(relative)
            guard let attributes = try? files.attributesOfItem(atPath: path) else { continue }
            all.append((path, Saved(name: relative, bytes: (attributes[.size] as? Int) ?? 0,
                                    written: (attributes[.modificationDate] as? Date) ?? .distantPast)))
        }
        var total = all.map(\.saved.bytes).reduce(0, +)
        var removed = 0
        for file in all.sorted(by: { $0.saved.written < $1.saved.written }) where total > budgetBytes {
            try? files.removeItem(atPath: file.path)
            total -= file.saved.bytes
            removed += 1
        }
        return removed
    }

    /// Deletes every saved cache of `model` (nil: of every model): the admin's wipe.
    func wipe(model: String? = nil) {
        let target = model.map { (root as NSString).appendingPathComponent(Self.safeName($0)) } ?? root
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: target)) ?? [] {
            try? FileManager.default.removeItem(atPath: (target as NSString).appendingPathComponent(entry))
        }
    }

    /// Size, mtime and (for `headerBytes` > 0) a fingerprint of the first bytes of a file.
    private static func identity(of path: String, headerBytes: Int) -> String {
        let resolved = resolveExecutable(path) ?? path
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: resolved) else { return "missing \(path)" }
        var text = "\(resolved) \(attributes[.size] ?? 0) \((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)"
        if headerBytes > 0, let handle = FileHandle(forReadingAtPath: resolved) {
            defer { try? handle.close() }
            let header = (try? handle.read(upToCount: headerBytes)) ?? Data()
            text += " " + EngineRecord.fingerprint(header.map { String(format: "%02x", $0) }.joined())
        }
        return text
    }

    /// A model name as one path component.
    private static func safeName(_ name: String) -> String {
        "model-" + String(name.map { $0.isLetter || $0.isNumber || "-_.".contains($0) ? $0 : "_" })
    }
}
