import ArgumentParser
import Foundation
import Routing
import Wire

/// `RoutingBench`: times one routing decision (the pick alone, and pick +
/// release, which also feeds the breaker) on the real
/// `Registry` with N live workers serving one model. Run it from a release build
/// (`scripts/bench-routing.sh`); it is a benchmark, not a test.
@main
struct RoutingBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "RoutingBench", abstract: "Time one routing decision at several cluster sizes.")

    @Option(name: .long, parsing: .upToNextOption, help: "Cluster sizes.")
    var workers: [Int] = [8, 64, 256]

    @Option(name: .long, help: "Decisions per size and repetition.")
    var iterations = 200_000

    @Option(name: .long, help: "Repetitions per size; the median is reported (this machine is shared and noisy).")
    var repetitions = 5

    func run() {
        print("| workers | pick (ns) | pick + release (ns) | decisions/s |")
        print("|---:|---:|---:|---:|")
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
            var pickNanos: [Double] = []
            var decisionNanos: [Double] = []
            for _ in 0..<repetitions {
                pickNanos.append(timePicks(&registry, now: now, batch: min(64, count)))  // below the free slots
                decisionNanos.append(timeDecisions(&registry, now: now))
            }
            let pick = Self.median(pickNanos)
            let decision = Self.median(decisionNanos)
            print("| \(count) | \(String(format: "%.0f", pick)) | \(String(format: "%.0f", decision)) "
                + "| \(String(format: "%.0f", 1e9 / decision)) |")
        }
    }

    /// Nanoseconds per pick: batches of `batch` picks are timed, their releases are not.
    private func timePicks(_ registry: inout Registry, now: ContinuousClock.Instant, batch: Int) -> Double {
        let clock = ContinuousClock()
        var picks: [Registry.Pick] = []
        picks.reserveCapacity(batch)
        var total = Duration.zero
        let rounds = max(1, iterations / batch)
        for round in 0..<(rounds + 10) {
            let elapsed = clock.measure {
                for _ in 0..<batch {
                    guard case .picked(let pick) = registry.pick("m", now: now).decision else { fatalError("no pick") }
                    picks.append(pick)
                }
            }
            if round >= 10 { total += elapsed }  // the first rounds warm up
            for pick in picks { _ = registry.release(pick, sample: .success, now: now) }
            picks.removeAll(keepingCapacity: true)
        }
        return Self.nanos(total) / Double(rounds * batch)
    }

    /// Nanoseconds per pick + release.
    private func timeDecisions(_ registry: inout Registry, now: ContinuousClock.Instant) -> Double {
        for _ in 0..<1000 { decide(&registry, now) }  // warm up
        let elapsed = ContinuousClock().measure {
            for _ in 0..<iterations { decide(&registry, now) }
        }
        return Self.nanos(elapsed) / Double(iterations)
    }

    private static func median(_ values: [Double]) -> Double {
        values.sorted()[values.count / 2]
    }

    private static func nanos(_ duration: Duration) -> Double {
        Double(duration.nanoseconds)
    }

    private func decide(_ registry: inout Registry, _ now: ContinuousClock.Instant) {
        guard case .picked(let pick) = registry.pick("m", now: now).decision else { fatalError("no pick") }
        _ = registry.release(pick, sample: .success, now: now)
    }
}
