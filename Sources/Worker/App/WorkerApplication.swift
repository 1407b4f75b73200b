import UnixSignals
import AsyncHTTPClient
import ArgumentParser
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Auth
import Config
import Proxy
import Operations
import Server
import Wire

/// The worker: engine supervisor, data-plane server, admin routes and heartbeats.
///
/// ``build()`` assembles everything from the configuration without listening or starting an
/// engine; ``run()`` serves what it built. Tests build the same application and drive its
/// router in-process (HummingbirdTesting's `.router`).
struct WorkerApplication {
    let cluster: ClusterConfig
    let worker: WorkerConfig
    let logger: Logger
    /// Re-reads this worker's entry (SIGHUP, `POST /admin/reload`).
    let loadConfig: @Sendable () throws -> WorkerConfig

    /// What ``build()`` assembles.
    struct Built {
        let app: Application<RouterResponder<WorkerRequestContext>>
        /// Services that start before the server and stop after it (GPU monitor, engine
        /// supervisor, reload, metrics listener).
        let services: [any Service]
        /// Heartbeats: started last, so on shutdown they stop first and deregister.
        let heartbeat: HeartbeatService
        let grace: ShutdownGrace
        let supervisor: EngineSupervisor
        let drain: DrainSwitch
        /// The engines' data-plane client and the control plane's client, closed at the end.
        let engineClient: UpstreamClient
        let client: HTTPClient
    }

