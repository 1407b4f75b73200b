import HTTPTypes
import Foundation
import NIOCore
import Testing

@testable import Hub
@testable import Routing
@testable import Proxy
@testable import Server
@testable import Wire

/// The blame rule (``Blame``), the breaker's suspects, the poison count and the request
/// target: the pure parts of "no request can take a worker down".
@Suite("Blame")
struct BlameTests {
    static let e500 = UpstreamError.httpStatus(500)
    static let garbled = UpstreamError.badResponse("invalid character in a header")

    @Test("each attempt's verdict, from the request's attempts in order", arguments: [
        // The worker's own failures count whatever else happened.
        ([Blame.Attempt.failed(.connectionRefused), .served], [Blame.Verdict.worker, .none]),
        ([.failed(.resetBeforeHead), .failed(.resetBeforeHead)], [.worker, .worker]),
        ([.failed(.httpStatus(503)), .failed(.httpStatus(503))], [.worker, .worker]),
        ([.failed(.closedMidStream)], [.worker]),
        // An ambiguous failure where another worker served: that worker's.
        ([.failed(e500), .served], [.worker, .none]),
        ([.failed(garbled), .failed(.connectTimeout), .served], [.worker, .worker, .none]),
        // Alike on two workers: the request's.
        ([.failed(e500), .failed(e500)], [.request, .request]),
        ([.failed(garbled), .failed(garbled)], [.request, .request]),
        ([.failed(e500), .failed(.connectionRefused), .failed(e500)], [.request, .worker, .request]),
        // Different ambiguous failures, or nothing to compare with: undecided.
        ([.failed(e500)], [.undecided]),
        ([.failed(e500), .failed(.httpStatus(500 + 1))], [.undecided, .undecided]),
        ([.failed(e500), .failed(garbled)], [.undecided, .undecided]),
        ([.failed(e500), .rejected], [.undecided, .none]),
        // Not anybody's health.
        ([.failed(.httpStatus(429)), .served], [.none, .none]),
        ([.failed(.readerStalled(.seconds(1)))], [.none]),
    ])
    func verdicts(attempts: [Blame.Attempt], expected: [Blame.Verdict]) {
        #expect(Blame.judge(attempts) == expected)
        #expect(Blame.isPoison(attempts) == expected.contains(.request))
    }

    @Test("evidence by kind: gateway and availability answers are the worker's, other 5xx and garbled answers ambiguous")
    func evidence() {
        #expect(Blame.evidence(.httpStatus(500)) == .ambiguous(.init(kind: .httpStatus, status: 500)))
        #expect(Blame.evidence(.httpStatus(502)) == .worker)
        #expect(Blame.evidence(.httpStatus(504)) == .worker)
        #expect(Blame.evidence(Self.garbled) == .ambiguous(.init(kind: .badResponse, status: nil)))
        #expect(Blame.evidence(.transport("I/O error (errno 104)")) == .worker)
        #expect(Blame.evidence(.tooLarge(10)) == .ambiguous(.init(kind: .tooLarge, status: nil)))
        #expect(Blame.evidence(.headTimeout(.seconds(1))) == .worker)
        #expect(Blame.evidence(.workerFull) == .none)
    }
}

@Suite("Circuit breaker suspects")
struct BreakerSuspectTests {
    let t0 = ContinuousClock.now
    let policy = CircuitBreaker.Policy(window: .seconds(10), minSamples: 3, failureRate: 0.5, openFor: .seconds(5),
                                       maxOpenFor: .seconds(20), closeAfter: 1, consecutiveFailures: 3)

