import HTTPTypes
import Foundation
import Synchronization
import NIOCore
import NIOEmbedded
import Testing
import RoutingFixtures

@testable import Hub
@testable import Routing
@testable import Auth
@testable import Config
@testable import Proxy
@testable import Server
@testable import Wire

@Suite("Circuit breaker")
struct CircuitBreakerTests {
    let t0 = ContinuousClock.now
    let policy = CircuitBreaker.Policy(window: .seconds(10), minSamples: 4, failureRate: 0.5, openFor: .seconds(5),
                                       maxOpenFor: .seconds(18), closeAfter: 2)

    func failing(_ breaker: inout CircuitBreaker, count: Int, at time: ContinuousClock.Instant) -> [CircuitBreaker.Transition] {
        (0..<count).compactMap { _ in
            _ = breaker.admit(now: time)
            return breaker.record(.failure(.httpStatus(500)), now: time)
        }
    }

    @Test("opens only with enough samples and a failure rate above the threshold")
    func opens() {
        var breaker = CircuitBreaker(policy: policy)
        #expect(failing(&breaker, count: 3, at: t0).isEmpty)  // 3 < min_samples
        #expect(breaker.state == .closed)
        let transitions = failing(&breaker, count: 1, at: t0)
        #expect(transitions.first?.to == "open")
        #expect(transitions.first?.reason.contains("4/4 failed") == true)
        #expect(breaker.state == .open(until: t0 + .seconds(5)))
        #expect(breaker.admit(now: t0 + .seconds(4)).allowed == false)
    }

    @Test("a rate at the threshold does not open; old samples leave the window")
    func rateAndWindow() {
        var rateOnly = policy
        rateOnly.consecutiveFailures = 0
        var breaker = CircuitBreaker(policy: rateOnly)
        for sample in [CircuitBreaker.Sample.success, .success, .failure(.connectionRefused), .failure(.connectionRefused)] {
            _ = breaker.record(sample, now: t0)
        }
        #expect(breaker.state == .closed)  // 2/4 = 0.5 is not above 0.5
        // Twelve seconds later the earlier samples have left the 10 s window.
        for _ in 0..<3 { _ = breaker.record(.failure(.connectionRefused), now: t0 + .seconds(12)) }
        #expect(breaker.state == .closed)  // only 3 samples in the window
        _ = breaker.record(.failure(.connectionRefused), now: t0 + .seconds(12))
        #expect(breaker.stateName == "open")
    }

    @Test("4xx, 429 and clients hanging up are never failures")
    func neutral() {
        var breaker = CircuitBreaker(policy: policy)
        for _ in 0..<20 { _ = breaker.record(.neutral, now: t0) }
        #expect(breaker.state == .closed)
        #expect(AttemptPolicy.sample(.clientGone(.init(firstByte: .seconds(100))), policy: BreakerConfig()) == .neutral)
    }

    @Test("every failure class counts, by its kind", arguments: [
        (UpstreamForwarder.Finish.completed(.init(firstByte: .seconds(31))), UpstreamError.Kind.slowFirstByte),
        (.completed(.init(firstByte: .seconds(1), maxGap: .seconds(11))), .slowGap),
        (.upstreamFailed(.closedMidStream, .init()), .closedMidStream),
        (.upstreamFailed(.gapTimeout(.seconds(60)), .init()), .gapTimeout),
    ])
    func failureClasses(finish: UpstreamForwarder.Finish, kind: UpstreamError.Kind) {
        let sample = AttemptPolicy.sample(finish, policy: BreakerConfig())
        guard case .failure(let error) = sample else { Issue.record("\(sample) is not a failure"); return }
        #expect(error.kind == kind)
        #expect(AttemptPolicy.sample(.completed(.init(firstByte: .seconds(1), maxGap: .seconds(1))), policy: BreakerConfig()) == .success)
    }

    @Test("an answer passed on without a retry left: 5xx is a failure, 429 says nothing, 2xx and 4xx are successes",
          arguments: [(500, "failure"), (502, "failure"), (503, "failure"), (429, "neutral"), (501, "neutral"), (200, "success"),
                     (404, "success")])
    func lastAttempt(status: Int, expected: String) {
        let sample = AttemptPolicy.sample(UpstreamForwarder.finish(status: status, timing: .init()), policy: BreakerConfig())
        let kind = switch sample {
        case .success: "success"
        case .neutral: "neutral"
        case .failure(let error): error.kind == .httpStatus && error.status == status ? "failure" : "failure of another kind"
        }
        #expect(kind == expected)
    }

