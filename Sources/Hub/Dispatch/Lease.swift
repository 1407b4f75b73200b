import Routing
import NIOCore
import Synchronization
import Config
import Server
import Wire

/// One reserved attempt on a worker; released exactly once, even if the response is dropped.
final class Lease: Sendable {
    let pick: Registry.Pick
    let startedAt: ContinuousClock.Instant
    private let state: HubState
    private let released = Atomic<Bool>(false)
    /// The slow-first-byte timer, and whether it fired (the request was judged slow already).
    private let overdue = Mutex<(timer: Scheduled<Void>?, judged: Bool)>((nil, false))

    init(_ pick: Registry.Pick, state: HubState) {
        self.pick = pick
        self.state = state
        self.startedAt = state.now()
    }

    /// Judges the first byte slow the moment `slowTTFB` passes without it (the breaker
    /// counts it then, and the worker's weight drops while the request is still waiting),
    /// unless ``firstByteArrived()`` comes first.
    func watchFirstByte(_ slowTTFB: Duration, on loop: any EventLoop) {
        let timer = loop.scheduleTask(in: TimeAmount(slowTTFB)) { [weak self] in
            guard let self, !self.released.load(ordering: .acquiring) else { return }
            let fire = self.overdue.withLock { overdue -> Bool in
                guard overdue.timer != nil else { return false }
                overdue = (nil, true)
                return true
            }
            if fire { self.state.firstByteOverdue(self.pick, after: slowTTFB) }
        }
        overdue.withLock { $0.timer = timer }
    }

    func firstByteArrived() {
        overdue.withLock { overdue in
            overdue.timer?.cancel()
            overdue.timer = nil
        }
    }

    /// Whether the first byte was already judged slow (then the final sample must not count it again).
    var firstByteJudged: Bool { overdue.withLock { $0.judged } }

    func release(_ sample: CircuitBreaker.Sample, ttft: Duration? = nil) {
        guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
        firstByteArrived()
        state.release(pick, sample: sample, ttft: ttft)
    }

    /// Ends the lease on a "full" answer: the worker is at its own admission bound.
    func releaseFull() {
        guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
        firstByteArrived()
        state.releaseFull(pick)
    }

    deinit { release(.neutral) }
}
