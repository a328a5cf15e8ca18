import Foundation
import KhoSupport

/// The files at the root of a stream snapshot (a database dump, its schema fingerprint, its
/// globals), read from the repository on demand: what a database restore reads, whether an
/// operator runs it or a drill does.
public struct SnapshotFiles: DumpFiles {
    public let repository: Repository
    public let index: MasterIndex
    public let snapshot: Snapshot
    private let nodes: [String: Node]

    public init(repository: Repository, index: MasterIndex, snapshot: Snapshot) throws {
        self.repository = repository
        self.index = index
        self.snapshot = snapshot
        guard let root = snapshot.treeID else {
            throw KhoError(.integrity, "Snapshot \(snapshot.shortID) names no valid tree: the snapshot file is damaged; run `kho check`.")
        }
        let tree = try repository.loadTree(root, index: index, codec: BlobCodec(repository: repository))
        var nodes: [String: Node] = [:]
        for node in tree.nodes where node.kind == .file { nodes[node.nameString] = node }
        self.nodes = nodes
    }

    /// The file's size, or nil when the snapshot holds no such file.
    public func size(_ name: String) -> Int64? { nodes[name].map { Int64($0.size) } }

    /// Streams the file's bytes, in order, to `write`.
    public func stream(_ name: String, _ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard let node = nodes[name] else {
            throw KhoError(.integrity, "Snapshot \(snapshot.shortID) has no file \(name) although its manifest names it: run `kho check --read-data`.")
        }
        try OrderedBlobReader(repository: repository, index: index, content: node.content).run { bytes in
            try bytes.withUnsafeBytes { try write($0) }
        }
    }

    /// The whole file, refused beyond `limit` bytes (for the small JSON files beside a dump).
    public func read(_ name: String, limit: Int) throws -> [UInt8] {
        if let size = size(name), size > Int64(limit) {
            throw KhoError(.integrity, "\(name) of snapshot \(snapshot.shortID) is \(size) bytes, more than the \(limit >> 20) MiB kho ever writes there: the repository was written by something other than kho; do not restore from it.")
        }
        var bytes: [UInt8] = []
        try stream(name) { bytes.append(contentsOf: $0) }
        return bytes
    }
}
