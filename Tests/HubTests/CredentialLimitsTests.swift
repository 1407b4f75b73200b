import Auth
import Crypto
import Foundation
import HTTPTypes
import Testing
import TestSupport
import Wire
@testable import Hub

/// The limits a managed key has, carried by a config-file API key and by token claims,
/// through the hub's own data plane (in process, a scripted upstream answering 200).
@Suite("Credential limits")
struct CredentialLimitsTests {
    static let rpm = HTTPField.Name("x-ratelimit-limit-requests")!
    static let tpm = HTTPField.Name("x-ratelimit-limit-tokens")!

    @Test("a config API key's rpm, tpm and budget, and a token's rpm and tpm claims: OpenAI's headers, the too-large refusal, the spent budget not to be retried")
    func configKeysAndClaims() async throws {
        try await ScriptedUpstream.answering { upstream in
            let port = upstream.port
            let apiKey = "cvn_test_" + String(repeating: "q", count: 24)
            let digest = SHA256.hash(data: Data(apiKey.utf8)).map { String(format: "%02x", $0) }.joined()
            let hub = try InProcessHub.make(authSettings: """
                api_keys:
                  - {name: team-c, sha256: \(digest), rpm: 120, tpm: 5000, budget: 100/day}
                """, upstreamPort: port)
            let token = try await hub.clientToken {
                $0.rpm = 30
                $0.tpm = 1000
            }
            try await hub.run(upstreamURL: "http://127.0.0.1:\(port)") { http in
                let keyed = try await http.send(.post, "/v1/chat/completions", body: chatBody(), token: apiKey)
                #expect(keyed.status == 200, "\(keyed.body)")
                #expect(keyed.headers[Self.rpm] == "120" && keyed.headers[Self.tpm] == "5000")
                let claimed = try await http.send(.post, "/v1/chat/completions", body: chatBody(), token: token)
                #expect(claimed.status == 200, "\(claimed.body)")
                #expect(claimed.headers[Self.rpm] == "30" && claimed.headers[Self.tpm] == "1000")
                // More than a whole minute's tokens: refused, and it says why.
                let large = try await http.send(.post, "/v1/chat/completions", body: chatBody(maxTokens: 2000), token: token)
                #expect(large.status == 429 && large.body.contains("tokens_per_minute_exceeded"), "\(large.body)")
                #expect(large.body.contains("more than the 1000 tokens per minute"), "\(large.body)")
                // The key's budget (100 tokens a day; each answer without usage is charged its estimate).
                var statuses: [Int] = []
                var last = keyed
                while statuses.count < 20 {
                    last = try await http.send(.post, "/v1/chat/completions", body: chatBody(), token: apiKey)
                    statuses.append(last.status)
                    if last.status != 200 { break }
                }
                #expect(last.status == 429 && last.body.contains("budget_exceeded"), "\(last.body)")
                #expect(last.headers[RateLimitHeaders.shouldRetry] == "false")
                #expect(Int(last.headers[.retryAfter] ?? "") ?? 0 > 0)
                #expect((2...6).contains(statuses.count), "\(statuses)")
            }
        }
    }

    @Test("the admin keys and usage API answers bad input with envelopes: invalid JSON, a bad budget, name or duration, a taken name, an unknown key (404), a bad group_by, from or format")
    func adminBadInput() async throws {
        try await ScriptedUpstream.answering { upstream in
            let port = upstream.port
            let hub = try InProcessHub.make(upstreamPort: port)
            let admin = try await hub.clientToken { $0.role = .admin }
            try await hub.run(upstreamURL: "http://127.0.0.1:\(port)") { http in
                #expect(try await http.send(.post, "/admin/keys", body: #"{"name":"ok"}"#, token: admin).status == 201)
                let cases: [(String, HTTPRequest.Method, String, String?, Int, String)] = [
                    ("invalid JSON", .post, "/admin/keys", "{oops", 400, "invalid_json"),
                    ("no name", .post, "/admin/keys", #"{"rpm":5}"#, 400, "invalid_json"),
                    ("bad budget", .post, "/admin/keys", #"{"name":"b","budget":"lots"}"#, 400, "invalid_request_body"),
                    ("bad duration", .post, "/admin/keys", #"{"name":"b","expires":"soon"}"#, 400, "invalid_request_body"),
                    ("bad name", .post, "/admin/keys", #"{"name":"a b/c"}"#, 400, "invalid_request_body"),
                    ("zero rpm", .post, "/admin/keys", #"{"name":"z","rpm":0}"#, 400, "invalid_request_body"),
                    ("taken name", .post, "/admin/keys", #"{"name":"ok"}"#, 400, "invalid_request_body"),
                    ("unknown key", .get, "/admin/keys/nope", nil, 404, "not_found"),
                    ("revoke unknown", .post, "/admin/keys/nope/revoke", "", 404, "not_found"),
                    ("bad group_by", .get, "/admin/usage?group_by=worker", nil, 400, "invalid_request_body"),
                    ("bad from", .get, "/admin/usage?from=yesterday", nil, 400, "invalid_request_body"),
                    ("bad format", .get, "/admin/usage?format=xml", nil, 400, "invalid_request_body"),
                ]
                for (label, method, path, body, status, code) in cases {
                    let reply = try await http.send(method, path, body: body, token: admin)
                    #expect(reply.status == status, "\(label): \(reply.body)")
                    #expect(reply.body.contains("\"code\":\"\(code)\""), "\(label): \(reply.body)")
                }
                // A client token is not enough.
                let client = try await hub.clientToken()
                #expect(try await http.send(.get, "/admin/keys", token: client).status == 403)
            }
        }
    }
}