    @Test("a request whose first byte was already judged slow is not counted again when it ends")
    func judgedOnce() {
        let late = UpstreamForwarder.Finish.completed(.init(firstByte: .seconds(31)))
        #expect(AttemptPolicy.sample(late, policy: BreakerConfig(), firstByteJudged: true) == .neutral)
        #expect(AttemptPolicy.sample(late, policy: BreakerConfig(), firstByteJudged: false) != .neutral)
    }

    @Test("a request sent ahead to a busy engine waited for a slot: its late first byte is no failure, a slow gap still is")
    func aheadFirstByte() {
        let late = UpstreamForwarder.Finish.completed(.init(firstByte: .seconds(31)))
        #expect(AttemptPolicy.sample(late, policy: BreakerConfig(), waitedInEngineQueue: true) == .success)
        #expect(AttemptPolicy.sample(late, policy: BreakerConfig(), waitedInEngineQueue: false) != .success)
        let gap = UpstreamForwarder.Finish.completed(.init(firstByte: .seconds(31), maxGap: .seconds(11)))
        #expect(AttemptPolicy.sample(gap, policy: BreakerConfig(), waitedInEngineQueue: true) == .failure(.slowGap(BreakerConfig().slowGap)))
    }

    @Test("half-open admits exactly one probe; close_after successes close it")
    func halfOpen() {
        var breaker = CircuitBreaker(policy: policy)
        _ = failing(&breaker, count: 4, at: t0)
        let first = breaker.admit(now: t0 + .seconds(5))
        #expect(first.allowed && first.transition?.to == "half-open")
        #expect(breaker.admit(now: t0 + .seconds(5)).allowed == false)  // only one probe in flight
        #expect(breaker.record(.success, now: t0 + .seconds(5), isProbe: true) == nil)  // 1 of 2
        #expect(breaker.admit(now: t0 + .seconds(5)).allowed)
        #expect(breaker.record(.success, now: t0 + .seconds(5), isProbe: true)?.to == "closed")
        #expect(breaker.state == .closed)
        #expect(breaker.nextOpenPeriod == .seconds(5))  // a full close resets the doubling
    }

    @Test("a failed probe re-opens for twice as long, capped at max_open_for")
    func exponential() {
        var breaker = CircuitBreaker(policy: policy)
        _ = failing(&breaker, count: 4, at: t0)
        var time = t0
        var periods: [Duration] = []
        for _ in 0..<4 {
            guard case .open(let until) = breaker.state else { Issue.record("not open"); return }
            periods.append(until - time)
            time = until
            #expect(breaker.admit(now: time).allowed)
            #expect(breaker.record(.failure(.slowFirstByte(.seconds(31))), now: time, isProbe: true)?.from == "half-open")
        }
        #expect(periods == [.seconds(5), .seconds(10), .seconds(18), .seconds(18)])
    }

