import Foundation
import KhoSupport
import Glibc

public struct PruneOptions: Sendable {
    /// Unused space allowed to remain in partly used packs, as a share of all pack bytes. Packs
    /// are repacked, the emptiest first, until what is left unused is within this share.
    public var maxUnused: Double = 0.05
    public var dryRun = false
    public var workers = Machine.cores
    /// Whether prune also removes archived WAL no kept base backup needs (the retention job turns
    /// it off when it has just done that itself).
    public var removeUnneededWAL = true
    /// Packs no index lists that are younger than this (or than the oldest live or unreadable
    /// lock) are kept: they may belong to a backup that runs without prune knowing (its lock
    /// removed by mistake, or unreadable). Twice the time after which a silent lock is stale.
    public var unindexedGrace: TimeInterval = 2 * RepositoryLock.staleAfter
    public init() {}
}

/// What prune found and did.
public struct PruneReport: Codable, Sendable {
    public var snapshots = 0
    public var packs = 0
    public var blobsUsed = 0
    public var blobsUnused = 0
    public var bytesTotal: Int64 = 0
    public var bytesUnused: Int64 = 0
    public var packsRemoved = 0
    public var packsRepacked = 0
    public var packsWritten = 0
    public var orphanPacks = 0
    /// Packs no index lists that prune kept because a running backup may still be writing them
    /// (see `PruneOptions.unindexedGrace`); a later prune removes them if they stay unlisted.
    public var unindexedKept = 0
    public var indexFilesReplaced = 0
    public var bytesFreed: Int64 = 0
    /// Files prune would have removed but S3 Object Lock keeps until their date (left for a later prune).
    package var retained: [RetainedFile] = []
    /// Files whose object lock prune extended because snapshots still use them.
    public var locksExtended = 0
    /// Archived WAL files (and their bytes) that no kept base backup needs, removed (or, dry, to remove).
    public var walFilesRemoved = 0
    public var walBytesRemoved: Int64 = 0
    public var binlogFilesRemoved = 0
    public var binlogBytesRemoved: Int64 = 0
    public var dryRun = false
}

/// Removes data no snapshot needs. The order makes every crash safe: new packs, then one new index
/// that supersedes all old index files, then removal of the old index files, then of the packs
/// no longer listed. At every moment each snapshot's blobs are listed by a readable index and
/// present in storage. Must run under an exclusive lock.
public final class Pruner {
    public let repository: Repository
    private let options: PruneOptions
    private let warn: (String) -> Void
    /// For tests: called between steps with the step's name, so that a test can stop the process there.
    public var stepHook: ((String) -> Void)?

    public init(repository: Repository, options: PruneOptions, warn: @escaping (String) -> Void) {
        self.repository = repository
        self.options = options
        self.warn = warn
    }

