import Foundation
import Shared

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

    /// `nvidia-smi` when it is on PATH and answers, else the declared GPUs.
    static func probe(declared gpus: [GPUConfig]) async -> [GPUReport] {
        if resolveExecutable("nvidia-smi") != nil,
            let result = try? await ChildProcess.run("nvidia-smi", arguments), result.status == 0
        {
            let parsed = parse(result.output)
            if !parsed.isEmpty { return parsed }
        }
        return declared(gpus)
    }
}
