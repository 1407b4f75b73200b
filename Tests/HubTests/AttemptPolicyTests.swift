import Server
import Config
import HTTPTypes
import NIOCore
@testable import Proxy
import Routing
import Testing
import RoutingFixtures
import Wire

@testable import Hub

/// The retry policy of one request, without workers: each failed attempt's verdict (the
/// breaker's sample, retry or not, the pause), the deferred judgements (``Blame``) and what
/// the client gets in the end.
@Suite("Attempt policy")
struct AttemptPolicyTests {
    func reply(_ status: Int) -> UpstreamForwarder.ErrorReply {
        UpstreamForwarder.ErrorReply(status: HTTPResponse.Status(code: status), headers: [:], body: ByteBuffer(string: "worker \(status)"))
    }

    func pick(_ slot: Int) -> Registry.Pick {
        Registry.Pick(pair: slot, incarnation: 0, slot: slot, worker: "w\(slot)", url: "http://w\(slot)", model: "m", isProbe: false)
    }

    func fail(_ policy: inout AttemptPolicy, _ slot: Int, _ error: UpstreamError, reply: UpstreamForwarder.ErrorReply? = nil,
              judged: Bool = false, jitter: Int = 50) -> AttemptPolicy.Verdict {
        policy.failed(pick(slot), reply: reply, error: error, firstByteJudged: judged, jitterMilliseconds: jitter)
    }

    @Test("retries: N retries allow N + 1 attempts, each worker once")
    func retriesAndExclusions() {
        var policy = AttemptPolicy(retries: 2, breaker: BreakerConfig())
        let verdicts = [4, 7, 9].map { fail(&policy, $0, .connectionRefused).retry }
        #expect(verdicts == [true, true, false])
        #expect(policy.tried == [4, 7, 9])
        #expect(policy.attempts == 3)
    }

    @Test("what a failed attempt says at once about its worker: its own failures count, an ambiguous 5xx waits, 429 never, a judged first byte not twice",
          arguments: [
              (UpstreamError.httpStatus(500), false, CircuitBreaker.Sample.neutral),
              (.httpStatus(503), false, .failure(.httpStatus(503))),
              (.httpStatus(502), false, .failure(.httpStatus(502))),
              (.httpStatus(429), false, .neutral),
              (.badResponse("invalid character in a header"), false, .neutral),
              (.transport("I/O error (errno 104)"), false, .failure(.transport("I/O error (errno 104)"))),
              (.connectionRefused, false, .failure(.connectionRefused)),
              (.resetBeforeHead, false, .failure(.resetBeforeHead)),
              (.headTimeout(.seconds(1)), false, .failure(.headTimeout(.seconds(1)))),
              (.httpStatus(503), true, .neutral),
          ])
    func samples(error: UpstreamError, judged: Bool, expected: CircuitBreaker.Sample) {
        var policy = AttemptPolicy(retries: 1, breaker: BreakerConfig())
        #expect(fail(&policy, 0, error, judged: judged).sample == expected)
    }

    @Test("a 500 on one worker and a success on the next: the first worker is blamed once the request ends")
    func blamedWhenAnotherServed() {
        var policy = AttemptPolicy(retries: 2, breaker: BreakerConfig())
        #expect(fail(&policy, 1, .httpStatus(500), reply: reply(500)).retry)
        policy.answered(status: 200)
        let judged = policy.settle()
        #expect(judged.map(\.verdict) == [.worker] && judged.map(\.pick.worker) == ["w1"])
        #expect(!policy.poisoned && policy.settle().isEmpty)  // each judgement is handed out once
    }

