import Foundation
import Testing

@testable import Routing
import RoutingFixtures
@testable import Config
@testable import Wire

/// The cache-aware policy's pure parts: the fingerprint, the prefix index, the choice, and
/// the registry routing conversations with them.
@Suite("Cache-aware routing")
struct CacheAwareTests {
    let t0 = ContinuousClock.now

    static func fingerprint(_ text: String) -> PrefixFingerprint {
        Array(text.utf8).withUnsafeBytes { PrefixFingerprint($0) }
    }

    /// A chat's `messages` JSON for a conversation of `turns` exchanges after a long system prompt.
    static func conversation(_ id: Int, turns: Int) -> String {
        var messages = [#"{"role":"system","content":"conversation \#(id): \#(String(repeating: "rules \(id) ", count: 120))"}"#]
        for turn in 0..<turns {
            messages.append(#"{"role":"user","content":"question \#(turn) of \#(id)"}"#)
            if turn < turns - 1 { messages.append(#"{"role":"assistant","content":"answer \#(turn)"}"#) }
        }
        return "[" + messages.joined(separator: ",") + "]"
    }

    @Test("chained blocks: a conversation's next turn shares every full block of the previous one; one changed byte changes every block from there")
    func fingerprintChains() {
        let first = Self.fingerprint(Self.conversation(1, turns: 1))
        let second = Self.fingerprint(Self.conversation(1, turns: 2))
        #expect(first.blocks.count >= 4)
        #expect(Array(second.blocks.prefix(first.blocks.count)) == first.blocks)
        var text = Array(Self.conversation(1, turns: 2).utf8)
        text[600] ^= 1  // inside block 2
        let changed = text.withUnsafeBytes { PrefixFingerprint($0) }
        #expect(Array(changed.blocks.prefix(2)) == Array(second.blocks.prefix(2)))
        #expect(zip(changed.blocks.dropFirst(2), second.blocks.dropFirst(2)).allSatisfy { $0 != $1 })
        #expect(Self.fingerprint("short").isEmpty)  // under one block: nothing to go by
        let huge = String(repeating: "x", count: PrefixFingerprint.maxBytes * 2)
        #expect(Self.fingerprint(huge).blocks.count == PrefixFingerprint.maxBytes / PrefixFingerprint.blockBytes)
    }

    @Test("the index: leading blocks per pair, newest four holders per block, an old epoch no longer counts")
    func index() {
        var index = PrefixIndex(capacity: 10_000)
        let blocks: [UInt64] = [1, 2, 3, 4, 5]
        index.record(Array(blocks.prefix(3)), pair: 7, epoch: 1)
        index.record(blocks, pair: 9, epoch: 1)
        #expect(index.matches(blocks, pairs: [7, 9, 11], epochs: [1, 1, 1]) == [3, 5, 0])
        #expect(index.matches(blocks, pairs: [7, 9, 11], epochs: [1, 2, 1]) == [3, 0, 0])  // 9's engine restarted
        for pair in 20..<25 { index.record([1], pair: pair, epoch: 1) }
        #expect(index.matches([1], pairs: [7, 20, 24], epochs: [1, 1, 1]) == [0, 0, 1])  // only the newest four hold block 1
    }

    @Test("the index stays within its capacity and keeps what is in use")
    func indexBound() {
        var index = PrefixIndex(capacity: 1_000)
        index.record([42], pair: 1, epoch: 1)
        for block in 0..<10_000 {
            index.record([UInt64(1_000_000 + block)], pair: 2, epoch: 1)
            if block % 100 == 0 { #expect(index.matches([42], pairs: [1], epochs: [1]) == [1]) }
            #expect(index.count <= 1_000)
        }
    }

    static let policy = CacheAwarePolicy(minMatch: 0.3, balanceAbsolute: 4, balanceRelative: 1.5)

    static func candidate(_ matched: Int, load: Int, key: UInt64, weight: Double = 1) -> CacheAwarePolicy.Candidate {
        .init(matched: matched, load: load, weight: weight, key: key)
    }

    @Test("the choice, by table", arguments: [
        // the best prefix match wins when it covers at least min_match of the request
        ([candidate(0, load: 0, key: 1), candidate(8, load: 2, key: 2), candidate(3, load: 0, key: 3)], 10, Int?.some(1), CacheAwarePolicy.Reason.prefix),
        // a match under min_match is no match: rendezvous
        ([candidate(2, load: 0, key: 1), candidate(0, load: 0, key: 2)], 10, nil, .noMatch),
        // equal matches: the least loaded
        ([candidate(6, load: 3, key: 1), candidate(6, load: 1, key: 2)], 10, 1, .prefix),
        // imbalance (max - min > 4 and max > 1.5 x min): the least loaded, whatever the match
        ([candidate(10, load: 9, key: 1), candidate(0, load: 2, key: 2)], 10, 1, .load),
        // a gap of 4 is not imbalance
        ([candidate(10, load: 6, key: 1), candidate(0, load: 2, key: 2)], 10, 0, .prefix),
    ])
    func choice(candidates: [CacheAwarePolicy.Candidate], blocks: Int, expected: Int?, reason: CacheAwarePolicy.Reason) {
        let (index, why) = Self.policy.choose(candidates, blocks: blocks, firstBlock: 99)!
        #expect(why == reason)
        if let expected { #expect(index == expected) }
    }

    @Test("rendezvous: deterministic, the same on two instances, proportional to weight, and removing a worker moves only its keys")
    func rendezvous() {
        let workers = (1...4).map { Self.candidate(0, load: 0, key: Registry.stableHash("w\($0)"), weight: $0 == 4 ? 2 : 1) }
        var counts = [0, 0, 0, 0]
        var placed: [Int] = []
        for key in 0..<10_000 {
            let one = CacheAwarePolicy.rendezvous(workers, among: [0, 1, 2, 3], key: PrefixFingerprint.mix(UInt64(key)))
            let two = CacheAwarePolicy.rendezvous(workers, among: [0, 1, 2, 3], key: PrefixFingerprint.mix(UInt64(key)))
            #expect(one == two)
            counts[one] += 1
            placed.append(one)
        }
        // weights 1:1:1:2 -> 2,000 : 2,000 : 2,000 : 4,000, within 5 %
        for (index, count) in counts.enumerated() {
            let expected = index == 3 ? 4_000.0 : 2_000.0
            #expect(abs(Double(count) - expected) < expected * 0.05, "\(counts)")
        }
        for key in 0..<10_000 {
            let without = CacheAwarePolicy.rendezvous(workers, among: [0, 1, 3], key: PrefixFingerprint.mix(UInt64(key)))
            if placed[key] != 2 { #expect(without == placed[key]) }
        }
    }

    func registry(_ names: [String] = ["a", "b", "c", "d"], slots: Int = 2) -> Registry {
        var registry = Registry(expiry: .seconds(60), aheadPerSlot: 1, policy: .cacheAware(Self.policy))
        for name in names {
            registry.register(report(name, models: [ModelReport(name: "m", state: .ready, slotsTotal: slots)]), now: t0)
        }
        return registry
    }

    @Test("16 conversations x 6 turns, one at a time: every turn after the first goes where the conversation began; the first turns spread")
    func conversationsStick() {
        var registry = registry()
        var home: [Int: String] = [:]
        for turn in 1...6 {
            for id in 0..<16 {
                let pick = registry.pick("m", prompt: Self.fingerprint(Self.conversation(id, turns: turn)), now: t0).decision.pick!
                if let first = home[id] {
                    #expect(pick.worker == first && pick.reason == .prefix, "conversation \(id) turn \(turn)")
                    #expect(pick.matchedBlocks > 0)
                } else {
                    home[id] = pick.worker
                    #expect(pick.reason == .noMatch)
                }
                _ = registry.release(pick, sample: .success, now: t0)
            }
        }
        #expect(Set(home.values).count == 4)  // rendezvous spread the 16 first turns over all four
    }

    @Test("two hubs (two registries) send a new conversation to the same worker")
    func hubsAgree() {
        var hubA = registry(), hubB = registry(["d", "c", "b", "a"])  // registered in another order
        for id in 0..<32 {
            let prompt = Self.fingerprint(Self.conversation(id, turns: 1))
            let a = hubA.pick("m", prompt: prompt, now: t0).decision.pick!
            let b = hubB.pick("m", prompt: prompt, now: t0).decision.pick!
            #expect(a.worker == b.worker)
            _ = hubA.release(a, sample: .success, now: t0)
            _ = hubB.release(b, sample: .success, now: t0)
        }
    }

    @Test("a conversation whose worker's engine restarted, or whose worker left, moves and then sticks to its new worker")
    func restartAndLeave() {
        var registry = registry()
        let turn1 = registry.pick("m", prompt: Self.fingerprint(Self.conversation(5, turns: 1)), now: t0).decision.pick!
        _ = registry.release(turn1, sample: .success, now: t0)
        let home = turn1.worker
        // Its engine restarts: the report shows it loading, then ready again.
        _ = registry.heartbeat(report(home, seq: 2, models: [ModelReport(name: "m", state: .loading, slotsTotal: 2)]), now: t0)
        _ = registry.heartbeat(report(home, seq: 3, models: [ModelReport(name: "m", state: .ready, slotsTotal: 2)]), now: t0)
        let turn2 = registry.pick("m", prompt: Self.fingerprint(Self.conversation(5, turns: 2)), now: t0).decision.pick!
        #expect(turn2.reason == .noMatch)
        _ = registry.release(turn2, sample: .success, now: t0)
        // The worker it is on now leaves: the next turn goes elsewhere and sticks there.
        registry.deregister(turn2.worker)
        let turn3 = registry.pick("m", prompt: Self.fingerprint(Self.conversation(5, turns: 3)), now: t0).decision.pick!
        #expect(turn3.worker != turn2.worker)
        _ = registry.release(turn3, sample: .success, now: t0)
        let turn4 = registry.pick("m", prompt: Self.fingerprint(Self.conversation(5, turns: 4)), now: t0).decision.pick!
        #expect(turn4.worker == turn3.worker && turn4.reason == .prefix)
    }

    @Test("a worker that saved its prompt caches at a planned stop keeps its conversations: its engine's next start restores them")
    func savedCachesKeepConversations() {
        var registry = registry()
        let turn1 = registry.pick("m", prompt: Self.fingerprint(Self.conversation(6, turns: 1)), now: t0).decision.pick!
        _ = registry.release(turn1, sample: .success, now: t0)
        let home = turn1.worker
        // A ttl unload: stopping, then not loaded with its caches saved, then restored and ready.
        _ = registry.heartbeat(report(home, seq: 2, models: [ModelReport(name: "m", state: .stopping, slotsTotal: 2)]), now: t0)
        var saved = ModelReport(name: "m", state: .notLoaded)
        saved.promptCaches = 1
        _ = registry.heartbeat(report(home, seq: 3, models: [saved]), now: t0)
        _ = registry.heartbeat(report(home, seq: 4, models: [ModelReport(name: "m", state: .ready, slotsTotal: 2)]), now: t0)
        let turn2 = registry.pick("m", prompt: Self.fingerprint(Self.conversation(6, turns: 2)), now: t0).decision.pick!
        #expect(turn2.worker == home && turn2.reason == .prefix)
        _ = registry.release(turn2, sample: .success, now: t0)
        // The same without saved caches: the conversation's cache is gone, and so is its match.
        _ = registry.heartbeat(report(home, seq: 5, models: [ModelReport(name: "m", state: .stopping, slotsTotal: 2)]), now: t0)
        _ = registry.heartbeat(report(home, seq: 6, models: [ModelReport(name: "m", state: .notLoaded)]), now: t0)
        _ = registry.heartbeat(report(home, seq: 7, models: [ModelReport(name: "m", state: .ready, slotsTotal: 2)]), now: t0)
        let turn3 = registry.pick("m", prompt: Self.fingerprint(Self.conversation(6, turns: 3)), now: t0).decision.pick!
        #expect(turn3.reason == .noMatch)
    }

    @Test("the load guard: 40 requests sharing one system prompt and in flight together spread over all four workers, none over 1.5x the mean")
    func sharedPrefixSpreads() {
        var registry = registry(slots: 4)
        var held: [Registry.Pick] = []
        for user in 0..<40 {
            let messages = #"[{"role":"system","content":"\#(String(repeating: "shared rules ", count: 120))"},{"role":"user","content":"user \#(user)"}]"#
            guard case .picked(let pick) = registry.pick("m", prompt: Self.fingerprint(messages), now: t0).decision else { break }
            held.append(pick)
        }
        let loads = Dictionary(grouping: held, by: \.worker).mapValues(\.count)
        #expect(loads.count == 4)
        let mean = Double(held.count) / 4
        #expect(loads.values.allSatisfy { Double($0) <= 1.5 * mean }, "\(loads)")
    }

    @Test("a cache miss reported by the engine forgets the pair's entries")
    func cacheMiss() {
        var registry = registry()
        let prompt = Self.fingerprint(Self.conversation(3, turns: 1))
        let first = registry.pick("m", prompt: prompt, now: t0).decision.pick!
        _ = registry.release(first, sample: .success, now: t0)
        let second = registry.pick("m", prompt: prompt, now: t0).decision.pick!
        #expect(second.worker == first.worker && second.reason == .prefix)
        // Another conversation on the same worker keeps its entries.
        let other = Self.fingerprint(Self.conversation(4, turns: 1))
        var otherPick = registry.pick("m", prompt: other, now: t0).decision.pick!
        _ = registry.release(otherPick, sample: .success, now: t0)
        registry.observeCache(second, prompt: 300, cached: 0, blocks: prompt.blocks)
        _ = registry.release(second, sample: .success, now: t0)
        let third = registry.pick("m", prompt: prompt, now: t0).decision.pick!
        #expect(third.reason == .noMatch)
        _ = registry.release(third, sample: .success, now: t0)
        otherPick = registry.pick("m", prompt: other, now: t0).decision.pick!
        #expect(otherPick.reason == .prefix)
    }

    @Test("weighted round-robin ignores prompts; requests without a prompt are round-robin under either policy")
    func policies() {
        var plain = Registry(expiry: .seconds(60), policy: .weightedRoundRobin)
        for name in ["a", "b"] { plain.register(report(name), now: t0) }
        let prompt = Self.fingerprint(Self.conversation(1, turns: 1))
        var workers: [String] = []
        for _ in 0..<4 {
            let pick = plain.pick("m", prompt: prompt, now: t0).decision.pick!
            #expect(pick.reason == nil)
            workers.append(pick.worker)
            _ = plain.release(pick, sample: .success, now: t0)
        }
        #expect(workers == ["a", "b", "a", "b"])
        var aware = registry(["a", "b"])
        workers = []
        for _ in 0..<4 {
            let pick = aware.pick("m", now: t0).decision.pick!
            workers.append(pick.worker)
            _ = aware.release(pick, sample: .success, now: t0)
        }
        #expect(workers == ["a", "b", "a", "b"])
    }

    @Test("a reload switches the policy: cache-aware picks by prefix, round-robin after the switch, and a new index size starts afresh")
    func reload() {
        var registry = registry(["a", "b"])
        let prompt = Self.fingerprint(Self.conversation(9, turns: 1))
        let first = registry.pick("m", prompt: prompt, now: t0).decision.pick!
        _ = registry.release(first, sample: .success, now: t0)
        #expect(registry.pick("m", prompt: prompt, now: t0).decision.pick!.reason == .prefix)
        registry.reconfigure(declaredModels: [:], discoveringWorkers: [], breakerPolicy: .init(), aheadPerSlot: 1,
                             policy: .weightedRoundRobin)
        #expect(registry.pick("m", prompt: prompt, now: t0).decision.pick!.reason == nil)
        registry.reconfigure(declaredModels: [:], discoveringWorkers: [], breakerPolicy: .init(), aheadPerSlot: 1,
                             policy: .cacheAware(Self.policy), indexBlocks: 4096)
        #expect(registry.pick("m", prompt: prompt, now: t0).decision.pick!.reason == .noMatch)
    }
}
