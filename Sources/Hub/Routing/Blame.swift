import Wire

/// Who is to blame for the failed attempts of one request: the worker, the request, or
/// nobody yet.
///
/// A breaker sample is a judgement about a worker, so it needs evidence. Some failures are
/// the worker's own whatever was asked (a refused or reset connection, a timeout, a stream
/// cut in the middle, slowness): they count at once. Others can be caused by the request
/// itself (llama-server answers some malformed bodies with 500; a target the next hop cannot
/// parse becomes unparsable HTTP): those are *ambiguous* and are judged by comparison.
///
/// | an ambiguous failure on worker A, and then                      | verdict for A |
/// |-----------------------------------------------------------------|---------------|
/// | another worker served the same request (2xx/3xx)                | ``Verdict/worker`` |
/// | another worker failed it the same way (same kind and status)    | ``Verdict/request``: poison, stop retrying |
/// | nothing to compare with (one worker, other failures, client gone)| ``Verdict/undecided`` |
///
/// An undecided failure is judged by other clients' requests instead
/// (``CircuitBreaker/suspect(_:client:now:)``): it counts once a second client fails there
/// too before anyone is served, and a success there clears it. So one client's poison
/// never opens a breaker, in a cluster of one worker or of many. Pure; unit-tested by table.
package enum Blame {
    /// What a failure says on its own.
    package enum Evidence: Equatable, Sendable {
        /// The worker's own failure whatever the request: it counts at once.
        case worker
        /// Could be the request's doing: compared with the request's other attempts.
        case ambiguous(Signature)
        /// Not a failure of anybody's health (429, a stalled reader, shutdown, "full").
        case none
    }

    /// How an ambiguous failure looks: two workers failing alike point at the request.
    package struct Signature: Equatable, Hashable, Sendable {
        package var kind: UpstreamError.Kind
        package var status: Int?

        package init(kind: UpstreamError.Kind, status: Int?) {
            self.kind = kind
            self.status = status
        }
    }

    /// One attempt of a request, in order.
    package enum Attempt: Equatable, Sendable {
        /// The worker answered 2xx/3xx: it served the request.
        case served
        /// The worker answered, but with a 4xx of its own (the request's mistake, as it sees it).
        case rejected
        case failed(UpstreamError)
    }

    /// The judgement of one attempt.
    package enum Verdict: Equatable, Sendable {
        /// Not a failure: a success, a 4xx, or nobody's fault.
        case none
        /// A failure of the worker: the breaker counts it.
        case worker
        /// The request's fault: no breaker sample; the client's poison count goes up.
        case request
        /// No evidence either way: left to other clients' requests.
        case undecided
    }

    /// What `error` says on its own. A 5xx other than 502/503/504 (gateway and availability
    /// answers, the worker's own state), an answer that is not valid HTTP and one over the
    /// size limit can all be caused by what was asked. Connection and I/O failures cannot.
    package static func evidence(_ error: UpstreamError) -> Evidence {
        guard error.blamesUpstream else { return .none }
        switch error.kind {
        case .httpStatus:
            guard let status = error.status, ![502, 503, 504].contains(status) else { return .worker }
            return .ambiguous(Signature(kind: .httpStatus, status: status))
        case .badResponse, .tooLarge:
            return .ambiguous(Signature(kind: error.kind, status: nil))
        default:
            return .worker
        }
    }

    /// Judges every attempt of one request (each on a different worker), in order.
    package static func judge(_ attempts: [Attempt]) -> [Verdict] {
        let served = attempts.contains(.served)
        var seen: [Signature: Int] = [:]
        for case .failed(let error) in attempts {
            if case .ambiguous(let signature) = evidence(error) { seen[signature, default: 0] += 1 }
        }
        return attempts.map { attempt in
            guard case .failed(let error) = attempt else { return .none }
            switch evidence(error) {
            case .none: return .none
            case .worker: return .worker
            case .ambiguous(let signature):
                if served { return .worker }  // another worker served what this one failed
                if seen[signature, default: 0] >= 2 { return .request }
                return .undecided
            }
        }
    }

    /// Whether the request is poison: it failed alike on two workers, so retrying it
    /// elsewhere would only fail again.
    package static func isPoison(_ attempts: [Attempt]) -> Bool {
        judge(attempts).contains(.request)
    }
}
