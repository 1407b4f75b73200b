import Logging
import Foundation
import Testing

@testable import Worker

@Suite("GPU probe")
struct GPUProbeTests {
    @Test("parses recorded nvidia-smi output, one and several GPUs")
    func parse() {
        #expect(GPUProbe.parse("0, NVIDIA H100 80GB HBM3, 81559, 80993\n") ==
            [GPUReport(index: 0, name: "NVIDIA H100 80GB HBM3", memoryTotalMiB: 81559, memoryFreeMiB: 80993)])
        let two = GPUProbe.parse("0, NVIDIA GeForce RTX 4090, 24564, 1200\n1, NVIDIA GeForce RTX 3090, 24576, 24000\n")
        #expect(two.map(\.index) == [0, 1])
        #expect(two[1].memoryFreeMiB == 24000)
    }

    @Test("error output yields no GPUs", arguments: [
        "No devices were found",
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
        "", "0, name, [N/A], [N/A]",
    ])
    func errors(output: String) {
        #expect(GPUProbe.parse(output).isEmpty)
    }

    @Test("a hung nvidia-smi is killed after the timeout; the last reading stays, flagged stale")
    func hungProbe() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("caravan-smi-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let script = folder.appendingPathComponent("nvidia-smi").path
        func install(_ body: String) throws {
            try "#!/bin/sh\n\(body)\n".write(toFile: script, atomically: true, encoding: .utf8)
            chmod(script, 0o755)
        }
        try install("echo '0, NVIDIA L4, 23034, 20000'")
        let monitor = GPUMonitor(declared: [GPUConfig(name: "declared", vramMB: 1)], interval: .seconds(60),
                                 timeout: .milliseconds(500), executable: script, logger: .init(label: "test"))
        #expect(monitor.current.map(\.name) == ["declared"])  // before any reading
        await monitor.refresh()
        #expect(monitor.current == [GPUReport(index: 0, name: "NVIDIA L4", memoryTotalMiB: 23034, memoryFreeMiB: 20000)])
        try install("sleep 30")
        let started = ContinuousClock.now
        await monitor.refresh()
        #expect(ContinuousClock.now - started < .seconds(10))  // not the 30 s the probe would take
        #expect(monitor.current.map(\.memoryFreeMiB) == [20000])
        #expect(monitor.current.map(\.stale) == [true])
        try install("echo '0, NVIDIA L4, 23034, 1000'")
        await monitor.refresh()
        #expect(monitor.current.map(\.memoryFreeMiB) == [1000])
        #expect(monitor.current.map(\.stale) == [nil])
    }
}

@Suite("Ports")
struct PortAllocatorTests {
    @Test("skips ports already taken or bound by someone else")
    func skips() throws {
        // Hold a port of our own (no assumption about which ports are free on this machine).
        let (fd, held) = try bindEphemeralPort()
        defer { close(fd) }
        #expect(!PortAllocator.isFree(held))
        let range = held...min(held + 20, 65535)
        var allocator = PortAllocator(range: range)
        let firstPick = allocator.allocate(excluding: [])
        let first = try #require(firstPick)
        #expect(first != held && range.contains(first) && PortAllocator.isFree(first))
        var again = PortAllocator(range: range)
        let secondPick = again.allocate(excluding: [first])
        let second = try #require(secondPick)
        #expect(second != first && second != held)
        var only = PortAllocator(range: held...held)
        let onlyPick = only.allocate(excluding: [])
        #expect(onlyPick == nil, "the only port is bound by someone else")
        var excluded = PortAllocator(range: first...first)
        let excludedPick = excluded.allocate(excluding: [first])
        #expect(excludedPick == nil, "the only port is taken by an engine")
    }

    @Test("a port whose last server left connections in TIME_WAIT is free, as it is for llama-server")
    func timeWait() throws {
        let (listener, port) = try bindEphemeralPort()
        var on: Int32 = 1  // as llama-server (and nginx) set it on their listeners
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        #expect(listen(listener, 1) == 0)
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(connected == 0)
        let accepted = accept(listener, nil, nil)
        close(accepted)  // the server side closes first: its end of the connection goes to TIME_WAIT
        usleep(50_000)
        close(client)
        close(listener)
        usleep(50_000)
        // The premise: a bind without SO_REUSEADDR fails now.
        let plain = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(plain) }
        let plainBind = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(plain, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(plainBind != 0, "expected the port in TIME_WAIT")
        #expect(PortAllocator.isFree(port))
    }
}

@Suite("Child processes")
struct ChildProcessTests {
    @Test("output lines and exit status are captured")
    func run() async throws {
        let result = try await ChildProcess.run("sh", ["-c", "echo one; echo two >&2; exit 3"])
        #expect(result.output.split(separator: "\n").sorted() == ["one", "two"])
        #expect(ChildProcess.describe(status: result.status) == "exit status 3")
    }

    @Test("terminate stops the whole process group, SIGKILL after the grace period")
    func terminateGroup() async throws {
        // The shell ignores SIGTERM and has a child: both must be gone afterwards.
        let pids = PIDs()
        let child = try await ChildProcess.launch(
            executable: "sh", arguments: ["-c", "trap '' TERM; sleep 30 & echo $!; wait"]
        ) { line in pids.add(line) }
        try await Task.sleep(for: .milliseconds(300))
        let grandchild = try #require(pids.first)
        #expect(isRunning(grandchild))
        await child.terminate(grace: .milliseconds(300))
        #expect(child.hasExited)
        try await Task.sleep(for: .milliseconds(200))
        #expect(!isRunning(grandchild), "the grandchild in the group must be gone")
    }

    @Test("a missing executable fails to launch")
    func missing() async {
        await #expect(throws: ChildProcess.LaunchError.self) {
            _ = try await ChildProcess.launch(executable: "/nonexistent/llama-server", arguments: []) { _ in }
        }
    }
}

import Synchronization
@testable import Config
@testable import Wire
@testable import TestSupport

final class PIDs: Sendable {
    private let values = Mutex<[pid_t]>([])
    func add(_ line: String) { if let pid = pid_t(line) { values.withLock { $0.append(pid) } } }
    var first: pid_t? { values.withLock { $0.first } }
}

/// True while `pid` exists and is not a zombie (a killed orphan stays a zombie until init reaps it).
func isRunning(_ pid: pid_t) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return false }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state != "Z" && state != "X"
}

/// Binds 127.0.0.1:0 and returns the socket and the port the system chose.
func bindEphemeralPort() throws -> (Int32, Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    guard bound == 0 else { throw ChildProcess.LaunchError(description: "bind failed") }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}
