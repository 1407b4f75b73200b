import Synchronization

/// Request indices in the order they finished.
package final class ArrivalLog: Sendable {
    private let storage = Mutex<[Int]>([])
    package init() {}
    package func append(_ value: Int) { storage.withLock { $0.append(value) } }
    package var values: [Int] { storage.withLock { $0 } }
}
