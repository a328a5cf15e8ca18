import Foundation
import KhoSupport
import Glibc
import Logging

public struct RestoreOptions: Sendable {
    /// Restore only paths matching one of these patterns (and everything below a matching folder).
    public var includes: [String] = []
    /// Replace files that exist in the target instead of refusing a non-empty target.
    public var overwrite = false
    /// Set owners (only works as root; off otherwise).
    public var restoreOwners = geteuid() == 0
    public var workers: Int = Machine.cores
    /// Applied to every entry before it is created (drills: no setuid files, no device nodes);
    /// nil skips the entry.
    public var adjust: (@Sendable (Node) -> Node?)?
    public init() {}
}

public struct RestoreSummary: Codable, Sendable {
    public var files = 0
    public var directories = 0
    public var otherEntries = 0
    public var bytes: Int64 = 0
    public var errors = 0
    public var start = Date()
    public var end = Date()
    public var duration: Double { end.timeIntervalSince(start) }
}

/// Writes a snapshot's files back: the calling thread walks the trees and creates folders, links
/// and special files; worker threads read, verify and write file content in parallel, each at its
/// offset, creating each file when its first blob arrives (so that a file waiting for its blobs
/// holds no descriptor, and the kernel's work of creating files is spread over the workers).
public final class Restorer {
    public let repository: Repository
    let index: MasterIndex
    let options: RestoreOptions
    let codec: BlobCodec
    public let progress: ProgressCounter
    let warn: @Sendable (String) -> Void
    var summary = RestoreSummary()
    let errors = Locked(0)
    var createdDirectories: [(components: [[UInt8]], node: Node)] = []
    var hardLinks: [HardLinkKey: [[UInt8]]] = [:]
    /// Blobs wanted from each pack, gathered so that a worker reads many with one read (on S3: one
    /// ranged GET instead of one per blob; a tree's small files share packs). Backup workers
    /// interleave files in packs, so blobs are gathered per pack and sorted, not only while they
    /// follow each other.
    var pending: [BlobID: Gathering] = [:]
    var pendingBlobs = 0
    lazy var lanes = TurnTaking<ObjectIdentifier, [Job]>(lanes: limits.lanes, held: limits.held)
    let limits: RunLimits
    let openFolders = FolderBudget()
    let temporaries = Temporaries()

    /// Packs of trees read whole, once: a restore reads every tree twice (to count, then to
    /// restore), and on S3 one request per tree costs far more than the whole pack (trees have
    /// packs of their own, small next to the data).
    var treePacks: [BlobID: [UInt8]] = [:]
    var treePackBytes = 0
    static let treePackBudget = 64 << 20
    /// Blobs at least this large are pushed to disk as they are written (see the workers).
    static let writebackThreshold = 64 << 10

    struct HardLinkKey: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    public convenience init(repository: Repository, index: MasterIndex, options: RestoreOptions, progress: ProgressCounter = ProgressCounter(),
                            warn: @escaping @Sendable (String) -> Void) throws {
        try self.init(repository: repository, index: index, options: options, progress: progress,
                  limits: RunLimits.forStorage(remote: repository.storage.readsAreRequests, workers: options.workers,
                                               openFileLimit: DescriptorLimit.current),
                  warn: warn)
    }

    /// With limits of the caller's choosing (tests: a budget of one folder).
    init(repository: Repository, index: MasterIndex, options: RestoreOptions, progress: ProgressCounter, limits: RunLimits,
         warn: @escaping @Sendable (String) -> Void) throws {
        self.repository = repository
        self.index = index
        self.options = options
        self.progress = progress
        self.warn = warn
        codec = try BlobCodec(repository: repository)
        self.limits = limits
    }

    /// Counts what a restore will write, for the progress line and the plan.
    public func measure(tree: BlobID) throws -> (files: Int, bytes: Int64) {
        var files = 0
        var bytes: Int64 = 0
        try walk(tree: tree, path: [], depth: 0) { path, node, included in
            if included && node.kind == .file { files += 1; bytes += Int64(node.size) }
        }
        return (files, bytes)
    }

