import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOHTTP2
import NIOHTTPTypes
import NIOHTTPTypesHTTP2
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Server
import Synchronization

/// The worker's end of the tunnels (`connect: outbound`): one connection to each hub's
/// `tunnel_listen`, kept open. It says who it is on the first line (``TunnelHandshake``),
/// then serves the hub's HTTP/2 streams with the worker's own ``DataPlane``, exactly as
/// its listener serves HTTP/1 requests. A dropped tunnel is dialled again at once, then
/// with jittered exponential backoff (0.25 s doubling to 30 s, each 50-100 %); PINGs
/// (``TunnelKeepalive``) notice a dead peer.
public final class TunnelDialer: Service, Sendable {
    let hubs: [(url: String, host: String, port: Int, tls: Bool)]
    let tls: TLSConfiguration
    let plane: any DataPlane
    let responder: any TunnelResponder
    let runner: DataPlaneRunner
    let accessLog: AccessLog
    let keepalive: TimeAmount
    let token: @Sendable () async throws -> String
    let logger: Logger
    private let open = Mutex<[ObjectIdentifier: any Channel]>([:])

    /// - Parameters:
    ///   - hubs: the hubs' URLs; each tunnel goes to the URL's host at `port` (the hubs' `tunnel_listen`), over TLS for https hubs.
    ///   - tls: trust settings for https hubs.
    ///   - responder: answers what `plane` does not claim (the worker's admin API, for the hub's admin calls).
    ///   - token: signs this worker's credential for the first line.
    public init(hubs: [String], port: Int, tls: TLSConfiguration, plane: any DataPlane, responder: any TunnelResponder, runner: DataPlaneRunner,
                accessLog: AccessLog, keepalive: Duration, token: @escaping @Sendable () async throws -> String, logger: Logger) {
        self.hubs = hubs.compactMap { url in
            guard let parts = URLComponents(string: url), let host = parts.host else { return nil }
            return (url, host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port, parts.scheme == "https")
        }
        self.tls = tls
        self.plane = plane
        self.responder = responder
        self.runner = runner
        self.accessLog = accessLog
        self.keepalive = TimeAmount(keepalive)
        self.token = token
        self.logger = logger
    }

    public func run() async {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for hub in hubs { group.addTask { await self.keepOpen(hub) } }
            }
        } onGracefulShutdown: {
            for channel in self.open.withLock({ $0.values }) { channel.close(promise: nil) }
        }
    }

    /// Dials `hub` until shutdown: at once after a tunnel that was open, else after a jittered backoff.
    private func keepOpen(_ hub: (url: String, host: String, port: Int, tls: Bool)) async {
        var failures = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            var opened = false
            let started = ContinuousClock.now
            do {
                let channel = try await dial(hub)
                let id = ObjectIdentifier(channel)
                open.withLock { $0[id] = channel }
                opened = true
                logger.info("tunnel open", metadata: ["hub": "\(hub.url)", "port": "\(hub.port)"])
                try? await channel.closeFuture.get()
                open.withLock { $0[id] = nil }
                guard !Task.isShuttingDownGracefully else { return }
                logger.warning("tunnel closed; dialling again", metadata: ["hub": "\(hub.url)"])
            } catch {
                logger.warning("tunnel failed", metadata: ["hub": "\(hub.url)", "port": "\(hub.port)", "error": "\(error)"])
            }
            // A tunnel that stayed open a while is dialled again at once (the worker serves again
            // within a heartbeat); one that keeps failing or closing at once backs off.
            failures = opened && ContinuousClock.now - started > .seconds(1) ? 0 : failures + 1
            let backoff = min(30.0, 0.25 * pow(2.0, Double(max(0, failures - 1)))) * Double.random(in: 0.5...1.0)
            if failures > 0 { try? await Task.sleep(for: .milliseconds(Int(backoff * 1000))) }
        }
    }

    /// Connects, says hello, and returns once the hub said OK and HTTP/2 is set up.
    private func dial(_ hub: (url: String, host: String, port: Int, tls: Bool)) async throws -> any Channel {
        let context = hub.tls ? try NIOSSLContext(configuration: tls) : nil
        let token = try await token()
        let (plane, responder, runner, accessLog, keepalive, logger) = (self.plane, self.responder, self.runner, self.accessLog, self.keepalive, self.logger)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let answer = loop.makePromise(of: Void.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
            .connectTimeout(.seconds(5))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let context {
                        try sync.addHandler(NIOSSLClientHandler(context: context, serverHostname: hub.host.first?.isNumber == true ? nil : hub.host))
                    }
                    try sync.addHandler(TunnelPreamble { line, context in
                        guard line == TunnelHandshake.accepted else {
                            answer.fail(TunnelRefused(line: line))
                            return context.close(promise: nil)
                        }
                        do {
                            try TunnelDialer.serve(context.channel, plane: plane, responder: responder, runner: runner, accessLog: accessLog,
                                                   keepalive: keepalive, logger: logger)
                            let preamble = try context.pipeline.syncOperations.handler(type: TunnelPreamble.self)
                            preamble.handOver(context)
                            answer.succeed(())
                        } catch {
                            answer.fail(error)
                            context.close(promise: nil)
                        }
                    })
                }
            }
            .connect(host: hub.host, port: hub.port).get()
        } catch {
            answer.fail(error)
            throw error
        }
        channel.closeFuture.whenComplete { _ in answer.fail(ChannelError.ioOnClosedChannel) }
        try await channel.writeAndFlush(ByteBuffer(string: TunnelHandshake.hello + token + "\n")).get()
        try await answer.futureResult.get()
        return channel
    }

    /// Turns the connection into this worker's HTTP/2 server: each stream the hub opens is one
    /// request for the data plane, or (what it does not claim) for `responder`.
    static func serve(_ channel: any Channel, plane: any DataPlane, responder: any TunnelResponder, runner: DataPlaneRunner, accessLog: AccessLog,
                      keepalive: TimeAmount, logger: Logger) throws {
        let sync = channel.pipeline.syncOperations
        _ = try sync.configureHTTP2Pipeline(mode: .server, connectionConfiguration: Tunnels.connection,
                                            streamConfiguration: Tunnels.stream) { stream in
            stream.eventLoop.makeCompletedFuture {
                let streamSync = stream.pipeline.syncOperations
                try streamSync.addHandler(HTTP2FramePayloadToHTTPServerCodec())
                try streamSync.addHandler(DataPlaneDispatcher(plane: plane, runner: runner, accessLog: accessLog))
                try streamSync.addHandler(TunnelPassOn(responder: responder, runner: runner, maxBodyBytes: plane.maxBodyBytes))
            }
        }
        try TunnelKeepalive.add(to: sync, before: try sync.handler(type: NIOHTTP2Handler.self), interval: keepalive, logger: logger)
    }
}

/// The hub's first line was not OK.
struct TunnelRefused: Error, CustomStringConvertible {
    let line: String
    var description: String { "the hub refused the tunnel: \(line.prefix(200))" }
}
