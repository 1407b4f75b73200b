import Foundation
import Glibc
import Testing
@testable import Server

/// The access log's batching (``LogBuffer``): lines wait for the batch, come out whole and in
/// order, and a flush writes what is pending.
@Suite("Log buffer")
struct LogBufferTests {
    /// Reads what is in the pipe now (non-blocking).
    static func drain(_ fd: Int32) -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = read(fd, &chunk, chunk.count)
            guard count > 0 else { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test("lines wait for their batch, then come out whole and in order (a large batch in pipe-atomic writes); the timer writes a lone line")
    func batches() async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
        let buffer = LogBuffer(fd: fds[1])
        buffer.append("first line\n")
        buffer.append("second line\n")
        #expect(Self.drain(fds[0]).isEmpty, "held for the batch")
        buffer.flush()
        #expect(Self.drain(fds[0]) == "first line\nsecond line\n")

        // More than the limit: written at once, whole lines, in order.
        let lines = (0..<300).map { "access line \($0) " + String(repeating: "x", count: 60) + "\n" }
        for line in lines { buffer.append(line) }
        var text = Self.drain(fds[0])
        buffer.flush()
        text += Self.drain(fds[0])
        #expect(text == lines.joined())

        // A lone line goes out when the timer fires.
        buffer.append("alone\n")
        var seen = ""
        let deadline = ContinuousClock.now + .seconds(5)
        while seen.isEmpty && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
            seen = Self.drain(fds[0])
        }
        #expect(seen == "alone\n")
    }
}