    /// `depth`: how many folders below the snapshot's root `tree` is (see `TreeDepth`).
    func walk(tree: BlobID, path: [UInt8], depth: Int, parentIncluded: Bool = false,
                      _ visit: ([UInt8], Node, Bool) throws -> Void) throws {
        let loaded = try loadTree(tree)
        for node in loaded.nodes {
            let childPath = path + [UInt8(ascii: "/")] + node.name
            let included = parentIncluded || isIncluded(childPath)
            try visit(childPath, node, included)
            if node.kind == .directory, let subtree = node.subtree {
                guard depth + 1 <= TreeDepth.maximum else { throw TreeDepth.tooDeep(String(decoding: childPath, as: UTF8.self)) }
                try walk(tree: subtree, path: childPath, depth: depth + 1, parentIncluded: included, visit)
            }
        }
    }

    /// A tree from its pack read whole (see `treePacks`); anything unusual (a pack that cannot be
    /// read whole, a blob outside it, the budget spent) goes the ordinary way, which also gives
    /// the ordinary error messages.
    func loadTree(_ id: BlobID) throws -> Tree {
        guard let location = index.lookup(id) else { return try repository.loadTree(id, index: index, codec: codec) }
        // try? (both): a shortcut; whatever fails in it is done again the ordinary way below,
        // whose error is the one reported.
        if treePacks[location.pack] == nil, treePackBytes < Restorer.treePackBudget,
           let bytes = try? repository.storage.load(Handle(.data, location.pack.hex)) {
            treePacks[location.pack] = bytes
            treePackBytes += bytes.count
        }
        let start = Int(location.blob.offset)
        let end = start + Int(location.blob.length)
        if let pack = treePacks[location.pack], end <= pack.count {
            var plain: [UInt8]?
            try? pack.withUnsafeBytes { raw in
                try codec.open(UnsafeRawBufferPointer(rebasing: raw[start..<end]), blob: location.blob) { plain = Array($0) }
            }
            if let plain { return try Tree(decoding: plain, id: id) }
        }
        return try repository.loadTree(id, index: index, codec: codec)
    }

    func isIncluded(_ path: [UInt8]) -> Bool {
        options.includes.isEmpty || options.includes.contains { FileSystem.matches($0, path: path) }
    }