    @Test("one client's undecided failures never open the breaker, however many")
    func oneClient() {
        var breaker = CircuitBreaker(policy: policy)
        for i in 0..<50 { #expect(breaker.suspect(.httpStatus(500), client: "mallory", now: t0 + .milliseconds(i)) == nil) }
        #expect(breaker.stateName == "closed" && breaker.consecutive == 0)
    }

    @Test("a second client failing there too: the held failures count, and they open it")
    func secondClient() {
        var breaker = CircuitBreaker(policy: policy)
        #expect(breaker.suspect(.httpStatus(500), client: "alice", now: t0) == nil)
        #expect(breaker.suspect(.httpStatus(500), client: "alice", now: t0) == nil)
        #expect(breaker.suspect(.httpStatus(500), client: "bob", now: t0) == nil)  // two failures now
        #expect(breaker.consecutive == 2)
        #expect(breaker.suspect(.httpStatus(500), client: "carol", now: t0) == nil)
        let transition = breaker.suspect(.httpStatus(500), client: "alice", now: t0)
        #expect(transition?.to == "open")
    }

    @Test("a success in between clears the suspicion: the failures were the requests'")
    func successClears() {
        var breaker = CircuitBreaker(policy: policy)
        _ = breaker.suspect(.httpStatus(500), client: "alice", now: t0)
        _ = breaker.record(.success, now: t0)
        #expect(breaker.suspects.isEmpty)
        #expect(breaker.suspect(.httpStatus(500), client: "bob", now: t0) == nil)
        #expect(breaker.consecutive == 0)
    }

    @Test("ignored while open or half-open: a probe's verdict is its own")
    func notClosed() {
        var breaker = CircuitBreaker(policy: policy)
        for _ in 0..<3 { _ = breaker.record(.failure(.connectionRefused), now: t0) }
        #expect(breaker.stateName == "open")
        #expect(breaker.suspect(.httpStatus(500), client: "a", now: t0) == nil)
        #expect(breaker.suspects.isEmpty)
    }
}

@Suite("Poison counts")
struct PoisonCountsTests {
    let t0 = ContinuousClock.now

    @Test("a client is held back after N poison requests a minute, until the oldest leaves the window; others are not")
    func limit() {
        var counts = PoisonCounts()
        for i in 0..<2 { counts.record("mallory", limit: 3, now: t0 + .seconds(i)) }
        #expect(counts.retryAfter("mallory", limit: 3, now: t0 + .seconds(2)) == nil)
        counts.record("mallory", limit: 3, now: t0 + .seconds(2))
        #expect(counts.retryAfter("mallory", limit: 3, now: t0 + .seconds(2)) == 58)
        #expect(counts.retryAfter("alice", limit: 3, now: t0 + .seconds(2)) == nil)
        #expect(counts.throttled(limit: 3, now: t0 + .seconds(2)) == 1)
        #expect(counts.retryAfter("mallory", limit: 3, now: t0 + .seconds(60)) == nil)
        #expect(counts.throttled(limit: 3, now: t0 + .seconds(61)) == 0)
    }

    @Test("limit 0 counts nothing")
    func off() {
        var counts = PoisonCounts()
        for _ in 0..<100 { counts.record("m", limit: 0, now: t0) }
        #expect(counts.retryAfter("m", limit: 0, now: t0) == nil)
    }
}

@Suite("Request target")
struct RequestTargetTests {
    @Test("bytes RFC 3986 does not allow are percent-encoded; valid targets are unchanged", arguments: [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/chat/completions?<=1", "/v1/chat/completions?%3C=1"),
        ("/props?model=a%20b&x=y", "/props?model=a%20b&x=y"),
        ("/a?q=\"{|}\\^`", "/a?q=%22%7B%7C%7D%5C%5E%60"),
        ("/a?p=50%&q=%zz", "/a?p=50%25&q=%25zz"),
        ("/caf\u{e9}", "/caf%C3%A9"),
        ("/a?x=1#frag", "/a?x=1%23frag"),
        ("/a?x=[1]", "/a?x=%5B1%5D"),
    ])
    func normalised(target: String, expected: String) {
        #expect(RequestTarget.normalised(target) == expected)
        #expect(RequestTarget.isValid(RequestTarget.normalised(target)))
    }
}

@Suite("Request target: the hub's refusal")
struct RequestTargetRefusalTests {
    @Test("the first byte to encode is named with its escape; valid targets have none")
    func invalidByte() {
        let bad = RequestTarget.invalidByte(in: "/v1/chat/completions?<=1")
        #expect(bad?.offset == 21 && bad?.encoded == "%3C" && bad?.description == "'<'")
        #expect(RequestTarget.invalidByte(in: "/a?p=5%")?.description == "a '%' that starts no escape")
        #expect(RequestTarget.invalidByte(in: "/a\u{e9}")?.encoded == "%C3")
        #expect(RequestTarget.invalidByte(in: "/props?model=a%20b&x=(1)") == nil)
    }
}
