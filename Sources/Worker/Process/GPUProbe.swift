import Foundation
import Config
import Wire

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
