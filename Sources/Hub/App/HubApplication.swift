import Wire
import UnixSignals
import Routing
import AsyncHTTPClient
import Foundation
import Hummingbird
import NIOSSL
import Logging
import ServiceLifecycle
import Auth
import Config
import Proxy
import Operations
import Server
import Store

/// The hub: its API server, control plane, admin routes and background services.
///
/// ``build()`` assembles everything from the configuration without listening (the
/// hummingbird-examples `buildApplication` shape); ``run()`` serves what it built. Tests build
/// the same application and drive its router in-process (HummingbirdTesting's `.router`).
struct HubApplication {
    let config: ClusterConfig
    let options: HubOptions
    let logger: Logger

    /// Validates what the hub needs before anything listens.
    static func checkSecrets(_ config: ClusterConfig, options: HubOptions) throws(ConfigError) {
        guard let worker = config.hub.auth.workerSecret else {
            throw ConfigError(key: "hub.auth.worker_secret_file",
                              "required: workers authenticate with it (or set \(ClusterConfig.Environment.workerSecret))")
        }
        if options.noAuth { return }
        guard let client = config.hub.auth.clientSecret else {
            throw ConfigError(key: "hub.auth.client_secret_file",
                              "required unless --no-auth (or set \(ClusterConfig.Environment.clientSecret))")
        }
        if client == worker {
            throw ConfigError(key: "hub.auth", "client and worker secrets must differ")
        }
    }

    /// The breaker policy a `hub.breaker` section describes.
    /// The routing policy `hub.routing` names.
    static func routingPolicy(_ routing: RoutingConfig) -> RoutingPolicy {
        switch routing.policy {
        case .weightedRoundRobin: .weightedRoundRobin
        case .cacheAware:
            .cacheAware(CacheAwarePolicy(minMatch: routing.minMatch, balanceAbsolute: routing.balanceAbsolute,
                                         balanceRelative: routing.balanceRelative))
        }
    }

    static func breakerPolicy(_ breaker: BreakerConfig) -> CircuitBreaker.Policy {
        CircuitBreaker.Policy(
            window: breaker.window, minSamples: breaker.minSamples, failureRate: breaker.failureRate,
            openFor: breaker.openFor, maxOpenFor: breaker.maxOpenFor, closeAfter: breaker.closeAfter,
            consecutiveFailures: breaker.consecutiveFailures)
    }

    /// What ``build()`` assembles: the server application and what runs beside it.
    struct Built {
        let app: Application<RouterResponder<HubRequestContext>>
        /// Services that run beside the server (sweeper, event ticker, reload, metrics listener).
        let services: [any Service]
        let state: HubState
        let grace: ShutdownGrace
        /// The data plane's client (inference and admin calls to workers): closed when the hub stops.
        let client: UpstreamClient
        /// Keys and the ledger: closed after the services (the ledger's last write) stop.
        let store: any HubStore
    }

