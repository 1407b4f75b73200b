import Crypto
import Foundation
import JWTKit
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
@Suite("Security: hostile inputs", .serialized)
struct SecurityTests {
    struct Row {
        var name: String
        var method = "POST"
        var path = "/v1/chat/completions"
        var body: String? = chatBody()
        var rawBody: [UInt8]?
        var token: String??
        var headers: [(String, String)] = []
        var status: Int
        var type: String?
        var code: String?
    }

    /// Runs openssl (test setup only).
    static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TestFailure("openssl \(arguments) failed") }
    }

    /// An ES256 (P-256) or EdDSA (Ed25519) key pair made by openssl.
    static func keyPair(_ directory: URL, _ name: String, algorithm: String) throws -> (privatePEM: String, publicPath: String) {
        let privatePath = directory.appendingPathComponent("\(name).key").path
        let publicPath = directory.appendingPathComponent("\(name).pub").path
        if algorithm == "ES256" {
            try openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", privatePath])
        } else {
            try openssl(["genpkey", "-algorithm", "ed25519", "-out", privatePath])
        }
        try openssl(["pkey", "-in", privatePath, "-pubout", "-out", publicPath])
        return (try String(contentsOfFile: privatePath, encoding: .utf8), publicPath)
    }

    static func rsaKeyPair(_ directory: URL, _ name: String) throws -> (privatePEM: String, publicPath: String) {
        let privatePath = directory.appendingPathComponent("\(name).key").path
        let publicPath = directory.appendingPathComponent("\(name).pub").path
        try openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", privatePath])
        try openssl(["pkey", "-in", privatePath, "-pubout", "-out", publicPath])
        return (try String(contentsOfFile: privatePath, encoding: .utf8), publicPath)
    }

    /// A JWKS document holding the RSA public key in `publicPath` under `kid` (e = 65537).
    static func jwks(kid: String, publicPath: String) throws -> String {
        let process = Process()
        let pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl", "rsa", "-pubin", "-in", publicPath, "-modulus", "-noout"]
        process.standardOutput = pipe
        try process.run()
        process.waitUntilExit()
        let line = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let hex = line.replacingOccurrences(of: "Modulus=", with: "").trimmingCharacters(in: .whitespacesAndNewlines)
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return #"{"keys":[{"kty":"RSA","kid":"\#(kid)","alg":"RS256","use":"sig","n":"\#(base64URL(bytes))","e":"AQAB"}]}"#
    }

    static func base64URL(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// A token assembled by hand (for forged headers and signatures).
    static func rawToken(header: String, payload: String, signature: (Data) -> Data) -> String {
        let input = base64URL(Data(header.utf8)) + "." + base64URL(Data(payload.utf8))
        return input + "." + base64URL(signature(Data(input.utf8)))
    }

    static func sign(_ claims: CaravanClaims, with add: (JWTKeyCollection) async throws -> Void, kid: String?) async throws -> String {
        let keys = JWTKeyCollection()
        try await add(keys)
        return try await keys.sign(claims, kid: kid.map { JWKIdentifier(string: $0) })
    }

    @Test("the hostile-input table")
    func table() async throws {
        var rsa: (privatePEM: String, publicPath: String) = ("", "")
        var rotated: (privatePEM: String, publicPath: String) = ("", "")
        var jwksKey: (privatePEM: String, publicPath: String) = ("", "")
        var ec: (privatePEM: String, publicPath: String) = ("", "")
        var ed: (privatePEM: String, publicPath: String) = ("", "")
        let apiKey = "cvn_test_" + String(repeating: "k", count: 24)
        let apiDigest = SHA256.hash(data: Data(apiKey.utf8)).map { String(format: "%02x", $0) }.joined()
        let cluster = try await TestCluster.start(
            specs: [.init(name: "a", fake: true, env: ["FAKE_TTFB_MS": "0"])],
            hubSettings: """
                max_body_mb: 0.05
                client_idle_timeout: 1s
                cors_origins: ["https://app.example.com"]
                """,
            authSettings: """
                issuer: caravan-tests
                audience: caravan
                keys:
                  - {kid: rsa, alg: RS256, public_key_file: rsa.pub}
                  - {kid: ec, alg: ES256, public_key_file: ec.pub}
                  - {kid: ed, alg: EdDSA, public_key_file: ed.pub}
                jwks_file: jwks.json
                api_keys:
                  - {name: ci, sha256: \(apiDigest)}
                """,
            prepare: { directory in
                rsa = try Self.rsaKeyPair(directory, "rsa")
                ec = try Self.keyPair(directory, "ec", algorithm: "ES256")
                ed = try Self.keyPair(directory, "ed", algorithm: "EdDSA")
                jwksKey = try Self.rsaKeyPair(directory, "jwks1")
                rotated = try Self.rsaKeyPair(directory, "jwks2")
                try Self.jwks(kid: "j1", publicPath: jwksKey.publicPath)
                    .write(to: directory.appendingPathComponent("jwks.json"), atomically: true, encoding: .utf8)
            })
        do {
            let now = Date()
            func claims(_ edit: (inout CaravanClaims) -> Void = { _ in }) -> CaravanClaims {
                var claims = CaravanClaims(sub: "tester", expires: now.addingTimeInterval(600), issuedAt: now,
                                           issuer: "caravan-tests", audience: "caravan")
                edit(&claims)
                return claims
            }
            let client = cluster.secrets.client
            let hs = { (claims: CaravanClaims) in
                try await Self.sign(claims, with: { await $0.add(hmac: HMACKey(from: client), digestAlgorithm: .sha256) }, kid: nil)
            }
            let valid = try await hs(claims())
            let rsaToken = try await Self.sign(claims(), with: {
                await $0.add(rsa: try Insecure.RSA.PrivateKey(pem: rsa.privatePEM), digestAlgorithm: .sha256, kid: "rsa")
            }, kid: "rsa")
            let ecToken = try await Self.sign(claims(), with: {
                await $0.add(ecdsa: try ES256PrivateKey(pem: ec.privatePEM), kid: "ec")
            }, kid: "ec")
            let edToken = try await Self.sign(claims(), with: {
                await $0.add(eddsa: try EdDSA.PrivateKey(pem: ed.privatePEM), kid: "ed")
            }, kid: "ed")
            let jwksToken = try await Self.sign(claims(), with: {
                await $0.add(rsa: try Insecure.RSA.PrivateKey(pem: jwksKey.privatePEM), digestAlgorithm: .sha256, kid: "j1")
            }, kid: "j1")
            let payload = String(decoding: try JSONEncoder().encode(claims()), as: UTF8.self)
            let rsaPublicPEM = try String(contentsOfFile: rsa.publicPath, encoding: .utf8)
            let confusion = Self.rawToken(header: #"{"alg":"HS256","kid":"rsa","typ":"JWT"}"#, payload: payload) { input in
                Data(HMAC<SHA256>.authenticationCode(for: input, using: SymmetricKey(data: Data(rsaPublicPEM.utf8))))
            }
            let unsigned = Self.rawToken(header: #"{"alg":"none","typ":"JWT"}"#, payload: payload) { _ in Data() }
            let unknownKid = try await Self.sign(claims(), with: {
                await $0.add(hmac: HMACKey(from: client), digestAlgorithm: .sha256, kid: "nope")
            }, kid: "nope")
            let otherSecret = try await Self.sign(claims(), with: {
                await $0.add(hmac: HMACKey(from: String(repeating: "x", count: 40)), digestAlgorithm: .sha256)
            }, kid: nil)
            let workerToken = try await Self.sign(
                CaravanClaims(sub: "a", expires: now.addingTimeInterval(600), role: .worker),
                with: { await $0.add(hmac: HMACKey(from: WorkerKey.derive(clusterKey: Secret(cluster.secrets.worker), worker: "a").value),
                                     digestAlgorithm: .sha256) }, kid: nil)
            let big = chatBody().replacingOccurrences(of: "Say hello", with: String(repeating: "x", count: 100_000))

            let rows: [Row] = [
                Row(name: "valid HS256 token", token: .some(valid), status: 200),
                Row(name: "valid RS256 token (PEM key, kid rsa)", token: .some(rsaToken), status: 200),
                Row(name: "valid ES256 token (PEM key, kid ec)", token: .some(ecToken), status: 200),
                Row(name: "valid EdDSA token (PEM key, kid ed)", token: .some(edToken), status: 200),
                Row(name: "valid RS256 token from the JWKS file (kid j1)", token: .some(jwksToken), status: 200),
                Row(name: "valid API key", token: .some(apiKey), status: 200),
                Row(name: "missing Authorization header", token: .some(nil), status: 401, type: "authentication_error", code: "invalid_api_key"),
                Row(name: "wrong scheme (Basic)", token: .some(nil), headers: [("Authorization", "Basic dXNlcjpwYXNz")], status: 401, type: "authentication_error"),
                Row(name: "empty bearer token", token: .some(nil), headers: [("Authorization", "Bearer ")], status: 401, type: "authentication_error"),
                Row(name: "malformed token: 2 segments", token: .some("eyJhbGciOiJIUzI1NiJ9.e30"), status: 401, type: "authentication_error"),
                Row(name: "malformed token: bad base64", token: .some("!!!.@@@.###"), status: 401, type: "authentication_error"),
                Row(name: "malformed token: header not JSON", token: .some("bm90IGpzb24.e30.c2ln"), status: 401, type: "authentication_error"),
                Row(name: "alg none", token: .some(unsigned), status: 401, type: "authentication_error"),
                Row(name: "HS256 signed with the RSA public key (algorithm confusion)", token: .some(confusion), status: 401, type: "authentication_error"),
                Row(name: "wrong signature (other secret)", token: .some(otherSecret), status: 401, type: "authentication_error"),
                Row(name: "unknown kid", token: .some(unknownKid), status: 401, type: "authentication_error"),
                Row(name: "expired (beyond 30 s leeway)", token: .some(try await hs(claims { $0.exp = ExpirationClaim(value: now.addingTimeInterval(-120)) })), status: 401, type: "authentication_error"),
                Row(name: "expired within the leeway", token: .some(try await hs(claims { $0.exp = ExpirationClaim(value: now.addingTimeInterval(-10)) })), status: 200),
                Row(name: "nbf in the future beyond leeway", token: .some(try await hs(claims { $0.nbf = NotBeforeClaim(value: now.addingTimeInterval(300)) })), status: 401, type: "authentication_error"),
                Row(name: "wrong iss", token: .some(try await hs(claims { $0.iss = IssuerClaim(value: "evil") })), status: 401, type: "authentication_error"),
                Row(name: "wrong aud", token: .some(try await hs(claims { $0.aud = AudienceClaim(value: ["other"]) })), status: 401, type: "authentication_error"),
                Row(name: "model not in the models claim", token: .some(try await hs(claims { $0.models = ["llama-*"] })), status: 403, type: "permission_error", code: "model_not_allowed"),
                Row(name: "model matching a models pattern", token: .some(try await hs(claims { $0.models = ["ti*"] })), status: 200),
                Row(name: "alias matching the models claim, its model not (aliases resolved first)", body: chatBody(model: "tiny-chat"),
                    token: .some(try await hs(claims { $0.models = ["tiny-c*"] })), status: 403, type: "permission_error", code: "model_not_allowed"),
                Row(name: "alias of a model the claim allows", body: chatBody(model: "tiny-chat"),
                    token: .some(try await hs(claims { $0.models = ["tiny"] })), status: 200),
                Row(name: "worker token used as a client token", token: .some(workerToken), status: 401, type: "authentication_error"),
                Row(name: "client token used to register a worker", path: "/internal/v1/workers/register", body: "{}", token: .some(valid), status: 401, type: "authentication_error"),
                Row(name: "worker a's credential reporting as worker b", path: "/internal/v1/workers/register",
                    body: #"{"name":"b","url":"http://127.0.0.1:9","version":"x","sequence":1,"models":[],"gpus":[],"in_flight":0,"weight":1}"#,
                    token: .some(workerToken), status: 403, type: "permission_error", code: "worker_name_mismatch"),
                Row(name: "worker report with an absurd slot count (a compromised worker)", path: "/internal/v1/workers/heartbeat",
                    body: #"{"name":"a","url":"http://127.0.0.1:9","version":"x","sequence":99,"models":[{"name":"tiny","aliases":[],"state":"ready","slots_total":10000000,"slots_busy":0}],"gpus":[],"in_flight":0,"weight":1}"#,
                    token: .some(workerToken), status: 400, type: "invalid_request_error", code: "invalid_report"),
                Row(name: "worker report with an infinite weight", path: "/internal/v1/workers/heartbeat",
                    body: #"{"name":"a","url":"http://127.0.0.1:9","version":"x","sequence":99,"models":[],"gpus":[],"in_flight":0,"weight":1e400}"#,
                    token: .some(workerToken), status: 400, type: "invalid_request_error", code: "invalid_report"),
                Row(name: "client token on an admin endpoint", method: "GET", path: "/admin/workers", body: nil, token: .some(valid), status: 403, type: "permission_error", code: "insufficient_role"),
                Row(name: "wrong API key", token: .some("cvn_not_a_key"), status: 401, type: "authentication_error"),
                Row(name: "body over the cap (100 KB > 0.05 MB)", body: big, token: .some(valid), status: 413, type: "invalid_request_error", code: "request_too_large"),
                Row(name: "invalid JSON", body: "{nope", token: .some(valid), status: 400, type: "invalid_request_error", code: "invalid_json"),
                Row(name: "model missing", body: #"{"messages":[]}"#, token: .some(valid), status: 400, type: "invalid_request_error", code: "missing_model"),
                Row(name: "model not a string", body: #"{"model":["tiny"]}"#, token: .some(valid), status: 400, type: "invalid_request_error", code: "invalid_model"),
                Row(name: "non-UTF-8 body", body: nil, rawBody: [0x7B, 0x22, 0x6D, 0xC3, 0x28, 0x22, 0x3A, 0x31, 0x7D], token: .some(valid), status: 400, type: "invalid_request_error", code: "invalid_json"),
                Row(name: "CORS preflight from an allowed origin", method: "OPTIONS", body: nil, token: .some(nil),
                    headers: [("Origin", "https://app.example.com"), ("Access-Control-Request-Method", "POST")], status: 204),
                Row(name: "CORS preflight from another origin", method: "OPTIONS", body: nil, token: .some(nil),
                    headers: [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")], status: 403, type: "permission_error", code: "origin_not_allowed"),
            ]
            for row in rows {
                let reply = try await cluster.request(row.method, row.path, body: row.body, token: row.token ?? .some(nil),
                                                      headers: row.headers, rawBody: row.rawBody)
                print("caravan-security: \(row.name) | \(reply.status) | \(reply.errorType ?? "-") | \(reply.errorCode ?? "-")")
                #expect(reply.status == row.status, "\(row.name): \(reply.body)")
                if let type = row.type { #expect(reply.errorType == type, "\(row.name): \(reply.body)") }
                if let code = row.code { #expect(reply.errorCode == code, "\(row.name): \(reply.body)") }
                if row.status >= 400 && row.method != "OPTIONS" {
                    #expect(reply.json?["error"] is [String: Any], "\(row.name) answers in the envelope")
                }
                if case .some(.some(let token)) = row.token, token.count > 20 {
                    #expect(!reply.body.contains(token), "\(row.name): the error must not echo the credential")
                }
            }
            // /v1/models lists only what the credential may use.
            let all = try await cluster.request("GET", "/v1/models", token: .some(valid))
            #expect(all.body.contains(#""id":"tiny""#), "\(all.body)")
            let limitedList = try await cluster.request("GET", "/v1/models", token: .some(try await hs(claims { $0.models = ["llama-*"] })))
            #expect(limitedList.status == 200 && !limitedList.body.contains("tiny"), "\(limitedList.body)")
            print("caravan-security: /v1/models with models [llama-*] | \(limitedList.status) | lists no other model | -")

            // CORS: an actual request from the allowed origin carries the origin back.
            let cors = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), token: .some(valid),
                                                 headers: [("Origin", "https://app.example.com")])
            #expect(cors.headers.first(name: "access-control-allow-origin") == "https://app.example.com")

            // Key rotation: the JWKS file now holds j2 only; within a second j2 works and j1 is refused.
            try Self.jwks(kid: "j2", publicPath: rotated.publicPath)
                .write(to: cluster.directory.appendingPathComponent("jwks.json"), atomically: true, encoding: .utf8)
            let j2 = try await Self.sign(claims(), with: {
                await $0.add(rsa: try Insecure.RSA.PrivateKey(pem: rotated.privatePEM), digestAlgorithm: .sha256, kid: "j2")
            }, kid: "j2")
            try await cluster.waitUntil("the JWKS file to reload", timeout: .seconds(5)) {
                try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), token: .some(j2)).status == 200
            }
            let retired = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), token: .some(jwksToken))
            #expect(retired.status == 401)
            print("caravan-security: JWKS rotated: new kid j2 | 200 | - | - ; retired kid j1 | \(retired.status)")

            // Rate limit from a token claim: 1 request/s, burst 2 -> the third at once is 429.
            let limited = try await hs(claims {
                $0.sub = SubjectClaim(value: "limited")
                $0.rps = 1
                $0.burst = 2
            })
            var statuses: [Int] = []
            var retryAfter: String?
            for _ in 0..<3 {
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), token: .some(limited))
                statuses.append(reply.status)
                if reply.status == 429 {
                    retryAfter = reply.headers.first(name: "retry-after")
                    #expect(reply.errorType == "rate_limit_error" && reply.errorCode == "rate_limit_exceeded")
                }
            }
            #expect(statuses == [200, 200, 429])
            #expect(retryAfter != nil)
            print("caravan-security: over the rate limit (rps 1, burst 2; third request) | \(statuses.last!) | rate_limit_error | rate_limit_exceeded")

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

            // Secrets never appear in what the hub and worker print or in the admin view.
            let admin = try await cluster.request("GET", "/admin/workers", token: .some(cluster.adminToken))
            let printed = (cluster.hub.output + cluster.workers.values.flatMap(\.output)).joined(separator: "\n")
            for secret in [cluster.secrets.client, cluster.secrets.worker, apiKey, valid] {
                #expect(!printed.contains(secret), "a secret or token appeared in the logs")
                #expect(!admin.body.contains(secret), "a secret appeared in /admin/workers")
            }
        } catch {
            await cluster.shutdown()
            throw error
        }
        await cluster.shutdown()
    }
}

