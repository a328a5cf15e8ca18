import Foundation
import KhoCore
import KhoSupport

/// Finding entries of a snapshot by path.
struct TreeLookup {
    let repository: Repository
    let index: MasterIndex
    let codec: BlobCodec

    init(repository: Repository, index: MasterIndex) throws {
        self.repository = repository
        self.index = index
        codec = try BlobCodec(repository: repository)
    }

    /// The node at `path` ("/a/b" or "a/b"); for "/" a synthetic folder node holding the root tree.
    func node(at path: String, in snapshot: Snapshot) throws -> Node {
        guard let root = snapshot.treeID else {
            throw KhoError(.integrity, "Snapshot \(snapshot.shortID) names no valid tree: the snapshot file is damaged.")
        }
        var current = Node(name: [], kind: .directory)
        current.subtree = root
        for component in Array(path.utf8).split(separator: UInt8(ascii: "/")).map(Array.init) {
            guard current.kind == .directory, let subtree = current.subtree else {
                throw KhoError(.usage, "\(path) is not in snapshot \(snapshot.shortID): see `kho ls \(snapshot.shortID)`.")
            }
            guard let next = try repository.loadTree(subtree, index: index, codec: codec).node(named: component) else {
                throw KhoError(.usage, "\(path) is not in snapshot \(snapshot.shortID): see `kho ls \(snapshot.shortID)`.")
            }
            current = next
        }
        return current
    }

    /// Calls `visit` for every entry below `node` (and for `node` itself unless it is the root).
    func walk(_ node: Node, path: String, depth: Int = 0, _ visit: (String, Node) throws -> Void) throws {
        if !node.name.isEmpty { try visit(path, node) }
        guard node.kind == .directory, let subtree = node.subtree else { return }
        guard depth <= TreeDepth.maximum else { throw TreeDepth.tooDeep(path) }
        for child in try repository.loadTree(subtree, index: index, codec: codec).nodes {
            let childPath = (path == "/" ? "" : path) + "/" + child.nameString
            try walk(child, path: childPath, depth: depth + 1, visit)
        }
    }
}

enum ModeString {
    static func describe(_ node: Node) -> String {
        let type: Character
        switch node.kind {
        case .directory: type = "d"
        case .symlink: type = "l"
        case .fifo: type = "p"
        case .characterDevice: type = "c"
        case .blockDevice: type = "b"
        case .socket: type = "s"
        case .file: type = "-"
        }
        var s = String(type)
        let bits: [(UInt32, Character)] = [(0o400, "r"), (0o200, "w"), (0o100, "x"), (0o040, "r"), (0o020, "w"), (0o010, "x"),
                                           (0o004, "r"), (0o002, "w"), (0o001, "x")]
        for (bit, c) in bits { s.append(node.mode & bit != 0 ? c : "-") }
        return s
    }
}
