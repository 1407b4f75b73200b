import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
@testable import TestSupport

/// Workers behind NAT (`connect: outbound`): the worker dials the hub's `tunnel_listen` and
/// the hub forwards over that connection as HTTP/2 streams. Real hub, worker and engine
/// processes; network faults from a loopback TCP proxy the test controls
/// (`scripts/lib/fault-proxy.py`) between the worker and the hub's tunnel port.
@Suite("Tunnel", .serialized)
struct TunnelTests {
    /// The fault proxy: forwards to `target`, faults set through its control file.
    struct FaultProxy {
        let process: ManagedProcess
        let port: Int
        let control: URL

        static func start(to target: Int) async throws -> FaultProxy {
            let control = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-fault-\(UUID().uuidString.prefix(8))")
            try "pass".write(to: control, atomically: true, encoding: .utf8)
            let process = try ManagedProcess(
                name: "fault-proxy", executable: URL(fileURLWithPath: "/usr/bin/env"),
                arguments: ["python3", repositoryRoot.appendingPathComponent("scripts/lib/fault-proxy.py").path, String(target), control.path])
            let line = try await process.waitForLine(containing: "listening on 127.0.0.1:")
            guard let port = line.split(separator: ":").last.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) else {
                throw TestFailure("no port in \(line)")
            }
            return FaultProxy(process: process, port: port, control: control)
        }

        func set(_ mode: String) throws { try mode.write(to: control, atomically: true, encoding: .utf8) }

