import Foundation
import Config
import Wire

/// What a (worker, model) pair can take: its pass (tier), free slots and routing weight.
extension Registry {

    /// Which pass a candidate belongs to: loaded models with a free slot first, then models
    /// a worker can load into free VRAM, then loaded models whose slots are all busy but whose
    /// engine may queue a few more (`ahead`), then models a worker can load only by evicting
    /// idle ones (`evicting`: it would displace a model someone may want), then models being
    /// drained for a reload (`draining`: a request there waits for the restart), then models
    /// that failed to load (a retry lets the worker try again).
    ///
    /// Why `ahead` exists: a slot freed by a finished request otherwise idles for the whole
    /// round trip (response to the hub, the queued request back through hub and worker)
    /// before its next request arrives; with short requests that idle time cost a quarter
    /// of llama-server's throughput (docs/benchmarks.md). A request sent ahead waits in
    /// llama-server's own queue and starts the moment a slot frees. It is the last resort
    /// before the hub's queue, so a free slot or a spare worker always wins.
    package enum Tier: Int, CaseIterable, Sendable {
        case loaded = 0, loadable, ahead, evicting, draining, failed
    }

    /// Free request slots of one (worker, model), counting this hub's own in-flight
    /// requests so a burst cannot pile onto a worker whose last heartbeat said "idle".
    ///
    /// - loaded: `slots_total - (max(0, requests (or busy slots) reported - hub in-flight when that report
    ///   arrived) + hub in-flight now)`: the requests that were not ours (other hubs, direct
    ///   callers; running or in the engine's queue) stay counted until the next report, ours
    ///   are counted live, so a slot we free is usable at once instead of after the next
    ///   heartbeat; a loaded model whose slots are unknown counts as one slot.
    /// - refused as full by the worker since its last report: nothing (``Pair/full``).
    /// - not loaded: `assumedSlots - hub in-flight` when the model fits the worker's VRAM
    ///   budget (``VRAMBudget/fit(needMiB:freeMiB:)``, the definition the worker admits by):
    ///   `loadable` when it fits the free VRAM now, `evicting` when idle models must go
    ///   first, nothing when it needs more than the whole budget. A model already loading
    ///   was admitted by the worker: `loadable`.
    /// - loaded with no free slot: `slots_total x aheadPerSlot` more may be sent ahead,
    ///   to wait in the engine's queue (``Tier/ahead``).
    /// - failed: one slot (a single retry at a time).
    /// - downloading (a hub-placed model whose files are not there yet): nothing; requests wait.
    package static func capacity(_ pair: Pair, aheadPerSlot: Int = 0) -> (tier: Tier, free: Int) {
        if pair.full { return (.loaded, 0) }
        switch pair.state {
        case .ready:
            let others = max(0, max(pair.requests, pair.slotsBusy) - pair.inFlightAtReport)
            let total = pair.slotsTotal > 0 ? pair.slotsTotal : 1
            let free = total - others - pair.inFlight
            if free <= 0 && aheadPerSlot > 0 && free + total * aheadPerSlot > 0 {
                return (.ahead, free + total * aheadPerSlot)
            }
            return (.loaded, free)
        case .notLoaded, .loading, .stopping:
            switch pair.fit {
            case .never: return (.loadable, 0)
            case .afterEviction where pair.state != .loading: return (.evicting, assumedSlots - pair.inFlight)
            default: return (.loadable, assumedSlots - pair.inFlight)
            }
        case .draining:
            return (.draining, max(1, pair.slotsTotal) - pair.inFlight)
        case .failed:
            return (.failed, 1 - pair.inFlight)
        case .downloading:
            return (.loadable, 0)  // nothing to send until its files are there: requests wait
        }
    }

    /// A worker's static weight in thousandths, clamped to 0...1,000,000 (a report is
    /// input from the network: NaN or infinity must not trap).
    package static func milliWeight(_ weight: Double) -> Int64 {
        guard weight.isFinite, weight > 0 else { return 0 }
        return Int64((min(weight, 1_000_000) * 1000).rounded())
    }

    /// Among workers that would have to load the model, the one with the most free VRAM
    /// after the load is preferred: its weight is multiplied by that headroom in GiB (at least 1).
    package static func headroomFactor(_ pair: Pair) -> Int64 {
        guard pair.state != .ready, case .free(let headroom) = pair.fit else { return 1 }
        return Int64(max(1, headroom / 1024))
    }

    /// Routing weight = the worker's static `weight` x free slots (0 when saturated), before
    /// the VRAM headroom and latency factors.
    package static func weight(_ pair: Pair) -> Double {
        pair.drained ? 0 : pair.weight * Double(max(0, capacity(pair).free))
    }
}
