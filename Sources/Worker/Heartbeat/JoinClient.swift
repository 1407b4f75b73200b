import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Config
import Wire

/// Joins a cluster whose file does not list this worker: exchanges a join token
/// (`caravan-hub join-token`) for the worker's own credential, at the first hub that answers.
struct JoinClient {
    let hubs: [String]
    let name: String
    let client: HTTPClient
    let logger: Logger

    struct Refused: Error, CustomStringConvertible {
        let description: String
    }

    /// Tries each hub in turn for up to `patience` (hubs may still be starting); a hub that
    /// refuses the token ends it at once.
    func join(with token: Secret, patience: Duration = .seconds(60)) async throws -> Secret {
        let deadline = ContinuousClock.now + patience
        while true {
            for hub in hubs {
                var request = HTTPClientRequest(url: hub.trimmingSuffix("/") + ControlPath.join)
                request.method = .POST
                request.headers.add(name: "Authorization", value: "Bearer \(token.value)")
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(bytes: try WireCoding.encoder().encode(JoinRequest(name: name))))
                guard let response = try? await client.execute(request, timeout: .seconds(10)) else { continue }
                let body = try await response.body.collect(upTo: 64 * 1024)
                if response.status == .ok, let answer = try? WireCoding.decoder().decode(JoinResponse.self, from: Data(body.readableBytesView)) {
                    logger.notice("joined the cluster", metadata: ["hub": "\(hub)"])
                    return Secret(answer.credential)
                }
                throw Refused(description: "hub \(hub) refused to let worker \(name) join: HTTP \(response.status.code) \(String(buffer: body))")
            }
            guard ContinuousClock.now < deadline else { throw Refused(description: "no hub answered the join request") }
            try await Task.sleep(for: .seconds(1))
        }
    }
}
