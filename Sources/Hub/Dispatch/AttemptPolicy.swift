import Config
import Proxy
import Routing
import Server
import Wire

/// The policy for the attempts of one request: what each outcome says about the worker
/// (the breaker's sample), whether another worker is tried, how long to pause first, and
/// what the client gets when no attempt succeeded.
///
/// Pure and deterministic (the pause's jitter is passed in): ``OpenAIRoutes`` performs the
/// attempts, this decides, and every decision is unit-tested. Outcomes are classified by
/// ``UpstreamError/Kind`` and status, never by text.
struct AttemptPolicy {
    /// What to do after a failed attempt.
    struct Verdict: Equatable {
        /// What the attempt says about its worker.
        var sample: CircuitBreaker.Sample
        /// Try another worker (no byte reached the client and retries are left).
        var retry: Bool
        /// Pause before the next attempt: a busy (429) or unavailable (503) worker says "later".
        var pause: Duration?
        /// The worker answered "full": not an attempt, not an exclusion. Its pair takes nothing
        /// from this hub until it reports again, and the request is picked again (another worker,
        /// or the queue).
        var full = false
    }

    let retries: Int
    let breaker: BreakerConfig
    /// Attempts made so far.
    private(set) var attempts = 0
    /// Routing slots already tried (each worker is tried once).
    private(set) var tried: [Int] = []
    private var lastFailure: String?
    private(set) var lastReply: UpstreamForwarder.ErrorReply?
    /// Every attempt's outcome, in order, for ``Blame``.
    private var outcomes: [Blame.Attempt] = []
    /// Ambiguous failures whose judgement waits for the request's other attempts: their
    /// index in `outcomes`, the pick and the error.
    private var deferred: [(index: Int, pick: Registry.Pick, error: UpstreamError)] = []
    /// The request failed alike on two workers: it is the request's fault, not theirs.
    private(set) var poisoned = false

    init(retries: Int, breaker: BreakerConfig) {
        self.retries = retries
        self.breaker = breaker
    }

    /// Records a failed attempt on `pick`, before any byte reached the client.
    /// `jitterMilliseconds` (50...250 in production) spreads retries after a 429/503.
    ///
    /// The worker's own failures (``Blame/Evidence/worker``) are its sample at once; an
    /// ambiguous one is no sample now (its judgement waits for ``settle()``), and a second
    /// worker failing alike ends the attempts: the request is poison.
    mutating func failed(_ pick: Registry.Pick, reply: UpstreamForwarder.ErrorReply?, error: UpstreamError,
                         firstByteJudged: Bool, jitterMilliseconds: Int) -> Verdict {
        if error.kind == .workerFull { return Verdict(sample: .neutral, retry: true, pause: nil, full: true) }
        attempts += 1
        tried.append(pick.slot)
        lastFailure = "worker \(pick.worker): \(error)"
        lastReply = reply
        outcomes.append(.failed(error))
        var sample: CircuitBreaker.Sample
        switch Blame.evidence(error) {
        case .worker: sample = .failure(error)
        case .none: sample = .neutral
        case .ambiguous:
            sample = .neutral
            deferred.append((outcomes.count - 1, pick, error))
        }
        // Slowness already judged when `slow_ttfb` passed (the lease's timer) is not counted twice.
        if firstByteJudged { sample = .neutral }
        poisoned = Blame.isPoison(outcomes)
        let status = error.kind == .httpStatus ? error.status : nil
        let pause: Duration? = status == 429 || status == 503 ? .milliseconds(jitterMilliseconds * attempts) : nil
        return Verdict(sample: sample, retry: attempts <= retries && !poisoned, pause: pause)
    }

    /// Records the attempt whose answer was passed on: a 2xx/3xx served the request (so an
    /// ambiguous failure elsewhere was that worker's), a 4xx is the engine rejecting it.
    mutating func answered(status: Int?) {
        outcomes.append((status ?? 200) < 400 ? .served : .rejected)
    }

    /// The judgements of the deferred (ambiguous) failures, once the request has ended: each
    /// is returned once. Without deferred failures it is empty and costs nothing.
    mutating func settle() -> [(pick: Registry.Pick, verdict: Blame.Verdict, error: UpstreamError)] {
        guard !deferred.isEmpty else { return [] }
        let verdicts = Blame.judge(outcomes)
        defer { deferred = [] }
        return deferred.map { ($0.pick, verdicts[$0.index], $0.error) }
    }

    /// What the client gets when every worker it could try failed: the last worker's own
    /// error answer when there is one; for poison without one (the same transport failure
    /// everywhere), a 400; else a 502 naming the last failure.
    func exhausted(model: String) -> Result<UpstreamForwarder.ErrorReply, OpenAIError> {
        if let lastReply { return .success(lastReply) }
        if poisoned { return .failure(Self.poison(model, lastFailure ?? "")) }
        return .failure(Self.allFailed(model, lastFailure ?? "no attempt made"))
    }

    /// Whether any attempt was made (an open breaker everywhere leaves none).
    var madeAttempts: Bool { attempts > 0 }

    static func allFailed(_ model: String, _ last: String) -> OpenAIError {
        OpenAIError(.workerUnreachable, message: "No worker for '\(model)' answered successfully (last: \(last))")
    }

    static func poison(_ model: String, _ last: String) -> OpenAIError {
        OpenAIError(.requestFailedEverywhere, message: "This request failed the same way on every worker of '\(model)' tried (last: \(last)); "
                        + "check the request, it is not retried")
    }

    /// What a response that was passed on says about its worker: slowness counts as failure,
    /// a client hanging up says nothing. A request sent ahead to a busy engine
    /// (`waitedInEngineQueue`) waited for a slot before its first byte, so a late first byte
    /// says nothing about the worker's health. `firstByteJudged`: the first byte was already
    /// counted slow when `slow_ttfb` passed (``Lease/watchFirstByte(_:on:)``).
    static func sample(_ finish: UpstreamForwarder.Finish, policy: BreakerConfig,
                       waitedInEngineQueue: Bool = false, firstByteJudged: Bool = false) -> CircuitBreaker.Sample {
        if firstByteJudged { return .neutral }
        switch finish {
        case .completed(let timing):
            if let first = timing.firstByte, first > policy.slowTTFB, !waitedInEngineQueue {
                return .failure(.slowFirstByte(policy.slowTTFB))
            }
            if timing.maxGap > policy.slowGap { return .failure(.slowGap(policy.slowGap)) }
            return .success
        case .upstreamFailed(let error, _):
            return .of(error)
        case .clientGone, .busy:
            return .neutral
        }
    }
}
