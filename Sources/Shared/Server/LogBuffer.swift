import Foundation
import Glibc
import NIOCore
import NIOPosix
import Synchronization

/// Lines written to standard error in batches: the access log's, one line per request, which
/// would otherwise cost a `write` each. A line waits at most ``delay`` (a timer armed by the
/// first line of a batch, never while idle) or until ``limit`` bytes are pending; ``flush()``
/// at exit writes the rest, so a clean shutdown loses none. Other log lines go out at once.
public final class LogBuffer: Sendable {
    public static let standardError = LogBuffer(fd: 2)

    /// Longest a line waits, and most bytes held before a write.
    static let delay = TimeAmount.milliseconds(50)
    static let limit = 16 * 1024

    private let fd: Int32
    private let state = Mutex<(bytes: [UInt8], armed: Bool)>(([], false))

    init(fd: Int32) { self.fd = fd }

    /// Adds `text` (whole lines); writes the batch when it is large, else arms the timer.
    public func append(_ text: String) {
        let (full, arm) = state.withLock { state -> (Bool, Bool) in
            state.bytes.append(contentsOf: text.utf8)
            if state.bytes.count >= Self.limit { return (true, false) }
            guard !state.armed else { return (false, false) }
            state.armed = true
            return (false, true)
        }
        if full { flush() }
        if arm { MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: Self.delay) { self.flush() } }
    }

    /// Writes what is pending now.
    public func flush() {
        let bytes = state.withLock { state -> [UInt8] in
            defer {
                state.bytes = []
                state.armed = false
            }
            return state.bytes
        }
        // Whole lines, at most PIPE_BUF bytes a write: a pipe keeps such a write in one piece,
        // so another thread's log line never lands inside one of these.
        var start = 0
        while start < bytes.count {
            var end = min(bytes.count, start + Self.atomicWrite)
            if end < bytes.count, let newline = bytes[start..<end].lastIndex(of: UInt8(ascii: "\n")) { end = newline + 1 }
            write(bytes[start..<end])
            start = end
        }
    }

    /// POSIX's PIPE_BUF on Linux: the largest write a pipe never interleaves.
    static let atomicWrite = 4096

    private func write(_ bytes: ArraySlice<UInt8>) {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if written > 0 {
                    offset += written
                } else if written < 0 && errno == EINTR {
                    continue
                } else {
                    return  // stderr closed or broken: nothing to do about it here
                }
            }
        }
    }
}

/// A `TextOutputStream` into a ``LogBuffer``, for swift-log's text handler.
struct BufferedStream: TextOutputStream, Sendable {
    let buffer: LogBuffer
    mutating func write(_ string: String) { buffer.append(string) }
}
