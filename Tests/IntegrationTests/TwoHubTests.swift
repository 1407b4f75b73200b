import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
@testable import TestSupport

/// Two hubs sharing two workers, all real processes with the real llama-server: traffic
/// through both, the workers' own admission bound holding across hubs, and `kill -9` of one
/// hub while clients fail over to the other.
@Suite("Two hubs", .serialized)
struct TwoHubTests {
    /// A streamed chat long enough to overlap with the others (the tiny model makes ~10k tokens/s).
    static let longStream = #"{"model":"tiny","messages":[{"role":"user","content":"Say hello"}],"max_tokens":500,"ignore_eos":true,"stream":true}"#

    /// A client that opens as many connections as the test has streams (AsyncHTTPClient's
    /// default is 8 per host, which would cap the burst).
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// POSTs a chat to one hub; the status and the whole body.
    static func chat(_ cluster: TestCluster, hub: String, body: String, timeout: TimeAmount = .seconds(120))
        async throws -> (status: Int, body: String)
    {
        var request = HTTPClientRequest(url: hub + "/v1/chat/completions")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(cluster.clientToken)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await client.execute(request, timeout: timeout)
        let bytes = try await response.body.collect(upTo: 16 << 20)
        return (Int(response.status.code), String(buffer: bytes))
    }

    /// One value of a worker's Prometheus exposition, read through a hub's admin relay.
    static func workerMetric(_ cluster: TestCluster, hub: String, worker: String, _ series: String) async throws -> Double? {
        var request = HTTPClientRequest(url: hub + "/admin/workers/\(worker)/metrics")
        request.headers.add(name: "Authorization", value: "Bearer \(cluster.adminToken)")
        let response = try await cluster.client.execute(request, timeout: .seconds(30))
        let text = String(buffer: try await response.body.collect(upTo: 16 << 20))
        let line = text.split(separator: "\n").first { $0.hasPrefix(series + " ") }
        return line.flatMap { $0.split(separator: " ").last.flatMap { Double($0) } }
    }

    static func liveWorkers(_ cluster: TestCluster, hub: String) async -> Int? {
        guard let response = try? await cluster.client.execute(HTTPClientRequest(url: hub + "/health/ready"), timeout: .seconds(5)),
            let bytes = try? await response.body.collect(upTo: 1 << 20),
            let json = try? JSONSerialization.jsonObject(with: Data(String(buffer: bytes).utf8)) as? [String: Any]
        else { return nil }
        return json["live_workers"] as? Int
    }

    @Test("two hubs, two workers: traffic through both, no engine ever holds more than slots x (1 + ahead_per_slot), and after kill -9 of hub A clients retrying on hub B succeed",
          .timeLimit(.minutes(4)))
    func twoHubs() async throws {
        let args = #"["-c", "4096", "--parallel", "4", "-t", "1"]"#
        let specs = ["a", "b"].map { TestCluster.WorkerSpec(name: $0, preload: true, models: TestCluster.tinyModel("tiny", args: args)) }
        let hub = """
            queue: {size: 64, timeout: 60s, ahead_per_slot: 1}
            """
        // Heartbeats as in production (2 s): between two, each hub knows only its own requests.
        let cluster = try await TestCluster.start(specs: specs, hubs: 2, hubSettings: hub, heartbeat: "2s")
        try await cluster.using { cluster in
            let (a, b) = (cluster.hubURL, cluster.otherHubs[0].url)
            try await cluster.waitUntil("hub B to see both workers", timeout: .seconds(20)) { await Self.liveWorkers(cluster, hub: b) == 2 }
            for worker in ["a", "b"] {
                try await cluster.waitForModel(worker, timeout: .seconds(30)) {
                    $0["state"] as? String == "ready" && $0["slots_total"] as? Int == 4
                }
            }

            // 48 concurrent streams against 2 x 4 slots, first all through hub A, then half through
            // each hub. One hub fills 4 x (1 + 1) per engine; two hubs on their own would fill 16.
            for hubs in [[a], [a, b]] {
                let answers = try await withThrowingTaskGroup(of: (Int, Int, String).self) { group in
                    for index in 0..<48 {
                        group.addTask {
                            let answer = try await Self.chat(cluster, hub: hubs[index % hubs.count], body: Self.longStream)
                            return (index % hubs.count, answer.status, answer.body)
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                for hubIndex in hubs.indices {
                    let mine = answers.filter { $0.0 == hubIndex }
                    #expect(mine.count == 48 / hubs.count)
                    #expect(mine.allSatisfy { $0.1 == 200 && $0.2.contains("data: [DONE]") && !$0.2.contains(#""error""#) },
                            "hub \(hubIndex): \(mine.filter { $0.1 != 200 || !$0.2.contains("[DONE]") }.prefix(2).map { "\($0.1) \($0.2.prefix(300))" })")
                }
                var peak: [String: Double] = [:]
                for worker in ["a", "b"] {
                    peak[worker] = try await Self.workerMetric(cluster, hub: b, worker: worker, #"caravan_worker_model_requests_peak{model="tiny"}"#)
                }
                print("\(hubs.count) hub(s), 48 streams: peak requests per engine \(peak.sorted { $0.key < $1.key })")
                // Never over the bound, and the bound was reached (the test measured something).
                #expect(peak.count == 2 && peak.values.allSatisfy { $0 <= 8 } && peak.values.contains { $0 >= 6 }, "\(peak)")
            }

            // kill -9 of hub A: a client that fails on A tries B; every request succeeds there.
            cluster.hub.kill9()
            var failedOver = 0
            // (AsyncHTTPClient retries a refused connect until the request's deadline: the
            // client's own short timeout is what sends it to B, as with any HA client.)
            for _ in 0..<5 {
                let answer: (status: Int, body: String)
                do {
                    answer = try await Self.chat(cluster, hub: a, body: chatBody(), timeout: .seconds(2))
                } catch {
                    failedOver += 1
                    answer = try await Self.chat(cluster, hub: b, body: chatBody())
                }
                #expect(answer.status == 200, "\(answer)")
            }
            #expect(failedOver == 5)
            // Streams through B go on as before.
            let stream = try await Self.chat(cluster, hub: b, body: Self.longStream)
            #expect(stream.status == 200 && stream.body.contains("data: [DONE]"))
            #expect(await Self.liveWorkers(cluster, hub: b) == 2)
        }
    }
}