        func stop() async {
            await process.stop(grace: .milliseconds(200))
            try? FileManager.default.removeItem(at: control)
        }
    }

    /// A request the fake engine answers at once (its per-request token count overrides the slow default).
    static let quick = #"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"fake_tokens":1}"#

    static let longStream = #"{"model":"tiny","messages":[{"role":"user","content":"Say hello"}],"max_tokens":3000,"ignore_eos":true,"stream":true}"#

    /// Sends `line` to the hub's tunnel port and returns what comes back until the hub closes
    /// (or 5 s pass).
    static func tunnelHello(port: Int, _ line: String) -> String {
        guard let fd = try? rawConnection(to: "http://127.0.0.1:\(port)") else { return "no connection" }
        defer { close(fd) }
        _ = line.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1024)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { return n < 0 && received.isEmpty ? "still open" : String(decoding: received, as: UTF8.self) }
            received += buffer[0..<n]
        }
    }

    /// The data-plane URL the hub has for `worker`.
    static func url(_ cluster: TestCluster, _ worker: String) async throws -> String? {
        try await cluster.admin().first { $0["name"] as? String == worker }?["url"] as? String
    }

    @Test("a worker behind NAT (connect: outbound, real llama-server) serves through its tunnel like a direct one: answers, streams, 24 streams at once, and a client hanging up stops the engine",
          .timeLimit(.minutes(3)))
    func servesThroughTunnel() async throws {
        let port = try freePort()
        let cluster = try await TestCluster.start(
            specs: [.init(name: "nat", preload: true, extra: "connect: outbound",
                          models: TestCluster.tinyModel("tiny", args: #"["-c", "8192", "--parallel", "4", "-t", "1"]"#))],
            hubSettings: "tunnel_listen: \"127.0.0.1:\(port)\"")
        try await cluster.using { cluster in
            #expect(try await Self.url(cluster, "nat") == "tunnel://nat")
            // Strangers at the tunnel port: refused on the first line, and nothing they sent is logged.
            #expect(Self.tunnelHello(port: port, "GET / HTTP/1.1\r\n").hasPrefix("ERROR "))
            let stolen = Self.tunnelHello(port: port, "CARAVAN-TUNNEL/1 \(cluster.clientToken)\n")
            #expect(stolen == "ERROR worker credential rejected\n", "\(stolen)")
            #expect(Self.tunnelHello(port: port, String(repeating: "x", count: 9000)) == "", "an endless first line is cut off")
            #expect(!cluster.hub.output.contains { $0.contains(cluster.clientToken) })
            try await cluster.waitForModel("nat", timeout: .seconds(30)) { $0["state"] as? String == "ready" }
            try await cluster.waitUntil("the tunnel to serve", timeout: .seconds(10)) {
                try await cluster.request("POST", "/v1/chat/completions", body: chatBody()).status == 200
            }
            let plain = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 16))
            #expect(plain.status == 200 && plain.json?["choices"] != nil, "\(plain.body)")
            let streamed = try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 16, stream: true))
            #expect(streamed.status == 200 && streamed.contentType?.hasPrefix("text/event-stream") == true)
            #expect(streamed.body.contains("data: [DONE]") && !streamed.body.contains(#""error""#), "\(streamed.body.prefix(500))")
            // Many streams share the one connection.
            let answers = try await withThrowingTaskGroup(of: TestCluster.Reply.self) { group in
                for _ in 0..<24 {
                    group.addTask { try await cluster.request("POST", "/v1/chat/completions", body: chatBody(maxTokens: 64, stream: true)) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(answers.allSatisfy { $0.status == 200 && $0.body.contains("data: [DONE]") })
            // A client that hangs up mid-stream: the stream is cancelled on both hops (the
            // engine's slot frees long before its 3,000 tokens would have ended).
            let fd = try rawRequest(hubURL: cluster.hubURL, token: cluster.clientToken, body: Self.longStream)
            try await cluster.waitForModel("nat") { ($0["slots_busy"] as? Int ?? 0) >= 1 }
            close(fd)
            try await cluster.waitUntil("the hub's request to end", timeout: .seconds(10)) { try await cluster.hubInFlight() == 0 }
            try await cluster.waitForModel("nat", timeout: .seconds(10)) { $0["slots_busy"] as? Int == 0 }
        }
    }

    @Test("tunnel faults: a link dropped mid-stream ends the stream with an error event and the worker serves again within a heartbeat; a partitioned tunnel is closed by its PINGs; kill -9 mid-stream; a hub restart brings the tunnel back",
          .timeLimit(.minutes(3)))
    func faults() async throws {
        let tunnelPort = try freePort()
        let hubPort = try freePort()
        let proxy = try await FaultProxy.start(to: tunnelPort)
        defer { Task { await proxy.stop() } }
        let cluster = try await TestCluster.start(
            specs: [.init(name: "nat", fake: true, env: ["FAKE_TOKENS": "60", "FAKE_TOKEN_MS": "50"], preload: true,
                          extra: "connect: outbound\ntunnel_port: \(proxy.port)")],
            hubSettings: "tunnel_listen: \"127.0.0.1:\(tunnelPort)\"\nidle_timeout: 30s", hubPort: hubPort, heartbeat: "1s")
        try await cluster.using { cluster in
            try await cluster.waitUntil("the tunnel to serve", timeout: .seconds(10)) {
                try await cluster.request("POST", "/v1/chat/completions", body: Self.quick).status == 200
            }

            // The link drops mid-stream: the client gets the final error event, not a hang.
            async let dropped = cluster.request("POST", "/v1/chat/completions", body: chatBody(stream: true))
            try await cluster.waitUntil("the stream to start") { try await cluster.hubInFlight() == 1 }
            try await Task.sleep(for: .milliseconds(300))
            try proxy.set("drop")
            let cut = try await dropped
            let events = cut.body.components(separatedBy: "\n\n").filter { $0.hasPrefix("data: ") }
            #expect(cut.status == 200 && events.count >= 2 && !cut.body.contains("[DONE]"))
            #expect(events.last?.contains("upstream_stream_error") == true, "\(events.last ?? "")")
            // The worker dials again at once: it serves within one heartbeat interval (1 s).
            let dropAt = ContinuousClock.now
            try await cluster.waitUntil("the worker to serve again", timeout: .seconds(1)) {
                let reply = try await cluster.request("POST", "/v1/chat/completions", body: Self.quick)
                if reply.status != 200 { print("after the drop: \(reply.status) \(reply.body.prefix(300))") }
                return reply.status == 200
            }
            print("tunnel: serving again \(ContinuousClock.now - dropAt) after the drop")

            // A partition (nothing passes, no error either way): nothing heard for 3 heartbeats
            // (at least 5 s) closes the tunnel, so the stream ends instead of hanging until idle_timeout.
            async let partitioned = cluster.request("POST", "/v1/chat/completions", body: chatBody(stream: true))
            try await cluster.waitUntil("the stream to start") { try await cluster.hubInFlight() == 1 }
            try proxy.set("blackhole")
            let cutAt = ContinuousClock.now
            let silent = try await partitioned
            let waited = ContinuousClock.now - cutAt
            #expect(silent.body.components(separatedBy: "\n\n").last { $0.hasPrefix("data: ") }?.contains("upstream_stream_error") == true)
            #expect(waited < .seconds(10), "ended after \(waited)")
            print("tunnel: a partitioned stream ended \(waited) after the partition (PING every 1 s, closed after 5 s silent)")
            try proxy.set("pass")
            try await cluster.waitUntil("the worker to serve after the partition", timeout: .seconds(35)) {
                try await cluster.request("POST", "/v1/chat/completions", body: Self.quick).status == 200
            }

            // The hub restarts: the tunnel comes back without anyone doing anything.
            await cluster.hub.stop()
            let hub2 = try ManagedProcess(name: "hub-restarted", executable: TestCluster.binDirectory.appendingPathComponent("caravan-hub"),
                                          arguments: ["--config", cluster.configPath])
            do {
                _ = try await hub2.waitForLine(containing: "caravan-hub listening on ")
                try await cluster.waitUntil("the tunnel after the hub restart", timeout: .seconds(15)) {
                    (try? await cluster.request("POST", "/v1/chat/completions", body: Self.quick))?.status == 200
                }
                // kill -9 of the worker mid-stream: the final error event.
                async let killed = cluster.request("POST", "/v1/chat/completions", body: chatBody(stream: true))
                try await cluster.waitUntil("the stream to start") { try await cluster.hubInFlight() == 1 }
                try await Task.sleep(for: .milliseconds(300))
                cluster.workers["nat"]!.kill9()
                let reply = try await killed
                #expect(reply.status == 200 && !reply.body.contains("[DONE]"))
                #expect(reply.body.components(separatedBy: "\n\n").last { $0.hasPrefix("data: ") }?.contains("upstream_stream_error") == true)
            } catch {
                await hub2.stop()
                throw error
            }
            await hub2.stop()
        }
    }

    @Test("400 streams at once share one tunnel, and 150 clients hanging up at once neither end it nor stall the next request (HTTP/2 reset limits)",
          .timeLimit(.minutes(2)))
    func manyStreamsOneTunnel() async throws {
        let port = try freePort()
        let cluster = try await TestCluster.start(
            specs: [.init(name: "nat", fake: true, env: ["FAKE_TOKENS": "10", "FAKE_TOKEN_MS": "50", "FAKE_SLOTS": "1000"],
                          preload: true, extra: "connect: outbound")],
            // Heartbeats as in production: a debug build busy with hundreds of streams on two
            // cores can miss a 200 ms one.
            hubSettings: "tunnel_listen: \"127.0.0.1:\(port)\"", heartbeat: "2s")
        try await cluster.using { cluster in
            try await cluster.waitUntil("the tunnel to serve", timeout: .seconds(10)) {
                try await cluster.request("POST", "/v1/chat/completions", body: Self.quick).status == 200
            }
            let fanout = repositoryRoot.appendingPathComponent("scripts/lib/sse-fanout.py").path
            let url = cluster.hubURL + "/v1/chat/completions"
            // 400 streams complete (a RST_STREAM per finished stream once ended the tunnel after
            // 200 of them: 728 of 1,000 failed).
            // Each lost stream is described on the fan-out's stderr (how it ended, its last bytes).
            let output = try runProcess(["sh", "-c", "python3 \"$0\" \"$1\" \"$2\" 400 tiny 2>&1", fanout, url, cluster.clientToken],
                                        input: "")
            let line = output.split(separator: "\n").last { !$0.hasPrefix("sse-fanout:") }.map(String.init) ?? ""
            let fields = line.split(separator: " ")
            #expect(fields.first.flatMap { Int($0) } == 400,
                    "sse-fanout: \(output); hub: \(cluster.hub.output.filter { $0.contains("warning") }.suffix(3))")
            // 150 clients leave mid-stream at once: 150 resets on the tunnel, with the worker's
            // frames for them still on the way (NIO remembered only 32 reset streams by default:
            // the rest ended the tunnel with GOAWAY and the next request hung).
            // The clients leave together once the hub has them in flight (a marker file says when).
            let marker = cluster.directory.appendingPathComponent("leave-now").path
            let leave = """
                import os, socket, sys, time
                port, token, marker = int(sys.argv[1]), sys.argv[2], sys.argv[3]
                body = '{"model":"tiny","messages":[{"role":"user","content":"hi"}],"stream":true,"fake_tokens":400}'
                head = f"POST /v1/chat/completions HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer {token}\\r\\nContent-Type: application/json\\r\\nContent-Length: {len(body)}\\r\\n\\r\\n"
                sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(150)]
                for s in sockets: s.sendall((head + body).encode())
                deadline = time.monotonic() + 60
                while not os.path.exists(marker) and time.monotonic() < deadline: time.sleep(0.05)
                for s in sockets: s.close()
                """
            async let left = Task.detached {
                try runProcess(["python3", "-c", leave, String(URL(string: cluster.hubURL)!.port!), cluster.clientToken, marker], input: "")
            }.value
            try await cluster.waitUntil("150 streams in flight", timeout: .seconds(30)) { try await cluster.hubInFlight() == 150 }
            FileManager.default.createFile(atPath: marker, contents: nil)
            _ = try await left
            try await cluster.waitUntil("every hung-up stream released", timeout: .seconds(10)) { try await cluster.hubInFlight() == 0 }
            // The next request is served (before the fix it hung: the tunnel took no new stream).
            do {
                try await cluster.waitUntil("a request after the hang-ups", timeout: .seconds(10)) {
                    try await cluster.request("POST", "/v1/chat/completions", body: Self.quick).status == 200
                }
            } catch {
                let reply = try? await cluster.request("POST", "/v1/chat/completions", body: Self.quick)
                print("no request served after the hang-ups: \(reply?.status ?? 0) \(reply?.body.prefix(300) ?? "") \(try await cluster.hubInFlight())")
                for line in cluster.hub.output.filter({ !$0.contains("access") }).suffix(15) { print("hub: \(line.prefix(250))") }
                for line in cluster.workers["nat"]!.output.filter({ !$0.contains("[tiny]") }).suffix(15) { print("worker: \(line.prefix(250))") }
                throw error
            }
            // Still the first tunnel: nothing closed it.
            let opens = cluster.hub.output.filter { $0.contains("tunnel open") }
            #expect(opens.count == 1, "\(opens.map { $0.prefix(400) })")
            #expect(!cluster.hub.output.contains { $0.contains("GOAWAY") || $0.contains("tunnel closed") },
                    "\(cluster.hub.output.filter { $0.contains("tunnel") }) \(cluster.workers["nat"]!.output.filter { $0.contains("tunnel") })")
        }
    }

    /// Resident memory of a process, in MiB.
    static func rssMiB(_ pid: Int32) -> Double {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
    }

    @Test("a client that reads slowly through a tunnel is held back by HTTP/2 flow control, not buffered: a 32 MB stream leaves hub and worker memory within a few MiB, and the client then gets every event",
          .timeLimit(.minutes(2)))
    func slowReaderIsFlowControlled() async throws {
        let port = try freePort()
        // 2,000 events of 16 KiB each, written as fast as the engine can.
        let cluster = try await TestCluster.start(
            specs: [.init(name: "nat", fake: true, env: ["FAKE_TOKENS": "2000", "FAKE_TOKEN_MS": "0", "FAKE_PAD": "16384"],
                          preload: true, extra: "connect: outbound")],
            hubSettings: "tunnel_listen: \"127.0.0.1:\(port)\"\nclient_write_timeout: 60s")
        try await cluster.using { cluster in
            try await cluster.waitUntil("the tunnel to serve", timeout: .seconds(10)) {
                try await cluster.request("POST", "/v1/chat/completions", body: Self.quick).status == 200
            }
            let (hub, worker) = (cluster.hub.pid, cluster.workers["nat"]!.pid)
            let before = (Self.rssMiB(hub), Self.rssMiB(worker))
            let fd = try rawRequest(hubURL: cluster.hubURL, token: cluster.clientToken, body: chatBody(stream: true), receiveBuffer: 4096)
            defer { close(fd) }
            try await Task.sleep(for: .seconds(2))  // the engine could have written all 32 MB by now
            let during = (Self.rssMiB(hub), Self.rssMiB(worker))
            print("tunnel, stalled reader: hub RSS \(before.0) -> \(during.0) MiB, worker \(before.1) -> \(during.1) MiB (stream: 32 MiB)")
            #expect(during.0 - before.0 < 12, "hub grew from \(before.0) to \(during.0) MiB")
            #expect(during.1 - before.1 < 12, "worker grew from \(before.1) to \(during.1) MiB")
            // Now the client reads: nothing was lost. The whole answer is kept and its chunked
            // framing decoded before counting (a chunk boundary may fall inside "data: {").
            var raw: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            var timeout = timeval(tv_sec: 20, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            while true {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n <= 0 { break }
                raw.append(contentsOf: buffer[0..<n])
                if String(decoding: raw.suffix(16), as: UTF8.self).hasSuffix("\r\n0\r\n\r\n") { break }  // the last chunk
            }
            let text = String(decoding: Self.dechunked(raw), as: UTF8.self)
            let received = text.components(separatedBy: "data: {").count - 1
            let tail = String(text.suffix(32))
            #expect(received == 2000 && tail.contains("[DONE]"), "\(received) events, ends with \(tail)")
        }
    }

    /// The body of a raw HTTP/1.1 answer with chunked framing, decoded.
    static func dechunked(_ raw: [UInt8]) -> [UInt8] {
        guard let headEnd = raw.firstRange(of: Array("\r\n\r\n".utf8)) else { return [] }
        var index = headEnd.upperBound
        var body: [UInt8] = []
        while let lineEnd = raw[index...].firstRange(of: Array("\r\n".utf8)) {
            let size = Int(String(decoding: raw[index..<lineEnd.lowerBound], as: UTF8.self)
                .split(separator: ";").first ?? "", radix: 16) ?? 0
            guard size > 0, lineEnd.upperBound + size <= raw.count else { break }
            body.append(contentsOf: raw[lineEnd.upperBound..<(lineEnd.upperBound + size)])
            index = min(raw.count, lineEnd.upperBound + size + 2)
        }
        return body
    }

    @Test("a worker in a network namespace of its own (ip netns, veth): it reaches the hub, the hub cannot reach it; it serves through its tunnel; the link going down mid-stream ends the stream, and the worker rejoins when it comes back",
          .enabled(if: NetworkNamespace.available, "needs root and ip netns (iproute2): the loopback fault proxy covers the same faults"),
          .timeLimit(.minutes(3)))
    func behindNamespaceBoundary() async throws {
        let space = try NetworkNamespace.create()
        defer { space.remove() }
        let tunnelPort = try freePort()
        let cluster = try await TestCluster.start(
            specs: [.init(name: "nat", fake: true, env: ["FAKE_TOKENS": "200", "FAKE_TOKEN_MS": "50"], preload: true,
                          extra: "connect: outbound", wrapper: ["/usr/sbin/ip", "netns", "exec", space.name])],
            hubSettings: "tunnel_listen: \"\(space.hostAddress):\(tunnelPort)\"\nidle_timeout: 60s",
            hubHost: space.hostAddress, heartbeat: "1s")
        try await cluster.using { cluster in
            try await cluster.waitUntil("the tunnel to serve", timeout: .seconds(10)) {
                try await cluster.request("POST", "/v1/chat/completions", body: Self.quick).status == 200
            }
            // The boundary is real: a server listening inside the namespace cannot be reached from the hub's side.
            let inner = try ManagedProcess(name: "inner-http", executable: URL(fileURLWithPath: "/usr/sbin/ip"),
                                           arguments: ["netns", "exec", space.name, "python3", "-u", "-m", "http.server", "--bind",
                                                       space.innerAddress, "18999"])
            _ = try? await inner.waitForLine(containing: "Serving HTTP", timeout: .seconds(5))
            #expect(throws: (any Error).self) { try runCommand("/usr/bin/curl", ["-sf", "-m", "2", "http://\(space.innerAddress):18999/"]) }
            await inner.stop(grace: .milliseconds(200))

            // The link goes down mid-stream: no RST, no FIN; the tunnel's PINGs go unanswered and
            // the hub ends the stream with the error event (long before idle_timeout).
            async let cut = cluster.request("POST", "/v1/chat/completions", body: chatBody(stream: true))
            try await cluster.waitUntil("the stream to start") { try await cluster.hubInFlight() == 1 }
            try await Task.sleep(for: .milliseconds(300))
            try space.link(up: false)
            let downAt = ContinuousClock.now
            let reply = try await cut
            let ended = ContinuousClock.now - downAt
            print("netns: a stream ended \(ended) after its link went down")
            #expect(reply.status == 200 && !reply.body.contains("[DONE]"))
            #expect(reply.body.components(separatedBy: "\n\n").last { $0.hasPrefix("data: ") }?.contains("upstream_stream_error") == true)
            #expect(ended < .seconds(10))
            // The link comes back: the worker dials again and serves without anyone's help.
            try space.link(up: true)
            let upAt = ContinuousClock.now
            try await cluster.waitUntil("the worker to serve after the link came back", timeout: .seconds(40)) {
                (try? await cluster.request("POST", "/v1/chat/completions", body: Self.quick))?.status == 200
            }
            print("netns: serving again \(ContinuousClock.now - upAt) after the link came back")
        }
    }
}

