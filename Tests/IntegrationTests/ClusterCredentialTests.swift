import AsyncHTTPClient
import Foundation
import JWTKit
import NIOCore
import NIOHTTP1
import Testing

@testable import Auth
@testable import Config
@testable import Wire
@testable import TestSupport


/// What a stolen worker credential opens, tried against a live hub and two workers: each
/// worker's credential is its own (``WorkerKey``), so it opens nothing but that worker.
@Suite("Security: cluster credentials", .serialized)
struct ClusterCredentialTests {
    /// A token signed with `secret`.
    static func token(_ claims: CaravanClaims, secret: String) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return try await keys.sign(claims)
    }

    static func post(_ url: String, token: String, body: String) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), String(buffer: bytes))
    }

    static func report(_ name: String, url: String = "http://127.0.0.1:9") -> String {
        #"{"name":"\#(name)","url":"\#(url)","version":"x","sequence":1,"models":[],"gpus":[],"in_flight":0,"weight":1}"#
    }

    @Test("the adversary table: a stolen worker credential, a new name, a foreign URL, hub tokens across workers")
    func adversary() async throws {
        let specs = [TestCluster.WorkerSpec(name: "a", fake: true), TestCluster.WorkerSpec(name: "b", fake: true)]
        try await TestCluster.start(specs: specs).using { cluster in
            let stolen = try String(contentsOf: cluster.directory.appendingPathComponent("a.credential"), encoding: .utf8)
            let later = Date().addingTimeInterval(300)
            let register = cluster.hubURL + ControlPath.register
            let urls = Dictionary(uniqueKeysWithValues: try await cluster.admin().map {
                ($0["name"] as? String ?? "", $0["url"] as? String ?? "")
            })
            let urlA = try #require(urls["a"]), urlB = try #require(urls["b"])
            struct Row { var name: String; var url: String; var token: String; var body: String; var status: Int; var code: String? }
            let rows: [Row] = [
                Row(name: "a's credential used to register as b", url: register,
                    token: try await Self.token(CaravanClaims(sub: "b", expires: later, role: .worker), secret: stolen),
                    body: Self.report("b"), status: 401, code: "invalid_api_key"),
                Row(name: "a's credential for a name not in the cluster file", url: register,
                    token: try await Self.token(CaravanClaims(sub: "intruder", expires: later, role: .worker), secret: stolen),
                    body: Self.report("intruder"), status: 403, code: "unknown_worker_name"),
                Row(name: "a registering a data-plane URL on a foreign host", url: register,
                    token: try await Self.token(CaravanClaims(sub: "a", expires: later, role: .worker), secret: stolen),
                    body: Self.report("a", url: "http://203.0.113.7:9101"), status: 403, code: "worker_url_mismatch"),
                Row(name: "a's credential minting a hub token for worker b's data plane", url: urlB + "/v1/chat/completions",
                    token: try await Self.token(CaravanClaims(sub: "hub", expires: later, role: .hub, audience: "b"), secret: stolen),
                    body: chatBody(), status: 401, code: nil),
                Row(name: "a hub token made for worker a, used on worker b", url: urlB + "/v1/chat/completions",
                    token: try await Self.token(CaravanClaims(sub: "hub", expires: later, role: .hub, audience: "a"), secret: stolen),
                    body: chatBody(), status: 401, code: nil),
                Row(name: "a hub token without an audience, on worker a", url: urlA + "/v1/chat/completions",
                    token: try await Self.token(CaravanClaims(sub: "hub", expires: later, role: .hub), secret: stolen),
                    body: chatBody(), status: 401, code: nil),
                Row(name: "a token signed with the cluster's worker key itself, as worker a", url: register,
                    token: try await Self.token(CaravanClaims(sub: "a", expires: later, role: .worker), secret: cluster.secrets.worker),
                    body: Self.report("a"), status: 401, code: "invalid_api_key"),
            ]
            for row in rows {
                let reply = try await Self.post(row.url, token: row.token, body: row.body)
                let code = ((try? JSONSerialization.jsonObject(with: Data(reply.body.utf8))) as? [String: Any])
                    .flatMap { $0["error"] as? [String: Any] }?["code"] as? String
                print("caravan-security: \(row.name) | \(reply.status) | \(code ?? "-")")
                #expect(reply.status == row.status, "\(row.name): \(reply.body)")
                if let expected = row.code { #expect(code == expected, "\(row.name): \(reply.body)") }
            }
            // Both workers still serve: nothing above changed their registration.
            for _ in 0..<4 { #expect(try await cluster.request("POST", "/v1/chat/completions", body: chatBody()).status == 200) }
            #expect(try await cluster.admin().count == 2)
        }
    }

    @Test("rotating the worker key: with the old key as previous, workers on old and new credentials both serve")
    func rotation() async throws {
        // Preloaded, so both are loaded and share the traffic (a lazily started pair can leave one unloaded).
        let specs = [TestCluster.WorkerSpec(name: "old", fake: true, preload: true),
                     TestCluster.WorkerSpec(name: "new", fake: true, preload: true)]
        let previous = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        try await TestCluster.start(specs: specs, authSettings: "previous_worker_secret_file: worker.secret.old", prepare: { directory in
            try previous.write(to: directory.appendingPathComponent("worker.secret.old"), atomically: true, encoding: .utf8)
            // Worker "old" still has its credential from the previous key.
            try WorkerKey.derive(clusterKey: Secret(previous), worker: "old").value
                .write(to: directory.appendingPathComponent("old.credential"), atomically: true, encoding: .utf8)
        }).using { cluster in
            for name in ["old", "new"] { try await cluster.waitForModel(name) { $0["state"] as? String == "ready" } }
            var servedBy: Set<String> = []
            for _ in 0..<8 {
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody())
                #expect(reply.status == 200, "\(reply.body)")
                if let name = reply.servedBy { servedBy.insert(name) }
            }
            // The hub signed its requests to each worker with that worker's own generation.
            #expect(servedBy == ["old", "new"])
        }
    }
}

