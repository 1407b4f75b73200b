/// Which workers recently received which prompt blocks, for one model.
///
/// Fed on dispatch (the hub's own routing history, as SGLang's router keeps its radix tree):
/// each block hash of a routed request maps to the (worker, model) pairs it was sent to,
/// newest first, at most ``Holders/capacity`` per block. Entries carry the pair's cache
/// *epoch*: when a worker leaves, its engine restarts or is evicted, or the engine's
/// `cache_n` says its cache missed, the pair's epoch moves on and every entry of the old
/// one is ignored from then on, with nothing to scan.
///
/// Bounded with two generations (an approximate LRU): lookups and inserts go to the
/// current map; when it holds half of ``capacity`` blocks it becomes the old one and the
/// oldest generation is dropped. A block read from the old map is copied forward, so what
/// is still in use survives. At most `capacity` blocks are held; each costs about 64
/// bytes, so the default 1,000,000 blocks (250 MB of prompts at 256 bytes a block) stay
/// under 64 MiB.
package struct PrefixIndex: Sendable {
    /// The pairs that got one block: pair id and its epoch, newest first.
    package struct Holders: Sendable, Equatable {
        package static let capacity = 4
        package var pairs: (Int32, Int32, Int32, Int32) = (-1, -1, -1, -1)
        package var epochs: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)

        package static func == (a: Holders, b: Holders) -> Bool {
            a.pairs == b.pairs && a.epochs == b.epochs
        }

        subscript(_ index: Int) -> (pair: Int32, epoch: UInt32) {
            switch index {
            case 0: (pairs.0, epochs.0)
            case 1: (pairs.1, epochs.1)
            case 2: (pairs.2, epochs.2)
            default: (pairs.3, epochs.3)
            }
        }

        /// `pair` no longer holds the block.
        mutating func remove(_ pair: Int32) {
            withUnsafeMutableBytes(of: &pairs) { raw in
                let holders = raw.bindMemory(to: Int32.self)
                for index in holders.indices where holders[index] == pair { holders[index] = -1 }
            }
        }

        /// `pair` moved to the front (it got the block again, or now); the oldest holder
        /// falls off when all four places are taken.
        mutating func insert(_ pair: Int32, epoch: UInt32) {
            var newPairs: (Int32, Int32, Int32, Int32) = (pair, -1, -1, -1)
            var newEpochs: (UInt32, UInt32, UInt32, UInt32) = (epoch, 0, 0, 0)
            withUnsafeMutableBytes(of: &newPairs) { rawPairs in
                withUnsafeMutableBytes(of: &newEpochs) { rawEpochs in
                    let (toPairs, toEpochs) = (rawPairs.bindMemory(to: Int32.self), rawEpochs.bindMemory(to: UInt32.self))
                    var count = 1
                    for index in 0..<Self.capacity where count < Self.capacity {
                        let holder = self[index]
                        guard holder.pair >= 0, holder.pair != pair else { continue }
                        toPairs[count] = holder.pair
                        toEpochs[count] = holder.epoch
                        count += 1
                    }
                }
            }
            pairs = newPairs
            epochs = newEpochs
        }
    }

    package let capacity: Int
    private var current: [UInt64: Holders] = [:]
    private var previous: [UInt64: Holders] = [:]

    package init(capacity: Int = 1_000_000) { self.capacity = max(2, capacity) }

    /// Blocks held, over both generations.
    package var count: Int { current.count + previous.count }

    /// Records that `blocks` were sent to `pair` (at cache epoch `epoch`).
    package mutating func record(_ blocks: [UInt64], pair: Int, epoch: UInt32) {
        for block in blocks {
            var holders = current[block] ?? previous[block] ?? Holders()
            holders.insert(Int32(pair), epoch: epoch)
            store(block, holders)
        }
    }

    /// For each pair in `pairs`, how many leading blocks of `blocks` it holds at its current
    /// epoch (`epochs`, aligned with `pairs`): 0 when none. Stops at the first block nobody holds.
    package mutating func matches(_ blocks: [UInt64], pairs: [Int], epochs: [UInt32]) -> [Int] {
        var matched = Array(repeating: 0, count: pairs.count)
        for (position, block) in blocks.enumerated() {
            guard let holders = lookup(block) else { break }
            var any = false
            for index in 0..<Holders.capacity {
                let holder = holders[index]
                guard holder.pair >= 0, let slot = pairs.firstIndex(of: Int(holder.pair)),
                      matched[slot] == position, epochs[slot] == holder.epoch else { continue }
                matched[slot] = position + 1
                any = true
            }
            if !any { break }
        }
        return matched
    }

    /// Forgets that `pair` holds `blocks` (its engine's answer said it reused none of them):
    /// the other conversations it holds keep their entries.
    package mutating func forget(_ blocks: [UInt64], pair: Int) {
        for block in blocks {
            for generation in 0..<2 {
                guard var holders = generation == 0 ? current[block] : previous[block] else { continue }
                holders.remove(Int32(pair))
                if generation == 0 { current[block] = holders } else { previous[block] = holders }
            }
        }
    }

    private mutating func lookup(_ block: UInt64) -> Holders? {
        if let holders = current[block] { return holders }
        guard let holders = previous[block] else { return nil }
        store(block, holders)  // still in use: carried into the current generation
        return holders
    }

    private mutating func store(_ block: UInt64, _ holders: Holders) {
        current[block] = holders
        if current.count >= capacity / 2 {
            previous = current
            current = [:]
            current.reserveCapacity(capacity / 2)
        }
    }
}
