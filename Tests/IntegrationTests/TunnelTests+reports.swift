import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
@testable import TestSupport

/// A worker behind NAT needs nothing but its tunnel: its reports (registration, heartbeats,
/// leaving) ride it too.
extension TunnelTests {
    @Test("a worker behind NAT needs only its tunnel: it registers and stays live by the reports the hub reads over it (its hub URL's HTTP port dead), and leaves at once on SIGTERM",
          .timeLimit(.minutes(2)))
    func reportsOverTheTunnel() async throws {
        let tunnelPort = try freePort()
        let cluster = try await TestCluster.start(
            specs: [.init(name: "nat", fake: true, extra: "connect: outbound\ntunnel_port: \(tunnelPort)")],
            hubSettings: "tunnel_listen: \"127.0.0.1:\(tunnelPort)\"", heartbeat: "500ms")
        try await cluster.using { cluster in
            // SIGTERM: its report stream says `leaving`, and the hub drops it at once (not after 3 missed reports).
            let first = try #require(cluster.workers["nat"])
            await first.stop()
            #expect(cluster.hub.output.contains { $0.contains("worker deregistered") && $0.contains("over=tunnel") }, "\(cluster.hub.output.suffix(5))")
            #expect(try await cluster.admin().isEmpty)

            // Again, with nothing listening at its hub URL: only the tunnel port is reachable.
            let dead = "http://127.0.0.1:\(try freePort())"
            let worker = try TestCluster.startWorker("nat", configPath: cluster.configPath, hubURL: dead)
            do {
                try await cluster.waitForLiveWorkers(1)
                #expect(try await cluster.request("POST", "/v1/chat/completions", body: Self.quick).status == 200)
                // Six report intervals later (twice the expiry) it is still live: reports keep it so.
                try await Task.sleep(for: .seconds(3))
                #expect(try await cluster.admin().first?["name"] as? String == "nat")
                #expect(!worker.output.contains { $0.contains("cannot reach hub") }, "it posts no heartbeats")
            } catch {
                await worker.stop()
                throw error
            }
            await worker.stop()
        }
    }
}
