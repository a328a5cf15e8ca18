import Testing
@testable import KhoCore

/// A restore's reads handed out in turn by file, so that two workers write two files at once.
@Suite struct TurnTakingTests {
    @Test func twoKeysAlternateAndOneKeyWaitsForAnother() {
        var turns = TurnTaking<String, String>(lanes: 2, held: 100)
        // One file alone is held: a worker would otherwise take its reads while the other spins.
        #expect(turns.add("a1", key: "a").isEmpty)
        #expect(turns.add("a2", key: "a").isEmpty)
        #expect(turns.add("a3", key: "a").isEmpty)
        // A second file: the two alternate until one has nothing held.
        #expect(turns.add("b1", key: "b") == ["a1", "b1"])
        #expect(turns.add("c1", key: "c") == ["a2", "c1"])
        #expect(turns.add("a4", key: "a").isEmpty)
        #expect(turns.drain() == ["a3", "a4"])
        #expect(turns.drain().isEmpty)
    }

    @Test func heldItemsAreBoundedAndOrderWithinAKeyIsKept() {
        var turns = TurnTaking<Int, Int>(lanes: 2, held: 3)
        var out: [Int] = []
        for n in 0..<10 { out += turns.add(n, key: 7) }
        out += turns.drain()
        #expect(out == Array(0..<10))
        var single = TurnTaking<Int, Int>(lanes: 1, held: 100)
        #expect(single.add(1, key: 1) == [1], "one lane hands out at once")
    }
}