@Suite("Security: --no-auth", .serialized)
struct NoAuthTests {
    @Test("--no-auth answers only loopback Host names, refuses cross-site browser requests, keeps admin closed", arguments: [false, true])
    func noAuth(admin: Bool) async throws {
        let spec = TestCluster.WorkerSpec(name: "a", fake: true)
        try await TestCluster.start(specs: [spec], hubArguments: ["--no-auth"] + (admin ? ["--no-auth-admin"] : [])).using { cluster in
            let plain = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), token: .some(nil))
            #expect(plain.status == 200, "\(plain.body)")
            // DNS rebinding: the page's own name in Host.
            let rebound = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), token: .some(nil),
                                                    headers: [("Host", "evil.example:8080")])
            #expect(rebound.status == 403 && rebound.errorCode == "host_not_allowed", "\(rebound.body)")
            // A web page's simple (no preflight) POST.
            let crossSite = try await cluster.request("POST", "/v1/chat/completions", token: .some(nil),
                                                      headers: [("Origin", "https://evil.example"), ("Content-Type", "text/plain")],
                                                      rawBody: Array(chatBody().utf8))
            #expect(crossSite.status == 403 && crossSite.errorCode == "origin_not_allowed", "\(crossSite.body)")
            let crossSiteAdmin = try await cluster.request("GET", "/admin/workers", token: .some(nil),
                                                           headers: [("Origin", "https://evil.example")])
            #expect(crossSiteAdmin.status == 403)
            let localPage = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(), token: .some(nil),
                                                      headers: [("Origin", "http://localhost:8080")])
            #expect(localPage.status == 200, "\(localPage.body)")
            let adminReply = try await cluster.request("GET", "/admin/workers", token: .some(nil))
            if admin {
                #expect(adminReply.status == 200, "\(adminReply.body)")
            } else {
                #expect(adminReply.status == 403 && adminReply.errorCode == "admin_closed", "\(adminReply.body)")
            }
            print("caravan-security: --no-auth\(admin ? " --no-auth-admin" : ""): foreign Host \(rebound.status), "
                + "cross-site text/plain POST \(crossSite.status), admin \(adminReply.status)")
        }
    }
}