    @Test("after a healthy spell, N consecutive failures open the breaker although the rate stays low")
    func consecutiveFailures() {
        var breaker = CircuitBreaker(policy: policy)  // consecutive_failures 5 (default)
        for _ in 0..<50 { _ = breaker.record(.success, now: t0) }
        for index in 1...4 {
            #expect(breaker.record(.failure(.httpStatus(500)), now: t0 + .seconds(1)) == nil, "failure \(index)")
        }
        // A success in between resets the run.
        _ = breaker.record(.success, now: t0 + .seconds(1))
        for _ in 1...4 { #expect(breaker.record(.failure(.httpStatus(500)), now: t0 + .seconds(1)) == nil) }
        let transition = breaker.record(.failure(.httpStatus(500)), now: t0 + .seconds(1))
        #expect(transition?.to == "open")
        #expect(transition?.reason.hasPrefix("5 consecutive failures") == true)
        var off = policy
        off.consecutiveFailures = 0
        var rateOnly = CircuitBreaker(policy: off)
        for _ in 0..<50 { _ = rateOnly.record(.success, now: t0) }
        for _ in 0..<20 { _ = rateOnly.record(.failure(.httpStatus(500)), now: t0) }
        #expect(rateOnly.state == .closed)  // 20/70: the rate rule alone is blind to it
    }

    @Test("in half-open only the probe counts: requests admitted before the opening are ignored")
    func halfOpenIgnoresEarlierRequests() {
        var breaker = CircuitBreaker(policy: policy)
        _ = failing(&breaker, count: 4, at: t0)
        #expect(breaker.admit(now: t0 + .seconds(5)).allowed)  // the probe
        // Two requests admitted while closed finish now, successfully: no verdict.
        #expect(breaker.record(.success, now: t0 + .seconds(5)) == nil)
        #expect(breaker.record(.success, now: t0 + .seconds(5)) == nil)
        #expect(breaker.state == .halfOpen(probing: true, successes: 0))
        #expect(breaker.record(.failure(.connectionRefused), now: t0 + .seconds(5)) == nil)
        #expect(breaker.stateName == "half-open")
        #expect(breaker.record(.failure(.connectionRefused), now: t0 + .seconds(5), isProbe: true)?.to == "open")
    }

    @Test("a probe that ends without a verdict frees the probe slot")
    func abandonedProbe() {
        var breaker = CircuitBreaker(policy: policy)
        _ = failing(&breaker, count: 4, at: t0)
        #expect(breaker.admit(now: t0 + .seconds(5)).allowed)
        breaker.abandon()
        #expect(breaker.admit(now: t0 + .seconds(5)).allowed)
    }
}

@Suite("Hub state queueing")
struct HubStateQueueTests {
    /// What each wait ended with, in the order they ended.
    final class Outcomes: Sendable {
        private let storage = Mutex<[(index: Int, result: Result<Registry.Pick, any Error>)]>([])
        func record(_ index: Int) -> @Sendable (Result<Registry.Pick, any Error>) -> Void {
            { result in self.storage.withLock { $0.append((index, result)) } }
        }
        var all: [(index: Int, result: Result<Registry.Pick, any Error>)] { storage.withLock { $0 } }
        func pick(_ index: Int) -> Registry.Pick? { all.first { $0.index == index }.flatMap { try? $0.result.get() } }
        func code(_ index: Int) -> String? {
            guard case .failure(let error)? = all.first(where: { $0.index == index })?.result else { return nil }
            return (error as? OpenAIError)?.code.rawValue ?? (error is CancellationError ? "cancelled" : "\(error)")
        }
    }

    func saturated(capacity: Int) throws -> (HubState, Registry.Pick) {
        let state = HubState(registry: Registry(expiry: .seconds(60)), queueCapacity: capacity)
        state.register(report("a", models: [ModelReport(name: "m", state: .ready, slotsTotal: 1)]))
        let holder = try #require(state.pick("m").pick)
        #expect(state.pick("m") == .saturated)
        return (state, holder)
    }

    @Test("saturated requests are served in arrival order as capacity frees; overflow is 429 at once; the deadline is 503")
    func queueing() throws {
        let loop = EmbeddedEventLoop()
        let (state, holder) = try saturated(capacity: 2)
        let outcomes = Outcomes()
        for index in 0..<3 { state.waitForCapacity("m", deadline: .now + .seconds(10), on: loop, outcomes.record(index)) }
        #expect(outcomes.code(2) == "queue_full", "the third overflows the queue of two, at once")
        #expect(state.queueLengths()["m"] == 2)
        state.release(holder, sample: .success)
        let first = try #require(outcomes.pick(0))
        #expect(outcomes.pick(1) == nil, "one slot, one served")
        state.release(first, sample: .success)
        let second = try #require(outcomes.pick(1))
        #expect(outcomes.all.map(\.index) == [2, 0, 1])

        state.waitForCapacity("m", deadline: .now + .milliseconds(100), on: loop, outcomes.record(3))
        #expect(outcomes.all.count == 3, "still waiting")
        loop.advanceTime(by: .milliseconds(150))
        #expect(outcomes.code(3) == "queue_timeout")
        #expect(state.queueLengths().isEmpty)
        state.release(second, sample: .success)
        #expect(outcomes.all.count == 4, "a request that timed out is not served later")
    }

