/// The one definition of "does this model fit this worker's VRAM", used by the worker
/// (admission, eviction, refusing a start) and by the hub (routing), so the two never disagree.
///
/// A worker has a budget only when it knows one: `vram_budget_mb`, or GPUs that report
/// memory. A CPU worker (no GPUs, or GPUs declared with `vram_mb: 0`) has none, and VRAM
/// then never keeps a model from loading there.
public struct VRAMBudget: Sendable, Equatable {
    /// Total VRAM the worker's models may share, in MiB; nil when unknown (no limit).
    public let totalMiB: Int?

    /// - Parameter totalMiB: 0 or less means unknown (a CPU worker declares `vram_mb: 0`).
    public init(totalMiB: Int?) {
        self.totalMiB = totalMiB.flatMap { $0 > 0 ? $0 : nil }
    }

    /// The budget a worker's GPUs imply: their total memory.
    public init(gpus: [GPUReport]) {
        self.init(totalMiB: gpus.reduce(0) { $0 + max(0, $1.memoryTotalMiB) })
    }

    /// How a model needing `needMiB` fits, given `freeMiB` free now (nil: not measured).
    public enum Fit: Sendable, Equatable {
        /// No budget, or no estimate: VRAM does not limit this model.
        case unconstrained
        /// Fits in the free VRAM now, leaving `headroomMiB`.
        case free(headroomMiB: Int)
        /// Fits the budget, but only after idle models are evicted.
        case afterEviction
        /// Needs more than the whole budget: it can never load here.
        case never(needMiB: Int, budgetMiB: Int)
    }

    public func fit(needMiB: Int?, freeMiB: Int?) -> Fit {
        guard let totalMiB, let needMiB, needMiB > 0 else { return .unconstrained }
        guard needMiB <= totalMiB else { return .never(needMiB: needMiB, budgetMiB: totalMiB) }
        let free = min(freeMiB ?? totalMiB, totalMiB)
        return needMiB <= free ? .free(headroomMiB: free - needMiB) : .afterEviction
    }

    /// Why a model can never load under this budget, for logs and client errors.
    public static func neverFitsReason(needMiB: Int, budgetMiB: Int) -> String {
        "needs \(needMiB) MiB of VRAM, more than the worker's whole budget of \(budgetMiB) MiB "
            + "(set the model's vram_mb if it offloads only part of its layers)"
    }

    /// The static routing weight of `weight: auto`: the budget in GiB (a 48 GiB worker gets
    /// twice the share of a 24 GiB one at equal free slots), or 1 without a budget.
    public var autoWeight: Double {
        guard let totalMiB else { return 1 }
        return max(1, Double(totalMiB) / 1024)
    }
}
