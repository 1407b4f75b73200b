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
        cacheAware()
    }

    /// The cache-aware policy's own costs: hashing an 8 KB prompt, and one decision (pick +
    /// release) with that prompt's blocks looked up and recorded, at 8 and 64 workers, over
    /// 1,000 conversations whose prefixes are already in the index.
    private func cacheAware() {
        let prompt = Array((0..<8192).map { UInt8(ascii: "a") + UInt8($0 % 26) })
        let hashed = Self.median((0..<repetitions).map { _ in
            let elapsed = ContinuousClock().measure {
                for round in 0..<iterations / 10 {
                    var copy = prompt
                    copy[0] = UInt8(truncatingIfNeeded: round)
                    let fingerprint = copy.withUnsafeBytes { PrefixFingerprint($0) }
                    precondition(fingerprint.blocks.count == 32)
                }
            }
            return Self.nanos(elapsed) / Double(iterations / 10)
        })
        print("")
        print("cache-aware: fingerprint of an 8 KB prompt (32 blocks): \(String(format: "%.0f", hashed)) ns")
        print("")
        print("| workers | cache-aware pick + release, 8 KB prompt (ns) |")
        print("|---:|---:|")
        for count in [8, 64] {
            let now = ContinuousClock().now
            var registry = Registry(expiry: .seconds(3600), policy: .cacheAware(CacheAwarePolicy()))
            for index in 0..<count {
                registry.register(WorkerReport(
                    name: "w\(index)", url: "http://w\(index)", version: "bench", sequence: 1,
                    models: [ModelReport(name: "m", state: .ready, slotsTotal: 4)],
                    gpus: [], inFlight: 0, weight: 1), now: now)
            }
            let conversations = (0..<1000).map { id -> PrefixFingerprint in
                var copy = prompt
                copy[0] = UInt8(id % 256)
                copy[1] = UInt8(id / 256)
                return copy.withUnsafeBytes { PrefixFingerprint($0) }
            }
            for fingerprint in conversations { decide(&registry, now, fingerprint) }  // into the index
            let nanos = Self.median((0..<repetitions).map { _ in
                let elapsed = ContinuousClock().measure {
                    for round in 0..<iterations / 10 { decide(&registry, now, conversations[round % conversations.count]) }
                }
                return Self.nanos(elapsed) / Double(iterations / 10)
            })
            print("| \(count) | \(String(format: "%.0f", nanos)) |")
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

    private func decide(_ registry: inout Registry, _ now: ContinuousClock.Instant, _ prompt: PrefixFingerprint? = nil) {
        guard case .picked(let pick) = registry.pick("m", prompt: prompt, now: now).decision else { fatalError("no pick") }
        _ = registry.release(pick, sample: .success, now: now)
    }
}
