import Testing

@testable import Routing

@Suite("Wait queue")
struct WaitQueueTests {
    let t0 = ContinuousClock.now

    @Test("first in, first out; full is refused")
    func fifo() {
        var queue = WaitQueue<String>(capacity: 3)
        let accepted = [queue.enqueue(id: 1, deadline: t0, "a"), queue.enqueue(id: 2, deadline: t0, "b"),
                        queue.enqueue(id: 3, deadline: t0, "c"), queue.enqueue(id: 4, deadline: t0, "d")]
        #expect(accepted == [true, true, true, false])
        let popped = [queue.popFirst()?.waiter, queue.popFirst()?.waiter, queue.popFirst()?.waiter]
        #expect(popped == ["a", "b", "c"])
        let empty = queue.popFirst()
        #expect(empty == nil)
    }

    @Test("a leaving client is removed at once; a dispatched one cannot be removed")
    func cancellation() {
        var queue = WaitQueue<String>(capacity: 3)
        _ = queue.enqueue(id: 1, deadline: t0, "a")
        _ = queue.enqueue(id: 2, deadline: t0, "b")
        let removed = queue.remove(id: 1)?.waiter
        let next = queue.popFirst()?.waiter
        let again = queue.remove(id: 2)
        #expect(removed == "a")
        #expect(next == "b")
        #expect(again == nil)
    }

    @Test("deadlines expire the overdue entries, oldest first")
    func deadlines() {
        var queue = WaitQueue<String>(capacity: 5)
        _ = queue.enqueue(id: 1, deadline: t0 + .seconds(1), "a")
        _ = queue.enqueue(id: 2, deadline: t0 + .seconds(3), "b")
        _ = queue.enqueue(id: 3, deadline: t0 + .seconds(2), "c")
        let expired = queue.removeExpired(now: t0 + .seconds(2)).map(\.waiter)
        #expect(expired == ["a", "c"])
        #expect(queue.entries.map(\.waiter) == ["b"])
    }
}
