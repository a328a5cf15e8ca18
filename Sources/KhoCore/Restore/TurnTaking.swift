/// Items of several keys handed out in turn: the oldest `lanes` keys alternate, one item each,
/// and an item is held until another key has items too (or `held` items wait), so that whoever
/// takes them in order works on different keys at once. A restore's reads, keyed by their file:
/// two workers then write two files, not one file's lock in turn.
struct TurnTaking<Key: Hashable, Item> {
    let lanes: Int
    let held: Int
    private var keys: [Key] = []
    private var items: [Key: [Item]] = [:]
    private var count = 0
    private var turn = 0

    init(lanes: Int, held: Int) {
        self.lanes = max(1, lanes)
        self.held = max(1, held)
    }

    /// Adds `item` under `key`; returns what may be handed out now, in order.
    mutating func add(_ item: Item, key: Key) -> [Item] {
        if items[key] == nil { keys.append(key) }
        items[key, default: []].append(item)
        count += 1
        return release(all: false)
    }

    /// Everything held, still in turn.
    mutating func drain() -> [Item] { release(all: true) }

    private mutating func release(all: Bool) -> [Item] {
        var out: [Item] = []
        while count > 0 && (all || keys.count >= lanes || count > held) {
            let index = turn % min(lanes, keys.count)
            turn &+= 1
            let key = keys[index]
            out.append(items[key]!.removeFirst())
            count -= 1
            if items[key]!.isEmpty {
                items[key] = nil
                keys.remove(at: index)
            }
        }
        return out
    }
}
