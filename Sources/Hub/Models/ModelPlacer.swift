import Crypto
import HTTPTypes
import NIOHTTP1
import Routing
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Proxy
import Store
import Wire

/// Turns the desired state in the store into models on workers, twice a second: reads the
/// hub-managed models when the store's model generation moves, places each (``Placement``,
/// written back by compare-and-set, so of several hubs sharing the store one decision wins
/// and the others adopt it), and sends every live worker whose reported placement digest
/// differs from the set it should hold that set (`PUT` ``ControlPath/placements``).
actor ModelPlacer: Service {
    private let book: ModelBook
    private let state: HubState
    private let upstream: UpstreamClient
    private let keys: WorkerKeys
    private let grace: TimeInterval
    private let logger: Logger
    private var models: [(model: ManagedModel, revision: Int64)] = []
    private var generation: Int64?
    /// The digest last sent to each worker and when, so a worker slow to report it is not
    /// sent the same set on every pass.
    private var sent: [String: (digest: String?, at: ContinuousClock.Instant)] = [:]
    /// Names of models removed in the last minute: forgotten by routing once no worker reports them.
    private var removed: [String: ContinuousClock.Instant] = [:]
    static let interval: Duration = .milliseconds(500)

    init(book: ModelBook, state: HubState, upstream: UpstreamClient, keys: WorkerKeys, grace: Duration, logger: Logger) {
        self.book = book
        self.state = state
        self.upstream = upstream
        self.keys = keys
        self.grace = grace.inSeconds
        self.logger = logger
    }

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await pass()
            } catch {
                logger.warning("hub-managed models: the store could not be read", metadata: ["reason": "\(error)"])
            }
            try? await Task.sleep(for: Self.interval)
        }
    }

    /// The models as last read, for the admin API.
    var current: [ManagedModel] { models.map(\.model) }

    /// Reads, places and sends once (also right after an admin's change).
    func pass(reload: Bool = false) async throws {
        let now = try await book.store.modelsGeneration()
        if reload || now != generation {
            let before = Set(models.flatMap { [$0.model.name] + $0.model.aliases })
            models = try await book.list()
            generation = now
            for name in before.subtracting(models.flatMap { [$0.model.name] + $0.model.aliases }) { removed[name] = .now }
        }
        if !removed.isEmpty {
            removed = removed.filter { ContinuousClock.now - $0.value < .seconds(60) }
            state.forget(models: Set(removed.keys))
        }
        await place()
        await send()
    }

    /// The candidates as placement sees them; `committed` counts managed models already placed.
    func candidates(excluding name: String? = nil) -> [Placement.Candidate] {
        let workers = state.liveWorkers()
        return workers.map { worker in
            let committed = models.filter { $0.model.name != name && $0.model.placement.contains { $0.worker == worker.name } }
                .compactMap(\.model.estimate?.totalMiB).reduce(0, +)
            return Placement.Candidate(name: worker.name, budgetMiB: worker.report.budget.totalMiB, committedMiB: committed,
                                       diskFreeMiB: worker.report.diskFreeMiB, hasFiles: false, draining: worker.isDraining)
        }
    }

    /// ``Placement/decide`` for `model` against the live workers now.
    func decide(_ model: ManagedModel) -> Placement.Decision {
        let cached = Dictionary(state.liveWorkers().map { ($0.name, Set($0.report.cachedFiles ?? [])) }, uniquingKeysWith: { a, _ in a })
        let live = candidates(excluding: model.name).map { candidate in
            var candidate = candidate
            candidate.hasFiles = model.files.first?.sha256.map { cached[candidate.name]?.contains($0) ?? false } ?? false
            return candidate
        }
        return Placement.decide(model, live: live, now: Date(), grace: grace)
    }

    private func place() async {
        for index in models.indices {
            var (model, revision) = models[index]
            let decision = decide(model)
            guard decision.placement != model.placement || decision.problem != model.problem else { continue }
            let before = Set(model.placement.map(\.worker))
            model.placement = decision.placement
            model.problem = decision.problem
            model.updatedAt = Date()
            do {
                if try await book.replace(model, revision: revision) {
                    models[index] = (model, revision + 1)
                    let after = Set(model.placement.map(\.worker))
                    for worker in after.subtracting(before) {
                        state.events.publish(.init(type: "model_placed", worker: worker, model: model.name,
                                                   reason: model.placement.first { $0.worker == worker }?.reason))
                    }
                    for worker in before.subtracting(after) {
                        state.events.publish(.init(type: "model_unplaced", worker: worker, model: model.name, reason: "its worker is gone"))
                    }
                    if let problem = decision.problem { logger.warning("a hub-managed model is not fully placed", metadata: ["model": "\(model.name)", "reason": "\(problem)"]) }
                } else {
                    generation = nil  // another hub wrote first: read its decision next pass
                }
            } catch {
                logger.warning("could not store a placement", metadata: ["model": "\(model.name)", "reason": "\(error)"])
            }
        }
    }

    /// The set `worker` should hold (nil: none).
    func placementSet(for worker: String) -> PlacementSet? {
        let placed = models.map(\.model).filter { $0.placement.contains { $0.worker == worker } }.map(\.placed)
            .sorted { $0.name < $1.name }
        guard !placed.isEmpty else { return nil }
        let encoder = WireCoding.encoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(placed)) ?? Data()
        let digest = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        return PlacementSet(digest: String(digest.prefix(32)), models: placed)
    }

    private func send() async {
        let now = ContinuousClock.now
        for worker in state.liveWorkers() {
            let set = placementSet(for: worker.name)
            guard set?.digest != worker.report.placementDigest else { continue }
            if let last = sent[worker.name], last.digest == set?.digest, now - last.at < .seconds(5) { continue }
            sent[worker.name] = (set?.digest, now)
            do {
                let body = try WireCoding.encoder().encode(set ?? PlacementSet(digest: "", models: []))
                let call = UpstreamRequest(
                    url: worker.report.url + ControlPath.placements, method: .PUT,
                    headers: [("Authorization", try await keys.header(for: worker.name)), ("Content-Type", "application/json")],
                    body: ByteBuffer(bytes: body))
                let answer = try await upstream.call(call, options: .init(headTimeout: .seconds(10), idleTimeout: .seconds(10),
                                                                          maxBufferedBody: 1 << 20), logger: logger)
                for try await _ in answer.body {}
                if answer.status.code != 200 {
                    logger.warning("a worker refused its hub-managed models", metadata: ["worker": "\(worker.name)", "status": "\(answer.status.code)"])
                }
            } catch {
                logger.warning("could not send a worker its hub-managed models", metadata: ["worker": "\(worker.name)", "reason": "\(error)"])
            }
        }
    }
}