    public func run() throws -> PruneReport {
        if !options.dryRun { try repository.refuseRemovalIfAppendOnly(command: "prune") }
        var report = PruneReport()
        report.dryRun = options.dryRun
        var damagedIndex = false
        let index = try repository.loadIndex { name, error in
            damagedIndex = true
            self.warn("index file \(name.prefix(8)): \(error.message)")
        }
        guard !damagedIndex else {
            throw KhoError(.integrity, "Some index files are damaged, so prune cannot tell which data is used: run `kho check` and repair the repository before pruning.")
        }
        var damagedSnapshot = false
        let snapshots = try repository.listSnapshots { name, error in
            damagedSnapshot = true
            self.warn("snapshot \(name.prefix(8)): \(error.message)")
        }
        guard !damagedSnapshot else {
            throw KhoError(.integrity, "Some snapshot files are damaged, so prune cannot tell which data they use: run `kho check` before pruning.")
        }
        report.snapshots = snapshots.count
        if options.removeUnneededWAL {
            // Before packs: WAL removal only goes below what a kept base backup starts from, so
            // a crash at any point leaves extra WAL, never a hole (docs/design/pitr.md section 7).
            let wal = try WALRetention.removeUnneeded(repository: repository, starts: WALBaseBackup.starts(try WALBaseBackup.kept(in: snapshots)),
                                                      dryRun: options.dryRun, removed: { [stepHook] _ in stepHook?("remove-wal-file") })
            report.walFilesRemoved = wal.files
            report.walBytesRemoved = wal.bytes
            let binlog = try BinlogRetention.removeUnneeded(repository: repository, snapshots: snapshots, dryRun: options.dryRun,
                                                            removed: { [stepHook] _ in stepHook?("remove-binlog-object") })
            report.binlogFilesRemoved = binlog.files
            report.binlogBytesRemoved = binlog.bytes
        }

        // Every blob some snapshot reaches: a table of 32-byte IDs, not objects.
        let used = try usedBlobs(snapshots, index: index)
        let storedFiles = try repository.storage.list(.data)
        let stored = Dictionary(storedFiles.map { ($0.name, $0.size) }, uniquingKeysWith: { a, _ in a })
        let written = Dictionary(storedFiles.map { ($0.name, $0.modified) }, uniquingKeysWith: { a, _ in a })
        let byPack = index.blobsByPack()
        report.packs = stored.count

        struct PackUse {
            var pack: BlobID
            var blobs: [PackedBlob]
            var usedBlobs: [PackedBlob]
            var size: Int64
            var unusedBytes: Int64
        }
        var claimed = Set<BlobID>()
        var uses: [PackUse] = []
        for (pack, blobs) in byPack.sorted(by: { $0.key < $1.key }) {
            guard let size = stored[pack.hex] else {
                throw KhoError(.integrity, "Pack \(pack.shortHex) is listed in the index but missing from storage: run `kho check` before pruning.")
            }
            var usedHere: [PackedBlob] = []
            var unused: Int64 = 0
            for blob in blobs {
                // A blob stored twice (concurrent backups) is kept once.
                if used.contains(blob.id), claimed.insert(blob.id).inserted {
                    usedHere.append(blob)
                } else {
                    unused += Int64(blob.length)
                }
            }
            uses.append(PackUse(pack: pack, blobs: blobs, usedBlobs: usedHere, size: Int64(size), unusedBytes: unused))
            report.blobsUsed += usedHere.count
            report.blobsUnused += blobs.count - usedHere.count
        }
        // Unlisted packs a running backup may still be about to index stay (docs/FORMAT.md, "Locks").
        let (cutoff, othersHoldLocks) = try unindexedCutoff(now: Date())
        let allUnlisted = stored.keys.filter { BlobID(hex: $0).map { byPack[$0] == nil } ?? true }.sorted()
        let unlistedPacks = allUnlisted.filter { name in
            guard let time = written[name] ?? nil else { return !othersHoldLocks }
            return time < cutoff
        }
        report.unindexedKept = allUnlisted.count - unlistedPacks.count
        report.orphanPacks = unlistedPacks.count
        report.bytesTotal = stored.values.reduce(Int64(0)) { $0 + Int64($1) }
        report.bytesUnused = uses.reduce(Int64(0)) { $0 + $1.unusedBytes } + unlistedPacks.reduce(Int64(0)) { $0 + Int64(stored[$1]!) }

        // Packs still under object lock stay where they are: an unused one is left out of the new
        // index (a later prune removes it), a partly used one is not repacked.
        let candidates = uses.filter { $0.unusedBytes > 0 }.map { Handle(.data, $0.pack.hex) } + unlistedPacks.map { Handle(.data, $0) }
        let lockedPacks = try repository.retentionDates(candidates)
        for (handle, until) in lockedPacks.sorted(by: { $0.key.name < $1.key.name }) {
            report.retained.append(RetainedFile(path: handle.path, until: until))
        }
        func isLocked(_ pack: String) -> Bool { lockedPacks[Handle(.data, pack)] != nil }
        let orphans = unlistedPacks.filter { !isLocked($0) }
        let remove = uses.filter { $0.usedBlobs.isEmpty && !isLocked($0.pack.hex) }
        var partly = uses.filter { !$0.usedBlobs.isEmpty && $0.unusedBytes > 0 && !isLocked($0.pack.hex) }
            .sorted { Double($0.unusedBytes) / Double($0.size) > Double($1.unusedBytes) / Double($1.size) }
        let keptTotal = report.bytesTotal - remove.reduce(Int64(0)) { $0 + $1.size } - orphans.reduce(Int64(0)) { $0 + Int64(stored[$1]!) }
        var unusedLeft = partly.reduce(Int64(0)) { $0 + $1.unusedBytes }
        var repack: [PackUse] = []
        while unusedLeft > Int64(options.maxUnused * Double(keptTotal)), !partly.isEmpty {
            let next = partly.removeFirst()
            repack.append(next)
            unusedLeft -= next.unusedBytes
        }
        report.packsRemoved = remove.count + orphans.count
        report.packsRepacked = repack.count
        report.bytesFreed = remove.reduce(Int64(0)) { $0 + $1.size } + orphans.reduce(Int64(0)) { $0 + Int64(stored[$1]!) }
            + repack.reduce(Int64(0)) { $0 + $1.unusedBytes }
        // Every index file stored, not only the live ones: a file that an interrupted prune had
        // already superseded but not yet removed would come back to life (naming removed packs)
        // once the file superseding it is removed, so the new index supersedes and removes it too.
        let storedIndexFiles = try repository.storage.list(.index).compactMap { BlobID(hex: $0.name) }
        let changesIndex = !remove.isEmpty || !repack.isEmpty || storedIndexFiles.count > 1
        if options.dryRun || (!changesIndex && orphans.isEmpty) {
            if !options.dryRun { report.locksExtended = try extendLocks(keptPacks: uses.filter { !$0.usedBlobs.isEmpty }.map(\.pack), indexFiles: storedIndexFiles) }
            return report
        }

        // 1. Copy the used blobs of packs being repacked into new packs (verified on the way).
        stepHook?("repack")
        var newPacks: [(pack: BlobID, blobs: [PackedBlob])] = []
        if !repack.isEmpty {
            newPacks = try copyBlobs(repack.map { ($0.pack, $0.usedBlobs) })
            report.packsWritten = newPacks.count
        }

        // 2. One index for everything kept, superseding every index file read above.
        stepHook?("index")
        let repacked = Set(repack.map(\.pack))
        var keptPacks: [(pack: BlobID, blobs: [PackedBlob])] = []
        // Kept packs stay listed in full, so that index and pack headers agree; their unused
        // blobs are the unused space that --max-unused allows.
        for use in uses where !use.usedBlobs.isEmpty && !repacked.contains(use.pack) {
            keptPacks.append((use.pack, use.blobs))
        }
        keptPacks += newPacks
        let oldIndexFiles = storedIndexFiles
        if changesIndex {
            // Only the last part names the old files: were every part to supersede them, a crash
            // after the first part would leave the packs of the unwritten parts in no live index.
            let parts = Array(stride(from: 0, to: max(keptPacks.count, 1), by: 2000))
            for part in parts {
                let slice = Array(keptPacks[part..<min(part + 2000, keptPacks.count)])
                _ = try repository.saveIndexFile(IndexFile(packs: slice, supersedes: part == parts.last ? oldIndexFiles : []))
            }
            report.indexFilesReplaced = oldIndexFiles.count
        }

        // 3. Old index files, then packs nothing lists any more. Only while the exclusive lock is
        // still ours: once it is gone, a backup may have started and reused what would go.
        stepHook?("remove-index")
        try RepositoryLock.checkHeld(repository.storage, confirm: true)
        // Only object lock needs them (to extend their locks): no extra listing otherwise.
        var liveIndexFiles = repository.objectLock == nil ? [] : try repository.storage.list(.index).compactMap { BlobID(hex: $0.name) }
        if changesIndex {
            // A locked old index file stays, superseded by the new one (and by every later prune's).
            let lockedIndexFiles = try repository.retentionDates(oldIndexFiles.map { Handle(.index, $0.hex) })
            for name in oldIndexFiles {
                let handle = Handle(.index, name.hex)
                if let until = lockedIndexFiles[handle] {
                    report.retained.append(RetainedFile(path: handle.path, until: until))
                } else {
                    try repository.storage.remove(handle)
                }
            }
            liveIndexFiles = liveIndexFiles.filter { !oldIndexFiles.contains($0) }
        }
        stepHook?("remove-packs")
        try RepositoryLock.checkHeld(repository.storage, confirm: true)
        for use in remove { try repository.storage.remove(Handle(.data, use.pack.hex)) }
        for use in repack { try repository.storage.remove(Handle(.data, use.pack.hex)) }
        for name in orphans { try repository.storage.remove(Handle(.data, name)) }
        stepHook?("extend-locks")
        report.locksExtended = try extendLocks(keptPacks: keptPacks.map(\.pack), indexFiles: liveIndexFiles)
        stepHook?("done")
        return report
    }