    /// Serves the hub until SIGTERM or SIGINT: the server drains within `shutdown_grace`, then
    /// the services stop.
    func run() async throws {
        let built = try await build()
        // Last, so it is the first to stop: it drains, with the grace, before the rest ends.
        let group = ServiceGroup(configuration: .init(services: built.services + [GracefulServer(built.app, grace: built.grace)],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        defer { built.client.shutdown() }
        do {
            try await group.run()
        } catch {
            try? await built.store.close()
            throw error
        }
        try? await built.store.close()
    }

    /// Assembles the hub from its configuration; nothing listens yet.
    func build() async throws -> Built {
        try Self.checkSecrets(config, options: options)
        var listen = config.hub.listen
        if options.noAuth && listen.host != "127.0.0.1" && listen.host != "::1" && listen.host != "localhost" {
            logger.warning("--no-auth: listening on 127.0.0.1 only", metadata: ["configured": "\(listen)"])
            listen.host = "127.0.0.1"
        }
        let auth = config.hub.auth
        let store = try await SQLStore.open(try config.hub.storeLocation(relativeTo: auth.baseDirectory),
                                            logger: Logger(label: "caravan.store"))
        let managed = ManagedKeys()
        let authenticator: ClientAuthenticator? = options.noAuth ? nil : try await ClientAuthenticator(auth: auth, managed: managed)
        let settings = HubSettings(.init(cluster: config, authenticator: authenticator))
        let joinVerifier: TokenVerifier? = config.hub.join
            ? await TokenVerifier(secret: WorkerKey.joinKey(clusterKey: auth.workerSecret!), leeway: auth.leeway) : nil
        let workerKeys = WorkerKeys(current: auth.workerSecret!, previous: auth.previousWorkerSecret,
                                    names: Set(config.workers.map(\.name)), leeway: auth.leeway, joinVerifier: joinVerifier)
        let hub = config.hub
        let metrics = HubMetrics()
        let events = ClusterEvents()
        let stats = LiveStats()
        let state = HubState(
            registry: Registry(expiry: hub.expiry, declaredModels: config.declaredModels,
                               discoveringWorkers: Set(config.workers.filter { !$0.modelsDirs.isEmpty }.map(\.name)),
                               breakerPolicy: Self.breakerPolicy(hub.breaker),
                               aheadPerSlot: hub.queue.aheadPerSlot, policy: Self.routingPolicy(hub.routing),
                               indexBlocks: hub.routing.indexBlocks),
            queueCapacity: hub.queue.size, logger: logger, events: events, metrics: metrics)
        // Workers close idle connections after client_idle_timeout; reuse stops well before.
        // A few connections per worker and event loop stay open ahead of need.
        let workerTLS = ServerSettings.clientTLS(caFile: hub.workerCAFile, baseDirectory: auth.baseDirectory)
        // Workers behind NAT dial in (`tunnel_listen`); their requests go over that connection.
        let tunnels = Tunnels(keepalive: config.hub.heartbeatInterval, connectTimeout: hub.connectTimeout, logger: logger)
        let client = UpstreamClient(connectTimeout: hub.connectTimeout, maxIdle: min(hub.clientIdleTimeout / 2, .seconds(30)),
                                    warm: 2, tls: workerTLS, logger: logger, tunnels: tunnels)
        let limiter = RateLimiter(defaults: .init(rps: hub.limits.requestsPerSecond, burst: hub.limits.burst,
                                                  concurrent: hub.limits.concurrent),
                                  poisonPerMinute: hub.limits.poisonPerMinute)
        let grace = ShutdownGrace(grace: hub.shutdownGrace)
        let reloader = options.configPath.map {
            HubReloader(path: $0, options: options, settings: settings, state: state, keys: workerKeys, limiter: limiter,
                        managed: managed, logger: logger)
        }
        let ledger = hub.ledger.enabled ? LedgerWriter(store: store, config: hub.ledger, metrics: metrics, logger: logger) : nil
        let keySync = KeySync(store: store, keys: managed, limiter: limiter, ledger: ledger, logger: logger) {
            settings.hub.auth.apiKeys.compactMap { key in key.budget.map { ("key:\(key.name)", $0, key.tpm) } }
        }
        try await keySync.load()  // the keys before the first request

        let runner = DataPlaneRunner()
        let router = Router(context: HubRequestContext.self)
        router.middlewares.add(OpenAIErrorMiddleware())
        let accessLog = AccessLog(
            logger: Logger(label: "caravan.access"), quiet: Self.isQuiet,
            onComplete: { record, fields, status, outcome, duration in
                // Only the API's requests: the control plane, health checks and admin calls are not traffic.
                guard fields.isAPI else { return }
                metrics.requestFinished(fields, outcome: outcome, status: status, duration: duration)
                metrics.keyUsage(fields)
                ledger?.record(LedgerRow(record: record, fields: fields, status: status, outcome: outcome, duration: duration))
                if let worker = fields.worker, let model = fields.model {
                    stats.record(worker: worker, model: model, ttft: fields.ttft, tokens: fields.usage?.completion ?? 0)
                }
            })
        router.middlewares.add(AccessLogMiddleware(accessLog))
        router.middlewares.add(CORSAllowList(allowed: { Set(settings.hub.corsOrigins) }))
        router.get("/health") { _, _ in try jsonResponse(["status": "ok"]) }
        router.get("/health/ready") { _, _ in
            let ready = ReadyStatus(state.liveWorkers())
            return try jsonResponse(ready, status: ready.isReady ? .ok : .serviceUnavailable)
        }
        Dashboard.addRoutes(to: router)
        let control = ControlPlane(state: state, keys: workerKeys, settings: settings,
                                   heartbeatInterval: config.hub.heartbeatInterval, logger: logger)
        control.addRoutes(to: router)
        let local = options.noAuth ? LocalOnlyAccess(corsOrigins: Set(hub.corsOrigins), admin: options.noAuthAdmin) : nil
        let api = router.group().add(middleware: ClientAuthMiddleware(settings: settings, local: local, limiter: limiter))
        OpenAIRoutes(state: state).addRoutes(to: api)
        let plane = HubDataPlane(state: state, forwarder: UpstreamForwarder(client: client), keys: workerKeys, settings: settings,
                                 limiter: limiter, local: local, logger: logger, shutdown: grace)
        let admin = router.group().add(middleware: ClientAuthMiddleware(settings: settings, local: local, roles: [.admin]))
        let adminRoutes = AdminRoutes(state: state, upstream: client, keys: workerKeys, logger: logger, metrics: metrics,
                                      reloader: reloader, limiter: limiter, writeTimeout: hub.clientWriteTimeout)
        adminRoutes.addRoutes(to: admin)
        AccountRoutes(book: KeyBook(store: store), sync: keySync, limiter: limiter, ledger: ledger, logger: logger).addRoutes(to: admin)
        let modelBook = ModelBook(store: store)
        let placer = ModelPlacer(book: modelBook, state: state, upstream: client, keys: workerKeys,
                                 grace: hub.modelSources.replaceAfter, logger: logger)
        let desk = ModelDesk(book: modelBook, reader: SourceReader(hub: hub, base: auth.baseDirectory), placer: placer)
        ModelRoutes(desk: desk, state: state, logger: logger).addRoutes(to: admin)

        let bound = listen
        let scheme = hub.tls == nil ? "http" : "https"
        let app = Application(
            router: router,
            server: try ServerSettings.server(tls: hub.tls, baseDirectory: auth.baseDirectory,
                                              idleTimeout: hub.clientIdleTimeout, maxHeaderBytes: hub.maxHeaderKB * 1024) {
                .http1($0, plane: plane, runner: runner, accessLog: accessLog)
            },
            configuration: .init(address: .hostname(listen.host, port: listen.port), serverName: "caravan-hub",
                                 backlog: ServerSettings.backlog),
            services: [runner],  // stops after the server has drained
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? bound.port
                announce("caravan-hub listening on \(scheme)://\(bound.host):\(port)")
            },
            logger: logger
        )
        var services: [any Service] = [
            ExpirySweeper(state: state, interval: config.hub.heartbeatInterval, logger: logger),
            EventTicker(events: events, stats: stats, snapshot: { adminRoutes.snapshot() }),
            keySync,
            placer,
        ]
        if let ledger { services.append(ledger) }
        if let address = hub.tunnelListen {
            let tls = try hub.tls.map { try NIOSSLContext(configuration: try ServerSettings.serverTLS($0, baseDirectory: auth.baseDirectory)) }
            let scheme = tls == nil ? "h2c" : "h2"
            services.append(TunnelListener(tunnels: tunnels, follow: { await control.followReports(of: $0, upstream: client) }) {
                try await tunnels.listen(host: address.host, port: address.port, tls: tls, runner: runner,
                                         authenticate: { try await workerKeys.verify($0).subject },
                                         announce: { bound in
                                             announce("caravan-hub tunnels on \(scheme)://\(address.host):\(bound?.port ?? address.port)")
                                         })
            })
        }
        if let reloader { services.append(ReloadOnHangup(logger: logger) { _ = try await reloader.reload() }) }
        if hub.metrics.public, let address = hub.metrics.listen {
            services.append(MetricsListener.application(address: address, serverName: "caravan-hub", logger: logger) {
                adminRoutes.metricsResponse(metrics)
            })
        }
        return Built(app: app, services: services, state: state, grace: grace, client: client, store: store)
    }

    /// Paths whose access lines are debug-level: the control plane, health checks, scrapes, the dashboard.
    @Sendable static func isQuiet(_ path: String) -> Bool {
        path.hasPrefix("/internal/") || path.hasPrefix("/health") || path == "/metrics" || path.hasPrefix("/ui")
            || path == "/admin/events"
    }
}
