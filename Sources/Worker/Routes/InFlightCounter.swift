import Foundation
import Synchronization
import Config
import Proxy
import Server
import Wire

/// Requests being forwarded right now (reported in heartbeats).
final class InFlightCounter: Sendable {
    private let count = Atomic<Int>(0)
    func add(_ delta: Int) { count.add(delta, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