    @Test("a request a worker refused as full waits again at its place by arrival, ahead of later arrivals, even in a full queue")
    func fullKeepsItsPlace() throws {
        let loop = EmbeddedEventLoop()
        let (state, holder) = try saturated(capacity: 2)
        let outcomes = Outcomes()
        let early = state.arrival()  // it arrived first, was sent to a worker, and came back "full"
        for index in 0..<2 { state.waitForCapacity("m", deadline: .now + .seconds(10), on: loop, outcomes.record(index)) }
        state.waitForCapacity("m", deadline: .now + .seconds(10), on: loop, ticket: early, outcomes.record(9))
        #expect(outcomes.code(9) == nil && state.queueLengths()["m"] == 3, "a queue full of later arrivals still takes it back")
        state.release(holder, sample: .success)
        #expect(outcomes.pick(9) != nil && outcomes.pick(0) == nil, "it goes first")
        var queue = WaitQueue<Int>(capacity: 2)
        let admitted = [5, 7, 8, 3, 6].map { id in queue.enqueue(id: UInt64(id), deadline: .now, id) }
        #expect(admitted == [true, true, false, true, true], "a later arrival finds the queue full; earlier ones take their place")
        #expect(queue.entries.map(\.waiter) == [3, 5, 6, 7] && queue.isFirst(2) && !queue.isFirst(4))
    }

    @Test("a client that leaves gives its place to the next; a served request's departure watch is taken back")
    func departure() throws {
        let loop = EmbeddedEventLoop()
        let (state, holder) = try saturated(capacity: 4)
        let outcomes = Outcomes()
        let leaving = ClientDeparture()
        let staying = ClientDeparture()
        state.waitForCapacity("m", deadline: .now + .seconds(30), on: loop, clientDeparture: leaving, outcomes.record(0))
        state.waitForCapacity("m", deadline: .now + .seconds(30), on: loop, clientDeparture: staying, outcomes.record(1))
        leaving.depart()
        #expect(outcomes.code(0) == "cancelled")
        #expect(state.queueLengths()["m"] == 1)
        state.release(holder, sample: .success)
        #expect(outcomes.pick(1) != nil, "the next in line is served")
        #expect(staying.pendingCallbacks == 0, "its departure watch was taken back")
        loop.advanceTime(by: .seconds(60))
        #expect(outcomes.all.count == 2, "its deadline timer was cancelled")
    }

    @Test("the shutdown grace ending settles every waiting request with 503 server_shutting_down")
    func shutdown() throws {
        let loop = EmbeddedEventLoop()
        let (state, holder) = try saturated(capacity: 4)
        let outcomes = Outcomes()
        let grace = ShutdownGrace(grace: .seconds(1))
        for index in 0..<2 {
            state.waitForCapacity("m", deadline: .now + .seconds(30), on: loop, shutdown: grace, outcomes.record(index))
        }
        grace.expire()
        #expect(outcomes.code(0) == "server_shutting_down" && outcomes.code(1) == "server_shutting_down")
        #expect(state.queueLengths().isEmpty)
        state.release(holder, sample: .success)
    }
}

/// Indices in the order their waits finished.
final class ArrivalOrder: Sendable {
    private let storage = Mutex<[Int]>([])
    func append(_ value: Int) { storage.withLock { $0.append(value) } }
    var values: [Int] { storage.withLock { $0 } }
}

/// Polls `condition` (every 5 ms, up to 5 s): tests wait for states, not for fixed times.
func waitUntil(_ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(5)
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("condition not reached within 5 s")
            return
        }
        try await Task.sleep(for: .milliseconds(5))
    }
}

@Suite("--no-auth access")
struct LocalOnlyAccessTests {
    @Test("loopback authorities and origins", arguments: [
        ("localhost", true), ("localhost:8080", true), ("LOCALHOST:1", true), ("127.0.0.1", true), ("127.1.2.3:80", true),
        ("[::1]:8080", true), ("[::1]", true), ("evil.example", false), ("127.0.0.1.evil.example", false),
        ("localhost.evil.example:80", false), ("[::2]:80", false), ("128.0.0.1", false), ("", false), ("127.0.0.256", false),
    ])
    func authorities(authority: String, loopback: Bool) {
        #expect(LocalOnlyAccess.isLoopback(authority: authority) == loopback)
        #expect(LocalOnlyAccess.isLoopback(origin: "http://" + authority) == loopback)
    }
}

