import Foundation
import KhoSupport

public struct CheckOptions: Sendable {
    public enum DataSelection: Sendable, Equatable {
        case none
        case all
        /// A random share of the packs, 0 < fraction ≤ 1.
        case fraction(Double)
        /// Part `part` of `total` (1-based): every pack belongs to exactly one part.
        case part(Int, of: Int)
    }
    public var readData: DataSelection = .none
    public var workers: Int = Machine.cores
    public init() {}
}

/// What `kho check` found. Errors mean data is damaged or missing; warnings are harmless leftovers.
public struct CheckReport: Codable, Sendable {
    public struct Affected: Codable, Sendable, Hashable {
        public var snapshot: String
        public var path: String
    }
    public var errors: [String] = []
    public var warnings: [String] = []
    public var damagedPacks: [String] = []
    public var affected: [Affected] = []
    /// Nonces used by more than one sealed object under the repository's key (docs/FORMAT.md,
    /// section 5.5); any is an integrity error that only moving to a fresh key mends.
    package var repeatedNonces: [RepeatedNonce] = []
    /// Sealed objects whose nonces were compared: files and pack headers, and with data reading every blob.
    public var noncesCompared = 0
    public var snapshots = 0
    public var trees = 0
    public var packs = 0
    public var packsRead = 0
    public var blobsRead = 0
    public var bytesRead: Int64 = 0
    /// Clusters with a WAL archive, and the WAL files checked (listed; with data reading, opened).
    public var walClusters = 0
    public var walFiles = 0
    public var binlogArchives = 0
    public var binlogFiles = 0

    public var ok: Bool { errors.isEmpty }
}

package struct RepeatedNonce: Codable, Sendable {
    /// The 12-byte nonce, in hex.
    package var nonce: String
    /// The objects that use it: `snapshots/…`, `index/…`, `header of pack …`, `blob … in pack …`.
    package var objects: [String]
}

/// Checks a repository: every index, snapshot and tree readable, every referenced blob indexed and
/// its pack present; with data reading, every selected pack hashed and every blob in it opened and
/// its ID recomputed. Damage is traced to the snapshots and files it affects.
public final class Checker {
    public let repository: Repository
    private let options: CheckOptions
    private var report = CheckReport()
    private let progress: ProgressCounter

    public init(repository: Repository, options: CheckOptions, progress: ProgressCounter = ProgressCounter()) {
        self.repository = repository
        self.options = options
        self.progress = progress
    }

    public func run() throws -> CheckReport {
        let index = try repository.loadIndex { name, error in
            self.report.errors.append("index file \(name.prefix(8)): \(error.message)")
        }
        let stored = Dictionary(try repository.storage.list(.data).map { ($0.name, $0.size) }, uniquingKeysWith: { a, _ in a })
        let byPack = index.blobsByPack()
        report.packs = stored.count
        var badBlobs = Set<BlobID>()
        var badPacks = Set<String>()

        for (pack, blobs) in byPack.sorted(by: { $0.key < $1.key }) {
            guard let size = stored[pack.hex] else {
                report.errors.append("pack \(pack.shortHex) is missing from the repository (\(blobs.count) blobs refer to it)")
                badPacks.insert(pack.hex)
                badBlobs.formUnion(blobs.map(\.id))
                continue
            }
            let end = blobs.map { Int($0.offset) + Int($0.length) }.max() ?? 0
            if size < end + 4 + Sealer.overhead {
                report.errors.append("pack \(pack.shortHex) is truncated: \(size) bytes, its blobs need at least \(end + 4 + Sealer.overhead)")
                badPacks.insert(pack.hex)
                badBlobs.formUnion(blobs.map(\.id))
            }
        }
        let indexedPacks = Set(byPack.keys.map(\.hex))
        for name in stored.keys.sorted() where !indexedPacks.contains(name) {
            report.warnings.append("pack \(name.prefix(8)) is in no index (left by an interrupted backup or prune); `kho prune` removes it")
        }

        if !repository.configAuthenticated {
            report.warnings.append("the config is not authenticated (made before kho authenticated configs): whoever can write the storage could change it unnoticed; run `kho upgrade`")
        }
        let census = NonceCensus()
        try countNonces(census, packs: stored.filter { !badPacks.contains($0.key) })
        // Archive records and retirements decide what WAL archiving accepts: each must open.
        report.errors += try WALArchive.unreadableRecords(in: repository)

        if options.readData != .none {
            let selected = selectPacks(stored.keys.filter { indexedPacks.contains($0) && !badPacks.contains($0) }.sorted())
            let (bad, damaged, errors, stats) = readPacks(selected, index: byPack, census: census)
            badBlobs.formUnion(bad)
            badPacks.formUnion(damaged)
            report.errors += errors
            report.packsRead = stats.packs
            report.blobsRead = stats.blobs
            report.bytesRead = stats.bytes
        }

        let snapshots = try repository.listSnapshots { name, error in
            self.report.errors.append("snapshot \(name.prefix(8)): \(error.message)")
        }
        report.snapshots = snapshots.count
        try traceSnapshots(snapshots, index: index, badBlobs: badBlobs)
        try checkWAL(snapshots)
        try checkBinlogs()
        report.damagedPacks = badPacks.sorted()
        reportRepeats(census, snapshots: snapshots)
        // A check whose lock was lost may have watched a prune remove packs: its findings are
        // not about the repository as it stands, so the lost lock is the answer.
        try RepositoryLock.checkHeld(repository.storage)
        return report
    }

