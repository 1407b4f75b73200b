import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import Config
import Wire

/// The hub-managed models placed on this worker: the set the hub sent (kept in the cache
/// folder across restarts), their downloads (one per file however many models or requests
/// want it, retried with backoff), and, once a model's files are all verified, its entry
/// among the worker's models (the supervisor's reload takes it from ``readyModels``).
/// Loading stays lazy: a placed model starts on its first request like any other.
actor Placements: Service {
    let cache: ModelCache
    private let token: String?
    private let logger: Logger
    /// A report is due (progress, a model ready or failed).
    private let changed: @Sendable () -> Void
    /// The worker's models changed: the supervisor reloads.
    private let reload: @Sendable () async -> Void
    private var placed: PlacementSet?
    private var active: Set<String> = []
    private var failures: [String: (error: String, attempts: Int)] = [:]
    private let (jobs, jobSink) = AsyncStream<(file: PlacedFile, after: Duration?)>.makeStream()
    /// Read without the actor: by the config loader (synchronous) and by every download's chunks.
    private let shared = Mutex(Shared())

    /// The placed models whose files are all here, as model entries: what the supervisor adds
    /// to the configuration's models (read synchronously, at every reload).
    let ready: ReadyModels

    final class ReadyModels: Sendable {
        private let models = Mutex<[ModelConfig]>([])
        init() {}
        var value: [ModelConfig] { models.withLock { $0 } }
        /// Replaces the list; returns whether it changed.
        func replace(_ next: [ModelConfig]) -> Bool {
            models.withLock { models in
                defer { models = next }
                return models != next
            }
        }
    }

    private struct Shared {
        var needed: Set<String> = []
        var progress: [String: Progress] = [:]
    }

    struct Progress {
        var bytes = 0
        var rate = 0.0
        var sampleBytes = 0
        var sampleAt = ContinuousClock.now
    }

    init(cache: ModelCache, ready: ReadyModels, token: String?, logger: Logger,
         changed: @escaping @Sendable () -> Void, reload: @escaping @Sendable () async -> Void) {
        self.cache = cache
        self.ready = ready
        self.token = token
        self.logger = logger
        self.changed = changed
        self.reload = reload
    }

    var digest: String? { placed?.digest }

    /// Space for more downloads, in MiB (``ModelCache/freeMiB(needed:)``), for the reports.
    nonisolated var diskFreeMiB: Int? { cache.freeMiB(needed: shared.withLock { $0.needed }) }

    func run() async throws {
        if let data = FileManager.default.contents(atPath: cache.placementsFile),
           let saved = try? WireCoding.decoder().decode(PlacementSet.self, from: data) {
            await apply(saved, persist: false)
        }
        await withDiscardingTaskGroup { group in
            for await job in jobs.cancelOnGracefulShutdown() {
                group.addTask {
                    if let after = job.after { try? await Task.sleep(for: after) }
                    await self.fetch(job.file)
                }
            }
            group.cancelAll()
        }
    }

    /// Takes the hub's set: keeps it for the next start, starts what must be fetched, links
    /// what is here, and lets the cache drop what nobody needs beyond its budget.
    func apply(_ next: PlacementSet, persist: Bool = true) async {
        let models = next.models.filter { !$0.name.isEmpty }
        placed = models.isEmpty ? nil : PlacementSet(digest: next.digest, models: models)
        if persist {
            try? cache.prepare()
            if let data = try? WireCoding.encoder().encode(placed ?? PlacementSet(digest: "", models: [])) {
                try? data.write(to: URL(fileURLWithPath: cache.placementsFile), options: .atomic)
            }
        }
        let files = models.flatMap(\.allFiles)
        let needed = Set(files.map(ModelCache.key))
        shared.withLock { $0.needed = needed }
        let missing = Set(files.filter { !$0.isLocal && !cache.has($0) })
        let incoming = missing.map { ($0.size ?? 0) - (ModelCache.size(cache.partial($0)) ?? 0) }.reduce(0, +)
        let removed = cache.evict(needed: needed, incoming: incoming)
        if !removed.isEmpty { logger.notice("model cache: removed files no placement needs", metadata: ["files": "\(removed)"]) }
        for file in Set(files) where !cache.has(file) && !active.contains(ModelCache.key(file)) {
            failures[ModelCache.key(file)] = nil
            active.insert(ModelCache.key(file))
            jobSink.yield((file, nil))
        }
        await settle()
    }

    private func fetch(_ file: PlacedFile) async {
        let key = ModelCache.key(file)
        guard shared.withLock({ $0.needed.contains(key) }) else {
            active.remove(key)
            return
        }
        logger.info("downloading a model file", metadata: ["file": "\(file.fileName)", "bytes": "\(file.size.map(String.init) ?? "?")"])
        let started = ContinuousClock.now
        do {
            try await FileDownload(file: file, cache: cache, token: token).run(
                progress: { [self] bytes in
                    let report = self.shared.withLock { state -> Bool in
                        var progress = state.progress[key] ?? Progress()
                        progress.bytes = bytes
                        let now = ContinuousClock.now
                        let elapsed = (now - progress.sampleAt).inSeconds
                        guard elapsed >= 1 else {
                            state.progress[key] = progress
                            return false
                        }
                        let rate = Double(bytes - progress.sampleBytes) / elapsed
                        progress.rate = progress.rate == 0 ? rate : progress.rate * 0.5 + rate * 0.5
                        (progress.sampleBytes, progress.sampleAt) = (bytes, now)
                        state.progress[key] = progress
                        return true
                    }
                    if report { self.changed() }
                },
                wanted: { [self] in self.shared.withLock { $0.needed.contains(key) } })
            active.remove(key)
            failures[key] = nil
            shared.withLock { $0.progress[key] = nil }
            let seconds = (ContinuousClock.now - started).inSeconds
            logger.notice("model file downloaded and verified", metadata: [
                "file": "\(file.fileName)", "seconds": "\(String(format: "%.2f", seconds))",
                "mib_per_s": "\(file.size.map { String(format: "%.0f", Double($0) / 1_048_576 / max(seconds, 1e-6)) } ?? "?")"])
        } catch is CancellationError {
            active.remove(key)
            shared.withLock { $0.progress[key] = nil }
        } catch {
            let failure = error as? FileDownload.Failure ?? .init(description: "\(error)", transient: true)
            let attempts = (failures[key]?.attempts ?? 0) + 1
            failures[key] = (failure.description, attempts)
            let delay: Duration = failure.transient ? .seconds(1) : .seconds(min(300, 5 << min(6, attempts - 1)))
            logger.warning("model file download failed; trying again", metadata: [
                "file": "\(file.fileName)", "reason": "\(failure.description)", "retry_in": "\(delay)"])
            jobSink.yield((file, delay))
        }
        await settle()
    }

    /// Links every placed model whose files are all here and hands the set to the supervisor
    /// when it changed.
    private func settle() async {
        var ready: [ModelConfig] = []
        for model in placed?.models ?? [] where model.allFiles.allSatisfy(cache.has) {
            do {
                try cache.link(model)
                ready.append(config(for: model))
            } catch {
                logger.error("cannot link a downloaded model", metadata: ["model": "\(model.name)", "reason": "\(error)"])
            }
        }
        cache.unlink(keeping: Set(placed?.models.map(\.name) ?? []))
        if self.ready.replace(ready) { await reload() }
        changed()
    }

    /// The model entry of a placed model: its first file, its projector, and `-c ctx x parallel`
    /// (the hub's ctx is per slot).
    func config(for model: PlacedModel) -> ModelConfig {
        var config = ModelConfig(name: model.name, path: cache.path(of: model.files[0], model: model.name),
                                 args: model.args, aliases: model.aliases, parallel: model.parallel,
                                 ctx: model.ctx.map { $0 * (model.parallel ?? 1) }, vramMiB: model.vramMiB)
        if let projector = model.projector { config.args += ["--mmproj", cache.path(of: projector, model: model.name)] }
        return config
    }

    /// Reports of placed models whose files are not all here yet (state `downloading`).
    func pendingReports() -> [ModelReport] {
        let progress = shared.withLock { $0.progress }
        return (placed?.models ?? []).filter { !$0.allFiles.allSatisfy(cache.has) }.map { model in
            var bytes = 0
            var rate = 0.0
            var total: Int? = 0
            var error: String?
            for file in model.allFiles {
                let key = ModelCache.key(file)
                if cache.has(file) {
                    bytes += file.size ?? 0
                } else {
                    bytes += progress[key]?.bytes ?? 0
                    rate += progress[key]?.rate ?? 0
                    error = error ?? failures[key]?.error
                }
                total = file.size.flatMap { size in total.map { $0 + size } }
            }
            var report = ModelReport(name: model.name, aliases: model.aliases, state: .downloading, vramEstimateMiB: model.vramMiB)
            report.download = DownloadProgress(bytes: bytes, total: total, bytesPerSecond: rate, error: error)
            report.reason = error
            return report
        }
    }
}
