import Synchronization

/// The last lines an engine printed, kept so a failed start can say why.
final class OutputTail: Sendable {
    private let lines = Mutex<[String]>([])
    private let capacity: Int

    init(capacity: Int = 40) { self.capacity = capacity }

    func append(_ line: String) {
        lines.withLock { lines in
            lines.append(line)
            if lines.count > capacity { lines.removeFirst(lines.count - capacity) }
        }
    }

    /// The newest `count` lines joined with " | " (one line for logs and errors).
    func last(_ count: Int) -> String {
        lines.withLock { $0.suffix(count).joined(separator: " | ") }
    }
}
