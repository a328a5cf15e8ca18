import Foundation
import KhoSupport

/// What `kho copy` did.
public struct CopySummary: Codable, Sendable, Equatable {
    /// Snapshots copied, as (source ID, target ID).
    package var copied: [CopiedSnapshot] = []
    /// Snapshots the target already had (same time, host, paths, tags and source).
    public var alreadyThere: [String] = []
    /// Blobs read and decrypted from the source.
    public var blobsRead = 0
    public var bytesRead: Int64 = 0
    /// Blobs the target did not have yet.
    public var blobsNew = 0
    /// Bytes added to the target (packs and index files).
    public var bytesAdded: Int64 = 0
    public var packsWritten = 0
    /// Blobs of the copied snapshots read back from the target and found intact.
    public var blobsVerified = 0
    /// Archived WAL carried over (`WALCopy`), when the copy included it.
    public var wal: WALCopy.Summary?
    /// Archived binary logs carried over (`BinlogCopy`), when the copy included them.
    public var binlog: BinlogCopy.Summary?

    public init() {}
}

package struct CopiedSnapshot: Codable, Sendable, Equatable {
    package var source: String
    package var target: String
    package var time: Date
}

/// Copies snapshots from one repository (the source) into another (the target).
///
/// The two have different keys, so nothing can be copied as stored: every blob is read and
/// decrypted with the source's key, its ID under the target's MAC key is computed from the
/// plaintext, and it is sealed again with the target's key unless the target already has that ID.
/// Trees list blob IDs, so every tree is rewritten with the target's IDs (and gets a target ID of
/// its own). A target made with `kho init --copy-chunker-params-from SOURCE` cuts new backups the
/// same way as the source, so what both hold is stored once in each. Data already in the target is
/// never uploaded again; it is still read from the source, because its target ID is known only
/// from the plaintext.
///
/// Write order as for a backup: packs, then index files, then the snapshot. A copy interrupted
/// half-way leaves packs that no snapshot uses (the next copy reuses them, `prune` removes what
/// stays unused) and never a snapshot whose data is missing.
public final class Copier {
    public let source: Repository
    public let target: Repository
    private let sourceIndex: MasterIndex
    private var targetIndex: MasterIndex
    private let sourceCodec: BlobCodec
    private let uploaders: Int
    /// Source blob ID → target blob ID, for blobs already copied (or found) during this run.
    private var translated: [BlobID: BlobID] = [:]
    private var summary = CopySummary()
    private let progress: ProgressCounter

    public init(source: Repository, sourceIndex: MasterIndex, target: Repository, targetIndex: MasterIndex,
                uploaders: Int = 1, progress: ProgressCounter = ProgressCounter()) throws {
        self.source = source
        self.target = target
        self.sourceIndex = sourceIndex
        self.targetIndex = targetIndex
        self.sourceCodec = try BlobCodec(repository: source)
        self.uploaders = max(1, uploaders)
        self.progress = progress
    }

    /// Whether two snapshots are the same backup (one a copy of the other).
    public static func sameBackup(_ a: Snapshot, _ b: Snapshot) -> Bool {
        abs(a.time.timeIntervalSince(b.time)) < 0.000_001 && a.hostname == b.hostname && a.paths == b.paths
            && a.tags.sorted() == b.tags.sorted() && a.source == b.source
    }

    /// Copies `snapshots` (from the source) that the target lacks, oldest first, then reads every
    /// copied snapshot back from the target.
    public func copy(_ snapshots: [Snapshot]) throws -> CopySummary {
        var existing = try target.listSnapshots()
        for snapshot in snapshots.sorted(by: { $0.time < $1.time }) {
            if existing.contains(where: { Copier.sameBackup($0, snapshot) }) {
                summary.alreadyThere.append(snapshot.id ?? "")
                continue
            }
            let copied = try copyOne(snapshot, parentFrom: existing)
            existing.append(copied)
            summary.copied.append(CopiedSnapshot(source: snapshot.id ?? "", target: copied.id ?? "", time: snapshot.time))
        }
        if !summary.copied.isEmpty { try verify(summary.copied.map(\.target)) }
        return summary
    }

