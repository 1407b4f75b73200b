import Routing
import Wire

// What the routing tests (and the hub's) build registries from.

/// A worker report with one ready model `m` (alias `m-alias`, 4 slots) unless `models` says otherwise.
package func report(_ name: String, seq: UInt64 = 1, weight: Double = 1,
            models: [ModelReport] = [ModelReport(name: "m", aliases: ["m-alias"], state: .ready, slotsTotal: 4)])
    -> WorkerReport
{
    WorkerReport(name: name, url: "http://\(name)", version: "t", sequence: seq, models: models, gpus: [],
                 inFlight: 0, weight: weight)
}

/// A worker that reports one GPU and one model `m` that is not loaded yet.
package func gpuReport(_ name: String, totalMiB: Int, freeMiB: Int, needMiB: Int) -> WorkerReport {
    var worker = report(name, models: [ModelReport(name: "m", state: .notLoaded, vramEstimateMiB: needMiB)])
    worker.gpus = [GPUReport(index: 0, name: "g", memoryTotalMiB: totalMiB, memoryFreeMiB: freeMiB)]
    return worker
}

extension Registry.Decision {
    package var worker: String? {
        if case .picked(let pick) = self { return pick.worker }
        return nil
    }
    package var pick: Registry.Pick? {
        if case .picked(let pick) = self { return pick }
        return nil
    }
}
