import Wire
/// A circuit breaker for one (worker, model) pair.
///
/// ```
///     failure rate > threshold (window ≥ min_samples)
///     or N consecutive failures                    open_for elapsed (doubles per re-open, capped)
///   CLOSED ───────────────────────────► OPEN ───────────────────────────► HALF-OPEN
///     ▲                                   ▲                                  │ admits ONE probe
///     │                                   └──────── probe fails ─────────────┤
///     └──────────── close_after consecutive probe successes ─────────────────┘
/// ```
///
/// Two rules open it, as in Envoy's outlier detection: the failure rate over a time-based
/// sliding window, and a run of consecutive failures. The second catches a worker that turns
/// bad after a healthy spell: 50 successes in the window would keep its rate under the
/// threshold for most of the window, while it fails every request.
///
/// Only failures of the worker count: transport errors, 5xx, slow first byte, slow gaps
/// between streamed events. 4xx, 429 and clients hanging up are not samples at all. In
/// half-open only the probe's own outcome counts; requests admitted before the opening that
/// finish later say nothing about the worker now. Pure value type: callers pass `now`.
package struct CircuitBreaker: Sendable {
    package typealias Instant = ContinuousClock.Instant

    /// Thresholds, all from the `hub.breaker` config section.
    package struct Policy: Sendable, Equatable {
        package var window: Duration = .seconds(30)
        package var minSamples = 5
        package var failureRate = 0.5
        package var openFor: Duration = .seconds(5)
        package var maxOpenFor: Duration = .seconds(120)
        package var closeAfter = 2
        /// Consecutive failures that open the breaker whatever the rate (0: rule off).
        package var consecutiveFailures = 5

        package init(window: Duration = .seconds(30), minSamples: Int = 5, failureRate: Double = 0.5,
                     openFor: Duration = .seconds(5), maxOpenFor: Duration = .seconds(120), closeAfter: Int = 2,
                     consecutiveFailures: Int = 5) {
            self.window = window
            self.minSamples = minSamples
            self.failureRate = failureRate
            self.openFor = openFor
            self.maxOpenFor = maxOpenFor
            self.closeAfter = closeAfter
            self.consecutiveFailures = consecutiveFailures
        }
    }

    package enum State: Sendable, Equatable {
        case closed
        case open(until: Instant)
        /// `probing` is true while the single admitted probe is in flight.
        case halfOpen(probing: Bool, successes: Int)
    }

    /// What a finished request says about the worker.
    package enum Sample: Sendable, Equatable {
        case success
        case failure(UpstreamError)
        /// Says nothing about the worker (4xx, 429, client gone).
        case neutral

        /// What `error` says about the worker, by its kind: a failure when the worker is to
        /// blame (``UpstreamError/blamesUpstream``), else nothing.
        package static func of(_ error: UpstreamError) -> Sample {
            error.blamesUpstream ? .failure(error) : .neutral
        }
    }

    /// A change worth logging, with its reason.
    package struct Transition: Sendable, Equatable {
        package var from: String
        package var to: String
        package var reason: String
    }

    package private(set) var policy: Policy
    package private(set) var state: State = .closed
    /// Consecutive openings without a full close in between (drives the doubling).
    package private(set) var openings = 0
    /// Failures in a row while closed (reset by a success).
    package private(set) var consecutive = 0
    /// Clients whose undecided failures (``Blame/Verdict/undecided``) wait for corroboration
    /// while closed: a second client's turns them into failures, a success clears them.
    package private(set) var suspects: [String] = []
    /// The sliding window as at most `bucketCount` time buckets: constant memory and
    /// constant work per request, however busy the worker is.
    private var buckets: [(start: Instant, successes: Int, failures: Int)] = []
    /// When the newest bucket stops taking samples.
    private var bucketEnds: Instant?
    private var bucketWidth: Duration
    private static let bucketCount = 10

    package init(policy: Policy) {
        self.policy = policy
        bucketWidth = policy.window / Self.bucketCount
    }

    /// Takes a reloaded policy. The state is kept; the window's samples are kept unless the
    /// window's length changed (then they no longer mean what the new policy counts).
    package mutating func adopt(_ next: Policy) {
        if next.window != policy.window {
            buckets = []
            bucketEnds = nil
            bucketWidth = next.window / Self.bucketCount
        }
        policy = next
    }

    /// Whether a request may be sent now. In half-open this admits exactly one probe and
    /// moves `open` to `half-open` once its time is up.
    package mutating func admit(now: Instant) -> (allowed: Bool, transition: Transition?) {
        switch state {
        case .closed:
            return (true, nil)
        case .open(let until):
            guard now >= until else { return (false, nil) }
            state = .halfOpen(probing: true, successes: 0)
            return (true, Transition(from: "open", to: "half-open", reason: "open period elapsed; sending one probe"))
        case .halfOpen(let probing, let successes):
            if probing { return (false, nil) }
            state = .halfOpen(probing: true, successes: successes)
            return (true, nil)
        }
    }

    /// Whether a request would be admitted now, without changing anything (for routing weights).
    package func wouldAdmit(now: Instant) -> Bool {
        switch state {
        case .closed: true
        case .open(let until): now >= until
        case .halfOpen(let probing, _): !probing
        }
    }

    /// Records the outcome of an admitted request; returns a transition when the state changed.
    /// - Parameter isProbe: whether the request was the half-open probe; other requests that
    ///   finish while the breaker is open or half-open are ignored.
    package mutating func record(_ sample: Sample, now: Instant, isProbe: Bool = false) -> Transition? {
        switch state {
        case .closed:
            switch sample {
            case .neutral: return nil
            case .success:
                consecutive = 0
                suspects = []
                add(failed: false, now: now)
                return nil  // a success never opens the breaker: skip the window arithmetic
            case .failure:
                consecutive += 1
                add(failed: true, now: now)
            }
            if policy.consecutiveFailures > 0, consecutive >= policy.consecutiveFailures {
                return open(now: now, from: "closed", reason: "\(consecutive) consecutive failures"
                    + (sample.reason.map { "; last: \($0)" } ?? ""))
            }
            let window = policy.window
            buckets.removeAll { now - $0.start >= window }
            let failures = buckets.reduce(0) { $0 + $1.failures }
            let total = failures + buckets.reduce(0) { $0 + $1.successes }
            guard total >= policy.minSamples, Double(failures) / Double(total) > policy.failureRate else { return nil }
            let reason = "\(failures)/\(total) failed within \(policy.window)"
                + (sample.reason.map { "; last: \($0)" } ?? "")
            return open(now: now, from: "closed", reason: reason)
        case .open:
            return nil  // a request admitted before opening finished late; nothing to learn
        case .halfOpen(_, let successes):
            guard isProbe else { return nil }
            switch sample {
            case .neutral:
                state = .halfOpen(probing: false, successes: successes)
                return nil
            case .failure(let error):
                return open(now: now, from: "half-open", reason: "probe failed: \(error)")
            case .success:
                if successes + 1 >= policy.closeAfter {
                    state = .closed
                    openings = 0
                    consecutive = 0
                    buckets = []
                    bucketEnds = nil
                    return Transition(from: "half-open", to: "closed", reason: "\(successes + 1) probe(s) succeeded")
                }
                state = .halfOpen(probing: false, successes: successes + 1)
                return nil
            }
        }
    }

    /// Records a failure that its request's attempts could not pin on the worker or on the
    /// request (``Blame/Verdict/undecided``: one worker, nothing to compare with). One client's
    /// such failures never count: that client may be sending poison. When a second client's
    /// request fails there too before any request succeeds, the worker is failing everyone, and
    /// each held failure counts. Ignored unless closed (a probe's outcome must be its own).
    package mutating func suspect(_ error: UpstreamError, client: String, now: Instant) -> Transition? {
        guard case .closed = state else { return nil }
        if suspects.isEmpty || suspects.contains(client) {
            if suspects.isEmpty { suspects = [client] }
            return nil
        }
        let held = suspects.count + 1
        suspects = []
        for _ in 0..<held {
            if let transition = record(.failure(error), now: now) { return transition }
        }
        return nil
    }

    /// Releases a half-open probe slot whose request never produced a sample.
    package mutating func abandon() {
        if case .halfOpen(true, let successes) = state { state = .halfOpen(probing: false, successes: successes) }
    }

    /// How long the next opening lasts: `open_for` doubled per consecutive opening, capped.
    package var nextOpenPeriod: Duration {
        var period = policy.openFor
        for _ in 0..<min(openings, 30) where period < policy.maxOpenFor { period *= 2 }
        return min(period, policy.maxOpenFor)
    }

    private mutating func open(now: Instant, from: String, reason: String) -> Transition {
        let period = nextOpenPeriod
        openings += 1
        state = .open(until: now + period)
        consecutive = 0
        suspects = []
        buckets = []
        bucketEnds = nil
        return Transition(from: from, to: "open", reason: "\(reason); open for \(period)")
    }

    /// Counts a sample in the current bucket; a new bucket drops those that left the window.
    /// The common case (the current bucket still open) is one comparison.
    private mutating func add(failed: Bool, now: Instant) {
        if let ends = bucketEnds, now < ends, !buckets.isEmpty {
            // fall through to the count below
        } else {
            let window = policy.window
            buckets.removeAll { now - $0.start >= window }
            buckets.append((now, 0, 0))
            bucketEnds = now + bucketWidth
        }
        if failed { buckets[buckets.count - 1].failures += 1 } else { buckets[buckets.count - 1].successes += 1 }
    }

    /// A short name for metrics and the admin API.
    package var stateName: String {
        switch state {
        case .closed: "closed"
        case .open: "open"
        case .halfOpen: "half-open"
        }
    }
}

extension CircuitBreaker.Sample {
    package var reason: String? {
        if case .failure(let error) = self { return error.description }
        return nil
    }
}
