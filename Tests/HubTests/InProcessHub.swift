import Proxy
import AsyncHTTPClient
import Auth
import Config
import Foundation
import Store
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import TestSupport
import Wire

@testable import Hub

/// A hub built by ``HubApplication/build()`` from a cluster file in a temporary folder and
/// driven in-process (HummingbirdTesting's `.live`: its real listener on a free port, no process). Worker `a` of
/// the file is registered through the control plane, as a real worker would, and points at
/// an in-process upstream that answers every request `200 ok`; worker `offline` (model
/// `ghost`, alias `ghost-alias`) never registers.
struct InProcessHub: Sendable {
    let directory: URL
    let config: ClusterConfig
    let clientSecret: String
    let clusterKey: String

    /// Writes the secrets and a cluster file (`hubSettings` under `hub:`, `authSettings` under
    /// `hub.auth:`), runs `prepare` on the folder first (key files), and loads it.
    static func make(hubSettings: String = "", authSettings: String = "", upstreamPort: Int,
                     prepare: (URL) throws -> Void = { _ in }) throws -> InProcessHub {
        let (directory, clientSecret, clusterKey) = try TestCluster.secretsFolder()
        try prepare(directory)
        let yaml = TestCluster.hubSection(listen: "127.0.0.1:0", heartbeat: "1s", hubSettings: hubSettings, authSettings: authSettings)
            + """
            workers:
              - name: a
                hubs: ["http://127.0.0.1:1"]
                listen: "127.0.0.1:\(upstreamPort)"
                models:
                  - {name: tiny, path: /m/tiny.gguf, aliases: [tiny-chat]}
              - name: offline
                hubs: ["http://127.0.0.1:1"]
                listen: "127.0.0.1:9"
                models:
                  - {name: ghost, path: /m/ghost.gguf, aliases: [ghost-alias]}
            """
        let path = directory.appendingPathComponent("cluster.yaml").path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        var config = try ClusterConfig.load(path: path)
        config.hub.stateDir = config.hub.stateDir ?? directory.appendingPathComponent("state").path  // its own store
        return InProcessHub(directory: directory, config: config, clientSecret: clientSecret, clusterKey: clusterKey)
    }

    /// Builds the hub and runs `test` against its router; worker `a` is registered first
    /// when `upstreamURL` is given.
    func run(options: HubOptions = HubOptions(), upstreamURL: String? = nil,
             _ test: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        var logger = Logger(label: "caravan.hub.test")
        logger.logLevel = .warning
        let built = try await HubApplication(config: config, options: options, logger: logger).build()
        defer {
            built.client.shutdown()
            try? FileManager.default.removeItem(at: directory)
        }
        do {
            try await serve(built, upstreamURL: upstreamURL, test)
        } catch {
            try? await built.store.close()
            throw error
        }
        try? await built.store.close()
    }

    private func serve(_ built: HubApplication.Built, upstreamURL: String?,
                       _ test: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        try await built.app.test(.live) { client in
            if let upstreamURL {
                let report = WorkerReport(
                    name: "a", url: upstreamURL, version: "test", sequence: 1,
                    models: [ModelReport(name: "tiny", aliases: ["tiny-chat"], state: .ready, slotsTotal: 4)],
                    gpus: [], inFlight: 0, weight: 1)
                let reply = try await client.execute(
                    uri: ControlPath.register, method: .post,
                    headers: [.authorization: "Bearer \(try await workerToken("a"))", .contentType: "application/json"],
                    body: ByteBuffer(bytes: try WireCoding.encoder().encode(report)))
                guard reply.status == .ok else { throw TestFailure("registering worker a: \(reply.status) \(String(buffer: reply.body))") }
            }
            try await test(client)
        }
    }

    /// A token worker `name` signs its reports with (its own credential, derived from the cluster key).
    func workerToken(_ name: String) async throws -> String {
        let signer = await TokenVerifier(secret: WorkerKey.derive(clusterKey: Secret(clusterKey), worker: name))
        return try await signer.sign(CaravanClaims(sub: name, expires: Date().addingTimeInterval(300), role: .worker))
    }

    /// A client token signed with the client secret.
    func clientToken(_ edit: (inout CaravanClaims) -> Void = { _ in }) async throws -> String {
        var claims = CaravanClaims(sub: "tester", expires: Date().addingTimeInterval(600))
        edit(&claims)
        return try await TokenVerifier(secret: Secret(clientSecret)).sign(claims)
    }
}

extension TestClientProtocol {
    /// A request with an optional bearer token and extra headers; the answer's status, headers and body.
    func send(_ method: HTTPRequest.Method, _ path: String, body: String? = nil, rawBody: [UInt8]? = nil, token: String? = nil,
              headers: [(String, String)] = []) async throws -> (status: Int, headers: HTTPFields, body: String) {
        var fields = HTTPFields()
        if let token { fields[.authorization] = "Bearer \(token)" }
        for (name, value) in headers { if let field = HTTPField.Name(name) { fields.append(HTTPField(name: field, value: value)) } }
        if body != nil || rawBody != nil, fields[.contentType] == nil { fields[.contentType] = "application/json" }
        let buffer = rawBody.map { ByteBuffer(bytes: $0) } ?? body.map { ByteBuffer(string: $0) }
        let response = try await execute(uri: path, method: method, headers: fields, body: buffer)
        return (Int(response.status.code), response.headers, String(buffer: response.body))
    }
}
