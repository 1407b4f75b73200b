import Synchronization

/// "Something changed": wakes every task waiting for the next change, with no polling.
///
/// A waiter reads ``generation`` before it looks at the state it cares about, then waits
/// `since` that generation: a change that happened in between returns at once, so no change
/// is missed between the look and the wait. Waits end early when their task is cancelled.
final class ChangeSignal: Sendable {
    private struct State {
        var generation = 0
        var nextID = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = Mutex(State())

    init() {}

    var generation: Int { state.withLock { $0.generation } }

    /// Wakes every waiter.
    func fire() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.generation += 1
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the generation passed `seen`, or the task is cancelled.
    func wait(since seen: Int) async {
        let id = state.withLock { state -> Int in
            state.nextID += 1
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.generation != seen || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }

    /// Returns once the generation passed `seen` (true), or at `deadline` (false), or when
    /// the task is cancelled (false).
    @discardableResult
    func wait(since seen: Int, until deadline: ContinuousClock.Instant) async -> Bool {
        guard deadline > .now else { return generation != seen }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await self.wait(since: seen)
                return !Task.isCancelled
            }
            group.addTask {
                try? await Task.sleep(until: deadline)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first || generation != seen
        }
    }
}