    /// Serves the worker until SIGTERM or SIGINT. Shuts down in reverse: heartbeats
    /// deregister (no hub sends more), the server drains within the shutdown grace, then
    /// engines stop.
    func run() async throws {
        let built = try await build()
        let services = built.services + [GracefulServer(built.app, grace: built.grace), built.heartbeat] as [any Service]
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint],
                                                      logger: logger))
        do {
            try await group.run()
        } catch {
            built.engineClient.shutdown()
            try? await built.client.shutdown()
            throw error
        }
        built.engineClient.shutdown()
        try await built.client.shutdown()
    }

    /// Assembles the worker from its configuration (joining the cluster first when it holds
    /// a join token); nothing listens and no engine starts yet.
    func build() async throws -> Built {
        let hub = cluster.hub
        let base = cluster.hub.auth.baseDirectory
        // The control plane's client (hubs, engine health): it trusts hub_ca_file for https hubs.
        let client = ControlClient.make(
            connectTimeout: hub.connectTimeout, readTimeout: max(hub.firstByteTimeout, hub.requestTimeout),
            tls: ServerSettings.clientTLS(caFile: worker.hubCAFile, baseDirectory: base))
        var credential = worker.credential
        switch worker.credentialSource {
        case .own:
            break
        case .derivedFromClusterKey(let clusterKey):
            credential = WorkerKey.derive(clusterKey: clusterKey, worker: worker.name)
            logger.warning("""
                this worker was given the cluster's worker key, which can sign for any worker and as the hub; \
                give it only its own credential (credential_file, from caravan-hub worker-secret --name \(worker.name))
                """)
        case .join(let token):
            let joined = try await JoinClient(hubs: worker.hubs, name: worker.name, client: client, logger: logger).join(with: token)
            credential = joined
            if let file = worker.credentialFile {
                // Kept for the next start: the join token expires, the credential does not.
                let path = ConfigFile.path(file, relativeTo: base)
                if FileManager.default.createFile(atPath: path, contents: Data(joined.value.utf8),
                                                  attributes: [.posixPermissions: 0o600]) {
                    logger.notice("joined the cluster; credential saved", metadata: ["file": "\(path)"])
                } else {
                    logger.warning("joined the cluster; the credential could not be saved, so the next start needs a join token again",
                                   metadata: ["file": "\(path)"])
                }
            }
        }
        // Its own credential: it signs this worker's reports, and verifies the hub's requests,
        // which must name this worker as their audience.
        let verifier = await TokenVerifier(secret: credential!, audience: worker.name, leeway: cluster.hub.auth.leeway)
        // llama-server closes a connection idle for 5 s; reuse stops well before.
        let engineClient = UpstreamClient(connectTimeout: hub.connectTimeout, maxIdle: .seconds(2), logger: logger)
        let trigger = ReportTrigger()
        let gpus = GPUMonitor(declared: worker.gpus, interval: cluster.hub.heartbeatInterval, logger: logger)
        let metrics = WorkerMetrics()
        let ready = Placements.ReadyModels()
        let supervisor = EngineSupervisor(config: worker, launcher: LocalEngineLauncher(probe: LlamaServerClient(client: client)), gpus: gpus, logger: logger, metrics: metrics,
                                          aheadPerSlot: hub.queue.aheadPerSlot, loadConfig: loadConfig, placed: { ready.value },
                                          onChange: { trigger.fire() })
        // Hub-placed models: downloaded into the cache, then added to the supervisor's models.
        let placements = Placements(
            cache: ModelCache(worker: worker), ready: ready,
            token: huggingFaceToken(file: worker.hfTokenFile, base: base, environment: ProcessInfo.processInfo.environment)?.value,
            logger: logger, changed: { trigger.fire() }, reload: { await supervisor.refreshPlaced() })
        let inFlight = InFlightCounter()
        let advertised = AdvertisedURL()
        let drain = DrainSwitch()
        let grace = ShutdownGrace(grace: hub.shutdownGrace)

        let router = Router(context: WorkerRequestContext.self)
        router.middlewares.add(OpenAIErrorMiddleware())
        // Debug level: the hub's access line already names this worker, and a line per request
        // costs ~25 µs of CPU here (scripts/bench-operate.sh); at debug the same id ties the two.
        let accessLog = AccessLog(logger: Logger(label: "caravan.access"), quiet: { _ in true })
        router.middlewares.add(AccessLogMiddleware(accessLog))
        router.get("/health") { _, _ in Response(status: .ok, headers: [.contentType: "application/json"],
                                                 body: .init(byteBuffer: ByteBuffer(string: #"{"status":"ok"}"#))) }
        let guarded = router.group().add(middleware: HubAuthMiddleware(verifier: verifier))
        let plane = WorkerDataPlane(
            supervisor: supervisor, forwarder: UpstreamForwarder(client: engineClient), verifier: verifier, inFlight: inFlight,
            maxBodyBytes: hub.maxBodyBytes, bodyTimeout: hub.clientBodyTimeout,
            options: .init(headTimeout: max(hub.firstByteTimeout, hub.requestTimeout), idleTimeout: hub.idleTimeout,
                           // Twice the hub's: a client that stops reading is cut off by the
                           // hub first (its lease, breaker-neutral); this one only guards
                           // against a hub that stopped reading.
                           clientWriteTimeout: hub.clientWriteTimeout * 2, shutdown: grace),
            logger: logger, drain: drain, metrics: metrics)
        let runner = DataPlaneRunner()
        let admin = WorkerAdminRoutes(supervisor: supervisor, drain: drain, metrics: metrics, inFlight: inFlight, trigger: trigger,
                                      keepalive: min(.seconds(15), hub.idleTimeout / 3))
        admin.addRoutes(to: guarded)

        let heartbeat = HeartbeatService(
            config: worker, interval: cluster.hub.heartbeatInterval, trigger: trigger, supervisor: supervisor, placements: placements,
            gpus: gpus, inFlight: inFlight, drain: drain,
            advertised: advertised, credential: verifier, client: client, logger: logger)
        guarded.get(RouterPath(ControlPath.reports)) { [heartbeat] _, _ in heartbeat.reportStream() }
        guarded.put(RouterPath(ControlPath.placements)) { request, _ in
            let body = try await request.body.collect(upTo: 8 << 20)
            guard let set = try? WireCoding.decoder().decode(PlacementSet.self, from: Data(body.readableBytesView)) else {
                throw OpenAIError(.invalidJSON, message: "expected a placement set: {\"digest\": ..., \"models\": [...]}")
            }
            await placements.apply(set)
            trigger.fire()
            return try jsonResponse(["digest": set.digest])
        }
        let listen = worker.listen
        let app = Application(
            router: router,
            server: try ServerSettings.server(tls: worker.tls, baseDirectory: base, idleTimeout: hub.clientIdleTimeout,
                                              maxHeaderBytes: hub.maxHeaderKB * 1024) {
                .http1($0, plane: plane, runner: runner, accessLog: accessLog)
            },
            configuration: .init(address: .hostname(listen.host, port: listen.port), serverName: "caravan-worker",
                                 backlog: ServerSettings.backlog),
            services: [runner],  // stops after the server has drained
            onServerRunning: { [worker] channel in
                let port = channel.localAddress?.port ?? listen.port
                let url = worker.advertisedURL(boundPort: port)
                advertised.set(url)
                announce("caravan-worker \(worker.name) listening on \(url)")
            },
            logger: logger
        )
        var services: [any Service] = [gpus, supervisor, placements, ReloadOnHangup(logger: logger) { _ = try await supervisor.reload() }]
        if worker.connect == .outbound, let tunnel = cluster.hub.tunnelListen {
            // Behind NAT: the hub reaches the data plane and the admin API through this worker's own connection to it.
            let name = worker.name
            services.append(TunnelDialer(
                hubs: worker.hubs, port: worker.tunnelPort ?? tunnel.port, tls: ServerSettings.clientTLS(caFile: worker.hubCAFile, baseDirectory: base),
                plane: plane, responder: RouterTunnelResponder(responder: router.buildResponder(), logger: logger), runner: runner,
                accessLog: accessLog, keepalive: cluster.hub.heartbeatInterval,
                token: {
                    let now = Date()
                    return try await verifier.sign(CaravanClaims(sub: name, expires: now.addingTimeInterval(300), issuedAt: now,
                                                                 role: .worker))
                }, logger: logger))
        }
        if worker.metrics.public, let address = worker.metrics.listen {
            services.append(MetricsListener.application(address: address, serverName: "caravan-worker", logger: logger) {
                await admin.metricsResponse()
            })
        }
        return Built(app: app, services: services, heartbeat: heartbeat, grace: grace, supervisor: supervisor, drain: drain,
                     engineClient: engineClient, client: client)
    }
}
