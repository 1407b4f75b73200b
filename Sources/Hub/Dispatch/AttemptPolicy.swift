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

    init(retries: Int, breaker: BreakerConfig) {
        self.retries = retries
        self.breaker = breaker
    }

    /// Whether the attempt about to start may still be retried: its worker's 5xx and 429
    /// answers are then held back instead of passed on.
    var mayRetry: Bool { attempts < retries }

    /// Records a failed attempt on `worker` (routing slot `slot`), before any byte reached the
    /// client. `jitterMilliseconds` (50...250 in production) spreads retries after a 429/503.
    mutating func failed(slot: Int, worker: String, reply: UpstreamForwarder.ErrorReply?, error: UpstreamError,
                         firstByteJudged: Bool, jitterMilliseconds: Int) -> Verdict {
        if error.kind == .workerFull { return Verdict(sample: .neutral, retry: true, pause: nil, full: true) }
        attempts += 1
        tried.append(slot)
        lastFailure = "worker \(worker): \(error)"
        lastReply = reply
        // Slowness already judged when `slow_ttfb` passed (the lease's timer) is not counted twice.
        let sample: CircuitBreaker.Sample = firstByteJudged ? .neutral : .of(error)
        let status = error.kind == .httpStatus ? error.status : nil
        let pause: Duration? = status == 429 || status == 503 ? .milliseconds(jitterMilliseconds * attempts) : nil
        return Verdict(sample: sample, retry: attempts <= retries, pause: pause)
    }

    /// What the client gets when every worker it could try failed: the last worker's own
    /// error answer when there is one, else a 502 naming the last failure.
    func exhausted(model: String) -> Result<UpstreamForwarder.ErrorReply, OpenAIError> {
        if let lastReply { return .success(lastReply) }
        return .failure(Self.allFailed(model, lastFailure ?? "no attempt made"))
    }

    /// Whether any attempt was made (an open breaker everywhere leaves none).
    var madeAttempts: Bool { attempts > 0 }

    static func allFailed(_ model: String, _ last: String) -> OpenAIError {
        OpenAIError.upstream("No worker for '\(model)' answered successfully (last: \(last))", code: "worker_unreachable")
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
