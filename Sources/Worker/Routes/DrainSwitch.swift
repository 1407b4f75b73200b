import Synchronization
import Config
import Server
import Wire

/// An admin's drain of this worker: no new requests, those in flight finish.
final class DrainSwitch: Sendable {
    private let on = Atomic<Bool>(false)
    var isDraining: Bool { on.load(ordering: .relaxed) }
    func set(_ draining: Bool) { on.store(draining, ordering: .relaxed) }
}
