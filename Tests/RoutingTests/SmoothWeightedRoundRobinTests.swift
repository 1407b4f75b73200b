import Testing

@testable import Routing

@Suite("Smooth weighted round-robin")
struct SmoothWeightedRoundRobinTests {
    func sequence(_ weights: [Int64], count: Int, balancer: inout SmoothWeightedRoundRobin) -> String {
        let names = ["a", "b", "c", "d"]
        return (0..<count).map { _ in names[balancer.pick(weights.enumerated().map { ($0.offset, $0.element) })!] }
            .joined()
    }

    @Test("the nginx example: 5:1:1 interleaves as a a b a c a a")
    func nginxExample() {
        var balancer = SmoothWeightedRoundRobin()
        #expect(sequence([5, 1, 1], count: 7, balancer: &balancer) == "aabacaa")
        #expect(sequence([5, 1, 1], count: 7, balancer: &balancer) == "aabacaa")
    }

    @Test("exact orders for given weights", arguments: [
        ([1, 1], "abababab"), ([2, 1], "abaabaab"), ([1, 2, 4], "cbcacbcc"), ([3, 0, 1], "aacaaaca"),
    ] as [([Int64], String)])
    func orders(weights: [Int64], expected: String) {
        var balancer = SmoothWeightedRoundRobin()
        #expect(sequence(weights, count: expected.count, balancer: &balancer) == expected)
    }

    @Test("1,000 picks over weights 1:2:4 split exactly 143:286:571")
    func distribution() {
        var balancer = SmoothWeightedRoundRobin()
        var counts = [0, 0, 0]
        for _ in 0..<1000 { counts[balancer.pick([(0, 1), (1, 2), (2, 4)])!] += 1 }
        #expect(counts == [143, 286, 571])
    }

    @Test("a weight change mid-sequence takes effect at once without a burst")
    func weightChange() {
        var balancer = SmoothWeightedRoundRobin()
        #expect(sequence([1, 1], count: 4, balancer: &balancer) == "abab")
        #expect(sequence([3, 1], count: 8, balancer: &balancer) == "aabaaaba")
        #expect(sequence([0, 1], count: 3, balancer: &balancer) == "bbb")
    }

    @Test("all weights zero (everyone saturated) picks nobody")
    func saturated() {
        var balancer = SmoothWeightedRoundRobin()
        #expect(balancer.pick([(0, 0), (1, 0)]) == nil)
        #expect(balancer.pick([(0, 0), (1, 2)]) == 1)
    }
}