    private func copyOne(_ snapshot: Snapshot, parentFrom existing: [Snapshot]) throws -> Snapshot {
        guard let root = snapshot.treeID else {
            throw KhoError(.integrity, "Snapshot \(snapshot.shortID) of \(source.storage.location) names no valid tree: it cannot be copied; run `kho check` there.")
        }
        let saver = try BlobSaver(repository: target, index: targetIndex, uploaders: uploaders)
        let newRoot: BlobID
        do {
            newRoot = try copyTree(root, saver: saver)
        } catch {
            saver.abort(error)
            throw error
        }
        let stats = try saver.finish()
        summary.blobsNew += stats.blobsNew
        summary.bytesAdded += stats.bytesAdded
        summary.packsWritten += stats.packsWritten
        var copy = snapshot
        copy.id = nil
        copy.tree = newRoot.hex
        copy.keyID = target.keyID
        // The parent, when the target has a copy of it.
        if let parentID = snapshot.parent {
            // try?: the parent is a hint for the next backup; a source snapshot that cannot be
            // read leaves the copy without one, as a first backup has none.
            let parent = try? source.loadSnapshot(id: parentID)
            copy.parent = parent.flatMap { p in existing.first { Copier.sameBackup($0, p) }?.id }
        }
        // As a backup: a copy that lost its lock on the target may have had packs removed by a
        // prune, so it records nothing.
        try RepositoryLock.checkHeld(target.storage, confirm: true)
        let id = try target.saveSnapshot(copy)
        copy.id = id.hex
        // try?: only the summary's byte count; the snapshot is written and named already.
        if let size = try? target.storage.stat(Handle(.snapshot, id.hex)).size { summary.bytesAdded += Int64(size) }
        return copy
    }

    /// Rewrites a tree (and those below it) with target IDs; returns its target ID.
    private func copyTree(_ id: BlobID, saver: BlobSaver, depth: Int = 0) throws -> BlobID {
        if let known = translated[id] { return known }
        guard depth <= TreeDepth.maximum else { throw TreeDepth.tooDeep("tree \(id.shortHex)") }
        let tree = try source.loadTree(id, index: sourceIndex, codec: sourceCodec)
        var nodes = tree.nodes
        for i in nodes.indices {
            if !nodes[i].content.isEmpty {
                nodes[i].content = try nodes[i].content.map { try copyData($0, saver: saver) }
                progress.add(files: 1)
            }
            if let subtree = nodes[i].subtree { nodes[i].subtree = try copyTree(subtree, saver: saver, depth: depth + 1) }
        }
        let newID = try saver.save(Tree(nodes: nodes).encoded(), kind: .tree)
        translated[id] = newID
        return newID
    }

    private func copyData(_ id: BlobID, saver: BlobSaver) throws -> BlobID {
        if let known = translated[id] { return known }
        guard let location = sourceIndex.lookup(id) else {
            throw KhoError(.integrity, "Blob \(id.shortHex) of \(source.storage.location) is not in its index: the source is missing data; run `kho check` there.")
        }
        let plain = try sourceCodec.loadBytes(location, from: source)
        summary.blobsRead += 1
        summary.bytesRead += Int64(plain.count)
        progress.add(bytes: Int64(plain.count))
        let newID = try saver.save(plain, kind: .data)
        translated[id] = newID
        return newID
    }

    /// Reads the copied snapshots back from the target: every tree and data blob is loaded,
    /// decrypted and its ID recomputed under the target's key.
    private func verify(_ ids: [String]) throws {
        let index = try target.loadIndex()
        let codec = try BlobCodec(repository: target)
        var seen = Set<BlobID>()
        func check(_ id: BlobID, isTree: Bool, depth: Int = 0) throws {
            guard seen.insert(id).inserted else { return }
            guard depth <= TreeDepth.maximum else { throw TreeDepth.tooDeep("tree \(id.shortHex)") }
            guard let location = index.lookup(id) else {
                throw KhoError(.integrity, "The copy is incomplete: blob \(id.shortHex) is not in the index of \(target.storage.location); run `kho check` there and copy again.")
            }
            let bytes = try codec.loadBytes(location, from: target)
            summary.blobsVerified += 1
            guard isTree else { return }
            let tree = try Tree(decoding: bytes, id: id)
            for node in tree.nodes {
                for blob in node.content { try check(blob, isTree: false) }
                if let subtree = node.subtree { try check(subtree, isTree: true, depth: depth + 1) }
            }
        }
        for id in ids {
            let snapshot = try target.loadSnapshot(id: id)
            guard let root = snapshot.treeID else {
                throw KhoError(.integrity, "The copied snapshot \(snapshot.shortID) names no valid tree.")
            }
            try check(root, isTree: true)
        }
    }
}