    /// Every binary log archive: its record opens, no file missing between the first and the last,
    /// no hole, every file the server left stored to its end; with data reading, every piece opens
    /// and is the bytes its name says.
    private func checkBinlogs() throws {
        let listed = try repository.storage.list(.binlog)
        let folders = Set(listed.compactMap { $0.name.split(separator: "/").first.map(String.init) })
        for folder in folders.sorted() {
            guard let id = BinlogArchiveID(folder: folder) else {
                report.warnings.append("binlog/\(folder.prefix(120)) is not a folder kho makes: something other than kho wrote it; remove it after checking what put it there")
                continue
            }
            do {
                let archive = try BinlogArchive(repository: repository, id: id)
                guard try archive.record() != nil else {
                    report.errors.append("binlog/\(id) holds binary log files but no archive record: its server is unknown; run kho binlog serve for its source again, or remove the folder")
                    continue
                }
                let summary = try archive.summary(times: false)
                report.binlogArchives += 1
                report.binlogFiles += summary.files.count
                for gap in summary.gaps { report.errors.append("binary log of source \(summary.source) (binlog/\(id)): \(gap)") }
                for stray in summary.strays.prefix(20) {
                    report.warnings.append("binlog/\(stray.prefix(120)) is not a file kho archives: remove it after checking what put it there")
                }
                if options.readData != .none {
                    for file in try archive.inventory().files {
                        for piece in file.pieces {
                            do { _ = try archive.load(piece) } catch let error as KhoError { report.errors.append(error.message) }
                        }
                    }
                }
            } catch let error as KhoError {
                report.errors.append("binary log archive binlog/\(id): \(error.message)")
            }
        }
    }