    /// Restores the snapshot into `target`, which is created if missing and must be empty unless
    /// `overwrite` is set.
    public func restore(snapshot: Snapshot, target: String) throws -> RestoreSummary {
        summary.start = Date()
        guard let root = snapshot.treeID else {
            throw KhoError(.integrity, "Snapshot \(snapshot.shortID) names no valid tree: the snapshot file is damaged.")
        }
        // Every tree is read (and its names and depth checked) before anything is written.
        let totals = try measure(tree: root)
        let rootFD = try openTarget(target)
        progress.setTotals(files: totals.files, bytes: totals.bytes)
        let rootFolder = Folder(fd: rootFD, budget: openFolders)

        let jobs = BoundedQueue<[Job]>(capacity: limits.queued)
        let decoders = DispatchSemaphore(value: min(options.workers, Machine.cores))
        let failure = FirstError()
        var workers: [Worker] = []
        for n in 0..<options.workers {
            workers.append(Worker(name: "kho-restore-\(n)") { [repository, progress, warn, errors] in
                let codec: BlobCodec
                do {
                    codec = try BlobCodec(repository: repository)
                } catch {
                    failure.record(error)
                    while let run = jobs.pop() {
                        for job in run {
                            do { _ = try job.sink.blobDone(failed: true) } catch { failure.record(error) }
                        }
                    }
                    return
                }
                while let run = jobs.pop() {
                  let base = Int(run[0].location.blob.offset)
                  let end = run.lazy.map { Int($0.location.blob.offset) + Int($0.location.blob.length) }.max()!
                  let loaded = Result { try repository.storage.load(Handle(.data, run[0].location.pack.hex), offset: base, length: end - base) }
                  // More workers than cores wait on reads (S3); only as many decode and write at
                  // once as there are cores: writers of one file queue on its inode lock, and
                  // more of them only spin there.
                  decoders.wait()
                  defer { decoders.signal() }
                  for job in run {
                    var blobFailed = true
                    defer {
                        do {
                            if let note = try job.sink.blobDone(failed: blobFailed) { warn(note) }
                        } catch {
                            failure.record(error)
                        }
                    }
                    let fd: Int32
                    do {
                        fd = try job.sink.descriptor()
                    } catch {
                        // As if the walker had failed to create it: the restore stops.
                        failure.record(error)
                        continue
                    }
                    do {
                        let start = Int(job.location.blob.offset) - base
                        try loaded.get().withUnsafeBytes { raw in
                            let sealed = UnsafeRawBufferPointer(rebasing: raw[start..<(start + Int(job.location.blob.length))])
                            try codec.open(sealed, blob: job.location.blob) { plain in
                                try Restorer.writeSkippingZeros(fd, plain, offset: job.offset, fileSize: Int(job.sink.node.size), job.sink.path)
                                // Written out while the next blobs decode: with gigabytes of RAM the
                                // kernel would hold a whole data directory dirty until the final
                                // syncfs and only then write it, all of it waited for (issue 20). Small
                                // blobs (small files) are left to the syncfs, which batches them.
                                if plain.count >= Restorer.writebackThreshold {
                                    FileSystem.startWriteback(fd, offset: job.offset, count: plain.count)
                                }
                            }
                        }
                        progress.add(bytes: Int64(job.location.blob.rawLength))
                        blobFailed = false
                    } catch let error as KhoError where error.kind == .storageFull {
                        // Stops the restore; said once by the caller, not once per blob in flight.
                        failure.record(error)
                    } catch let error as KhoError {
                        errors.withLock { $0 += 1 }
                        warn("\(job.sink.path): \(error.message)")
                    } catch {
                        failure.record(error)
                    }
                  }
                }
            })
        }
        do {
            try restoreTree(root, folder: rootFolder, rootFD: rootFD, components: [], targetPath: target,
                            parentIncluded: false, depth: 0, jobs: jobs, failure: failure)
            flushAll(jobs)
        } catch {
            jobs.close()
            workers.forEach { $0.join() }
            temporaries.discard(below: rootFD)
            throw error
        }
        jobs.close()
        workers.forEach { $0.join() }
        do {
            try failure.check()
        } catch {
            temporaries.discard(below: rootFD)
            throw error
        }
        // Folder times last: creating entries inside a folder changes its mtime.
        try applyDirectoryMetadata(rootFD: rootFolder.fd, target: target)
        summary.errors += errors.current
        summary.end = Date()
        summary.bytes = progress.snapshot.bytes
        return summary
    }

