import ArgumentParser
import Foundation
import Shared

/// `caravan-hub bench-routing`: times one routing decision (pick + release) on the real
/// `Registry` with N live workers serving one model. Run it from a release build
/// (`scripts/bench-routing.sh`); it is a benchmark, not a test.
struct RoutingBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-routing", abstract: "Time one routing decision at several cluster sizes.", shouldDisplay: false)

    @Option(name: .long, parsing: .upToNextOption, help: "Cluster sizes.")
    var workers: [Int] = [8, 64, 256]

    @Option(name: .long, help: "Decisions per size.")
    var iterations = 200_000

    func run() {
        print("| workers | ns per decision (pick + release) | decisions/s |")
        print("|---:|---:|---:|")
        for count in workers {
            let clock = ContinuousClock()
            let now = clock.now
            var registry = Registry(expiry: .seconds(3600))
            for index in 0..<count {
                registry.register(WorkerReport(
                    name: "w\(index)", url: "http://w\(index)", version: "bench", sequence: 1,
                    models: [ModelReport(name: "m", state: .ready, slotsTotal: 4, slotsBusy: index % 3)],
                    gpus: [], inFlight: 0, weight: Double(1 + index % 4)), now: now)
            }
            for _ in 0..<1000 { decide(&registry, now) }  // warm up
            let elapsed = clock.measure {
                for _ in 0..<iterations { decide(&registry, now) }
            }
            let nanos = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
            let perDecision = nanos / Double(iterations)
            print("| \(count) | \(String(format: "%.0f", perDecision)) | \(String(format: "%.0f", 1e9 / perDecision)) |")
        }
    }

    private func decide(_ registry: inout Registry, _ now: ContinuousClock.Instant) {
        guard case .picked(let pick) = registry.pick("m", now: now).decision else { fatalError("no pick") }
        _ = registry.release(pick, sample: .success, now: now)
    }
}
