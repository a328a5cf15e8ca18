import KhoSupport
/// Kinds of directory entries, numbered as stored.
public enum NodeKind: UInt8, Sendable, Codable {
    case file = 1, directory = 2, symlink = 3, fifo = 4, characterDevice = 5, blockDevice = 6, socket = 7

    public var name: String {
        switch self {
        case .file: return "file"
        case .directory: return "dir"
        case .symlink: return "symlink"
        case .fifo: return "fifo"
        case .characterDevice: return "chardev"
        case .blockDevice: return "blockdev"
        case .socket: return "socket"
        }
    }
}

public struct Timespec: Hashable, Sendable, Comparable {
    public var seconds: Int64
    public var nanoseconds: UInt32
    public init(seconds: Int64, nanoseconds: UInt32) { self.seconds = seconds; self.nanoseconds = nanoseconds }
    public static func < (a: Timespec, b: Timespec) -> Bool { (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds) }
}

/// One directory entry. Names and link targets are kept as the exact bytes the filesystem gave.
public struct Node: Sendable, Equatable {
    public var name: [UInt8]
    public var kind: NodeKind
    /// Permission bits including setuid, setgid and sticky (st_mode & 0o7777).
    public var mode: UInt32 = 0
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0
    public var size: UInt64 = 0
    public var mtime = Timespec(seconds: 0, nanoseconds: 0)
    public var ctime = Timespec(seconds: 0, nanoseconds: 0)
    public var inode: UInt64 = 0
    public var device: UInt64 = 0
    public var links: UInt32 = 1
    public var rdev: UInt64 = 0
    public var linkTarget: [UInt8] = []
    /// Data blob IDs of a file's content, in order.
    public var content: [BlobID] = []
    /// Tree blob of a directory.
    public var subtree: BlobID?

    public init(name: [UInt8], kind: NodeKind) {
        self.name = name
        self.kind = kind
    }

    public var nameString: String { String(decoding: name, as: UTF8.self) }

    /// Whether `name` is one entry of one folder: not empty, not `.` or `..`, no `/` and no NUL.
    /// Anything else would let a restore create or follow a path outside the folder it writes in
    /// (`..`, `a/../../etc`), so it is refused when a snapshot is written and when a tree is read.
    public static func isPlainName(_ name: [UInt8]) -> Bool {
        if name.isEmpty || name == [0x2e] || name == [0x2e, 0x2e] { return false }
        return !name.contains(UInt8(ascii: "/")) && !name.contains(0)
    }

    public static func isPlainName(_ name: String) -> Bool { isPlainName(Array(name.utf8)) }
}

/// How many folders deep a snapshot may go, counted from `/`. Every walk over files or trees
/// (backup, restore, check, copy, ls) recurses once per level and holds one descriptor per level
/// while restoring; the limit keeps that inside the thread's stack and the descriptor limit, so
/// that a folder made deep on purpose (or a tree chain written by a key holder) gets a clear
/// message instead of a crash that leaves the repository locked. Deeper folders are not saved
/// (the backup warns and is partial); a deeper tree in a repository is refused as damaged.
package enum TreeDepth {
    package static let maximum = 1000

    /// The error for a tree deeper than `maximum`, naming where it was found.
    package static func tooDeep(_ path: String) -> KhoError {
        KhoError(.integrity, "\(path.isEmpty ? "/" : path) is more than \(maximum) folders deep: no snapshot kho writes goes that deep, so the repository holds a tree written to harm whoever reads it; do not restore from it.")
    }
}

/// A directory's entries, sorted by name bytes, encoded so that equal directories give equal blobs.
public struct Tree: Sendable, Equatable {
    public var nodes: [Node]

    public init(nodes: [Node]) {
        self.nodes = nodes.sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }

    static let magic: [UInt8] = Array("KTRE".utf8)

    public func encoded() -> [UInt8] {
        var w = BinaryWriter(capacity: 64 + nodes.count * 128)
        w.raw(Tree.magic)
        w.u8(1)
        w.u32(UInt32(nodes.count))
        for node in nodes {
            w.data(node.name)
            w.u8(node.kind.rawValue)
            w.u32(node.mode)
            w.u32(node.uid)
            w.u32(node.gid)
            w.u64(node.size)
            w.i64(node.mtime.seconds)
            w.u32(node.mtime.nanoseconds)
            w.i64(node.ctime.seconds)
            w.u32(node.ctime.nanoseconds)
            w.u64(node.inode)
            w.u64(node.device)
            w.u32(node.links)
            w.u64(node.rdev)
            w.data(node.linkTarget)
            w.u32(UInt32(node.content.count))
            for id in node.content { w.id(id) }
            if let subtree = node.subtree {
                w.u8(1)
                w.id(subtree)
            } else {
                w.u8(0)
            }
        }
        return w.bytes
    }

    public init(decoding bytes: [UInt8], id: BlobID) throws {
        var r = BinaryReader(bytes, what: "tree \(id.shortHex)")
        guard Array(try r.raw(4)) == Tree.magic, try r.u8() == 1 else {
            throw KhoError(.integrity, "Tree \(id.shortHex) is not a version 1 tree: the repository is damaged or newer than this kho.")
        }
        let count = Int(try r.u32())
        var nodes: [Node] = []
        nodes.reserveCapacity(min(count, 1 << 20))
        for _ in 0..<count {
            let name = try r.data(limit: 1 << 16)
            guard Node.isPlainName(name) else {
                let shown = String(decoding: name, as: UTF8.self).debugDescription
                throw KhoError(.integrity, "Tree \(id.shortHex) has an entry named \(shown), which is not a plain file name: a restore would write outside its folder; the repository was written by something other than kho, do not restore from it.")
            }
            guard let kind = NodeKind(rawValue: try r.u8()) else {
                throw KhoError(.integrity, "Tree \(id.shortHex) has an entry of unknown kind: the repository is damaged.")
            }
            var node = Node(name: name, kind: kind)
            node.mode = try r.u32()
            node.uid = try r.u32()
            node.gid = try r.u32()
            node.size = try r.u64()
            node.mtime = Timespec(seconds: try r.i64(), nanoseconds: try r.u32())
            node.ctime = Timespec(seconds: try r.i64(), nanoseconds: try r.u32())
            node.inode = try r.u64()
            node.device = try r.u64()
            node.links = try r.u32()
            node.rdev = try r.u64()
            node.linkTarget = try r.data(limit: 1 << 16)
            let blobs = Int(try r.u32())
            guard blobs <= r.remaining / 32 else {
                throw KhoError(.integrity, "Tree \(id.shortHex) is truncated: the repository is damaged.")
            }
            node.content.reserveCapacity(blobs)
            for _ in 0..<blobs { node.content.append(try r.id()) }
            if try r.u8() == 1 { node.subtree = try r.id() }
            nodes.append(node)
        }
        guard r.atEnd else {
            throw KhoError(.integrity, "Tree \(id.shortHex) has trailing bytes: the repository is damaged.")
        }
        self.nodes = nodes
    }

    public func node(named name: [UInt8]) -> Node? {
        // Nodes are sorted by name: binary search.
        var low = 0
        var high = nodes.count
        while low < high {
            let mid = (low + high) / 2
            if nodes[mid].name == name { return nodes[mid] }
            if nodes[mid].name.lexicographicallyPrecedes(name) { low = mid + 1 } else { high = mid }
        }
        return nil
    }
}
