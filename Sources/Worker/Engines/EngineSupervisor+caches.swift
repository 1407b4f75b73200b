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

    /// Saves each slot of `engine` that holds a prompt.
    func saveCaches(_ name: String, _ engine: Engine) async {
        guard let folder = engine.cacheFolder, !engine.process.hasExited else { return }
        let started = ContinuousClock.now
        let deadline = started + Self.saveDeadline
        guard let slots = await launcher.slotPrompts(engine) else {
            logger.warning("prompt caches not saved: the engine did not list its slots", metadata: ["model": "\(name)"])
            metrics?.promptCache(name, "save_failed")
            return
        }
        var saved = 0
        for (slot, tokens) in slots.sorted(by: { $0.key < $1.key }) where tokens > 0 {
            let left = deadline - .now
            guard left > .zero else {
                logger.warning("prompt caches: save deadline passed; the rest are not saved", metadata: ["model": "\(name)"])
                metrics?.promptCache(name, "save_failed")
                break
            }
            let file = PromptCacheStore.fileName(slot: slot)
            if let count = await launcher.slotCache(engine, slot: slot, restore: false, filename: file, timeout: left), count > 0 {
                saved += count
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
            logger.info("prompt caches saved", metadata: [
                "model": "\(name)", "tokens": "\(saved)", "bytes": "\(bytes)", "ms": .string(String(format: "%.1f", (ContinuousClock.now - started).milliseconds)),
                "pruned_files": "\(pruned)",
            ])
        }
    }

    /// An admin's wipe: deletes every prompt cache saved for `name` (the slots of a running
    /// engine are not touched; its next planned stop saves them again).
    func wipeCaches(_ name: String) {
        caches.wipe(model: name)
        models[name]?.cacheFolder.map { try? FileManager.default.createDirectory(atPath: $0, withIntermediateDirectories: true,
                                                                                  attributes: [.posixPermissions: 0o700]) }
        logger.notice("prompt caches wiped by an admin", metadata: ["model": "\(name)"])
        changed()
    }

    /// Restores the newest saved caches of `engine`'s model into its slots (at most one per
    /// slot), before it takes requests. A file the engine refuses (truncated, corrupt, from
    /// another build) is deleted; a restored one too (the slot holds it now, and the next
    /// planned stop saves it again).
    func restoreCaches(_ name: String, _ engine: Engine, slots: Int) async {
        guard let folder = engine.cacheFolder else { return }
        let started = ContinuousClock.now
        var restored = 0
        for (slot, file) in caches.saved(in: folder).prefix(max(1, slots)).enumerated() {
            let count = await launcher.slotCache(engine, slot: slot, restore: true, filename: file.name, timeout: .seconds(10))
            caches.remove(file.name, in: folder)
            if let count, count > 0 {
                restored += count
                metrics?.promptCache(name, "restored", tokens: count)
            } else {
                logger.warning("a saved prompt cache was refused by the engine and deleted", metadata: ["model": "\(name)", "file": "\(file.name)"])
                metrics?.promptCache(name, "restore_failed")
            }
        }
        if restored > 0 {
            logger.info("prompt caches restored", metadata: [
                "model": "\(name)", "tokens": "\(restored)", "ms": .string(String(format: "%.1f", (ContinuousClock.now - started).milliseconds)),
            ])
        }
    }
}
