import Foundation
import Config
import Wire

/// How attempts end: releases, breaker samples, late judgements, "full" answers and overdue
/// first bytes.
extension Registry {
    /// A successful answer is a sign of life: it extends the worker's liveness like a
    /// heartbeat (its report stays as it was). Refreshed at most every quarter of the
    /// expiry, so the hot path rarely pays for it.
    mutating func noteAnswer(fromSlot slot: Int, now: Instant) {
        guard let aliveAt = slots[slot]?.aliveAt, now - aliveAt > expiry / 4 else { return }
        slots[slot]?.aliveAt = now
        let alive = nanos(now)
        for id in slots[slot]?.pairs ?? [] where pairs[id].lastSeen < alive {
            pairs[id].lastSeen = alive
            refresh(id)
        }
    }

    /// Ends a reservation: frees the in-flight slot, feeds the breaker and, for a streamed
    /// answer, the TTFT EWMA (`ttft`).
    package mutating func release(_ pick: Pick, sample: CircuitBreaker.Sample, ttft: Duration? = nil, now: Instant)
        -> CircuitBreaker.Transition?
    {
        // The worker may have left (or the pair been reused) meanwhile: then there is nothing to update.
        guard isCurrent(pick) else { return nil }
        pairs[pick.pair].inFlight = max(0, pairs[pick.pair].inFlight - 1)
        pairs[pick.pair].full = false  // one of ours ended there: the worker has room again
        if sample == .success { noteAnswer(fromSlot: pick.slot, now: now) }
        if let ttft, !pick.isAhead { observeTTFT(pick.pair, ttft, now: nanos(now)) }
        defer {
            pairs[pick.pair].gate = Gate(breakers[pick.pair].state, epoch: epoch)
            refresh(pick.pair)
        }
        if pick.isProbe, sample == .neutral {
            breakers[pick.pair].abandon()
            return nil
        }
        return breakers[pick.pair].record(sample, now: now, isProbe: pick.isProbe)
    }

    /// A judgement that came after the attempt's reservation ended (``Blame``): the request's
    /// other attempts showed the worker failed what another worker served (`.worker`), or
    /// nothing showed either way (`.undecided`, a suspect of `client`'s). Frees nothing; a
    /// breaker that is no longer closed ignores it (its probe was released as neutral).
    package mutating func judged(_ pick: Pick, _ verdict: Blame.Verdict, error: UpstreamError, client: String,
                                 now: Instant) -> CircuitBreaker.Transition? {
        guard isCurrent(pick) else { return nil }
        defer {
            pairs[pick.pair].gate = Gate(breakers[pick.pair].state, epoch: epoch)
            refresh(pick.pair)
        }
        switch verdict {
        case .worker: return breakers[pick.pair].record(.failure(error), now: now)
        case .undecided: return breakers[pick.pair].suspect(error, client: client, now: now)
        case .none, .request: return nil
        }
    }

    /// Ends a reservation the worker refused as full (``UpstreamError/Kind/workerFull``): its
    /// in-flight slot is freed, its breaker learns nothing, and the pair takes no more
    /// requests from this hub until the worker's next report or until one of this hub's
    /// requests there ends (another hub, or direct callers, filled it).
    package mutating func releaseFull(_ pick: Pick, now: Instant) {
        guard isCurrent(pick) else { return }
        pairs[pick.pair].inFlight = max(0, pairs[pick.pair].inFlight - 1)
        pairs[pick.pair].full = true
        pairs[pick.pair].fullUntilReport = true
        if pick.isProbe { breakers[pick.pair].abandon() }
        pairs[pick.pair].gate = Gate(breakers[pick.pair].state, epoch: epoch)
        refresh(pick.pair)
    }

    /// A streamed request's first byte is already later than `slowTTFB`: it counts as a
    /// failure now (not when the byte finally comes), and the worker's TTFT EWMA jumps to at
    /// least that, so its weight drops while the request is still outstanding.
    package mutating func firstByteOverdue(_ pick: Pick, after slowTTFB: Duration, now: Instant) -> CircuitBreaker.Transition? {
        guard isCurrent(pick) else { return nil }
        if !pick.isAhead { observeTTFT(pick.pair, slowTTFB, now: nanos(now)) }
        defer {
            pairs[pick.pair].gate = Gate(breakers[pick.pair].state, epoch: epoch)
            refresh(pick.pair)
        }
        return breakers[pick.pair].record(.failure(.slowFirstByte(slowTTFB)), now: now, isProbe: pick.isProbe)
    }

    func isCurrent(_ pick: Pick) -> Bool {
        pick.pair < pairs.count && pairs[pick.pair].slot == pick.slot && pairs[pick.pair].incarnation == pick.incarnation
    }
}