@Suite("Security: joining", .serialized)
struct JoinTests {
    @Test("hub.join: a worker the cluster file does not list joins with a join token, keeps its credential and serves; expired tokens and listed names are refused")
    func join() async throws {
        try await TestCluster.start(specs: [.init(name: "a", fake: true, preload: true)], hubSettings: "join: true").using { cluster in
            let hubBinary = TestCluster.binDirectory.appendingPathComponent("caravan-hub").path
            let token = try runCommand(hubBinary, ["join-token", "--config", cluster.configPath, "--ttl", "10m"])
            #expect(token.split(separator: ".").count == 3)
            // The joining worker's own file: the cluster's, plus its entry (the hub's has none).
            let base = Int.random(in: 580...640) * 100
            let entry = """
                  - name: dyn
                    hubs: ["http://127.0.0.1:1"]
                    listen: "127.0.0.1:0"
                    llama_server: \(TestCluster.binDirectory.appendingPathComponent("FakeEngine").path)
                    ports: "\(base)-\(base + 99)"
                    state_dir: \(cluster.directory.path)
                    credential_file: dyn.credential
                    preload: true
                    models:
                      - {name: tiny, path: /models/tiny.gguf, env: {FAKE_NAME: dyn}}

                """
            let ownFile = cluster.directory.appendingPathComponent("dyn.yaml").path
            try (try String(contentsOfFile: cluster.configPath, encoding: .utf8) + "\n" + entry)
                .write(toFile: ownFile, atomically: true, encoding: .utf8)
            let worker = try ManagedProcess(name: "worker-dyn", executable: TestCluster.binDirectory.appendingPathComponent("caravan-worker"),
                                            arguments: ["--config", ownFile, "--name", "dyn"],
                                            environment: ["CARAVAN_HUB_URL": cluster.hubURL, "CARAVAN_JOIN_TOKEN": token])
            do {
                try await cluster.waitForLiveWorkers(2)
                for name in ["a", "dyn"] { try await cluster.waitForModel(name) { $0["state"] as? String == "ready" } }
                var servedBy: Set<String> = []
                for _ in 0..<8 {
                    let reply = try await cluster.request("POST", "/v1/chat/completions", body: chatBody())
                    #expect(reply.status == 200)
                    servedBy.insert(reply.servedBy ?? "?")
                }
                #expect(servedBy.contains("dyn"), "\(servedBy)")
                let saved = try String(contentsOf: cluster.directory.appendingPathComponent("dyn.credential"), encoding: .utf8)
                #expect(saved == WorkerKey.derive(clusterKey: Secret(cluster.secrets.worker), worker: "dyn").value)
            } catch {
                await worker.stop()
                throw error
            }
            await worker.stop()

            let joinURL = cluster.hubURL + ControlPath.join
            let joinKey = WorkerKey.joinKey(clusterKey: Secret(cluster.secrets.worker)).value
            let expired = try await ClusterCredentialTests.token(
                CaravanClaims(sub: "join", expires: Date().addingTimeInterval(-120), role: .join), secret: joinKey)
            let stolenWorker = try await ClusterCredentialTests.token(
                CaravanClaims(sub: "a", expires: Date().addingTimeInterval(60), role: .worker),
                secret: WorkerKey.derive(clusterKey: Secret(cluster.secrets.worker), worker: "a").value)
            for (label, bearer, name, status) in [
                ("an expired join token", expired, "late", 401),
                ("a worker credential used as a join token", stolenWorker, "other", 401),
                ("a join token for a name the cluster file lists", token, "a", 403),
            ] {
                let reply = try await ClusterCredentialTests.post(joinURL, token: bearer, body: #"{"name":"\#(name)"}"#)
                print("caravan-security: join with \(label) | \(reply.status)")
                #expect(reply.status == status, "\(label): \(reply.body)")
                #expect(!reply.body.contains("credential\":"), "\(label): no credential handed out")
            }
        }
    }

    @Test("a hub without hub.join refuses join tokens and unlisted names")
    func joinDisabled() async throws {
        try await TestCluster.start(specs: [.init(name: "a", fake: true)]).using { cluster in
            let joinKey = WorkerKey.joinKey(clusterKey: Secret(cluster.secrets.worker)).value
            let token = try await ClusterCredentialTests.token(
                CaravanClaims(sub: "join", expires: Date().addingTimeInterval(600), role: .join), secret: joinKey)
            let reply = try await ClusterCredentialTests.post(cluster.hubURL + ControlPath.join, token: token, body: #"{"name":"dyn"}"#)
            #expect(reply.status == 401 && reply.body.contains("does not let workers join"), "\(reply.body)")
        }
    }
}
