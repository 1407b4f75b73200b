import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Synchronization
import Proxy
import Server
import Wire

/// A data plane of its own over real sockets, for the relay's tests: every request it gets
/// is relayed with the given client and options to `target`. A failure before the first
/// byte is answered with an envelope whose `code` is the ``UpstreamError/Kind`` and whose
/// message is the error; each relayed answer's ``UpstreamForwarder/Finish`` is kept.
package final class RelayServer: Sendable {
    package let url: String
    private let finishes: Finishes

    private init(url: String, finishes: Finishes) {
        self.url = url
        self.finishes = finishes
    }

    /// How the relayed answers ended, in order.
    package var finished: [UpstreamForwarder.Finish] { finishes.list.withLock { $0 } }

    /// What each forward returned, in order: `relayed`, `clientGone`, `shuttingDown`, or the error's kind.
    package var results: [String] { finishes.results.withLock { $0 } }

    /// Waits (up to `within`) for `count` relayed answers to have ended.
    package func waitForFinishes(_ count: Int, within: Duration = .seconds(10)) async throws -> [UpstreamForwarder.Finish] {
        let deadline = ContinuousClock.now + within
        while finished.count < count {
            guard ContinuousClock.now < deadline else { throw TestFailure("\(finished.count) of \(count) answers ended") }
            try await Task.sleep(for: .milliseconds(20))
        }
        return finished
    }

    /// Waits (up to `within`) for `count` forwards to have returned; their results.
    package func waitForResults(_ count: Int, within: Duration = .seconds(10)) async throws -> [String] {
        let deadline = ContinuousClock.now + within
        while results.count < count {
            guard ContinuousClock.now < deadline else { throw TestFailure("\(results.count) of \(count) forwards returned") }
            try await Task.sleep(for: .milliseconds(20))
        }
        return results
    }

    /// Serves a relay to `target` while `body` runs, then stops it.
    package static func serving<T: Sendable>(
        to target: String, client: UpstreamClient, options: UpstreamForwarder.Options,
        _ body: @Sendable (RelayServer) async throws -> T
    ) async throws -> T {
        let finishes = Finishes()
        let plane = Plane(target: target, forwarder: UpstreamForwarder(client: client), options: options, finishes: finishes)
        let runner = DataPlaneRunner()
        let (ports, port) = AsyncStream.makeStream(of: Int.self)
        let app = Application(
            router: Router(),
            server: .http1(.init(), plane: plane, runner: runner, accessLog: AccessLog(logger: Logger(label: "relay"), quiet: { _ in true })),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            services: [runner],
            onServerRunning: { channel in port.yield(channel.localAddress?.port ?? 0) },
            logger: Logger(label: "relay"))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService(gracefulShutdownSignals: []) }
            defer { group.cancelAll() }
            var iterator = ports.makeAsyncIterator()
            guard let bound = await iterator.next() else { throw TestFailure("the relay did not start") }
            return try await body(RelayServer(url: "http://127.0.0.1:\(bound)", finishes: finishes))
        }
    }

    private final class Finishes: Sendable {
        let list = Mutex<[UpstreamForwarder.Finish]>([])
        let results = Mutex<[String]>([])
    }

    private struct Plane: DataPlane {
        let target: String
        let forwarder: UpstreamForwarder
        let options: UpstreamForwarder.Options
        let finishes: Finishes
        var maxBodyBytes: Int { 1 << 20 }
        var bodyTimeout: Duration { .seconds(5) }

        func claims(_ head: HTTPRequest) -> Bool { true }

        func answer(_ exchange: ClientExchange) {
            let finishes = self.finishes
            var headers = [("Content-Type", "application/json")]
            if let close = exchange.request.headerFields[.connection] { headers.append(("Connection", close)) }
            forwarder.forward(
                url: target, method: exchange.request.method, headers: headers, body: exchange.body, options: options,
                to: exchange, logger: Logger(label: "relay"), onFinish: { finish in finishes.list.withLock { $0.append(finish) } }
            ).whenSuccess { result in Self.record(result, of: exchange, in: finishes) }
        }

        private static func record(_ result: UpstreamForwarder.Result, of exchange: ClientExchange, in finishes: Finishes) {
            finishes.results.withLock { results in
                switch result {
                case .relayed: results.append("relayed")
                case .clientGone: results.append("clientGone")
                case .shuttingDown: results.append("shuttingDown")
                case .failed(_, let error): results.append(error.kind.rawValue)
                }
            }
            switch result {
            case .relayed, .clientGone: break
            case .shuttingDown: exchange.respond(OpenAIError.shuttingDown)
            case .failed(let reply?, _): exchange.respond(status: reply.status, headers: reply.headers, body: reply.body)
            case .failed(nil, let error): exchange.respond(OpenAIError(ErrorCode(error.kind.rawValue, .badGateway, .server), message: "\(error)"))
            }
        }
    }
}
