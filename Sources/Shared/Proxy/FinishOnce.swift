import Foundation
import Synchronization

/// Calls a finish callback at most once, whichever of the relay's paths gets there first
/// (the write deadline fires from the client's event loop, the relay ends on its task).
final class FinishOnce: Sendable {
    private let callback: Mutex<(@Sendable (UpstreamForwarder.Finish) -> Void)?>

    init(_ callback: @escaping @Sendable (UpstreamForwarder.Finish) -> Void) {
        self.callback = Mutex(callback)
    }

    func callAsFunction(_ finish: UpstreamForwarder.Finish) {
        let callback = self.callback.withLock { callback in
            defer { callback = nil }
            return callback
        }
        callback?(finish)
    }
}