    /// The time before which an unlisted pack cannot belong to a running backup: now less the
    /// grace period, or the start of the oldest live lock of another process if earlier; nothing
    /// at all when a lock file cannot be read (its backup's start is unknown). Also whether any
    /// other process holds (or may hold) a lock, for packs whose time the storage does not tell.
    private func unindexedCutoff(now: Date) throws -> (Date, Bool) {
        var cutoff = now.addingTimeInterval(-options.unindexedGrace)
        var others = false
        for file in try RepositoryLock.scan(storage: repository.storage) {
            switch file {
            case .readable(_, let info, let modified):
                if info.isFromThisBoot && info.pid == getpid() { continue }
                if info.isStale(now: now, modified: modified) { continue }
                others = true
                cutoff = min(cutoff, info.time)
            case .unreadable:
                others = true
                cutoff = .distantPast
            }
        }
        return (cutoff, others)
    }

    /// With object lock, what the snapshots still use (packs, index files, the snapshots, keys and
    /// config) is locked again for a full period when its lock is about to end: otherwise data
    /// written long ago, that today's snapshots share, would lose its protection.
    private func extendLocks(keptPacks: [BlobID], indexFiles: [BlobID]) throws -> Int {
        guard repository.objectLock != nil else { return 0 }
        var handles = keptPacks.map { Handle(.data, $0.hex) } + indexFiles.map { Handle(.index, $0.hex) }
        handles += try repository.storage.list(.snapshot).map { Handle(.snapshot, $0.name) }
        handles += try repository.storage.list(.key).map { Handle(.key, $0.name) }
        // Ledger anchors: an unlocked one could be removed to hide a cut ledger.
        handles += try repository.storage.list(.anchor).map { Handle(.anchor, $0.name) }
        // Drill evidence: what `kho catalog rebuild` brings drill records back from.
        handles += try repository.storage.list(.drill).map { Handle(.drill, $0.name) }
        handles.append(.config)
        return try repository.extendRetention(handles)
    }

