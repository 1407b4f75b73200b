import Foundation
import Logging
import Config
import Wire

/// Prompt caches across planned stops (``PromptCacheStore``): every slot holding a prompt is
/// saved before a planned stop (ttl, eviction, an admin's unload, the worker's shutdown) and
/// restored into the next engine of that model before it takes requests. A crash saves
/// nothing. Saving has a deadline, so a stop never hangs on it; a failure is logged and
/// counted, and the stop proceeds.
extension EngineSupervisor {
    /// How long saving one engine's slots may take before its stop goes ahead.
    static let saveDeadline = Duration.seconds(10)

    var caches: PromptCacheStore { PromptCacheStore(config: config) }

    /// The `--slot-save-path` folder for a new llama-server of `spec` (created, 0700), nil
    /// when caches are off or the folder cannot be made (then the engine starts without it).
    func cacheFolder(for spec: ModelSpec) -> String? {
        let store = caches
        guard store.enabled, spec.config.cmd == nil, spec.config.upstream == nil else { return nil }
        let folder = store.folder(for: spec, llamaServer: config.llamaServer)
        do {
            try store.prepare(folder)
            models[spec.name]?.cacheFolder = folder
            return folder
        } catch {
            logger.warning("prompt caches off for this start: cannot prepare their folder",
                           metadata: ["model": "\(spec.name)", "folder": "\(folder)", "reason": "\(error)"])
            metrics?.promptCache(spec.name, "folder_failed")
            return nil
        }
    }

    /// Saves each slot of `engine` whose content is not on disk yet (a new task used it since
    /// its last save or restore), one file per conversation: a save makes the older files of
    /// the same conversation redundant (``PromptCacheStore/supersede(by:in:)``). A checkpoint
    /// skips busy slots and gives way to a save under way; a stop waits for it.
    func saveCaches(_ name: String, _ engine: Engine, checkpoint: Bool = false) async {
        guard let folder = engine.cacheFolder, !engine.process.hasExited, !caches.restoresDistrusted(in: folder) else { return }
        while models[name]?.savingCaches == true {
            if checkpoint { return }
            let seen = phases.generation
            if models[name]?.savingCaches != true { break }
            await phases.wait(since: seen)
        }
        guard models[name]?.lifecycle.engine?.process.pid == engine.process.pid else { return }
        models[name]?.savingCaches = true
        defer {
            models[name]?.savingCaches = false
            phases.fire()
        }
        let started = ContinuousClock.now
        let deadline = started + Self.saveDeadline
        guard let slots = await launcher.slotContents(engine) else {
            logger.warning("prompt caches not saved: the engine did not list its slots", metadata: ["model": "\(name)"])
            metrics?.promptCache(name, "save_failed")
            return
        }
        var saved = 0
        var superseded = 0
        for (slot, content) in slots.sorted(by: { $0.key < $1.key }) where content.tokens > 0 && !(checkpoint && content.busy) {
            guard let task = content.task, models[name]?.slotsOnDisk[slot] != task else { continue }
            let left = deadline - .now
            guard left > .zero else {
                logger.warning("prompt caches: save deadline passed; the rest are not saved", metadata: ["model": "\(name)"])
                metrics?.promptCache(name, "save_failed")
                break
            }
            let file = PromptCacheStore.fileName(slot: slot)
            if let count = await launcher.slotCache(engine, slot: slot, restore: false, filename: file, timeout: left), count > 0 {
                saved += count
                models[name]?.slotsOnDisk[slot] = task
                superseded += caches.supersede(by: file, in: folder)
                metrics?.promptCache(name, "saved", tokens: count)
            } else {
                // Disk full, a read-only folder, an engine that stopped answering: the stop proceeds.
                caches.remove(file, in: folder)
                logger.warning("prompt cache of a slot not saved", metadata: ["model": "\(name)", "slot": "\(slot)"])
                metrics?.promptCache(name, "save_failed")
            }
        }
        let pruned = caches.prune()
        if saved > 0 {
            let bytes = caches.saved(in: folder).map(\.bytes).reduce(0, +)
            logger.info(checkpoint ? "prompt caches saved (checkpoint)" : "prompt caches saved", metadata: [
                "model": "\(name)", "tokens": "\(saved)", "bytes": "\(bytes)", "ms": .string(String(format: "%.1f", (ContinuousClock.now - started).milliseconds)),
                "superseded_files": "\(superseded)", "pruned_files": "\(pruned)",
            ])
            if checkpoint { changed() }
        }
    }

