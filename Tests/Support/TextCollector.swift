import Synchronization

/// Text gathered by one task and read by another.
package final class TextCollector: Sendable {
    private let storage = Mutex("")
    package init() {}
    package func append(_ text: String) { storage.withLock { $0 += text } }
    package var text: String { storage.withLock { $0 } }
}
