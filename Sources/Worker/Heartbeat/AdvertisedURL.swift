import Foundation
import Synchronization
import Auth
import Config
import Wire

/// The data plane's URL, known once the server has bound its port.
final class AdvertisedURL: Sendable {
    private let state = Mutex<(url: String?, waiters: [CheckedContinuation<String, Never>])>((nil, []))

    func set(_ url: String) {
        let waiters = state.withLock { state in
            state.url = url
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: url) }
    }

    func wait() async -> String {
        await withCheckedContinuation { continuation in
            let url: String? = state.withLock { state in
                if let url = state.url { return url }
                state.waiters.append(continuation)
                return nil
            }
            if let url { continuation.resume(returning: url) }
        }
    }
}