@Suite("Worker keys")
struct WorkerKeysTests {
    let k1 = Secret(String(repeating: "1", count: 64))
    let k2 = Secret(String(repeating: "2", count: 64))

    func token(_ name: String, under key: Secret, role: TokenRole = .worker) async throws -> String {
        try await TokenVerifier(secret: WorkerKey.derive(clusterKey: key, worker: name))
            .sign(CaravanClaims(sub: name, expires: Date().addingTimeInterval(60), role: role))
    }

    @Test("each worker's key is its own: derived per name, verified per name, unknown names refused")
    func perWorker() async throws {
        #expect(WorkerKey.derive(clusterKey: k1, worker: "a") != WorkerKey.derive(clusterKey: k1, worker: "b"))
        #expect(WorkerKey.derive(clusterKey: k1, worker: "a") == WorkerKey.derive(clusterKey: k1, worker: "a"))
        #expect(WorkerKey.derive(clusterKey: k1, worker: "a").value.count == 64)
        let keys = WorkerKeys(current: k1, previous: nil, names: ["a", "b"], leeway: .seconds(30))
        #expect(try await keys.verify(token("a", under: k1)).subject == "a")
        // a's key claiming to be b.
        let forged = try await TokenVerifier(secret: WorkerKey.derive(clusterKey: k1, worker: "a"))
            .sign(CaravanClaims(sub: "b", expires: Date().addingTimeInterval(60), role: .worker))
        await #expect(throws: TokenError.self) { try await keys.verify(forged) }
        await #expect(throws: TokenError.unknownWorker) { try await keys.verify(try await token("c", under: k1)) }
        // A hub token is no worker token.
        await #expect(throws: TokenError.self) { try await keys.verify(try await token("a", under: k1, role: .hub)) }
    }

    @Test("rotation: the previous key's credentials verify while it is configured, and the hub answers each worker in its generation")
    func rotation() async throws {
        let rotating = WorkerKeys(current: k2, previous: k1, names: ["a"], leeway: .seconds(30))
        _ = try await rotating.verify(token("a", under: k1))
        let header = try await rotating.header(for: "a")
        let workerSide = await TokenVerifier(secret: WorkerKey.derive(clusterKey: k1, worker: "a"), audience: "a")
        let claims = try await workerSide.verify(String(header.dropFirst("Bearer ".count)), roles: [.hub])
        #expect(claims.role == .hub)
        // Once the worker has its new credential, the hub follows.
        _ = try await rotating.verify(token("a", under: k2))
        let next = try await rotating.header(for: "a")
        let renewed = await TokenVerifier(secret: WorkerKey.derive(clusterKey: k2, worker: "a"), audience: "a")
        #expect(try await renewed.verify(String(next.dropFirst("Bearer ".count)), roles: [.hub]).role == .hub)
        // The previous key removed: its credentials are refused.
        let rotated = WorkerKeys(current: k2, previous: nil, names: ["a"], leeway: .seconds(30))
        await #expect(throws: TokenError.self) { try await rotated.verify(try await token("a", under: k1)) }
        // Another worker refuses a hub token made for "a".
        let other = await TokenVerifier(secret: WorkerKey.derive(clusterKey: k2, worker: "a"), audience: "b")
        await #expect(throws: TokenError.self) { try await other.verify(String(next.dropFirst("Bearer ".count)), roles: [.hub]) }
    }
}

@Suite("Event ticker")
struct EventTickerTests {
    @Test("a cancelled ticker stops (it spun before: a hub whose listener could not bind stayed alive at 70 % CPU)",
          .timeLimit(.minutes(1)))
    func stopsWhenCancelled() async throws {
        let ticker = EventTicker(events: ClusterEvents(), stats: LiveStats(),
                                 snapshot: { AdminRoutes.Snapshot(workers: [], queued: [:]) }, interval: .milliseconds(10))
        let finished = Flag()
        let task = Task {
            try? await ticker.run()
            finished.set()
        }
        try await Task.sleep(for: .milliseconds(50))
        task.cancel()
        let deadline = ContinuousClock.now + .seconds(5)
        while !finished.isSet, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(finished.isSet, "the ticker kept running after it was cancelled")
    }
}

/// A flag set once, read from any thread.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}
