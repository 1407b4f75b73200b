import AsyncHTTPClient
import Hummingbird
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization
import Auth
import Config
import Wire

/// Registers with every configured hub and keeps each informed with heartbeats.
///
/// A hub that answers 404 to a heartbeat does not know this worker (it restarted), so the
/// worker registers again at once. On graceful shutdown it deregisters from each hub first,
/// before the server drains, so no hub sends it another request.
///
/// A worker behind NAT (`connect: outbound`) posts nothing: each hub reads its reports over
/// the worker's tunnel (``reportStream()``), so the tunnel is its only connection to a hub,
/// and at shutdown those streams end with `event: leaving` while the tunnels are still up.
final class HeartbeatService: Service, Sendable {
    let config: WorkerConfig
    let interval: Duration
    let trigger: ReportTrigger
    let supervisor: EngineSupervisor
    let placements: Placements
    let gpus: GPUMonitor
    let inFlight: InFlightCounter
    let drain: DrainSwitch
    let advertised: AdvertisedURL
    let credential: TokenVerifier
    let client: HTTPClient
    let logger: Logger
    private let sequence = Atomic<UInt64>(0)
    /// Report streams open over tunnels, and whether they are to say `leaving` now.
    private let streams = Mutex<(open: Int, leaving: Bool)>((0, false))
    private let streamsChanged = ChangeSignal()

    init(config: WorkerConfig, interval: Duration, trigger: ReportTrigger, supervisor: EngineSupervisor, placements: Placements, gpus: GPUMonitor,
         inFlight: InFlightCounter, drain: DrainSwitch, advertised: AdvertisedURL, credential: TokenVerifier, client: HTTPClient,
         logger: Logger) {
        self.drain = drain
        self.config = config
        self.interval = interval
        self.trigger = trigger
        self.supervisor = supervisor
        self.placements = placements
        self.gpus = gpus
        self.inFlight = inFlight
        self.advertised = advertised
        self.credential = credential
        self.client = client
        self.logger = logger
    }

    func run() async throws {
        if config.connect == .outbound { return await reportOverTunnels() }
        let url = await advertised.wait()
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                for hub in config.hubs {
                    // Above the data plane's requests: a worker busy with thousands of streams
                    // must still report in time, or the hub drops it.
                    group.addTask(priority: .high) { await self.keepInformed(hub: hub, url: url) }
                }
            }
        } onGracefulShutdown: { [trigger] in trigger.fire() }  // the loops see the shutdown at once
        await withTaskGroup(of: Void.self) { group in
            for hub in config.hubs {
                group.addTask { await self.deregister(hub: hub) }
            }
        }
    }

    /// The loop for one hub: register until it works, then heartbeat every interval.
    private func keepInformed(hub: String, url: String) async {
        var registered = false
        var failures = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let seen = trigger.current
            let report = await makeReport(url: url)
            let path = registered ? ControlPath.heartbeat : ControlPath.register
            let status = await post(hub: hub, path: path, body: report)
            switch status {
            case 200, 204:
                if !registered { logger.info("registered with hub", metadata: ["hub": "\(hub)"]) }
                registered = true
                failures = 0
            case 404 where registered, 410 where registered:
                logger.notice("hub does not know this worker (restarted?); registering again", metadata: ["hub": "\(hub)"])
                registered = false
                continue
            default:
                failures += 1
                if failures == 1 || failures % 30 == 0 {
                    logger.warning("cannot reach hub", metadata: ["hub": "\(hub)", "status": "\(status.map(String.init) ?? "no answer")",
                                                             "attempts": "\(failures)"])
                }
            }
            await trigger.wait(interval, since: seen)
        }
    }

    /// Waits for graceful shutdown, then has every report stream say `leaving` (at most 3 s).
    private func reportOverTunnels() async {
        try? await gracefulShutdown()
        streams.withLock { $0.leaving = true }
        trigger.fire()
        let deadline = ContinuousClock.now + .seconds(3)
        while ContinuousClock.now < deadline {
            let seen = streamsChanged.generation
            if streams.withLock({ $0.open }) == 0 { break }
            _ = await streamsChanged.wait(since: seen, until: deadline)
        }
    }

    /// `GET` ``ControlPath/reports``: this worker's reports to the hub reading them over its
    /// tunnel, one `data:` event now, then on every change and every interval, and `event:
    /// leaving` when the worker shuts down.
    func reportStream() -> Response {
        Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: ResponseBody { writer in
            self.streams.withLock { $0.open += 1 }
            defer {
                self.streams.withLock { $0.open -= 1 }
                self.streamsChanged.fire()
            }
            let url = await self.advertised.wait()
            self.logger.info("reporting to a hub over its tunnel")
            while !Task.isCancelled {
                let seen = self.trigger.current
                if self.streams.withLock({ $0.leaving }) {
                    try await writer.write(ByteBuffer(string: ServerSentEvents.Event(name: "leaving", data: "{}").encoded))
                    break
                }
                let report = try WireCoding.encoder().encode(await self.makeReport(url: url))
                try await writer.write(ByteBuffer(string: ServerSentEvents.Event(data: String(decoding: report, as: UTF8.self)).encoded))
                await self.trigger.wait(self.interval, since: seen)
            }
            try await writer.finish(nil)
        })
    }

    private func makeReport(url: String) async -> WorkerReport {
        let budget = supervisor.budget
        var report = WorkerReport(
            name: config.name, url: url, version: caravanVersion,
            sequence: sequence.add(1, ordering: .relaxed).newValue,
            models: await supervisor.report() + placements.pendingReports(), gpus: gpus.current,
            inFlight: inFlight.value, weight: config.weight ?? budget.autoWeight)
        report.vramBudgetMiB = budget.totalMiB
        report.draining = drain.isDraining ? true : nil
        report.placementDigest = await placements.digest
        report.cachedFiles = placements.cache.digests()
        report.diskFreeMiB = placements.diskFreeMiB
        return report
    }

    private func deregister(hub: String) async {
        let status = await post(hub: hub, path: ControlPath.deregister, body: DeregisterRequest(name: config.name))
        logger.info("deregistered from hub", metadata: ["hub": "\(hub)", "status": "\(status.map(String.init) ?? "no answer")"])
    }

    /// POSTs a JSON body with the worker credential; returns the status, nil when unreachable.
    private func post(hub: String, path: String, body: some Encodable) async -> Int? {
        do {
            let now = Date()
            let token = try await credential.sign(CaravanClaims(
                sub: config.name, expires: now.addingTimeInterval(300), issuedAt: now, role: .worker))
            var request = HTTPClientRequest(url: hub.trimmingSuffix("/") + path)
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try WireCoding.encoder().encode(body)))
            let response = try await client.execute(request, timeout: .seconds(5))
            _ = try? await response.body.collect(upTo: 64 * 1024)
            return Int(response.status.code)
        } catch {
            return nil
        }
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}