    @Test("a 500 on two workers is poison: no retry on the third, nobody blamed, the engine's own answer passed on")
    func poisonStopsRetries() throws {
        var policy = AttemptPolicy(retries: 3, breaker: BreakerConfig())
        #expect(fail(&policy, 1, .httpStatus(500), reply: reply(500)).retry)
        let second = fail(&policy, 2, .httpStatus(500), reply: reply(500))
        #expect(second.retry == false && second.sample == .neutral)
        #expect(policy.poisoned)
        #expect(policy.settle().map(\.verdict) == [.request, .request])
        let passedOn = try policy.exhausted(model: "m").get()
        #expect(passedOn.status.code == 500 && String(buffer: passedOn.body) == "worker 500")
    }

    @Test("the same unparsable answer from two workers: poison, and a 400 from the hub (no engine answer to pass on)")
    func poisonWithoutAnswer() {
        var policy = AttemptPolicy(retries: 2, breaker: BreakerConfig())
        _ = fail(&policy, 1, .badResponse("invalid character in a header"))
        #expect(fail(&policy, 2, .badResponse("invalid character in a header")).retry == false)
        guard case .failure(let error) = policy.exhausted(model: "m") else {
            Issue.record("poison without an engine answer is the hub's 400")
            return
        }
        #expect(error.status == .badRequest && error.code == .requestFailedEverywhere)
        #expect(!error.message.contains("HTTPParserError"))
    }

    @Test("one worker only: its 500 is left undecided (other clients' requests judge it), and its own answer is passed on")
    func oneWorker() throws {
        var policy = AttemptPolicy(retries: 2, breaker: BreakerConfig())
        #expect(fail(&policy, 1, .httpStatus(500), reply: reply(500)).retry)
        // The next pick finds nobody else (`.exhausted`): the request ends here.
        #expect(policy.settle().map(\.verdict) == [.undecided])
        #expect(try policy.exhausted(model: "m").get().status.code == 500)
    }

    @Test("a worker's \"full\" answer is neither an attempt nor an exclusion nor a breaker sample: the request is picked again at once")
    func full() {
        var policy = AttemptPolicy(retries: 0, breaker: BreakerConfig())
        for _ in 0..<3 {
            let verdict = fail(&policy, 4, .workerFull, reply: reply(429), jitter: 80)
            #expect(verdict == .init(sample: .neutral, retry: true, pause: nil, full: true))
        }
        #expect(policy.attempts == 0 && policy.tried.isEmpty && !policy.madeAttempts)
        // A real failure after it still counts (and, with no retries left, ends the request).
        #expect(fail(&policy, 4, .connectionRefused, jitter: 80).retry == false)
    }

    @Test("a busy (429) or unavailable (503) worker means a pause before the next attempt, growing with each attempt; others none")
    func pauses() {
        var policy = AttemptPolicy(retries: 3, breaker: BreakerConfig())
        #expect(fail(&policy, 0, .httpStatus(429), reply: reply(429), jitter: 80).pause == .milliseconds(80))
        #expect(fail(&policy, 1, .connectTimeout, jitter: 80).pause == nil)
        #expect(fail(&policy, 2, .httpStatus(503), reply: reply(503), jitter: 80).pause == .milliseconds(240))
    }

    @Test("when every attempt failed: the last worker's own answer if it gave one, else a 502 naming the last failure")
    func exhausted() throws {
        var answered = AttemptPolicy(retries: 1, breaker: BreakerConfig())
        _ = fail(&answered, 0, .connectionRefused)
        _ = fail(&answered, 1, .httpStatus(500), reply: reply(500))
        let passedOn = try answered.exhausted(model: "m").get()
        #expect(passedOn.status.code == 500 && String(buffer: passedOn.body) == "worker 500")

        var unreachable = AttemptPolicy(retries: 0, breaker: BreakerConfig())
        #expect(!unreachable.madeAttempts)
        _ = fail(&unreachable, 0, .connectTimeout)
        #expect(unreachable.madeAttempts)
        guard case .failure(let error) = unreachable.exhausted(model: "m") else {
            Issue.record("a transport failure has no answer to pass on")
            return
        }
        #expect(error.status == .badGateway && error.code == .workerUnreachable)
        #expect(error.message.contains("worker w0: connect timeout"))
    }
}
