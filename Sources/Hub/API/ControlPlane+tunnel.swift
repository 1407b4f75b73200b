import Foundation
import HTTPTypes
import NIOHTTP1
import Routing
import Logging
import NIOCore
import Proxy
import Server
import Wire

extension ControlPlane {
    /// Reads the reports of worker `name` over its tunnel (``ControlPath/reports``) until the
    /// stream ends: a worker behind NAT then needs no connection besides its tunnel, and its
    /// liveness is the tunnel's. The first report registers it, the rest are its heartbeats,
    /// `event: leaving` deregisters it. A stream that breaks without it leaves the worker to
    /// expire like a missed heartbeat, unless its next tunnel reports first.
    func followReports(of name: String, upstream: UpstreamClient) async {
        var registered = false
        do {
            let request = UpstreamRequest(url: "tunnel://\(name)" + ControlPath.reports, method: .GET,
                                          headers: [("Authorization", try await keys.header(for: name))], body: ByteBuffer())
            let options = UpstreamForwarder.Options(headTimeout: .seconds(10), idleTimeout: heartbeatInterval * 3 + .seconds(5))
            let answer = try await upstream.call(request, options: options, logger: logger)
            guard answer.status == .ok else {
                return logger.warning("worker did not send its reports over its tunnel", metadata: ["worker": "\(name)", "status": "\(answer.status.code)"])
            }
            var events = ServerSentEvents()
            for try await chunk in answer.body {
                for event in try events.append(chunk.readableBytesView) {
                    if event.name == "leaving" {
                        if state.deregister(name) { logger.info("worker deregistered", metadata: ["worker": "\(name)", "over": "tunnel"]) }
                        return
                    }
                    let report = try admit(try decode(WorkerReport.self, ByteBuffer(string: event.data)), from: name)
                    if registered, state.heartbeat(report) != .unknownWorker { continue }
                    state.register(report)
                    registered = true
                    logger.info("worker registered", metadata: ["worker": "\(name)", "url": "\(report.url)", "over": "tunnel",
                                                                "models": "\(report.models.map(\.name))"])
                }
            }
        } catch {
            logger.notice("worker reports over its tunnel ended", metadata: ["worker": "\(name)", "reason": "\(Self.words(error))"])
        }
    }

    /// What went wrong, in words (never a type's name).
    private static func words(_ error: any Error) -> String {
        switch error {
        case let error as UpstreamError: error.description
        case let error as OpenAIError: error.message
        case let error as SSEError: error.reason
        default: "the stream broke"
        }
    }
}