    /// IDs of every tree and data blob reachable from `snapshots`.
    private func usedBlobs(_ snapshots: [Snapshot], index: MasterIndex) throws -> Set<BlobID> {
        let codec = try BlobCodec(repository: repository)
        var used = Set<BlobID>()
        var pending: [BlobID] = []
        for snapshot in snapshots {
            guard let tree = snapshot.treeID else {
                throw KhoError(.integrity, "Snapshot \(snapshot.shortID) names no valid tree, so prune cannot tell which data it uses: run `kho check` and remove or repair that snapshot first.")
            }
            pending.append(tree)
        }
        while let tree = pending.popLast() {
            guard used.insert(tree).inserted else { continue }
            let loaded: Tree
            do {
                loaded = try repository.loadTree(tree, index: index, codec: codec)
            } catch let error as KhoError {
                throw KhoError(.integrity, "Tree \(tree.shortHex) cannot be read (\(error.message)), so prune cannot tell which data it uses: run `kho check`.")
            }
            for node in loaded.nodes {
                for blob in node.content { used.insert(blob) }
                if let subtree = node.subtree { pending.append(subtree) }
            }
        }
        return used
    }

    /// Copies blobs, still sealed, into new packs; each is opened and its ID checked first so that
    /// damage is never carried into a new pack unnoticed.
    private func copyBlobs(_ sources: [(pack: BlobID, blobs: [PackedBlob])]) throws -> [(pack: BlobID, blobs: [PackedBlob])] {
        let codec = try BlobCodec(repository: repository)
        var builder = PackBuilder(targetSize: repository.config.packSize)
        var written: [(pack: BlobID, blobs: [PackedBlob])] = []
        func flush() throws {
            guard !builder.isEmpty else { return }
            let (bytes, blobs) = try builder.finish(sealer: codec.sealer)
            let id = try SHA256.hash(bytes)
            try repository.storage.save(Handle(.data, id.hex), data: bytes)
            written.append((id, blobs))
            builder = PackBuilder(targetSize: repository.config.packSize)
        }
        for (pack, blobs) in sources {
            let bytes = try repository.storage.load(Handle(.data, pack.hex))
            for blob in blobs.sorted(by: { $0.offset < $1.offset }) {
                let range = Int(blob.offset)..<(Int(blob.offset) + Int(blob.length))
                guard range.upperBound <= bytes.count else {
                    throw KhoError(.integrity, "Blob \(blob.id.shortHex) lies outside pack \(pack.shortHex): the pack is damaged; run `kho check --read-data`.")
                }
                let sealed = Array(bytes[range])
                try sealed.withUnsafeBytes { try codec.open($0, blob: blob) { _ in } }
                if !builder.isEmpty && builder.count + sealed.count > repository.config.packSize { try flush() }
                builder.append(SealedBlob(id: blob.id, kind: blob.kind, compressed: blob.compressed,
                                          rawLength: Int(blob.rawLength), bytes: sealed))
            }
        }
        try flush()
        return written
    }
}

extension Repository {
    /// Removes snapshot files. Their data stays until `prune`. Snapshots still under object lock
    /// are left and returned with the date from which they can be removed.
    @discardableResult
    package func removeSnapshots(_ ids: [String]) throws -> [RetainedFile] {
        if !ids.isEmpty { try refuseRemovalIfAppendOnly(command: "forget") }
        let locked = try retentionDates(ids.map { Handle(.snapshot, $0) })
        var retained: [RetainedFile] = []
        for id in ids {
            let handle = Handle(.snapshot, id)
            if let until = locked[handle] {
                retained.append(RetainedFile(path: handle.path, until: until))
            } else {
                try storage.remove(handle)
            }
        }
        return retained
    }
}
