import Foundation

/// What a model needs on the GPU, from its GGUF header and file sizes: the weights (the
/// files' size: they are loaded whole), the KV cache for `ctx` tokens in each of `parallel`
/// slots at the cache's element type, and compute buffers (a tenth of the weights, at least
/// 64 MiB). The parts are kept so `models ls` and the dashboard can show them.
struct VRAMEstimate: Codable, Equatable, Sendable {
    var weightsMiB: Int
    var kvCacheMiB: Int
    var computeMiB: Int
    /// The tokens of KV cache counted: ctx x parallel.
    var kvTokens: Int
    var totalMiB: Int { weightsMiB + kvCacheMiB + computeMiB }

    /// llama-server's default context when neither the admin nor the model says (`-c`).
    static let defaultContext = 4096

    /// - Parameters:
    ///   - bytes: every file's size (all parts of a split model, and its projector).
    ///   - ctx: tokens per slot (nil: the model's training context, at most 4096).
    ///   - args: llama-server arguments; `-ctk`/`--cache-type-k` and `-ctv`/`--cache-type-v` set the KV types.
    init(header: GGUFHeader, bytes: Int, ctx: Int?, parallel: Int?, args: [String]) {
        let mib = 1_048_576.0
        weightsMiB = Int((Double(bytes) / mib).rounded(.up))
        computeMiB = max(64, weightsMiB / 10)
        let slots = max(1, parallel ?? 1)
        let perSlot = ctx ?? min(Self.defaultContext, Int(header.number("context_length") ?? Double(Self.defaultContext)))
        kvTokens = perSlot * slots
        let layers = header.number("block_count") ?? 0
        let embedding = header.number("embedding_length") ?? 0
        let heads = header.number("attention.head_count") ?? 1
        let kvHeads = header.number("attention.head_count_kv") ?? heads
        let headSize = heads > 0 ? embedding / heads : 0
        let keyLength = header.number("attention.key_length") ?? headSize
        let valueLength = header.number("attention.value_length") ?? headSize
        let keyBytes = Self.bytesPerElement(Self.argument(["-ctk", "--cache-type-k"], in: args) ?? "f16")
        let valueBytes = Self.bytesPerElement(Self.argument(["-ctv", "--cache-type-v"], in: args) ?? "f16")
        let perToken = layers * kvHeads * (keyLength * keyBytes + valueLength * valueBytes)
        kvCacheMiB = Int((perToken * Double(kvTokens) / mib).rounded(.up))
    }

    init(weightsMiB: Int, kvCacheMiB: Int, computeMiB: Int, kvTokens: Int) {
        self.weightsMiB = weightsMiB
        self.kvCacheMiB = kvCacheMiB
        self.computeMiB = computeMiB
        self.kvTokens = kvTokens
    }

    /// Bytes per cached element of llama.cpp's KV cache types (blocks of 32 with their scales).
    static func bytesPerElement(_ type: String) -> Double {
        switch type.lowercased() {
        case "f32": 4
        case "q8_0": 34.0 / 32
        case "q5_1": 24.0 / 32
        case "q5_0": 22.0 / 32
        case "q4_1": 20.0 / 32
        case "q4_0", "iq4_nl": 18.0 / 32
        default: 2  // f16, bf16
        }
    }

    /// The value of the first of `names` in `args` (`NAME VALUE` or `NAME=VALUE`).
    static func argument(_ names: [String], in args: [String]) -> String? {
        for (index, argument) in args.enumerated() {
            for name in names {
                if argument == name, index + 1 < args.count { return args[index + 1] }
                if argument.hasPrefix(name + "=") { return String(argument.dropFirst(name.count + 1)) }
            }
        }
        return nil
    }
}
