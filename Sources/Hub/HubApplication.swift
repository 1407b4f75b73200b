import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Shared

/// Options given on the command line rather than in the cluster file.
struct HubOptions: Sendable {
    /// Accept requests without a client token (then listen on loopback only, answer only
    /// loopback `Host` names and no cross-origin browser requests).
    var noAuth = false
    /// With `noAuth`: the admin routes are open too (closed otherwise).
    var noAuthAdmin = false
}

/// Builds and runs the hub: the API server, the control plane and the expiry sweep.
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

    func run() async throws {
        try Self.checkSecrets(config, options: options)
        var listen = config.hub.listen
        if options.noAuth && listen.host != "127.0.0.1" && listen.host != "::1" && listen.host != "localhost" {
            logger.warning("--no-auth: listening on 127.0.0.1 only", metadata: ["configured": "\(listen)"])
            listen.host = "127.0.0.1"
        }
        let auth = config.hub.auth
        let authenticator: ClientAuthenticator? = options.noAuth ? nil : try await ClientAuthenticator(auth: auth)
        let joinVerifier: TokenVerifier? = config.hub.join
            ? await TokenVerifier(secret: WorkerKey.joinKey(clusterKey: auth.workerSecret!), leeway: auth.leeway) : nil
        let workerKeys = WorkerKeys(current: auth.workerSecret!, previous: auth.previousWorkerSecret,
                                    names: Set(config.workers.map(\.name)), leeway: auth.leeway, joinVerifier: joinVerifier)
        let hub = config.hub
        let breaker = CircuitBreaker.Policy(
            window: hub.breaker.window, minSamples: hub.breaker.minSamples, failureRate: hub.breaker.failureRate,
            openFor: hub.breaker.openFor, maxOpenFor: hub.breaker.maxOpenFor, closeAfter: hub.breaker.closeAfter,
            consecutiveFailures: hub.breaker.consecutiveFailures)
        let state = HubState(
            registry: Registry(expiry: hub.expiry, declaredModels: config.declaredModels,
                               discoveringWorkers: Set(config.workers.filter { !$0.modelsDirs.isEmpty }.map(\.name)),
                               breakerPolicy: breaker,
                               aheadPerSlot: hub.queue.aheadPerSlot),
            queueCapacity: hub.queue.size, logger: logger)
        // Workers close idle connections after client_idle_timeout; reuse stops well before.
        let client = UpstreamClient(connectTimeout: hub.connectTimeout, maxIdle: min(hub.clientIdleTimeout / 2, .seconds(30)),
                                    tls: ServerSettings.clientTLS(caFile: hub.workerCAFile, baseDirectory: auth.baseDirectory),
                                    logger: logger)
        let limiter = RateLimiter(defaults: .init(rps: hub.limits.requestsPerSecond, burst: hub.limits.burst,
                                                  concurrent: hub.limits.concurrent))

        let router = Router(context: HubRequestContext.self)
        router.middlewares.add(OpenAIErrorMiddleware())
        if !hub.corsOrigins.isEmpty { router.middlewares.add(CORSAllowList(origins: Set(hub.corsOrigins))) }
        router.get("/health") { _, _ in try jsonResponse(["status": "ok"]) }
        router.get("/health/ready") { _, _ in
            let live = state.liveWorkers().count
            return try jsonResponse(ReadyStatus(status: live > 0 ? "ready" : "no_live_workers", liveWorkers: live),
                                    status: live > 0 ? .ok : .serviceUnavailable)
        }
        ControlPlane(state: state, keys: workerKeys,
                     entries: Dictionary(config.workers.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first }),
                     heartbeatInterval: config.hub.heartbeatInterval, logger: logger)
            .addRoutes(to: router)
        let local = options.noAuth ? LocalOnlyAccess(corsOrigins: Set(hub.corsOrigins), admin: options.noAuthAdmin) : nil
        let api = router.group().add(middleware: ClientAuthMiddleware(authenticator: authenticator, local: local, limiter: limiter))
        let forwarder = UpstreamForwarder(client: client)
        OpenAIRoutes(state: state, forwarder: forwarder, keys: workerKeys, config: hub, logger: logger)
            .addRoutes(to: api)
        let admin = router.group().add(middleware: ClientAuthMiddleware(authenticator: authenticator, local: local, roles: [.admin]))
        AdminRoutes(state: state, forwarder: forwarder, keys: workerKeys, logger: logger).addRoutes(to: admin)

        let bound = listen
        let scheme = hub.tls == nil ? "http" : "https"
        let app = Application(
            router: router,
            server: try ServerSettings.server(tls: hub.tls, baseDirectory: auth.baseDirectory,
                                              idleTimeout: hub.clientIdleTimeout, maxHeaderBytes: hub.maxHeaderKB * 1024),
            configuration: .init(address: .hostname(listen.host, port: listen.port), serverName: "caravan-hub",
                                 backlog: ServerSettings.backlog),
            services: [ExpirySweeper(state: state, interval: config.hub.heartbeatInterval, logger: logger)],
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? bound.port
                announce("caravan-hub listening on \(scheme)://\(bound.host):\(port)")
            },
            logger: logger
        )
        do {
            try await app.runService()
        } catch {
            client.shutdown()
            throw error
        }
        client.shutdown()
    }
}

struct ReadyStatus: Encodable {
    var status: String
    var liveWorkers: Int
}
