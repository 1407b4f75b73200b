/// A bounded queue of requests waiting for capacity on one model, in arrival order.
///
/// Pure bookkeeping: the hub parks a waiter here, pops entries in arrival order
/// when capacity frees, and removes an entry the moment its client leaves or its deadline
/// passes. Nothing is sent to a queued client, so every outcome can still be a real status
/// (429 when full, 503 at the deadline). An entry's id is its request's arrival ticket: a
/// request that comes back (a worker it was sent to answered "full") takes its place in
/// line again, ahead of those that arrived after it, even past the capacity.
package struct WaitQueue<Waiter>: Sendable where Waiter: Sendable {
    package typealias Instant = ContinuousClock.Instant

    package struct Entry: Sendable {
        package let id: UInt64
        package let deadline: Instant
        package let waiter: Waiter
    }

    package let capacity: Int
    package private(set) var entries: [Entry] = []

    package init(capacity: Int) { self.capacity = capacity }

    package var count: Int { entries.count }
    package var isEmpty: Bool { entries.isEmpty }

    /// Whether a request with arrival ticket `id` is first in line (nobody earlier waits).
    package func isFirst(_ id: UInt64) -> Bool { entries.first.map { id < $0.id } ?? true }

    /// Adds a waiter at its place by arrival; false when the queue is full and every waiter
    /// arrived before it.
    package mutating func enqueue(id: UInt64, deadline: Instant, _ waiter: Waiter) -> Bool {
        let entry = Entry(id: id, deadline: deadline, waiter: waiter)
        guard let last = entries.last, id < last.id else {
            guard entries.count < capacity else { return false }
            entries.append(entry)
            return true
        }
        entries.insert(entry, at: entries.firstIndex { $0.id > id } ?? entries.endIndex)
        return true
    }

    /// The oldest waiter, removed.
    package mutating func popFirst() -> Entry? {
        entries.isEmpty ? nil : entries.removeFirst()
    }

    /// Removes a waiter that left (client gone, deadline); nil when it was already dispatched.
    package mutating func remove(id: UInt64) -> Entry? {
        guard let index = entries.firstIndex(where: { $0.id == id }) else { return nil }
        return entries.remove(at: index)
    }

    /// Removes and returns every waiter whose deadline has passed, oldest first.
    package mutating func removeExpired(now: Instant) -> [Entry] {
        let expired = entries.filter { $0.deadline <= now }
        if !expired.isEmpty { entries.removeAll { $0.deadline <= now } }
        return expired
    }
}
