import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import Config
import Wire

/// The worker's GPUs as last measured, refreshed in the background so that a slow or hung
/// `nvidia-smi` never delays a heartbeat: a reading that fails keeps the last good one,
/// flagged `stale`; with no reading ever, the declared GPUs.
final class GPUMonitor: Service, Sendable {
    let declared: [GPUConfig]
    let interval: Duration
    let timeout: Duration
    let executable: String
    private let logger: Logger
    private let last = Mutex<(gpus: [GPUReport]?, stale: Bool)>((nil, false))

    init(declared: [GPUConfig], interval: Duration, timeout: Duration = .seconds(5), executable: String = "nvidia-smi",
         logger: Logger) {
        self.declared = declared
        self.interval = interval
        self.timeout = timeout
        self.executable = executable
        self.logger = logger
    }

    /// What the next heartbeat reports.
    var current: [GPUReport] {
        last.withLock { state in
            guard let gpus = state.gpus else { return GPUProbe.declared(declared) }
            return state.stale ? gpus.map { var gpu = $0; gpu.stale = true; return gpu } : gpus
        }
    }

    /// Takes one reading now.
    func refresh() async {
        let reading = await GPUProbe.measure(executable: executable, timeout: timeout)
        let newlyStale = last.withLock { state -> Bool in
            if let reading {
                state = (reading, false)
                return false
            }
            guard state.gpus != nil, !state.stale else { return false }
            state.stale = true
            return true
        }
        if newlyStale {
            logger.warning("nvidia-smi failed or timed out; reporting its last reading as stale",
                           metadata: ["timeout": "\(timeout)"])
        }
    }

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await refresh()
            try? await Task.sleep(for: interval)
        }
    }
}
