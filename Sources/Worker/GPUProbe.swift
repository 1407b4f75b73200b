import Foundation
import Logging
import ServiceLifecycle
import Shared
import Synchronization

/// Reads GPU memory from `nvidia-smi`, or falls back to the GPUs declared in config.
enum GPUProbe {
    static let arguments = ["--query-gpu=index,name,memory.total,memory.free", "--format=csv,noheader,nounits"]

    /// Parses `nvidia-smi --query-gpu=index,name,memory.total,memory.free --format=csv,noheader,nounits`.
    /// Lines that do not parse (errors such as "No devices were found") are skipped.
    static func parse(_ output: String) -> [GPUReport] {
        output.split(whereSeparator: \.isNewline).compactMap { line in
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard fields.count == 4, let index = Int(fields[0]), let total = Int(fields[2]), let free = Int(fields[3])
            else { return nil }
            return GPUReport(index: index, name: fields[1], memoryTotalMiB: total, memoryFreeMiB: free)
        }
    }

    /// The configured GPUs, reported as fully free (there is no way to measure them).
    static func declared(_ gpus: [GPUConfig]) -> [GPUReport] {
        gpus.enumerated().map { GPUReport(index: $0.offset, name: $0.element.name,
                                          memoryTotalMiB: $0.element.vramMB, memoryFreeMiB: $0.element.vramMB) }
    }

    /// One `nvidia-smi` reading (killed after `timeout`); nil when it is absent, fails, hangs
    /// or reports no GPU.
    static func measure(executable: String = "nvidia-smi", timeout: Duration) async -> [GPUReport]? {
        guard resolveExecutable(executable) != nil,
            let result = try? await ChildProcess.run(executable, arguments, timeout: timeout), result.status == 0
        else { return nil }
        let parsed = parse(result.output)
        return parsed.isEmpty ? nil : parsed
    }
}

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
