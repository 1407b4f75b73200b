import Auth
import Config
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Server
import JWTKit
import Testing
import TestSupport
import Wire

@testable import Hub

/// The hub's authentication, error-envelope, CORS and admin tables, in-process: the hub is
/// built by ``HubApplication/build()`` and driven through its router, with worker `a`
/// registered through the control plane in front of an in-process upstream. What needs real
/// sockets (half-sent requests, oversized headers, broken framing) and the processes' logs
/// stays in `IntegrationTests/SecurityTests`.
@Suite("Hub in-process: authentication, envelopes, CORS and admin")
struct HubTableTests {
    struct Row {
        var name: String
        var method: HTTPRequest.Method = .post
        var path = "/v1/chat/completions"
        var body: String? = chatBody()
        var rawBody: [UInt8]?
        var token: String??
        var headers: [(String, String)] = []
        var status: Int
        var type: String?
        var code: String?
    }

    @Test("the hostile-input table: every credential, claim, body and origin row")
    func table() async throws {
        try await ScriptedUpstream.answering { upstream in
            let port = upstream.port
            var rsa: (privatePEM: String, publicPath: String) = ("", "")
            var rotated: (privatePEM: String, publicPath: String) = ("", "")
            var jwksKey: (privatePEM: String, publicPath: String) = ("", "")
            var ec: (privatePEM: String, publicPath: String) = ("", "")
            var ed: (privatePEM: String, publicPath: String) = ("", "")
            let apiKey = "cvn_test_" + String(repeating: "k", count: 24)
            let apiDigest = SHA256.hash(data: Data(apiKey.utf8)).map { String(format: "%02x", $0) }.joined()
            let hub = try InProcessHub.make(
                hubSettings: """
                    max_body_mb: 0.05
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
                upstreamPort: port,
                prepare: { directory in
                    rsa = try TestKeys.rsaKeyPair(directory, "rsa")
                    ec = try TestKeys.keyPair(directory, "ec", algorithm: "ES256")
                    ed = try TestKeys.keyPair(directory, "ed", algorithm: "EdDSA")
                    jwksKey = try TestKeys.rsaKeyPair(directory, "jwks1")
                    rotated = try TestKeys.rsaKeyPair(directory, "jwks2")
                    try TestKeys.jwks(kid: "j1", publicPath: jwksKey.publicPath)
                        .write(to: directory.appendingPathComponent("jwks.json"), atomically: true, encoding: .utf8)
                })
            let (rsaKey, rotatedKey, jwksPair, ecKey, edKey) = (rsa, rotated, jwksKey, ec, ed)
            let now = Date()
            @Sendable func claims(_ edit: (inout CaravanClaims) -> Void = { _ in }) -> CaravanClaims {
                var claims = CaravanClaims(sub: "tester", expires: now.addingTimeInterval(600), issuedAt: now,
                                           issuer: "caravan-tests", audience: "caravan")
                edit(&claims)
                return claims
            }
            let client = hub.clientSecret
            let hs: @Sendable (CaravanClaims) async throws -> String = { claims in
                try await TestKeys.sign(claims, with: { await $0.add(hmac: HMACKey(from: client), digestAlgorithm: .sha256) }, kid: nil)
            }
            let valid = try await hs(claims())
            let rsaToken = try await TestKeys.sign(claims(), with: {
                await $0.add(rsa: try Insecure.RSA.PrivateKey(pem: rsaKey.privatePEM), digestAlgorithm: .sha256, kid: "rsa")
            }, kid: "rsa")
            let ecToken = try await TestKeys.sign(claims(), with: {
                await $0.add(ecdsa: try ES256PrivateKey(pem: ecKey.privatePEM), kid: "ec")
            }, kid: "ec")
            let edToken = try await TestKeys.sign(claims(), with: {
                await $0.add(eddsa: try EdDSA.PrivateKey(pem: edKey.privatePEM), kid: "ed")
            }, kid: "ed")
            let jwksToken = try await TestKeys.sign(claims(), with: {
                await $0.add(rsa: try Insecure.RSA.PrivateKey(pem: jwksPair.privatePEM), digestAlgorithm: .sha256, kid: "j1")
            }, kid: "j1")
            let payload = String(decoding: try JSONEncoder().encode(claims()), as: UTF8.self)
            let rsaPublicPEM = try String(contentsOfFile: rsaKey.publicPath, encoding: .utf8)
            let confusion = TestKeys.rawToken(header: #"{"alg":"HS256","kid":"rsa","typ":"JWT"}"#, payload: payload) { input in
                Data(HMAC<SHA256>.authenticationCode(for: input, using: SymmetricKey(data: Data(rsaPublicPEM.utf8))))
            }
            let unsigned = TestKeys.rawToken(header: #"{"alg":"none","typ":"JWT"}"#, payload: payload) { _ in Data() }
            let unknownKid = try await TestKeys.sign(claims(), with: {
                await $0.add(hmac: HMACKey(from: client), digestAlgorithm: .sha256, kid: "nope")
            }, kid: "nope")
            let otherSecret = try await TestKeys.sign(claims(), with: {
                await $0.add(hmac: HMACKey(from: String(repeating: "x", count: 40)), digestAlgorithm: .sha256)
            }, kid: nil)
            let workerToken = try await hub.workerToken("a")
            let big = chatBody().replacingOccurrences(of: "Say hello", with: String(repeating: "x", count: 100_000))
            let adminToken = try await hs(claims { $0.role = .admin })

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
                    Row(name: "client token on an admin endpoint", method: .get, path: "/admin/workers", body: nil, token: .some(valid), status: 403, type: "permission_error", code: "insufficient_role"),
                    Row(name: "wrong API key", token: .some("cvn_not_a_key"), status: 401, type: "authentication_error"),
                    Row(name: "body over the cap (100 KB > 0.05 MB)", body: big, token: .some(valid), status: 413, type: "invalid_request_error", code: "request_too_large"),
                    Row(name: "invalid JSON", body: "{nope", token: .some(valid), status: 400, type: "invalid_request_error", code: "invalid_json"),
                    Row(name: "model missing", body: #"{"messages":[]}"#, token: .some(valid), status: 400, type: "invalid_request_error", code: "missing_model"),
                    Row(name: "model not a string", body: #"{"model":["tiny"]}"#, token: .some(valid), status: 400, type: "invalid_request_error", code: "invalid_model"),
                    Row(name: "non-UTF-8 body", body: nil, rawBody: [0x7B, 0x22, 0x6D, 0xC3, 0x28, 0x22, 0x3A, 0x31, 0x7D], token: .some(valid), status: 400, type: "invalid_request_error", code: "invalid_json"),
                    Row(name: "CORS preflight from an allowed origin", method: .options, body: nil, token: .some(nil),
                        headers: [("Origin", "https://app.example.com"), ("Access-Control-Request-Method", "POST")], status: 204),
                    Row(name: "CORS preflight from another origin", method: .options, body: nil, token: .some(nil),
                        headers: [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")], status: 403, type: "permission_error", code: "origin_not_allowed"),
                Row(name: "admin token on an admin endpoint", method: .get, path: "/admin/workers", body: nil, token: .some(adminToken), status: 200),
                Row(name: "no token on an admin endpoint", method: .get, path: "/admin/workers", body: nil, token: .some(nil), status: 401, type: "authentication_error"),
                Row(name: "client token on the admin metrics", method: .get, path: "/metrics", body: nil, token: .some(valid), status: 403, type: "permission_error", code: "insufficient_role"),
                Row(name: "a model no worker serves", body: chatBody(model: "nope"), token: .some(valid), status: 404, type: "invalid_request_error", code: "model_not_found"),
                Row(name: "an unknown path", method: .get, path: "/v1/nothing", body: nil, token: .some(valid), status: 404),
            ]
            try await hub.run(upstreamURL: "http://127.0.0.1:\(port)") { http in
                for row in rows {
                    let reply = try await http.send(row.method, row.path, body: row.body, rawBody: row.rawBody, token: row.token ?? nil,
                                                    headers: row.headers)
                    let error = envelope(reply.body)
                    print("caravan-security: \(row.name) | \(reply.status) | \(error?.type ?? "-") | \(error?.code ?? "-")")
                    #expect(reply.status == row.status, "\(row.name): \(reply.body)")
                    if let type = row.type { #expect(error?.type == type, "\(row.name): \(reply.body)") }
                    if let code = row.code { #expect(error?.code == code, "\(row.name): \(reply.body)") }
                    if row.status >= 400 && row.method != .options {
                        #expect(error != nil, "\(row.name) answers in the envelope: \(reply.body)")
                    }
                    if case .some(.some(let token)) = row.token, token.count > 20 {
                        #expect(!reply.body.contains(token), "\(row.name): the error must not echo the credential")
                    }
                }
                // /v1/models lists only what the credential may use.
                let all = try await http.send(.get, "/v1/models", token: valid)
                #expect(all.body.contains(#""id":"tiny""#), "\(all.body)")
                let limitedList = try await http.send(.get, "/v1/models", token: try await hs(claims { $0.models = ["llama-*"] }))
                #expect(limitedList.status == 200 && !limitedList.body.contains("tiny"), "\(limitedList.body)")
                print("caravan-security: /v1/models with models [llama-*] | \(limitedList.status) | lists no other model | -")

                // CORS: an actual request from the allowed origin carries the origin back; another origin gets none.
                let cors = try await http.send(.post, "/v1/chat/completions", body: chatBody(), token: valid,
                                               headers: [("Origin", "https://app.example.com")])
                #expect(cors.headers[HTTPField.Name("Access-Control-Allow-Origin")!] == "https://app.example.com")

                // Key rotation: the JWKS file now holds j2 only; within a second j2 works and j1 is refused.
                try TestKeys.jwks(kid: "j2", publicPath: rotatedKey.publicPath)
                    .write(to: hub.directory.appendingPathComponent("jwks.json"), atomically: true, encoding: .utf8)
                let j2 = try await TestKeys.sign(claims(), with: {
                    await $0.add(rsa: try Insecure.RSA.PrivateKey(pem: rotatedKey.privatePEM), digestAlgorithm: .sha256, kid: "j2")
                }, kid: "j2")
                var rotatedStatus = 0
                for _ in 0..<50 where rotatedStatus != 200 {
                    rotatedStatus = try await http.send(.post, "/v1/chat/completions", body: chatBody(), token: j2).status
                    if rotatedStatus != 200 { try await Task.sleep(for: .milliseconds(100)) }
                }
                #expect(rotatedStatus == 200, "the JWKS file reloads within 5 s")
                let retired = try await http.send(.post, "/v1/chat/completions", body: chatBody(), token: jwksToken).status
                #expect(retired == 401)
                print("caravan-security: JWKS rotated: new kid j2 | \(rotatedStatus) | - | - ; retired kid j1 | \(retired)")

                // Rate limit from a token claim: 1 request/s, burst 2 -> the third at once is 429.
                let limited = try await hs(claims {
                    $0.sub = SubjectClaim(value: "limited")
                    $0.rps = 1
                    $0.burst = 2
                })
                var statuses: [Int] = []
                for _ in 0..<3 {
                    let reply = try await http.send(.post, "/v1/chat/completions", body: chatBody(), token: limited)
                    statuses.append(reply.status)
                    if reply.status == 429 {
                        #expect(reply.headers[.retryAfter] != nil)
                        #expect(envelope(reply.body)?.type == "rate_limit_error" && envelope(reply.body)?.code == "rate_limit_exceeded")
                    }
                }
                #expect(statuses == [200, 200, 429])
                print("caravan-security: over the rate limit (rps 1, burst 2; third request) | \(statuses.last ?? 0) | rate_limit_error | rate_limit_exceeded")
            }
        }
    }

    @Test("errors come back in the OpenAI envelope with the right status; the admin view needs an admin token")
    func envelopesAndAdmin() async throws {
        try await ScriptedUpstream.answering { upstream in
            let port = upstream.port
            let hub = try InProcessHub.make(upstreamPort: port)
            let client = try await hub.clientToken()
            let admin = try await hub.clientToken { $0.role = .admin }
            try await hub.run(upstreamURL: "http://127.0.0.1:\(port)") { http in
                let cases: [(String, String, String?, Int, String)] = [
                    ("no token", chatBody(), nil, 401, "invalid_api_key"),
                    ("garbage token", chatBody(), "not-a-jwt", 401, "invalid_api_key"),
                    ("unknown model", chatBody(model: "nope"), client, 404, "model_not_found"),
                    ("known model, no live worker", chatBody(model: "ghost-alias"), client, 503, "no_worker_available"),
                    ("invalid JSON", "{oops", client, 400, "invalid_json"),
                    ("missing model", #"{"messages":[]}"#, client, 400, "missing_model"),
                    ("model not a string", #"{"model":7}"#, client, 400, "invalid_model"),
                ]
                for (label, body, token, status, code) in cases {
                    let reply = try await http.send(.post, "/v1/chat/completions", body: body, token: token)
                    #expect(reply.status == status, "\(label): \(reply.body)")
                    #expect(envelope(reply.body)?.code == code, "\(label): \(reply.body)")
                    #expect(envelope(reply.body)?.type != nil, "\(label) uses the envelope")
                }
                #expect(try await http.send(.post, "/v1/chat/completions", body: chatBody(), token: client).status == 200)
                let unknownPath = try await http.send(.get, "/v1/nothing", token: client)
                #expect(unknownPath.status == 404 && envelope(unknownPath.body)?.code == "not_found")
                #expect(try await http.send(.get, "/health").status == 200, "health stays open")
                #expect(try await http.send(.get, "/health/ready").status == 200)

                let asClient = try await http.send(.get, "/admin/workers", token: client)
                #expect(asClient.status == 403 && envelope(asClient.body)?.code == "insufficient_role")
                #expect(try await http.send(.get, "/admin/workers").status == 401)
                let view = try await http.send(.get, "/admin/workers", token: admin)
                let object = try JSONSerialization.jsonObject(with: Data(view.body.utf8)) as? [String: Any]
                let workers = try #require(object?["workers"] as? [[String: Any]], "\(view.body)")
                #expect(workers.compactMap { $0["name"] as? String } == ["a"])
                let model = try #require((workers.first?["models"] as? [[String: Any]])?.first)
                #expect(model["breaker"] as? String == "closed")
                #expect(workers.first?["heartbeat_age_ms"] is Int)
            }
        }
    }

    @Test("--no-auth answers only loopback Host names, refuses cross-site browser requests, keeps admin closed", arguments: [false, true])
    func noAuth(admin: Bool) async throws {
        try await ScriptedUpstream.answering { upstream in
            let port = upstream.port
            let hub = try InProcessHub.make(upstreamPort: port)
            try await hub.run(options: HubOptions(noAuth: true, noAuthAdmin: admin), upstreamURL: "http://127.0.0.1:\(port)") { http in
                let host = ("Host", "127.0.0.1:8080")
                let plain = try await http.send(.post, "/v1/chat/completions", body: chatBody(), headers: [host])
                #expect(plain.status == 200, "\(plain.body)")
                // DNS rebinding: the page's own name in Host. (The in-process client always says
                // localhost, so the check the middleware runs is called with such a request.)
                let rebinding = "evil.example:8080"
                #expect(throws: OpenAIError.self) {
                    try LocalOnlyAccess(corsOrigins: [], admin: admin).check(authority: rebinding, origin: nil, admin: false)
                }
                do {
                    try LocalOnlyAccess(corsOrigins: [], admin: admin).check(authority: rebinding, origin: nil, admin: false)
                } catch let error as OpenAIError {
                    #expect(error.code == .hostNotAllowed && error.status == .forbidden)
                }
                // A web page's simple (no preflight) POST.
                let crossSite = try await http.send(.post, "/v1/chat/completions", rawBody: Array(chatBody().utf8),
                                                    headers: [host, ("Origin", "https://evil.example"), ("Content-Type", "text/plain")])
                #expect(crossSite.status == 403 && envelope(crossSite.body)?.code == "origin_not_allowed", "\(crossSite.body)")
                let crossSiteAdmin = try await http.send(.get, "/admin/workers", headers: [host, ("Origin", "https://evil.example")])
                #expect(crossSiteAdmin.status == 403)
                let localPage = try await http.send(.post, "/v1/chat/completions", body: chatBody(),
                                                    headers: [host, ("Origin", "http://localhost:8080")])
                #expect(localPage.status == 200, "\(localPage.body)")
                let adminReply = try await http.send(.get, "/admin/workers", headers: [host])
                if admin {
                    #expect(adminReply.status == 200, "\(adminReply.body)")
                } else {
                    #expect(adminReply.status == 403 && envelope(adminReply.body)?.code == "admin_closed", "\(adminReply.body)")
                }
            }
        }
    }
}