    func restoreTree(_ tree: BlobID, folder: Folder, rootFD: Int32, components: [[UInt8]], targetPath: String,
                             parentIncluded: Bool, depth: Int, jobs: BoundedQueue<[Job]>, failure: FirstError) throws {
        let fd = folder.fd
        let loaded: Tree
        do {
            loaded = try loadTree(tree)
        } catch let error as KhoError where error.kind == .integrity {
            let shown = components.isEmpty ? "/" : "/" + components.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
            warn("\(shown): \(error.message)")
            summary.errors += 1
            return
        }
        for stored in loaded.nodes {
            try failure.check()
            guard let node = options.adjust.map({ $0(stored) }) ?? stored else { continue }
            let childComponents = components + [node.name]
            let relative = childComponents.flatMap { [UInt8(ascii: "/")] + $0 }
            let included = parentIncluded || isIncluded(relative)
            let shown = targetPath + String(decoding: relative, as: UTF8.self)
            switch node.kind {
            case .directory:
                guard let subtree = node.subtree else { continue }
                guard depth + 1 <= TreeDepth.maximum else { throw TreeDepth.tooDeep(String(decoding: relative, as: UTF8.self)) }
                if !included && !hasIncludedDescendant(subtree, path: relative, depth: depth + 1) { continue }
                // Folders stay open while their files wait for workers: past the budget, hand
                // out everything gathered and wait for workers to finish folders' files (the
                // walker's own folders, one per level, do not count against it).
                let ownFolders = components.count + 1
                if openFolders.count >= limits.folders + ownFolders {
                    flushAll(jobs)
                    openFolders.wait(below: limits.folders + ownFolders)
                }
                let sub = Folder(fd: try makeDirectory(node.name, in: fd, path: shown), budget: openFolders)
                createdDirectories.append((childComponents, node))
                summary.directories += 1
                try restoreTree(subtree, folder: sub, rootFD: rootFD, components: childComponents, targetPath: targetPath,
                                parentIncluded: included, depth: depth + 1, jobs: jobs, failure: failure)
            case .file where included:
                try restoreFile(node, in: folder, rootFD: rootFD, components: childComponents, path: shown, jobs: jobs)
            case .symlink where included:
                guard let name = try nameToCreate(node.name, in: fd, path: shown) else { continue }
                try FileSystem.withCName(name) { name in
                    _ = try FileSystem.withCName(node.linkTarget) { target in
                        try Syscall.call("symlinkat", shown) { symlinkat(target, fd, name) }
                    }
                    if options.restoreOwners { _ = fchownat(fd, name, node.uid, node.gid, AT_SYMLINK_NOFOLLOW) }
                    var times = [timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds)),
                                 timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds))]
                    _ = utimensat(fd, name, &times, AT_SYMLINK_NOFOLLOW)
                }
                try replace(node.name, with: name, in: fd, path: shown)
                summary.otherEntries += 1
            case .fifo, .characterDevice, .blockDevice, .socket:
                guard included else { continue }
                guard let name = try nameToCreate(node.name, in: fd, path: shown) else { continue }
                let type: mode_t
                switch node.kind {
                case .fifo: type = S_IFIFO
                case .characterDevice: type = S_IFCHR
                case .blockDevice: type = S_IFBLK
                default: type = S_IFSOCK
                }
                let made = FileSystem.withCName(name) { name in
                    Syscall.attempt { mknodat(fd, name, type | mode_t(node.mode & 0o777), dev_t(node.rdev)) }
                }
                if made.0 != 0 {
                    warn("\(shown): cannot create \(node.kind.name) (\(String(cString: strerror(made.1)))), skipped")
                    summary.errors += 1
                    continue
                }
                FileSystem.withCName(name) { name in
                    if options.restoreOwners { _ = fchownat(fd, name, node.uid, node.gid, AT_SYMLINK_NOFOLLOW) }
                    // NOFOLLOW: should the node have been swapped for a symlink, no other file's mode changes.
                    _ = fchmodat(fd, name, mode_t(node.mode), AT_SYMLINK_NOFOLLOW)
                    var times = [timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds)),
                                 timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds))]
                    _ = utimensat(fd, name, &times, AT_SYMLINK_NOFOLLOW)
                }
                try replace(node.name, with: name, in: fd, path: shown)
                summary.otherEntries += 1
            default:
                continue
            }
        }
    }

    func hasIncludedDescendant(_ tree: BlobID, path: [UInt8], depth: Int) -> Bool {
        if options.includes.isEmpty { return true }
        var found = false
        struct Found: Error {}
        do {
            try walk(tree: tree, path: path, depth: depth) { _, _, included in
                if included { found = true; throw Found() }
            }
        } catch {}
        return found
    }

    func restoreFile(_ node: Node, in folder: Folder, rootFD: Int32, components: [[UInt8]], path: String,
                             jobs: BoundedQueue<[Job]>) throws {
        let fd = folder.fd
        guard let name = try nameToCreate(node.name, in: fd, path: path) else { return }
        // A replacement is listed until it is renamed, so that a restore that stops removes it.
        let replacing = name == node.name ? nil
            : Replacement(final: node.name, temporary: Array(components.dropLast()) + [name], registry: temporaries)
        let linkKey = HardLinkKey(device: node.device, inode: node.inode)
        if node.links > 1, let first = hardLinks[linkKey] {
            // By descriptor and exact bytes: the first name may lie below a path longer than
            // PATH_MAX, or hold bytes that are not UTF-8.
            // try?: when the first name's folder cannot be opened the content is written again
            // (a copy instead of a link): the file is whole either way.
            if let firstFolder = try? FileSystem.openDirectory(Array(first.dropLast()), below: rootFD, path: path) {
                defer { close(firstFolder) }
                let linked = FileSystem.withCName(first.last!) { existing in
                    FileSystem.withCName(name) { name in Syscall.attempt { linkat(firstFolder, existing, fd, name, 0) } }
                }
                if linked.0 == 0 {
                    if let replacing { try replacing.commit(in: fd, temporary: name, path: path) }
                    summary.files += 1
                    progress.add(files: 1)
                    return
                }
            }
        }
        summary.files += 1
        progress.add(files: 1)
        var locations: [BlobLocation] = []
        locations.reserveCapacity(node.content.count)
        for id in node.content {
            guard let location = index.lookup(id) else {
                warn("\(path): data blob \(id.shortHex) is not in the index; the file is incomplete")
                summary.errors += 1
                locations.removeAll()
                break
            }
            locations.append(location)
        }
        if locations.isEmpty && !node.content.isEmpty, let replacing {
            // Its content is not in the repository: the file in the target is worth more.
            replacing.done()
            warn("\(path): the existing file is kept, as its replacement could not be restored whole")
            return
        }
        // A file with content is created by the worker that writes its first blob; the walker
        // creates it only when nothing is to be written, or when later names will link to it.
        if !locations.isEmpty && node.links <= 1 {
            enqueue(FileSink(name: name, in: folder, replacing: replacing, node: node, path: path, blobs: locations.count,
                             restoreOwners: options.restoreOwners), locations, jobs)
            return
        }
        let file = try FileSystem.withCName(name) { name in
            try Syscall.call("openat", path) { openat(fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        }
        // Later names link to the name it has now; with --overwrite its temporary one, which
        // stays valid until its last blob lands (the walker has linked every name by then).
        if node.links > 1 { hardLinks[linkKey] = Array(components.dropLast()) + [name] }
        if locations.isEmpty {
            defer { close(file) }
            if node.content.count > 1 {
                let (result, code) = Syscall.attempt { ftruncate(file, off_t(node.size)) }
                if result != 0 { throw KhoError.posix("ftruncate", path, errno: code) }
            }
            Restorer.applyMetadata(fd: file, node: node, restoreOwners: options.restoreOwners)
            // Like a file with content (FileSink.blobDone): a replacement is synced before it
            // takes the old name; a new file waits for the one syncfs at the end. An fsync here
            // stalled the walker, which feeds the workers, once per empty file: a PostgreSQL data
            // directory has hundreds, and on ext4 each fsync is a disk cache flush (issue 20).
            if let replacing {
                try Syscall.call("fsync", path) { fsync(file) }
                try replacing.commit(in: fd, temporary: name, path: path)
            }
            return
        }
        // Closed until its first blob: a tree of hard-linked files would otherwise hold one
        // descriptor per gathered file.
        close(file)
        enqueue(FileSink(name: name, in: folder, created: true, replacing: replacing, node: node, path: path, blobs: locations.count,
                         restoreOwners: options.restoreOwners), locations, jobs)
    }
}