@Suite("Security: TLS and the worker's data plane", .serialized)
struct TransportSecurityTests {
    /// A test CA and a certificate for 127.0.0.1 signed by it.
    static func certificates(_ directory: URL) throws {
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
        try SecurityTests.openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=caravan-test-ca",
                                   "-keyout", path("ca.key"), "-out", path("ca.crt")])
        try SecurityTests.openssl(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                                   "-keyout", path("server.key"), "-out", path("server.csr")])
        try "subjectAltName=IP:127.0.0.1\n".write(toFile: path("san.ext"), atomically: true, encoding: .utf8)
        try SecurityTests.openssl(["x509", "-req", "-in", path("server.csr"), "-CA", path("ca.crt"), "-CAkey", path("ca.key"),
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
            do {
                _ = try await strict.execute(UpstreamRequest(url: workerURL + "/health", method: .GET, headers: [], body: ByteBuffer()),
                                             headTimeout: .seconds(5), idleTimeout: .seconds(5), maxBufferedBody: 1024)
                Issue.record("an untrusted worker certificate was accepted")
            } catch let error as UpstreamError {
                #expect(error.description.hasPrefix("TLS: "), "\(error)")
            }
            try await untrusting.shutdown()
        }
    }

    @Test("the worker's data plane accepts only the hub's credential")
    func dataPlane() async throws {
        try await TestCluster.start(specs: [.init(name: "a", fake: true)]).using { cluster in
            let url = try #require(try await cluster.admin().first?["url"] as? String)
            for (label, authorization) in [("no credential", nil), ("a client token", "Bearer \(cluster.clientToken)"),
                                           ("an admin token", "Bearer \(cluster.adminToken)")] as [(String, String?)] {
                var request = HTTPClientRequest(url: url + "/v1/chat/completions")
                request.method = .POST
                if let authorization { request.headers.add(name: "Authorization", value: authorization) }
                request.body = .bytes(ByteBuffer(string: chatBody()))
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
                let body = try await response.body.collect(upTo: 1 << 20)
                print("caravan-security: worker data plane called directly with \(label) | \(response.status.code) | - | -")
                #expect(response.status.code == 401, "\(label): \(String(buffer: body))")
            }
        }
    }
}