    /// Every WAL archive: records open, one current cluster per source, no hole in the WAL a kept
    /// base backup needs (docs/design/pitr.md section 7), and with data reading every file opens
    /// and is the file its name says.
    private func checkWAL(_ snapshots: [Snapshot]) throws {
        let bases: [String: [WALBaseBackup]]
        do {
            bases = try WALBaseBackup.kept(in: snapshots)
        } catch let error as KhoError {
            report.errors.append(error.message)
            bases = [:]
        }
        let archive: WALArchive.Inventory
        do {
            archive = try WALArchive.inventory(in: repository)
        } catch let error as KhoError where error.kind == .integrity {
            // A record that does not open is already reported (`unreadableRecords`).
            return
        }
        report.walClusters = archive.records.count
        var current: [String: [String]] = [:]
        for record in archive.records {
            let cluster = try SystemIdentifier(parsing: record.cluster)
            if !archive.isRetired(record) {
                current[record.source, default: []].append(record.cluster)
            }
            let inventory = WALInventory(cluster: cluster, segmentSize: try WALSegmentSize(bytes: record.segmentSize), files: archive.files)
            report.walFiles += inventory.segmentCount + inventory.histories.count + inventory.backups.count + inventory.partials.count
            for name in inventory.foreign.prefix(20) {
                report.warnings.append("wal/\(name.prefix(120)) is not a file kho archives: something other than kho wrote it; remove it after checking what put it there")
            }
            let histories: [UInt32: [WALTimelineSwitch]]
            do {
                histories = try WALArchive.histories(of: inventory, record: record, in: repository)
            } catch let error as KhoError {
                report.errors.append("WAL of cluster \(record.cluster) (source \(record.source)): \(error.message)")
                continue
            }
            for problem in WALContinuityCheck.problems(inventory, histories: histories, bases: bases[record.cluster] ?? []) {
                report.errors.append("WAL of cluster \(record.cluster) (source \(record.source)) " + problem)
            }
            if options.readData != .none {
                var names: [WALFileName] = inventory.histories.map { WALFileName.history(timeline: $0) } + inventory.backups + inventory.partials
                for (timeline, numbers) in inventory.segments {
                    names += numbers.keys.map { WALFileName.segment(timeline: timeline, number: $0, segmentSize: inventory.segmentSize) }
                }
                for name in names.sorted(by: { $0.description < $1.description }) {
                    do {
                        if try WALArchive.fetch(name: name, cluster: cluster, record: record, from: repository) == nil {
                            report.errors.append("wal/\(name.storedName(cluster: cluster)) was listed but is gone")
                        }
                    } catch let error as KhoError {
                        report.errors.append(error.message)
                    }
                }
            }
        }
        for (source, clusters) in current.sorted(by: { $0.key < $1.key }) where clusters.count > 1 {
            report.errors.append("WAL source \(source) is archived from \(clusters.count) clusters at once (\(clusters.joined(separator: ", "))): two servers archive under one name; retire the wrong one with `kho wal adopt`")
        }
    }

    /// Reads the nonce of every sealed file (snapshots, index files, anchors, drill evidence,
    /// archived WAL and binary logs and their records) and pack header (a few bytes each).
    private func countNonces(_ census: NonceCensus, packs: [String: Int]) throws {
        enum Item: Sendable { case file(FileKind, String), pack(String, Int) }
        var items: [Item] = []
        for kind in [FileKind.snapshot, .index, .anchor, .drill, .wal, .binlog] {
            for file in try repository.storage.list(kind) { items.append(.file(kind, file.name)) }
        }
        for (name, size) in packs.sorted(by: { $0.key < $1.key }) { items.append(.pack(name, size)) }
        let queue = BoundedQueue<Item>(capacity: items.count + 1)
        items.forEach { queue.push($0) }
        queue.close()
        let problems = Locked([String]())
        let repository = self.repository
        var workers: [Worker] = []
        for n in 0..<max(1, options.workers) {
            workers.append(Worker(name: "kho-nonces-\(n)") {
                while let item = queue.pop() {
                    do {
                        switch item {
                        case .file(let kind, let name):
                            let nonce = try repository.storage.load(Handle(kind, name), offset: 0, length: Sealer.nonceSize)
                            census.add(nonce, kind: NonceCensus.ObjectKind(file: kind), place: name)
                        case .pack(let name, let size):
                            census.add(try repository.packHeaderNonce(name: name, size: size), kind: .packHeader, place: name)
                        }
                    } catch {
                        let what: String
                        switch item {
                        case .file(let kind, let name): what = "\(kind.folder)/\(name.prefix(8))"
                        case .pack(let name, _): what = "pack \(name.prefix(8))"
                        }
                        problems.withLock { $0.append("\(what): its nonce could not be read: \((error as? KhoError)?.message ?? "\(error)")") }
                    }
                }
            })
        }
        workers.forEach { $0.join() }
        report.errors += problems.current.sorted()
    }

