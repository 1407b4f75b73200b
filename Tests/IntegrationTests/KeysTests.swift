import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TestSupport

/// Managed keys, limits and the ledger against a running hub and the real llama-server:
/// keys made by `caravan-hub keys` and the admin API, scopes, OpenAI's rate-limit headers,
/// revocation, usage reports, and a restart that keeps it all.
@Suite("Keys, limits and the ledger", .serialized)
struct KeysTests {
    @Test("a key from `caravan-hub keys create`: scoped, limited, headers on every answer, never logged, usage by key and model, revoked within a second, all kept across a restart")
    func managedKeyLifecycle() async throws {
        try await TestCluster.start(workers: ["a"]).using { cluster in
            let secret = try cluster.hubCommand(["keys", "create", "--config", cluster.configPath, "--name", "team-a", "--models", "tiny",
                                                 "--rpm", "600", "--tpm", "100000", "--budget", "5M/month", "--parallel", "8",
                                                 "--expires", "90d"])
            #expect(secret.hasPrefix("sk-caravan-") && secret.count > 40)
            // The running hub picks the key up from the store (checked every second).
            try await cluster.waitUntil("the hub accepts the new key", timeout: .seconds(5)) {
                try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 4), token: .some(secret)).status == 200
            }
            let answer = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 4), token: .some(secret))
            #expect(answer.status == 200)
            #expect(answer.headers.first(name: "x-ratelimit-limit-requests") == "600")
            #expect(Int(answer.headers.first(name: "x-ratelimit-remaining-requests") ?? "") ?? 600 < 600)
            #expect(answer.headers.first(name: "x-ratelimit-limit-tokens") == "100000")
            #expect(Int(answer.headers.first(name: "x-ratelimit-remaining-tokens") ?? "") ?? 100_000 < 100_000)
            #expect(answer.headers.first(name: "x-ratelimit-reset-tokens")?.isEmpty == false)
            let streamed = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 4, stream: true),
                                                     token: .some(secret))
            #expect(streamed.status == 200 && streamed.headers.first(name: "x-ratelimit-limit-requests") == "600")
            // Scoped to tiny: another declared model is refused before routing.
            let other = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(model: "ghost"), token: .some(secret))
            #expect(other.status == 403, "\(other.body)")

            let listed = try cluster.hubCommand(["keys", "ls", "--config", cluster.configPath])
            #expect(listed.contains("team-a\tactive\ttiny\t600\t100000\t5M/month hard\t8"), "\(listed)")
            #expect(!listed.contains(secret))

            // Usage by key and model, from the ledger (this hub's pending rows included).
            let successes = 3  // the first accepted request, the plain one and the streamed one
            let usage = try await cluster.request("GET", "/admin/usage?group_by=key,model", token: .some(cluster.adminToken))
            let line = try #require((usage.json?["usage"] as? [[String: Any]])?.first { $0["key"] as? String == "key:team-a" && $0["model"] as? String == "tiny" })
            #expect(line["requests"] as? Int == successes)
            #expect((line["prompt_tokens"] as? Int ?? 0) > 0 && (line["completion_tokens"] as? Int ?? 0) > 0)
            let csv = try await cluster.request("GET", "/admin/usage?group_by=key,model&format=csv", token: .some(cluster.adminToken))
            #expect(csv.contentType?.hasPrefix("text/csv") == true)
            #expect(csv.body.hasPrefix("key,model,requests,errors,prompt_tokens,completion_tokens,cached_tokens,total_tokens\n"))
            #expect(csv.body.contains("\nkey:team-a,tiny,\(successes),0,"), "\(csv.body)")

            // Revoked by the CLI: refused by the running hub within a second or so.
            _ = try cluster.hubCommand(["keys", "revoke", "--config", cluster.configPath, "team-a"])
            let revokedAt = ContinuousClock.now
            var servedWhileRevoking = 0  // requests still served before the hub saw the revocation
            try await cluster.waitUntil("the revoked key is refused", timeout: .seconds(5)) {
                let status = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 1), token: .some(secret)).status
                if status == 200 { servedWhileRevoking += 1 }
                return status == 401
            }
            print("caravan-keys: revocation took effect in \(ContinuousClock.now - revokedAt)")
            let refused = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 1), token: .some(secret))
            #expect(refused.errorCode == "invalid_api_key" || refused.json.map { "\($0)" }?.contains("revoked") == true, "\(refused.body)")
            #expect(!cluster.hub.output.joined().contains(secret), "the key must never reach the hub's log")

            // A restart keeps keys and usage: the ledger's last rows are written at SIGTERM.
            await cluster.hub.stop()
            let again = try await cluster.startHub(name: "hub-again")
            defer { Task { await again.process.stop() } }
            let kept = try await Self.get(again.url + "/admin/usage?group_by=key,model", token: cluster.adminToken, client: cluster.client)
            let keptLine = try #require(try (JSONSerialization.jsonObject(with: Data(kept.utf8)) as? [String: Any])?["usage"] as? [[String: Any]])
                .first { $0["key"] as? String == "key:team-a" && $0["model"] as? String == "tiny" }
            #expect(keptLine?["requests"] as? Int == successes + servedWhileRevoking, "\(kept)")
            let show = try cluster.hubCommand(["keys", "show", "--config", cluster.configPath, "team-a"])
            #expect(show.contains("\"status\" : \"revoked\""), "\(show)")
            await again.process.stop()
        }
    }

    @Test("the openai SDK paces itself by the headers: a 429 over rpm is retried after Retry-After and served; a spent budget is answered budget_exceeded and not retried")
    func openAISDKAgainstLimits() async throws {
        try await TestCluster.start(workers: ["a"]).using { cluster in
            // One key through the admin API (shown once in its answer), one through the CLI.
            let made = try await cluster.request("POST", "/admin/keys", body: #"{"name":"sdk","rpm":60}"#, token: .some(cluster.adminToken))
            #expect(made.status == 201, "\(made.body)")
            let paced = try #require(made.json?["key"] as? String)
            let listed = try await cluster.request("GET", "/admin/keys", token: .some(cluster.adminToken))
            #expect(!listed.body.contains(paced) && listed.body.contains("\"name\":\"sdk\""))
            let small = try cluster.hubCommand(["keys", "create", "--config", cluster.configPath, "--name", "small", "--budget", "300/day"])
            try await cluster.waitUntil("the hub accepts the CLI's key", timeout: .seconds(5)) {
                try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 1), token: .some(small)).status == 200
            }
            let script = """
                import json, sys, time, urllib.request, urllib.error
                from openai import OpenAI, RateLimitError
                base, paced, small = sys.argv[1], sys.argv[2], sys.argv[3]
                body = {"model": "tiny", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
                def post():
                    request = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(),
                        headers={"Authorization": "Bearer " + paced, "Content-Type": "application/json"})
                    try:
                        with urllib.request.urlopen(request, timeout=30) as answer:
                            answer.read()
                            return answer.status, answer.headers
                    except urllib.error.HTTPError as error:
                        return error.code, error.headers
                burst = [post()[0] for _ in range(60)]
                over_status, over_headers = post()
                client = OpenAI(base_url=base + "/v1", api_key=paced, max_retries=3)
                started = time.monotonic()
                served = client.chat.completions.with_raw_response.create(**body)
                waited = time.monotonic() - started
                spender = OpenAI(base_url=base + "/v1", api_key=small, max_retries=2)
                calls, code, retry_after = 0, None, None
                for _ in range(20):
                    calls += 1
                    try:
                        spender.chat.completions.create(model="tiny", max_tokens=120, messages=[{"role": "user", "content": "hi"}])
                    except RateLimitError as e:
                        code, retry_after = e.code, e.response.headers.get("retry-after")
                        break
                print(json.dumps({"burst": burst.count(200), "over": over_status,
                                  "over_retry_after": over_headers.get("retry-after"),
                                  "over_remaining": over_headers.get("x-ratelimit-remaining-requests"),
                                  "served": served.http_response.status_code, "waited": waited,
                                  "budget_code": code, "budget_retry_after": retry_after, "calls": calls}))
                """
            let python = try ManagedProcess(name: "openai", executable: URL(fileURLWithPath: "/usr/bin/env"),
                                            arguments: ["python3", "-c", script, cluster.hubURL, paced, small])
            let line = try await python.waitForLine(containing: "{\"burst\"", timeout: .seconds(120))
            let result = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            print("caravan-keys: sdk \(line)")
            #expect(result["burst"] as? Int == 60)
            #expect(result["over"] as? Int == 429)
            #expect(result["over_retry_after"] as? String == "1")
            #expect(result["over_remaining"] as? String == "0")
            #expect(result["served"] as? Int == 200)
            #expect((result["waited"] as? Double ?? 0) >= 0.5, "the SDK waited for Retry-After before its retry")
            #expect(result["budget_code"] as? String == "budget_exceeded")
            #expect(Int(result["budget_retry_after"] as? String ?? "") ?? 0 > 1)
            // The SDK did not retry the budget's 429 (x-should-retry: false): the ledger has one
            // refusal for the key, and no request beyond the script's calls and the first check.
            // A request's row is recorded once its answer is written, so the client may see the
            // refusal a moment before the ledger has it: wait for it (then nothing more may come).
            var usage = try await cluster.request("GET", "/admin/usage?group_by=key", token: .some(cluster.adminToken))
            let deadline = ContinuousClock.now + .seconds(5)
            while ContinuousClock.now < deadline,
                  (usage.json?["usage"] as? [[String: Any]])?.first(where: { $0["key"] as? String == "key:small" })?["errors"] as? Int != 1 {
                try await Task.sleep(for: .milliseconds(50))
                usage = try await cluster.request("GET", "/admin/usage?group_by=key", token: .some(cluster.adminToken))
            }
            let spent = try #require((usage.json?["usage"] as? [[String: Any]])?.first { $0["key"] as? String == "key:small" })
            #expect(spent["errors"] as? Int == 1, "\(usage.body)")
            #expect(spent["requests"] as? Int == 1 + (result["calls"] as? Int ?? 0), "\(usage.body)")
        }
    }

    @Test("kill -9 of the hub under load loses at most its last second of ledger rows (the write interval is 250 ms); the store reopens intact and counts the rest")
    func killedHubLosesLittle() async throws {
        try await TestCluster.start(specs: [.init(name: "a", fake: true)]).using { cluster in
            // Requests one after another, each finish time noted, then SIGKILL right after the last.
            var finished: [ContinuousClock.Instant] = []
            for _ in 0..<400 {
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 1))
                #expect(reply.status == 200)
                finished.append(.now)
            }
            cluster.hub.kill9()
            let killedAt = ContinuousClock.now
            let again = try await cluster.startHub(name: "hub-after-kill")
            let usage = try await Self.get(again.url + "/admin/usage?group_by=key", token: cluster.adminToken, client: cluster.client)
            await again.process.stop()
            let line = (try JSONSerialization.jsonObject(with: Data(usage.utf8)) as? [String: Any])?["usage"] as? [[String: Any]]
            let counted = line?.first { $0["key"] as? String == "tests" }?["requests"] as? Int ?? 0
            let lost = finished.count - counted
            let lastSecond = finished.filter { killedAt - $0 <= .seconds(1) }.count
            print("caravan-keys: kill -9 after \(finished.count) requests: \(counted) in the ledger, \(lost) lost "
                  + "(\(lastSecond) finished in the last second before the kill)")
            #expect(lost >= 0 && lost <= lastSecond, "lost \(lost) rows; \(lastSecond) requests finished in the last second")
        }
    }

    static func get(_ url: String, token: String, client: HTTPClient) async throws -> String {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        let response = try await client.execute(request, timeout: .seconds(30))
        return String(buffer: try await response.body.collect(upTo: 1 << 20))
    }
}
