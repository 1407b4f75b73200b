import Crypto
import Foundation
import NIOHTTP1
import Testing
import AsyncHTTPClient
import NIOCore
import Auth
import Config
import Proxy
import TestSupport
import Wire

/// The hostile-input table: each row is a request against a running hub, asserting status
/// and the envelope's `type`/`code`. Observed results are printed as `caravan-security:`
/// lines (copied into docs/security.md).
@Suite("Security: hostile connections", .serialized)
struct SecurityTests {
    /// What needs a real socket and real processes; every credential, claim, body, origin and
    /// admin row runs in-process in `HubTests/HubTableTests`.
    @Test("half-sent requests are dropped, oversized headers get 431 and broken framing 400 in the envelope; pipelined requests across both planes are answered in order; no secret is ever logged")
    func connections() async throws {
        let apiKey = "cvn_test_" + String(repeating: "k", count: 24)
        let apiDigest = SHA256.hash(data: Data(apiKey.utf8)).map { String(format: "%02x", $0) }.joined()
        try await TestCluster.start(
            specs: [.init(name: "a", fake: true, env: ["FAKE_TTFB_MS": "0"])],
            hubSettings: "client_idle_timeout: 1s",
            authSettings: """
                api_keys:
                  - {name: ci, sha256: \(apiDigest)}
                """
        ).using { cluster in
            let valid = cluster.clientToken
            let forged = String(valid.dropLast(4)) + "AAAA"
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), token: .some(valid)).status == 200)
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), token: .some(apiKey)).status == 200)
            #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), token: .some(forged)).status == 401)

            // A client that opens a connection and sends half a request is dropped (slowloris).
            let dropped = try slowClientIsDropped(hubURL: cluster.hubURL, within: .seconds(5))
            #expect(dropped, "a half-sent request must not hold the connection")
            print("caravan-security: half-sent request, then silence (client_idle_timeout 1s) | connection closed | - | -")

            // Oversized headers: 431 in the OpenAI envelope, and the answer reaches the client
            // although it was still sending (lingering close).
            let huge = try rawExchange(hubURL: cluster.hubURL,
                                       "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(valid)\r\n"
                                       + "X-Padding: \(String(repeating: "p", count: 40_000))\r\nContent-Length: 2\r\n\r\n{}")
            #expect(huge.hasPrefix("HTTP/1.1 431"), "\(huge.prefix(200))")
            #expect(huge.contains(#""code":"headers_too_large""#) && huge.contains(#""type":"invalid_request_error""#))
            print("caravan-security: 40 KB header (max_header_kb 32) | 431 | invalid_request_error | headers_too_large")
            // Broken framing: 400 in the envelope.
            let broken = try rawExchange(hubURL: cluster.hubURL, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
            #expect(broken.hasPrefix("HTTP/1.1 400"), "\(broken.prefix(200))")
            #expect(broken.contains(#""code":"malformed_http""#))
            print("caravan-security: malformed HTTP (Content-Length: nope) | 400 | invalid_request_error | malformed_http")

            // Pipelined requests on one connection, across both planes (Hummingbird's /health and
            // the data plane's completions): the answers come back whole and in request order.
            let body = chatBody()
            let chat = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(valid)\r\n"
                + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            let health = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            let closing = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            let pipelined = try rawExchange(hubURL: cluster.hubURL, health + chat + chat + health + chat + closing)
            let answers = pipelined.components(separatedBy: "HTTP/1.1 ").dropFirst()
            #expect(answers.map { $0.hasPrefix("200") } == Array(repeating: true, count: 6), "\(pipelined.prefix(600))")
            #expect(answers.map { $0.contains("chat.completion") } == [false, true, true, false, true, false],
                    "answers out of order: \(pipelined.prefix(600))")
            print("caravan-security: 6 pipelined requests, both planes interleaved | 6 × 200 in order | - | -")

            // Secrets never appear in what the hub and worker print or in the admin view.
            let admin = try await cluster.request("GET", "/admin/workers", token: .some(cluster.adminToken))
            let printed = (cluster.hub.output + cluster.workers.values.flatMap(\.output)).joined(separator: "\n")
            for secret in [cluster.secrets.client, cluster.secrets.worker, apiKey, valid, forged] {
                #expect(!printed.contains(secret), "a secret or token appeared in the logs")
                #expect(!admin.body.contains(secret), "a secret appeared in /admin/workers")
            }
        }
    }
}

@Suite("Security: TLS and the worker's data plane", .serialized)
struct TransportSecurityTests {
    /// A test CA and a certificate for 127.0.0.1 signed by it.
    static func certificates(_ directory: URL) throws {
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
        try TestKeys.openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=caravan-test-ca",
                                   "-keyout", path("ca.key"), "-out", path("ca.crt")])
        try TestKeys.openssl(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                                   "-keyout", path("server.key"), "-out", path("server.csr")])
        try "subjectAltName=IP:127.0.0.1\n".write(toFile: path("san.ext"), atomically: true, encoding: .utf8)
        try TestKeys.openssl(["x509", "-req", "-in", path("server.csr"), "-CA", path("ca.crt"), "-CAkey", path("ca.key"),
                                   "-CAcreateserial", "-days", "2", "-extfile", path("san.ext"), "-out", path("server.crt")])
    }

    @Test("hub and worker serve HTTPS; the worker verifies the hub against a CA; clients get answers over TLS")
    func tls() async throws {
        try await TestCluster.start(
            specs: [.init(name: "a", fake: true, extra: """
                tls: {cert_file: server.crt, key_file: server.key}
                hub_ca_file: ca.crt
                """)],
            hubSettings: """
                tls: {cert_file: server.crt, key_file: server.key}
                worker_ca_file: ca.crt
                """,
            trusting: "ca.crt", prepare: Self.certificates).using { cluster in
            #expect(cluster.hubURL.hasPrefix("https://"))
            let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody())
            #expect(reply.status == 200, "\(reply.body)")
            let worker = try #require(try await cluster.admin().first)
            #expect((worker["url"] as? String)?.hasPrefix("https://") == true, "the data plane is HTTPS too")
            // A client that does not trust the CA cannot talk to the hub.
            var request = HTTPClientRequest(url: cluster.hubURL + "/health")
            request.method = .GET
            var configuration = HTTPClient.Configuration()
            configuration.connectionPool.retryConnectionEstablishment = false
            let untrusting = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            await #expect(throws: (any Error).self) { _ = try await untrusting.execute(request, timeout: .seconds(5)) }
            // The hub's data plane client refuses a worker whose certificate it cannot verify, and says why.
            let workerURL = try #require(worker["url"] as? String)
            let strict = UpstreamClient(connectTimeout: .seconds(2))
            defer { strict.shutdown() }
            let options = UpstreamForwarder.Options(headTimeout: .seconds(5), idleTimeout: .seconds(5))
            try await RelayServer.serving(to: workerURL + "/health", client: strict, options: options) { relay in
                let client = HTTPClient(eventLoopGroupProvider: .singleton)
                var probe = HTTPClientRequest(url: relay.url + "/health")
                probe.method = .GET
                let answer = try await client.execute(probe, timeout: .seconds(10))
                let body = String(buffer: try await answer.body.collect(upTo: 1 << 16))
                try await client.shutdown()
                #expect(answer.status == .badGateway, "an untrusted worker certificate was accepted: \(body)")
                #expect(envelope(body)?.code == "transport" && body.contains("TLS: "), "\(body)")
            }
            try await untrusting.shutdown()
        }
    }
}