    private func reportRepeats(_ census: NonceCensus, snapshots: [Snapshot]) {
        report.noncesCompared = census.count
        let repeats = census.repeats()
        guard !repeats.isEmpty else { return }
        report.repeatedNonces = repeats.map { RepeatedNonce(nonce: $0.nonce, objects: $0.objects) }
        let shown = 20
        for item in repeats.prefix(shown) {
            let objects = item.objects.prefix(8).joined(separator: ", ") + (item.objects.count > 8 ? " and \(item.objects.count - 8) more" : "")
            report.errors.append("nonce \(item.nonce) is used by \(item.objects.count) different sealed objects: \(objects)")
        }
        if repeats.count > shown {
            report.errors.append("\(repeats.count - shown) more nonces are used more than once (see --json)")
        }
        let location = repository.storage.location
        report.errors.append("\(repeats.count) nonces repeat under this repository's key (written by a kho release build before 2026-12, or by a faulty writer): "
            + "whoever can read the storage can read parts of these objects and forge data that checks as intact, so all \(snapshots.count) snapshots are at risk. "
            + "Move every snapshot into a repository with a fresh key: `kho rekey --from-repo \(location) --to-repo NEW`, which checks the result with --read-data before it says the old repository can be retired.")
    }

    private func selectPacks(_ packs: [String]) -> [String] {
        switch options.readData {
        case .none: return []
        case .all: return packs
        case .fraction(let share):
            let count = Int((Double(packs.count) * share).rounded(.up))
            return Array(packs.shuffled().prefix(count)).sorted()
        case .part(let part, let total):
            return packs.filter { name in
                let id = BlobID(hex: name) ?? .zero
                return Int(id.w0 % UInt64(total)) == part - 1
            }
        }
    }

    private struct ReadStats { var packs = 0; var blobs = 0; var bytes: Int64 = 0 }

    private func readPacks(_ packs: [String], index: [BlobID: [PackedBlob]], census: NonceCensus)
        -> (Set<BlobID>, Set<String>, [String], ReadStats) {
        let queue = BoundedQueue<String>(capacity: packs.count + 1)
        packs.forEach { queue.push($0) }
        queue.close()
        let result = Locked((Set<BlobID>(), Set<String>(), [String](), ReadStats()))
        let repository = self.repository
        let progress = self.progress
        var workers: [Worker] = []
        for n in 0..<max(1, options.workers) {
            workers.append(Worker(name: "kho-check-\(n)") {
                let codec: BlobCodec
                do {
                    codec = try BlobCodec(repository: repository)
                } catch {
                    // The other workers read the packs; the check fails with the reason.
                    result.withLock { $0.2.append("a reader could not start: \((error as? KhoError)?.message ?? "\(error)")") }
                    return
                }
                while let name = queue.pop() {
                    let indexed = index[BlobID(hex: name) ?? .zero] ?? []
                    var bad = Set<BlobID>()
                    var errors: [String] = []
                    var blobs = 0
                    var size = 0
                    do {
                        let bytes = try repository.storage.load(Handle(.data, name))
                        size = bytes.count
                        if try SHA256.hash(bytes).hex != name {
                            errors.append("pack \(name.prefix(8)): its content does not hash to its name (the file was changed or damaged)")
                        }
                        var header: [PackedBlob] = []
                        do {
                            header = try repository.packHeader(of: bytes, name: name)
                        } catch let error as KhoError {
                            errors.append("pack \(name.prefix(8)): \(error.message)")
                        }
                        let inHeader = Set(header.map(\.id))
                        for blob in indexed where !inHeader.contains(blob.id) {
                            bad.insert(blob.id)
                        }
                        if !header.isEmpty, Set(indexed.map(\.id)) != inHeader {
                            errors.append("pack \(name.prefix(8)): its header and the index disagree about which blobs it holds")
                        }
                        try bytes.withUnsafeBytes { raw in
                            for blob in header {
                                blobs += 1
                                let end = Int(blob.offset) + Int(blob.length)
                                guard end <= raw.count - 4 else {
                                    bad.insert(blob.id)
                                    errors.append("pack \(name.prefix(8)): blob \(blob.id.shortHex) lies outside the pack")
                                    continue
                                }
                                let sealed = UnsafeRawBufferPointer(rebasing: raw[Int(blob.offset)..<end])
                                census.add(sealed, kind: .blob, place: name, blob: blob.id)
                                do {
                                    try codec.open(sealed, blob: blob) { _ in }
                                } catch let error as KhoError {
                                    bad.insert(blob.id)
                                    errors.append("pack \(name.prefix(8)): \(error.message)")
                                }
                            }
                        }
                    } catch let error as KhoError {
                        errors.append("pack \(name.prefix(8)): \(error.message)")
                        bad.formUnion(indexed.map(\.id))
                    } catch {
                        errors.append("pack \(name.prefix(8)): \(error)")
                        bad.formUnion(indexed.map(\.id))
                    }
                    progress.add(files: 1, bytes: Int64(size))
                    result.withLock { state in
                        state.0.formUnion(bad)
                        if !errors.isEmpty { state.1.insert(name) }
                        state.2 += errors
                        state.3.packs += 1
                        state.3.blobs += blobs
                        state.3.bytes += Int64(size)
                    }
                }
            })
        }
        workers.forEach { $0.join() }
        return result.current
    }