    /// `kv_cache_checkpoint`: every period, saves the changed slots of each idle llama-server.
    func checkpointCaches() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: config.kvCacheCheckpoint ?? .seconds(60))
            guard config.kvCacheCheckpoint != nil else { continue }  // off (a reload may turn it on)
            for name in order where !leases.isBusy(name) {
                guard let engine = models[name]?.lifecycle.serving, engine.cacheFolder != nil else { continue }
                await saveCaches(name, engine, checkpoint: true)
            }
        }
    }

    /// An admin's wipe: deletes every prompt cache saved for `name` (the slots of a running
    /// engine are not touched; its next planned stop saves them again).
    func wipeCaches(_ name: String) {
        caches.wipe(model: name)
        models[name]?.slotsOnDisk = [:]
        models[name]?.cacheFolder.map { try? FileManager.default.createDirectory(atPath: $0, withIntermediateDirectories: true,
                                                                                  attributes: [.posixPermissions: 0o700]) }
        logger.notice("prompt caches wiped by an admin", metadata: ["model": "\(name)"])
        changed()
    }

    /// Restores the newest saved conversations of `engine`'s model into its slots (one per
    /// slot), before it takes requests. A file the engine refuses (truncated, corrupt) is
    /// deleted; a restored one stays (a crash before the next save keeps it). The first restore
    /// is judged by the engine's own `cache_n` for the file's tokens: a build that claims a
    /// restore but computes the prompt again is distrusted, and its caches are no longer used.
    func restoreCaches(_ name: String, _ engine: Engine, slots: Int) async {
        guard let folder = engine.cacheFolder, !caches.restoresDistrusted(in: folder) else { return }
        let started = ContinuousClock.now
        var restored = 0
        var conversations = 0
        for (slot, file) in caches.saved(in: folder).prefix(max(1, slots)).enumerated() {
            let path = (folder as NSString).appendingPathComponent(file.name)
            guard let count = await launcher.slotCache(engine, slot: slot, restore: true, filename: file.name, timeout: .seconds(10)), count > 0 else {
                caches.remove(file.name, in: folder)
                logger.warning("a saved prompt cache was refused by the engine and deleted", metadata: ["model": "\(name)", "file": "\(file.name)"])
                metrics?.promptCache(name, "restore_failed")
                continue
            }
            if conversations == 0, let tokens = PromptCacheStore.tokens(ofFile: path), tokens.count >= 8 {
                let reused = await launcher.cachedPrefix(engine, slot: slot, tokens: tokens) ?? 0
                guard reused >= tokens.count / 2 else {
                    caches.distrustRestores(in: folder)
                    logger.error("this llama-server build claimed a prompt cache restore but computed the prompt again; prompt caches are off for it",
                                 metadata: ["model": "\(name)", "restored": "\(count)", "cache_n": "\(reused)", "tokens": "\(tokens.count)"])
                    metrics?.promptCache(name, "restore_unverified")
                    return
                }
            }
            restored += count
            conversations += 1
            metrics?.promptCache(name, "restored", tokens: count)
        }
        models[name]?.restoredConversations = conversations
        // The restored slots are on disk already: a stop saves them again only once they change.
        if conversations > 0, let contents = await launcher.slotContents(engine) {
            for (slot, content) in contents { if let task = content.task { models[name]?.slotsOnDisk[slot] = task } }
        }
        if restored > 0 {
            logger.info("prompt caches restored", metadata: [
                "model": "\(name)", "conversations": "\(conversations)", "tokens": "\(restored)",
                "ms": .string(String(format: "%.1f", (ContinuousClock.now - started).milliseconds)),
            ])
        }
    }
}
