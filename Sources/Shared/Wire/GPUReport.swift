import Foundation

/// One GPU and its memory, in MiB (as `nvidia-smi` reports it).
public struct GPUReport: Codable, Sendable, Equatable {
    public var index: Int
    public var name: String
    public var memoryTotalMiB: Int
    public var memoryFreeMiB: Int
    /// True when the last measurement failed (a hung `nvidia-smi`) and these are older values.
    public var stale: Bool?

    public init(index: Int, name: String, memoryTotalMiB: Int, memoryFreeMiB: Int) {
        self.index = index
        self.name = name
        self.memoryTotalMiB = memoryTotalMiB
        self.memoryFreeMiB = memoryFreeMiB
    }
}
