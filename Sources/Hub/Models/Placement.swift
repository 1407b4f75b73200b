import Foundation

/// Where a hub-managed model's replicas go: a pure decision over the workers the hub sees,
/// the same on every hub given the same reports.
///
/// Kept: replicas on workers that are live, or gone for less than the grace (a restart must
/// not move a 40 GB model). New replicas go to workers that fit the model in their VRAM
/// budget (minus the other managed models placed there) and have the disk space, spread one
/// per worker, preferring workers that hold the files already, then the most VRAM left,
/// then the most free disk, then the name (so hubs agree).
enum Placement {
    /// One worker as placement sees it.
    struct Candidate: Equatable, Sendable {
        var name: String
        /// The worker's VRAM budget (nil: unknown, VRAM does not limit it).
        var budgetMiB: Int?
        /// VRAM the other managed models placed here are expected to need.
        var committedMiB: Int = 0
        var diskFreeMiB: Int?
        var hasFiles = false
        var draining = false

        var vramLeftMiB: Int? { budgetMiB.map { $0 - committedMiB } }
    }

    struct Decision: Equatable, Sendable {
        var placement: [ManagedModel.Assignment]
        /// Why there are fewer replicas than asked (nil: all placed).
        var problem: String?
    }

    static func decide(_ model: ManagedModel, live: [Candidate], now: Date, grace: TimeInterval) -> Decision {
        let need = model.estimate?.totalMiB
        let needDiskMiB = Int((Double(model.totalBytes) / 1_048_576).rounded(.up))
        let liveNames = Set(live.map(\.name))
        // What stays: replicas on live workers, and on gone ones within the grace.
        var kept: [ManagedModel.Assignment] = []
        for var assignment in model.placement {
            if liveNames.contains(assignment.worker) {
                assignment.goneSince = nil
            } else {
                let gone = assignment.goneSince ?? now
                if now.timeIntervalSince(gone) >= grace { continue }
                assignment.goneSince = gone
            }
            if let named = model.workers, !named.contains(assignment.worker) { continue }
            kept.append(assignment)
        }
        let wanted = model.workers?.count ?? max(1, model.replicas)
        guard kept.count < wanted else { return Decision(placement: Array(kept.prefix(wanted)), problem: nil) }

        var refusals: [String] = []
        var fitting: [Candidate] = []
        let taken = Set(kept.map(\.worker))
        for candidate in live where !taken.contains(candidate.name) {
            if let named = model.workers, !named.contains(candidate.name) { continue }
            if candidate.draining { refusals.append("\(candidate.name) is draining"); continue }
            if let need, let left = candidate.vramLeftMiB, need > left {
                refusals.append("\(candidate.name) has \(max(0, left)) MiB of VRAM budget left (of \(candidate.budgetMiB ?? 0))")
                continue
            }
            if !candidate.hasFiles, let disk = candidate.diskFreeMiB, needDiskMiB > disk {
                refusals.append("\(candidate.name) has \(disk) MiB of disk free for \(needDiskMiB) MiB of files")
                continue
            }
            fitting.append(candidate)
        }
        fitting.sort { a, b in
            if a.hasFiles != b.hasFiles { return a.hasFiles }
            let (va, vb) = (a.vramLeftMiB ?? Int.max, b.vramLeftMiB ?? Int.max)
            if va != vb { return va > vb }
            let (da, db) = (a.diskFreeMiB ?? Int.max, b.diskFreeMiB ?? Int.max)
            if da != db { return da > db }
            return a.name < b.name
        }
        var placement = kept
        for candidate in fitting.prefix(wanted - kept.count) {
            var reasons: [String] = []
            if candidate.hasFiles { reasons.append("has the files") }
            if let left = candidate.vramLeftMiB {
                reasons.append("\(left - (need ?? 0)) MiB of VRAM budget left after it")
            } else {
                reasons.append("no VRAM budget known")
            }
            if let disk = candidate.diskFreeMiB, !candidate.hasFiles { reasons.append("\(disk) MiB of disk free") }
            placement.append(.init(worker: candidate.name, reason: reasons.joined(separator: ", "), since: now))
        }
        if let named = model.workers {
            for name in named where !placement.contains(where: { $0.worker == name }) && !liveNames.contains(name) {
                refusals.append("\(name) is not connected")
            }
        }
        guard placement.count < wanted else { return Decision(placement: placement, problem: nil) }
        let needText = need.map { "needs \($0) MiB of VRAM" } ?? "needs an unknown amount of VRAM"
        let why = refusals.isEmpty ? "no worker is connected" : refusals.joined(separator: "; ")
        return Decision(placement: placement,
                        problem: "\(placement.count) of \(wanted) replicas placed: the model \(needText) and \(needDiskMiB) MiB of disk; \(why)")
    }
}