/// A network namespace with a veth pair to the test's own namespace: a worker inside can
/// reach `hostAddress` (the hub), while an iptables rule inside drops every connection
/// coming in (a NAT boundary). Addresses are a /30 in 10.213.0.0/16 of this test only.
struct NetworkNamespace {
    let name: String
    let hostAddress: String
    let innerAddress: String
    private let hostSide: String
    private let innerSide: String

    /// Root, `ip netns` and `iptables` present, and a namespace can be made here.
    static let available: Bool = {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip"),
            FileManager.default.isExecutableFile(atPath: "/usr/sbin/iptables"),
            let probe = try? create()
        else { return false }
        probe.remove()
        return true
    }()

    static func create() throws -> NetworkNamespace {
        let tag = String(UInt32.random(in: 0..<0xFFFFFF), radix: 16)
        let subnet = Int.random(in: 1...250)
        let block = Int.random(in: 0...63) * 4
        let space = NetworkNamespace(name: "cvn\(tag)", hostAddress: "10.213.\(subnet).\(block + 1)",
                                     innerAddress: "10.213.\(subnet).\(block + 2)", hostSide: "cvh\(tag)", innerSide: "cvi\(tag)")
        do {
            try space.ip(["netns", "add", space.name])
            try space.ip(["link", "add", space.hostSide, "type", "veth", "peer", "name", space.innerSide])
            try space.ip(["link", "set", space.innerSide, "netns", space.name])
            try space.ip(["addr", "add", "\(space.hostAddress)/30", "dev", space.hostSide])
            try space.ip(["link", "set", space.hostSide, "up"])
            try space.inside(["ip", "addr", "add", "\(space.innerAddress)/30", "dev", space.innerSide])
            try space.inside(["ip", "link", "set", space.innerSide, "up"])
            try space.inside(["ip", "link", "set", "lo", "up"])
            // Outbound only: connections the worker opens work, none come in.
            try space.inside(["iptables", "-A", "INPUT", "-i", space.innerSide, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"])
            try space.inside(["iptables", "-A", "INPUT", "-i", space.innerSide, "-j", "DROP"])
        } catch {
            space.remove()
            throw error
        }
        return space
    }

    /// Takes the namespace's side of the link down or up.
    func link(up: Bool) throws { try inside(["ip", "link", "set", innerSide, up ? "up" : "down"]) }

    func remove() {
        _ = try? ip(["link", "del", hostSide])
        _ = try? ip(["netns", "del", name])
    }

    private func ip(_ arguments: [String]) throws { _ = try runCommand("/usr/sbin/ip", arguments) }

    private func inside(_ command: [String]) throws { _ = try runCommand("/usr/sbin/ip", ["netns", "exec", name] + command) }
}
