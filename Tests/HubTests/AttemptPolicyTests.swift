import Server
import Config
import HTTPTypes
import NIOCore
@testable import Proxy
import Routing
import Testing
import Wire

@testable import Hub

/// The retry policy of one request, without workers: each failed attempt's verdict (the
/// breaker's sample, retry or not, the pause) and what the client gets in the end.
@Suite("Attempt policy")
struct AttemptPolicyTests {
    func reply(_ status: Int) -> UpstreamForwarder.ErrorReply {
        UpstreamForwarder.ErrorReply(status: HTTPResponse.Status(code: status), headers: [:], body: ByteBuffer(string: "worker \(status)"))
    }

    @Test("retries: N retries allow N + 1 attempts, each worker once; only the attempts before the last may hold back 5xx")
    func retriesAndExclusions() {
        var policy = AttemptPolicy(retries: 2, breaker: BreakerConfig())
        var verdicts: [Bool] = []
        var mayRetry: [Bool] = []
        for slot in [4, 7, 9] {
            mayRetry.append(policy.mayRetry)
            verdicts.append(policy.failed(slot: slot, worker: "w\(slot)", reply: nil, error: .connectionRefused,
                                          firstByteJudged: false, jitterMilliseconds: 100).retry)
        }
        #expect(mayRetry == [true, true, false])
        #expect(verdicts == [true, true, false])
        #expect(policy.tried == [4, 7, 9])
        #expect(policy.attempts == 3)
    }

    @Test("what a failed attempt says about its worker, by kind: 5xx and transport errors count, 429 does not, a judged first byte not twice",
          arguments: [
              (UpstreamError.httpStatus(500), false, CircuitBreaker.Sample.failure(.httpStatus(500))),
              (.httpStatus(503), false, .failure(.httpStatus(503))),
              (.httpStatus(429), false, .neutral),
              (.connectionRefused, false, .failure(.connectionRefused)),
              (.resetBeforeHead, false, .failure(.resetBeforeHead)),
              (.headTimeout(.seconds(1)), false, .failure(.headTimeout(.seconds(1)))),
              (.httpStatus(500), true, .neutral),
          ])
    func samples(error: UpstreamError, judged: Bool, expected: CircuitBreaker.Sample) {
        var policy = AttemptPolicy(retries: 1, breaker: BreakerConfig())
        #expect(policy.failed(slot: 0, worker: "a", reply: nil, error: error, firstByteJudged: judged, jitterMilliseconds: 50).sample
            == expected)
    }

    @Test("a worker's \"full\" answer is neither an attempt nor an exclusion nor a breaker sample: the request is picked again at once")
    func full() {
        var policy = AttemptPolicy(retries: 0, breaker: BreakerConfig())
        for _ in 0..<3 {
            let verdict = policy.failed(slot: 4, worker: "a", reply: reply(429), error: .workerFull, firstByteJudged: false,
                                        jitterMilliseconds: 80)
            #expect(verdict == .init(sample: .neutral, retry: true, pause: nil, full: true))
        }
        #expect(policy.attempts == 0 && policy.tried.isEmpty && policy.mayRetry == false && !policy.madeAttempts)
        // A real failure after it still counts (and, with no retries left, ends the request).
        #expect(policy.failed(slot: 4, worker: "a", reply: nil, error: .connectionRefused, firstByteJudged: false,
                              jitterMilliseconds: 80).retry == false)
    }

    @Test("a busy (429) or unavailable (503) worker means a pause before the next attempt, growing with each attempt; others none")
    func pauses() {
        var policy = AttemptPolicy(retries: 3, breaker: BreakerConfig())
        #expect(policy.failed(slot: 0, worker: "a", reply: reply(429), error: .httpStatus(429), firstByteJudged: false,
                              jitterMilliseconds: 80).pause == .milliseconds(80))
        #expect(policy.failed(slot: 1, worker: "b", reply: nil, error: .connectTimeout, firstByteJudged: false,
                              jitterMilliseconds: 80).pause == nil)
        #expect(policy.failed(slot: 2, worker: "c", reply: reply(503), error: .httpStatus(503), firstByteJudged: false,
                              jitterMilliseconds: 80).pause == .milliseconds(240))
    }

    @Test("when every attempt failed: the last worker's own answer if it gave one, else a 502 naming the last failure")
    func exhausted() throws {
        var answered = AttemptPolicy(retries: 1, breaker: BreakerConfig())
        _ = answered.failed(slot: 0, worker: "a", reply: nil, error: .connectionRefused, firstByteJudged: false, jitterMilliseconds: 50)
        _ = answered.failed(slot: 1, worker: "b", reply: reply(500), error: .httpStatus(500), firstByteJudged: false,
                            jitterMilliseconds: 50)
        let passedOn = try answered.exhausted(model: "m").get()
        #expect(passedOn.status.code == 500 && String(buffer: passedOn.body) == "worker 500")

        var unreachable = AttemptPolicy(retries: 0, breaker: BreakerConfig())
        #expect(!unreachable.madeAttempts)
        _ = unreachable.failed(slot: 0, worker: "a", reply: nil, error: .connectTimeout, firstByteJudged: false, jitterMilliseconds: 50)
        #expect(unreachable.madeAttempts)
        guard case .failure(let error) = unreachable.exhausted(model: "m") else {
            Issue.record("a transport failure has no answer to pass on")
            return
        }
        #expect(error.status == .badGateway && error.code == "worker_unreachable")
        #expect(error.message.contains("worker a: connect timeout"))
    }
}
