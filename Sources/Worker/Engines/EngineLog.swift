import Synchronization

/// The newest output lines of one model's engines, kept across restarts, with live
/// followers for `GET /logs?follow=true`.
final class EngineLog: Sendable {
    private struct State {
        var lines: [String] = []
        /// Index of the oldest line in `lines` (a ring: new lines overwrite the oldest).
        var start = 0
        var followers: [Int: AsyncStream<String>.Continuation] = [:]
        var nextFollower = 0
    }

    private let state = Mutex(State())
    let capacity: Int

    init(capacity: Int) { self.capacity = max(1, capacity) }

    func append(_ line: String) {
        let followers = state.withLock { state in
            if state.lines.count < capacity {
                state.lines.append(line)
            } else {
                state.lines[state.start] = line
                state.start = (state.start + 1) % capacity
            }
            return Array(state.followers.values)
        }
        for follower in followers { follower.yield(line) }
    }

    /// The newest `count` lines, oldest first.
    func last(_ count: Int) -> [String] {
        state.withLock { state in
            let ordered = Array(state.lines[state.start...] + state.lines[..<state.start])
            return Array(ordered.suffix(count))
        }
    }

    /// The newest `count` lines joined with " | " (one line for logs and errors).
    func summary(_ count: Int) -> String { last(count).joined(separator: " | ") }

    /// The newest `count` lines, then every new line as it arrives, until the consumer stops.
    func follow(backlog count: Int) -> AsyncStream<String> {
        let (stream, continuation) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(10_000))
        let id = state.withLock { state in
            let ordered = Array(state.lines[state.start...] + state.lines[..<state.start])
            for line in ordered.suffix(count) { continuation.yield(line) }
            defer { state.nextFollower += 1 }
            state.followers[state.nextFollower] = continuation
            return state.nextFollower
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.followers.removeValue(forKey: id) }
        }
        return stream
    }
}
