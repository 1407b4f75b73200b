import Foundation
import Config
import Wire

/// Latency-aware weights: each (worker, model) keeps a peak-EWMA of its streamed time to
/// first byte, and its weight is multiplied by `best / own` (the model's fastest worker over
/// this one), floored at ``floor``. A worker 10x slower than the best gets a tenth of its
/// share before any breaker trips; as its samples improve, the average decays and its share
/// comes back smoothly.
///
/// Peak-EWMA (Finagle's): a sample above the average replaces it at once (a worker that
/// turns slow is noticed on its first slow answer); a lower one is blended in with a weight
/// that depends on the time since the previous sample (time constant ``tau``), so the
/// decay takes the same wall time however busy the worker is.
package enum LatencyWeight {
    /// 2 s: a worker whose 1.5 s first-byte fault clears is back to a fair share within
    /// about 8 s of fast answers (5 s took 22 s: a worker held at a 5 % share gets few samples
    /// to decay with). A slow sample still counts in full at once (the peak), so detection is
    /// as fast as before.
    package static let tau: Double = 2e9  // nanoseconds
    /// The smallest factor: even a very slow worker keeps a trickle of requests, so it can
    /// show that it recovered.
    package static let floor = 0.05
    /// An average with no new sample for this long is dropped (nanoseconds; 3 time constants).
    package static let forgetAfter = Int64(3 * tau)

    package static func update(_ average: Double, sample: Double, elapsed: Int64) -> Double {
        guard average > 0, sample < average else { return sample }
        let keep = exp(-Double(max(0, elapsed)) / tau)
        return average * keep + sample * (1 - keep)
    }

    package static func factor(_ own: Double, best: Double) -> Double {
        guard own > 0, best > 0, own > best else { return 1 }
        return max(floor, best / own)
    }
}
