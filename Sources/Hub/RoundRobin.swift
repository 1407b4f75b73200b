/// Plain round-robin per model: each call starts one position further along the list.
///
/// Callers pass candidates in a stable order; the returned rotation is the order to try
/// them in, so a failed attempt moves on to the next worker.
struct RoundRobin: Sendable {
    private var positions: [String: Int] = [:]

    /// Rotates `items` to start at this key's next position.
    mutating func rotation<T>(of items: [T], key: String) -> [T] {
        guard !items.isEmpty else { return [] }
        let position = positions[key, default: 0]
        positions[key] = position &+ 1
        let start = position % items.count
        return Array(items[start...] + items[..<start])
    }
}
