import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Shared
import Synchronization

/// A running llama-server serving one model.
struct Engine: Sendable {
    let model: String
    let port: Int
    let apiKey: String
    let process: ChildProcess
    var baseURL: String { "http://127.0.0.1:\(port)" }
}

/// Why a model could not be started.
struct EngineError: Error, CustomStringConvertible {
    let description: String
}

/// Owns every llama-server of this worker: starts one per model on first use, waits for
/// `/health`, and stops them all (SIGTERM, then SIGKILL) when the worker shuts down.
///
/// One actor owns all model states, so two requests for a model that is starting join the
/// same start and never launch a second copy. An engine that exits on its own is noticed
/// on the next use or report and started again on demand.
actor EngineSupervisor: Service {
    private enum Phase {
        case stopped
        case starting(Task<Engine, any Error>)
        case ready(Engine)
        case failed(String)
    }

    private let config: WorkerConfig
    private let client: HTTPClient
    private let logger: Logger
    private var phases: [String: Phase] = [:]
    private var ports: PortAllocator
    private let vramEstimates: [String: Int]

    init(config: WorkerConfig, client: HTTPClient, logger: Logger) {
        self.config = config
        self.client = client
        self.logger = logger
        self.ports = PortAllocator(range: config.ports.ports)
        // The GGUF file size is the floor of what a model needs in VRAM (weights only).
        self.vramEstimates = Dictionary(uniqueKeysWithValues: config.models.compactMap { model in
            let size = (try? FileManager.default.attributesOfItem(atPath: model.path)[.size] as? Int) ?? nil
            return size.map { (model.name, max(1, $0 / (1024 * 1024))) }
        })
    }

    /// Starts preloaded models, then waits for shutdown and stops every engine.
    func run() async throws {
        if config.preload {
            for model in config.models {
                do { _ = try await engine(for: model.name) } catch {
                    logger.error("preload failed", metadata: ["model": "\(model.name)", "reason": "\(error)"])
                }
            }
        }
        try? await gracefulShutdown()
        await stopAll()
    }

    /// The canonical model for a requested name or alias, nil when this worker lacks it.
    nonisolated func canonicalName(_ requested: String) -> String? {
        config.models.first { $0.name == requested || $0.aliases.contains(requested) }?.name
    }

    /// A ready engine for `model`, starting it (or joining a start in progress) when needed.
    func engine(for model: String) async throws -> Engine {
        switch phases[model] ?? .stopped {
        case .ready(let engine) where !engine.process.hasExited:
            return engine
        case .starting(let task):
            return try await task.value
        case .ready, .stopped, .failed:
            let task = Task { try await self.start(model) }
            phases[model] = .starting(task)
            return try await task.value
        }
    }

    private func start(_ name: String) async throws -> Engine {
        guard let model = config.models.first(where: { $0.name == name }) else {
            throw EngineError(description: "unknown model \(name)")
        }
        let taken = Set(phases.values.compactMap { phase -> Int? in
            if case .ready(let engine) = phase, !engine.process.hasExited { return engine.port }
            return nil
        })
        guard let port = ports.allocate(excluding: taken) else {
            throw fail(name, "no free port in \(config.ports.lower)-\(config.ports.upper)")
        }
        let apiKey = randomKey()
        let arguments = ["-m", model.path, "--host", "127.0.0.1", "--port", String(port), "--alias", name, "--metrics"]
            + model.args
        var environment = model.env
        environment["LLAMA_API_KEY"] = apiKey  // kept out of argv, which other users can read
        logger.info("starting llama-server", metadata: ["model": "\(name)", "port": "\(port)"])
        let tail = OutputTail()
        let process: ChildProcess
        do {
            process = try await ChildProcess.launch(
                executable: config.llamaServer, arguments: arguments, environment: environment
            ) { [logger] line in
                logger.debug("\(line)", metadata: ["model": "\(name)"])
                tail.append(line)
            }
        } catch {
            throw fail(name, "\(error)")
        }
        let engine = Engine(model: name, port: port, apiKey: apiKey, process: process)
        let deadline = ContinuousClock.now + config.loadTimeout
        while true {
            if let status = process.exitStatus {
                throw fail(name, "llama-server exited during load (\(ChildProcess.describe(status: status))): \(tail.last(5))")
            }
            if await healthStatus(engine) == 200 {
                // Prove the answer came from our process: only it knows this API key. Another
                // process that grabbed the port first would answer 401 here.
                guard await ownsPort(engine) else {
                    await process.terminate(grace: .seconds(2))
                    throw fail(name, "port \(port) answered /health but not with this engine's API key (taken by another process)")
                }
                break
            }
            if ContinuousClock.now > deadline {
                await process.terminate(grace: .seconds(5))
                throw fail(name, "not ready within \(config.loadTimeout)")
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        phases[name] = .ready(engine)
        logger.info("model ready", metadata: ["model": "\(name)", "port": "\(port)", "pid": "\(process.pid)"])
        return engine
    }

    /// Records a failed start and returns the error to throw.
    private func fail(_ name: String, _ reason: String) -> EngineError {
        phases[name] = .failed(reason)
        logger.error("model failed to start", metadata: ["model": "\(name)", "reason": "\(reason)"])
        return EngineError(description: reason)
    }

    /// `GET /health`: 200 ready, 503 loading, nil when nothing answers.
    private func healthStatus(_ engine: Engine) async -> Int? {
        var request = HTTPClientRequest(url: engine.baseURL + "/health")
        request.method = .GET
        guard let response = try? await client.execute(request, timeout: .seconds(2)) else { return nil }
        _ = try? await response.body.collect(upTo: 64 * 1024)
        return Int(response.status.code)
    }

    /// Whether the process answering on the engine's port knows the engine's API key.
    private func ownsPort(_ engine: Engine) async -> Bool {
        var request = HTTPClientRequest(url: engine.baseURL + "/slots")
        request.headers.add(name: "Authorization", value: "Bearer \(engine.apiKey)")
        guard let response = try? await client.execute(request, timeout: .seconds(2)) else { return false }
        _ = try? await response.body.collect(upTo: 4 * 1024 * 1024)
        return response.status == .ok && !engine.process.hasExited
    }

    /// Slots of a ready engine from llama-server's `/slots` (total, busy).
    private func slots(_ engine: Engine) async -> (total: Int, busy: Int) {
        var request = HTTPClientRequest(url: engine.baseURL + "/slots")
        request.headers.add(name: "Authorization", value: "Bearer \(engine.apiKey)")
        guard let response = try? await client.execute(request, timeout: .seconds(2)), response.status == .ok,
            let body = try? await response.body.collect(upTo: 4 * 1024 * 1024),
            let slots = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [[String: Any]]
        else { return (0, 0) }
        return (slots.count, slots.filter { ($0["is_processing"] as? Bool) == true }.count)
    }

    /// What the heartbeat reports for every configured model.
    func report() async -> [ModelReport] {
        var reports: [ModelReport] = []
        for model in config.models {
            var entry = ModelReport(name: model.name, aliases: model.aliases, state: .notLoaded)
            entry.vramEstimateMiB = vramEstimates[model.name]
            switch phases[model.name] ?? .stopped {
            case .stopped: break
            case .starting: entry.state = .loading
            case .failed(let reason):
                entry.state = .failed
                entry.reason = reason
            case .ready(let engine):
                if let status = engine.process.exitStatus {
                    logger.warning("llama-server exited", metadata: ["model": "\(model.name)",
                                                                      "status": "\(ChildProcess.describe(status: status))"])
                    phases[model.name] = .stopped
                } else {
                    let slots = await slots(engine)
                    entry.state = .ready
                    entry.slotsTotal = slots.total
                    entry.slotsBusy = slots.busy
                }
            }
            reports.append(entry)
        }
        return reports
    }

    /// Stops every engine: SIGTERM to its process group, SIGKILL after a grace period.
    func stopAll() async {
        for (name, phase) in phases {
            let engine: Engine?
            switch phase {
            case .ready(let ready): engine = ready
            case .starting(let task): engine = try? await task.value
            default: engine = nil
            }
            guard let engine, !engine.process.hasExited else { continue }
            logger.info("stopping llama-server", metadata: ["model": "\(name)", "pid": "\(engine.process.pid)"])
            await engine.process.terminate(grace: .seconds(5))
            phases[name] = .stopped
        }
    }

    private func randomKey() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }
}