    /// Walks every snapshot's trees, reporting unreadable trees, blobs not in the index, and the
    /// files that use damaged blobs.
    private func traceSnapshots(_ snapshots: [Snapshot], index: MasterIndex, badBlobs: Set<BlobID>) throws {
        let codec = try BlobCodec(repository: repository)
        // Per tree: the paths below it (relative) that are affected; computed once per tree.
        var memo: [BlobID: [String]] = [:]
        var reportedTrees = Set<BlobID>()
        var reportedBlobs = Set<BlobID>()

        func affectedPaths(_ tree: BlobID, depth: Int = 0) -> [String] {
            if let known = memo[tree] { return known }
            // Recursion once per level: a tree chain deeper than any backup writes is damage.
            guard depth <= TreeDepth.maximum else {
                if reportedTrees.insert(tree).inserted { report.errors.append("tree \(tree.shortHex): \(TreeDepth.tooDeep("").message)") }
                return [""]
            }
            report.trees += 1
            var result: [String] = []
            let loaded: Tree
            do {
                if badBlobs.contains(tree) { throw KhoError(.integrity, "Tree \(tree.shortHex) is stored in a damaged pack.") }
                loaded = try repository.loadTree(tree, index: index, codec: codec)
            } catch {
                if reportedTrees.insert(tree).inserted {
                    report.errors.append("tree \(tree.shortHex): \((error as? KhoError)?.message ?? "\(error)")")
                }
                memo[tree] = [""]
                return [""]
            }
            for node in loaded.nodes {
                let name = "/" + node.nameString
                switch node.kind {
                case .directory:
                    if let subtree = node.subtree {
                        result += affectedPaths(subtree, depth: depth + 1).map { name + $0 }
                    }
                case .file:
                    var damaged = false
                    for blob in node.content {
                        if badBlobs.contains(blob) {
                            damaged = true
                        } else if !index.contains(blob) {
                            damaged = true
                            if reportedBlobs.insert(blob).inserted {
                                report.errors.append("data blob \(blob.shortHex) is in no index")
                            }
                        }
                    }
                    if damaged { result.append(name) }
                default:
                    break
                }
            }
            memo[tree] = result
            return result
        }

        for snapshot in snapshots {
            guard let root = snapshot.treeID else {
                report.errors.append("snapshot \(snapshot.shortID): names no valid tree")
                continue
            }
            for path in affectedPaths(root) {
                report.affected.append(.init(snapshot: snapshot.id ?? "", path: path.isEmpty ? "/" : path))
            }
        }
    }
}
