/// The prompt of one request as chained block hashes: `h[i] = H(block[i], h[i-1])`.
///
/// Taken from the raw bytes of the prompt's JSON value (`messages` of a chat, `prompt` of a
/// completion) where the body already is: no copy, no decoding. A conversation's next turn
/// repeats the previous turn's messages byte for byte (clients serialise them the same way),
/// so its leading blocks hash alike, and because each hash covers every block before it,
/// "block i matches" means "the first i + 1 blocks match". Roles, tool calls and images
/// (their bytes or URLs) are part of those bytes, so they count as llama.cpp's prompt cache
/// counts them.
///
/// Capped at ``maxBytes``; hashing 8 KB costs about a microsecond (`RoutingBench`).
package struct PrefixFingerprint: Sendable, Equatable {
    /// Bytes per block: about 64 tokens of English text, llm-d's block size.
    package static let blockBytes = 256
    /// Only the first 256 KiB are hashed: a longer prompt's first 1,024 blocks place it.
    package static let maxBytes = 256 * 1024

    /// Chained hashes of the full blocks, in order (a last partial block is left out: the
    /// next turn appends to it, so it would never match).
    package private(set) var blocks: [UInt64]

    package init(blocks: [UInt64]) { self.blocks = blocks }

    /// Hashes `bytes` (the prompt value's raw JSON).
    package init(_ bytes: UnsafeRawBufferPointer) {
        let length = min(bytes.count, Self.maxBytes)
        let count = length / Self.blockBytes
        blocks = []
        guard count > 0 else { return }
        blocks.reserveCapacity(count)
        var previous: UInt64 = 0x9E37_79B9_7F4A_7C15
        for block in 0..<count {
            previous = Self.hash(UnsafeRawBufferPointer(rebasing: bytes[(block * Self.blockBytes)..<((block + 1) * Self.blockBytes)]),
                                 seed: previous)
            blocks.append(previous)
        }
    }

    package var isEmpty: Bool { blocks.isEmpty }

    /// A 64-bit hash of one block, eight bytes at a time (the block size is a multiple of 8),
    /// seeded with the previous block's hash.
    static func hash(_ block: UnsafeRawBufferPointer, seed: UInt64) -> UInt64 {
        var h = seed ^ 0xA076_1D64_78BD_642F
        var offset = 0
        while offset < block.count {
            let word = block.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            h = (h ^ word) &* 0x9FB2_1C65_1E98_DF25
            h ^= h >> 29
            offset += 8
        }
        return mix(h)
    }

    /// A final avalanche (splitmix64), also used to place a key on a worker (rendezvous).
    package static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
