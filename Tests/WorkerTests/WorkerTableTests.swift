import Proxy
import AsyncHTTPClient
import Auth
import Config
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
import TestSupport
import Wire

@testable import Worker

/// The worker's data plane and admin routes, in-process: the worker is built by
/// ``WorkerApplication/build()`` and driven through its router. Its one model is a remote
/// `upstream:` (an in-process upstream answering `200 ok`), so no engine process starts.
@Suite("Worker in-process: data-plane credentials, drain and envelopes")
struct WorkerTableTests {
    @Test("only the hub's credential for this worker passes; drained, the worker refuses new requests with 503")
    func dataPlane() async throws {
        try await ScriptedUpstream.answering { upstream in
            let port = upstream.port
            let clientSecret = String(repeating: "c", count: 40)
            let clusterKey = Secret(String(repeating: "w", count: 40))
            let own = WorkerKey.derive(clusterKey: clusterKey, worker: "a")
            let (directory, path) = try WorkerFixture.clusterFile(
                credential: own.value, models: "- {name: remote, upstream: \"http://127.0.0.1:\(port)/v1\", slots: 4}")
            defer { try? FileManager.default.removeItem(at: directory) }
            let (cluster, worker) = try ClusterConfig.loadWorker(path: path, name: "a", environment: [:])
            var logger = Logger(label: "caravan.worker.test")
            logger.logLevel = .warning
            let built = try await WorkerApplication(cluster: cluster, worker: worker, logger: logger, loadConfig: { worker }).build()
            defer { built.engineClient.shutdown() }

            func hubToken(signedWith secret: Secret, audience: String, role: TokenRole = .hub) async throws -> String {
                let claims = CaravanClaims(sub: "hub", expires: Date().addingTimeInterval(300), issuedAt: Date(), role: role,
                                           audience: audience)
                return try await TokenVerifier(secret: secret).sign(claims)
            }
            let valid = try await hubToken(signedWith: own, audience: "a")
            let rows: [(name: String, token: String?, status: Int)] = [
                ("no credential", nil, 401),
                ("a client token", try await TokenVerifier(secret: Secret(clientSecret)).sign(
                    CaravanClaims(sub: "tester", expires: Date().addingTimeInterval(300))), 401),
                ("a hub token made for another worker (audience b)", try await hubToken(signedWith: own, audience: "b"), 401),
                ("worker b's credential", try await hubToken(signedWith: WorkerKey.derive(clusterKey: clusterKey, worker: "b"), audience: "a"), 401),
                ("a worker-role token of this worker's own credential", try await hubToken(signedWith: own, audience: "a", role: .worker), 401),
                ("the cluster key itself", try await hubToken(signedWith: clusterKey, audience: "a"), 401),
                ("the hub's token for this worker", valid, 200),
            ]
            try await built.app.test(.live) { client in
                func chat(_ token: String?, model: String = "remote") async throws -> (status: Int, body: String) {
                    var headers: HTTPFields = [.contentType: "application/json"]
                    if let token { headers[.authorization] = "Bearer \(token)" }
                    let response = try await client.execute(uri: "/v1/chat/completions", method: .post, headers: headers,
                                                            body: ByteBuffer(string: chatBody(model: model)))
                    return (Int(response.status.code), String(buffer: response.body))
                }
                for row in rows {
                    let reply = try await chat(row.token)
                    print("caravan-security: worker data plane called with \(row.name) | \(reply.status) | - | -")
                    #expect(reply.status == row.status, "\(row.name): \(reply.body)")
                    if row.status == 401 {
                        #expect(envelope(reply.body)?.type == "authentication_error", "\(row.name): \(reply.body)")
                    }
                }
                let unknown = try await chat(valid, model: "nope")
                #expect(unknown.status == 404 && envelope(unknown.body)?.code == "model_not_found", "\(unknown.body)")
                let badJSON = try await client.execute(uri: "/v1/chat/completions", method: .post,
                                                       headers: [.authorization: "Bearer \(valid)"], body: ByteBuffer(string: "{nope"))
                #expect(badJSON.status == .badRequest && envelope(String(buffer: badJSON.body))?.code == "invalid_json")

                built.drain.set(true)
                let drained = try await chat(valid)
                #expect(drained.status == 503 && envelope(drained.body)?.code == "worker_draining", "\(drained.body)")
                built.drain.set(false)
                #expect(try await chat(valid).status == 200)
            }
            try await built.client.shutdown()
        }
    }
}
