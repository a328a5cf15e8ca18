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
    private let index: MasterIndex
    private let options: RestoreOptions
    private let codec: BlobCodec
    public let progress: ProgressCounter
    private let warn: @Sendable (String) -> Void
    private var summary = RestoreSummary()
    private let errors = Locked(0)
    private var createdDirectories: [(components: [[UInt8]], node: Node)] = []
    private var hardLinks: [HardLinkKey: [[UInt8]]] = [:]
    /// Blobs wanted from each pack, gathered so that a worker reads many with one read (on S3: one
    /// ranged GET instead of one per blob; a tree's small files share packs). Backup workers
    /// interleave files in packs, so blobs are gathered per pack and sorted, not only while they
    /// follow each other.
    private var pending: [BlobID: Gathering] = [:]
    private var pendingBlobs = 0
    private let limits: RunLimits
    private let openFolders = FolderBudget()
    private let temporaries = Temporaries()

    private struct Gathering {
        var jobs: [Job] = []
        var start = Int.max
        var end = 0

        mutating func add(_ job: Job, start: Int, end: Int) {
            jobs.append(job)
            self.start = min(self.start, start)
            self.end = max(self.end, end)
        }
    }

    /// How much one read may cover and how much is gathered before reads are handed out.
    struct RunLimits {
        /// Bytes of pack one read covers at most (all of it is in memory in a worker).
        var bytes: Int
        /// Blobs in one read.
        var blobs: Int
        /// A wider gap between two wanted blobs ends the read: bytes read for nothing.
        var gap: Int
        /// Reads handed out but not yet taken by a worker.
        var queued: Int
        /// Blobs gathered (over all packs) before the largest gathering is handed out.
        var gathered: Int
        /// Packs gathered from at once: on a local disk one, so that blobs are handed out in the
        /// order of the files (a file of many blobs is then written front to back).
        var packs: Int
        /// Folders kept open for files not yet created; the rest of the descriptors are left for
        /// the files being written and the storage's connections.
        var folders: Int

        /// On a local disk a read is cheap and small reads keep files finishing in order; on
        /// object storage every read is a request, so one read covers up to a whole default pack
        /// and blobs are gathered until most packs are wanted whole.
        static func forStorage(remote: Bool, workers: Int, openFileLimit: Int) -> RunLimits {
            let folders = max(16, openFileLimit / 2)
            guard remote else {
                return RunLimits(bytes: 4 << 20, blobs: 64, gap: 256 << 10, queued: workers * 2, gathered: 64, packs: 1,
                                 folders: folders)
            }
            return RunLimits(bytes: 16 << 20, blobs: 1 << 14, gap: 2 << 20, queued: workers, gathered: 1 << 16, packs: .max,
                             folders: folders)
        }
    }

    /// Packs of trees read whole, once: a restore reads every tree twice (to count, then to
    /// restore), and on S3 one request per tree costs far more than the whole pack (trees have
    /// packs of their own, small next to the data).
    private var treePacks: [BlobID: [UInt8]] = [:]
    private var treePackBytes = 0
    private static let treePackBudget = 64 << 20

    private struct HardLinkKey: Hashable {
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

    /// A folder the walker created, kept open while files in it wait to be created by workers;
    /// closed when the last of them lets go.
    final class Folder: @unchecked Sendable {
        let fd: Int32
        private let budget: FolderBudget

        init(fd: Int32, budget: FolderBudget) {
            self.fd = fd
            self.budget = budget
            budget.opened()
        }

        deinit {
            close(fd)
            budget.closed()
        }
    }

    /// Counts open `Folder`s so that the walker can wait for workers to close some.
    final class FolderBudget: @unchecked Sendable {
        private let condition = NSCondition()
        private var open = 0

        func opened() { condition.lock(); open += 1; condition.unlock() }

        func closed() {
            condition.lock()
            open -= 1
            condition.broadcast()
            condition.unlock()
        }

        var count: Int { condition.lock(); defer { condition.unlock() }; return open }

        func wait(below limit: Int) {
            condition.lock()
            while open >= limit { condition.wait() }
            condition.unlock()
        }
    }

    /// A file filled by workers: created by the first worker to hold one of its blobs (unless the
    /// walker created it already, as it does for hard links), closed with its metadata when its
    /// last blob lands.
    private final class FileSink: @unchecked Sendable {
        let node: Node
        let path: String
        let restoreOwners: Bool
        private let lock = NSLock()
        private var fd: Int32
        private var folder: Folder?
        private let name: [UInt8]
        private var createError: Error?
        private var remaining: Int
        private let blobs: Int
        private let created: Bool
        /// With --overwrite: the file is written under a temporary `name` and renamed to this one
        /// only when every blob landed, so that a restore that fails leaves the old file whole.
        private let replacing: Replacement?
        private var failed = false

        /// A file to open as `name` in `folder` when its first blob is written: to create, or
        /// already `created` by the walker (and closed: a waiting file holds no descriptor).
        init(name: [UInt8], in folder: Folder, created: Bool = false, replacing: Replacement? = nil, node: Node, path: String,
             blobs: Int, restoreOwners: Bool) {
            fd = -1
            self.created = created
            self.replacing = replacing
            self.name = name
            self.folder = folder
            self.node = node
            self.path = path
            self.restoreOwners = restoreOwners
            self.blobs = blobs
            remaining = blobs
        }

        /// The file's descriptor, creating the file on first use.
        func descriptor() throws -> Int32 {
            lock.lock()
            defer { lock.unlock() }
            if fd >= 0 { return fd }
            if let createError { throw createError }
            do {
                // The walker's files exist already; any other name must be new (O_EXCL).
                let flags = created ? O_WRONLY | O_NOFOLLOW | O_CLOEXEC : O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
                let opened = try FileSystem.withCName(name) { cname in
                    try Syscall.call("openat", path) { openat(folder!.fd, cname, flags, 0o600) }
                }
                if blobs > 1 {
                    // Sized first: its blobs land out of order from several workers, and writes
                    // inside the file's length do not move its end again and again. A one-blob
                    // file gets its length from its one write (see writeSkippingZeros).
                    let (result, code) = Syscall.attempt { ftruncate(opened, off_t(node.size)) }
                    if result != 0 { close(opened); throw KhoError.posix("ftruncate", path, errno: code) }
                }
                fd = opened
                return opened
            } catch {
                createError = error
                throw error
            }
        }

        /// One blob written (or, `failed`, not); after the last, the file gets its metadata, is
        /// synced and closed, and a replacement takes the old name. Returns a warning to show.
        func blobDone(failed blobFailed: Bool) throws -> String? {
            lock.lock()
            remaining -= 1
            if blobFailed { failed = true }
            let last = remaining == 0
            lock.unlock()
            guard last else { return nil }
            defer { folder = nil }
            if fd >= 0 {
                let opened = fd
                fd = -1
                defer { close(opened) }
                Restorer.applyMetadata(fd: opened, node: node, restoreOwners: restoreOwners)
                // A replacement must be on disk before it takes the old name, or a power cut could
                // leave an empty file where the old one was. New files are synced all at once at
                // the end (syncfs), which costs one call instead of one journal commit per file.
                if replacing != nil { try Syscall.call("fsync", path) { fsync(opened) } }
            }
            guard let replacing, let folder else { return nil }
            if failed {
                FileSystem.withCName(name) { _ = unlinkat(folder.fd, $0, 0) }
                replacing.done()
                return "\(path): the existing file is kept, as its replacement could not be restored whole"
            }
            try replacing.commit(in: folder.fd, temporary: name, path: path)
            return nil
        }
    }

    /// A temporary name that becomes `final` when the entry written under it is complete. Listed
    /// in `Temporaries` until then, so that a restore that stops removes what it left half done.
    final class Replacement: @unchecked Sendable {
        let final: [UInt8]
        let temporary: [[UInt8]]
        private let registry: Temporaries

        init(final: [UInt8], temporary: [[UInt8]], registry: Temporaries) {
            self.final = final
            self.temporary = temporary
            self.registry = registry
            registry.add(self)
        }

        /// Renames the finished entry over the old one: the old name always holds a whole file.
        func commit(in folder: Int32, temporary name: [UInt8], path: String) throws {
            defer { done() }
            _ = try FileSystem.withCName(name) { from in
                try FileSystem.withCName(final) { to in
                    try Syscall.call("renameat", path) { renameat(folder, from, folder, to) }
                }
            }
        }

        func done() { registry.remove(self) }
    }

    /// Temporary entries of --overwrite not yet renamed, by their path below the target.
    final class Temporaries: @unchecked Sendable {
        private let lock = NSLock()
        private var entries: [ObjectIdentifier: [[UInt8]]] = [:]

        func add(_ entry: Replacement) { lock.lock(); entries[ObjectIdentifier(entry)] = entry.temporary; lock.unlock() }
        func remove(_ entry: Replacement) { lock.lock(); entries[ObjectIdentifier(entry)] = nil; lock.unlock() }

        /// Removes every temporary entry left: called when a restore stops half way.
        func discard(below root: Int32) {
            lock.lock()
            let left = Array(entries.values)
            entries.removeAll()
            lock.unlock()
            for components in left {
                guard let name = components.last,
                      let folder = try? FileSystem.openDirectory(Array(components.dropLast()), below: root, path: "") else { continue }
                FileSystem.withCName(name) { _ = unlinkat(folder, $0, 0) }
                close(folder)
            }
        }
    }

    private struct Job: Sendable {
        var sink: FileSink
        var location: BlobLocation
        var offset: Int
    }

    private static func applyMetadata(fd: Int32, node: Node, restoreOwners: Bool) {
        if restoreOwners { _ = fchown(fd, node.uid, node.gid) }
        _ = fchmod(fd, mode_t(node.mode))
        var times = [timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds)),
                     timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds))]
        _ = futimens(fd, &times)
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
    private func walk(tree: BlobID, path: [UInt8], depth: Int, parentIncluded: Bool = false,
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
    private func loadTree(_ id: BlobID) throws -> Tree {
        guard let location = index.lookup(id) else { return try repository.loadTree(id, index: index, codec: codec) }
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

    private func isIncluded(_ path: [UInt8]) -> Bool {
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

    /// Writes `plain` at `offset`, leaving out the 4 KiB blocks (aligned to the file) that are all
    /// zero: the file was already extended to its full size, so they read as zero and stay holes.
    /// Skipping only whole zero chunks is not enough: a chunk of a sparse file is usually a few
    /// written blocks in megabytes of zeros.
    /// The file's last byte is always written, zero or not, so that the file gets its full length
    /// from the writes alone (no `ftruncate` per file: one metadata change less on every file).
    static func writeSkippingZeros(_ fd: Int32, _ plain: UnsafeRawBufferPointer, offset: Int, fileSize: Int, _ path: String) throws {
        let block = 4096
        var run: Int? = nil
        var i = 0
        while i < plain.count {
            let end = min(plain.count, i + block - (offset + i) % block)
            if isZero(UnsafeRawBufferPointer(rebasing: plain[i..<end])) {
                if let start = run {
                    try Syscall.pwriteAll(fd, UnsafeRawBufferPointer(rebasing: plain[start..<i]), offset: offset + start, path)
                    run = nil
                }
            } else if run == nil {
                run = i
            }
            i = end
        }
        if let start = run {
            try Syscall.pwriteAll(fd, UnsafeRawBufferPointer(rebasing: plain[start..<plain.count]), offset: offset + start, path)
        } else if !plain.isEmpty && offset + plain.count == fileSize {
            try Syscall.pwriteAll(fd, UnsafeRawBufferPointer(rebasing: plain[(plain.count - 1)...]), offset: offset + plain.count - 1, path)
        }
    }

    /// Sets every created folder's metadata, children before parents, opening each folder once
    /// from its parent (the list is in creation order, which is parent-first). Then the target's
    /// filesystem is synced as a whole (syncfs): every restored file's data and every folder's
    /// entries are on disk before the restore is reported done, so it survives a power cut.
    /// One syncfs instead of an fsync per file and folder: 46,000 files meant 46,000 journal
    /// commits (docs/BENCHMARKS.md).
    private func applyDirectoryMetadata(rootFD: Int32, target: String) throws {
        var stack: [(components: [[UInt8]], fd: Int32, node: Node)] = []
        func popOne() {
            let top = stack.removeLast()
            if top.fd >= 0 {
                Restorer.applyMetadata(fd: top.fd, node: top.node, restoreOwners: options.restoreOwners)
                close(top.fd)
            }
        }
        for (components, node) in createdDirectories {
            while let top = stack.last, top.components != Array(components.dropLast()) { popOne() }
            let parentFD = stack.last?.fd ?? rootFD
            var fd: Int32 = -1
            if parentFD >= 0, let name = components.last {
                fd = FileSystem.withCName(name) { openat(parentFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            }
            stack.append((components, fd, node))
        }
        while !stack.isEmpty { popOne() }
        try Syscall.call("syncfs", target) { FileSystem.syncFilesystem(rootFD) }
    }

    static func isZero(_ buffer: UnsafeRawBufferPointer) -> Bool {
        let words = buffer.count / 8
        let base = buffer.baseAddress!
        for i in 0..<words where base.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
        for i in (words * 8)..<buffer.count where buffer[i] != 0 { return false }
        return true
    }

    /// Opens the restore target, creating it (and syncing the parents of what was created) if
    /// missing. The target is held by this descriptor from here on and everything is created
    /// relative to it, so that a symlink put in its place or inside it later is never followed.
    private func openTarget(_ target: String) throws -> Int32 {
        // A folder on the way that another user can change (a symlink of theirs in /tmp, a
        // folder they can write) could send the restore, as root, anywhere.
        if let problem = FileSystem.trustProblem(target, includingItself: false) {
            throw KhoError(.usage, "The restore target \(target) is not safe to write as \(geteuid() == 0 ? "root" : "this user"): \(problem), or restore elsewhere.")
        }
        var info = Glibc.stat()
        if lstat(target, &info) != 0 {
            guard errno == ENOENT else { throw KhoError.posix("stat", target, errno: errno) }
            try FileSystem.makeFolders(target, mode: 0o700)
        }
        let (fd, code) = Syscall.attempt { open(target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else {
            // With O_DIRECTORY, a symlink fails as ENOTDIR: lstat tells the two apart.
            if code == ELOOP || (code == ENOTDIR && lstat(target, &info) == 0 && info.st_mode & S_IFMT == S_IFLNK) {
                throw KhoError(.usage, "The restore target \(target) is a symbolic link: name the folder itself, so that nobody can point the restore elsewhere.")
            }
            if code == ENOTDIR {
                throw KhoError(.usage, "The restore target \(target) exists and is not a folder: choose a new or empty folder.")
            }
            throw KhoError.posix("open", target, errno: code)
        }
        do {
            guard fstat(fd, &info) == 0 else { throw KhoError.posix("fstat", target, errno: errno) }
            if info.st_uid != geteuid() && info.st_uid != 0 {
                throw KhoError(.usage, "The restore target \(target) belongs to user \(info.st_uid), who could move what kho writes there: restore into a new folder, or one of your own.")
            }
            if !options.overwrite, !(try FileSystem.entries(of: fd, path: target)).isEmpty {
                throw KhoError(.usage, "The restore target \(target) is not empty: choose a new or empty folder, or pass --overwrite to replace what is there.")
            }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// A name for an entry being written in place of another (--overwrite), unlikely to be used.
    private static func temporaryName() throws -> [UInt8] {
        Array(".kho-restore-\(Hex.encode(try Random.bytes(8)))".utf8)
    }

    private func restoreTree(_ tree: BlobID, folder: Folder, rootFD: Int32, components: [[UInt8]], targetPath: String,
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

    private func hasIncludedDescendant(_ tree: BlobID, path: [UInt8], depth: Int) -> Bool {
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

    /// Opens the folder `name` in `fd`, creating it if missing. A symlink or file of that name
    /// (only possible with --overwrite) is never followed: it is replaced by a new folder.
    private func makeDirectory(_ name: [UInt8], in fd: Int32, path: String) throws -> Int32 {
        try FileSystem.withCName(name) { cname in
            let (made, code) = Syscall.attempt { mkdirat(fd, cname, 0o700) }
            if made != 0 && code != EEXIST { throw KhoError.posix("mkdirat", path, errno: code) }
            let (opened, openCode) = Syscall.attempt { openat(fd, cname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            if opened >= 0 { return opened }
            guard made != 0, options.overwrite, openCode == ELOOP || openCode == ENOTDIR else {
                throw KhoError.posix("openat", path, errno: openCode)
            }
            // Swapped in one step, then the old entry removed: the name is never missing.
            let temporary = try Restorer.temporaryName()
            try FileSystem.withCName(temporary) { temp in
                try Syscall.call("mkdirat", path) { mkdirat(fd, temp, 0o700) }
                let (swapped, swapCode) = Syscall.attempt { FileSystem.renameat2(fd, temp, fd, cname, FileSystem.renameExchange) }
                if swapped != 0 {
                    _ = unlinkat(fd, temp, AT_REMOVEDIR)
                    throw KhoError.posix("renameat2", path, errno: swapCode)
                }
                _ = unlinkat(fd, temp, 0)
            }
            return try Syscall.call("openat", path) { openat(fd, cname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        }
    }

    /// The name to create a non-folder entry under: its own, or with --overwrite over an existing
    /// entry, a temporary name that `replace` renames over it once the entry is complete. Nil
    /// (after a warning) when a folder is in the way: a folder is never removed.
    private func nameToCreate(_ name: [UInt8], in fd: Int32, path: String) throws -> [UInt8]? {
        guard options.overwrite else { return name }
        let (info, code) = FileSystem.lstat(at: fd, name)
        guard let info else {
            if code == ENOENT { return name }
            throw KhoError.posix("fstatat", path, errno: code)
        }
        if info.st_mode & S_IFMT == S_IFDIR {
            warn("\(path): a folder of this name is in the target; it is not replaced by the snapshot's \(String(decoding: name, as: UTF8.self))")
            summary.errors += 1
            return nil
        }
        return try Restorer.temporaryName()
    }

    /// Renames `created` over `name` when they differ (see `nameToCreate`).
    private func replace(_ name: [UInt8], with created: [UInt8], in fd: Int32, path: String) throws {
        guard created != name else { return }
        try FileSystem.withCName(created) { from in
            try FileSystem.withCName(name) { to in
                let (result, code) = Syscall.attempt { renameat(fd, from, fd, to) }
                if result != 0 {
                    _ = unlinkat(fd, from, 0)
                    throw KhoError.posix("renameat", path, errno: code)
                }
            }
        }
    }

    private func restoreFile(_ node: Node, in folder: Folder, rootFD: Int32, components: [[UInt8]], path: String,
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
            try Syscall.call("fsync", path) { fsync(file) }
            if let replacing { try replacing.commit(in: fd, temporary: name, path: path) }
            return
        }
        // Closed until its first blob: a tree of hard-linked files would otherwise hold one
        // descriptor per gathered file.
        close(file)
        enqueue(FileSink(name: name, in: folder, created: true, replacing: replacing, node: node, path: path, blobs: locations.count,
                         restoreOwners: options.restoreOwners), locations, jobs)
    }

    private func enqueue(_ sink: FileSink, _ locations: [BlobLocation], _ jobs: BoundedQueue<[Job]>) {
        var offset = 0
        for location in locations {
            enqueue(Job(sink: sink, location: location, offset: offset), jobs)
            offset += Int(location.blob.rawLength)
        }
    }

    /// Adds a blob to those wanted from its pack; hands that pack's blobs to the workers when one
    /// read could not cover them all, and the largest gathering when too many files wait.
    private func enqueue(_ job: Job, _ jobs: BoundedQueue<[Job]>) {
        let pack = job.location.pack
        let start = Int(job.location.blob.offset)
        let end = start + Int(job.location.blob.length)
        if let gathered = pending[pack] {
            if max(end, gathered.end) - min(start, gathered.start) > limits.bytes || gathered.jobs.count >= limits.blobs {
                flush(pack, jobs)
            }
        } else if pending.count >= limits.packs {
            flushAll(jobs)
        }
        pending[pack, default: Gathering()].add(job, start: start, end: end)
        pendingBlobs += 1
        if pendingBlobs >= limits.gathered, let largest = pending.max(by: { $0.value.jobs.count < $1.value.jobs.count })?.key {
            flush(largest, jobs)
        }
    }

    /// Hands one pack's gathered blobs to the workers in offset order, as one read per stretch
    /// without a gap wider than `limits.gap` and no longer than `limits.bytes`.
    private func flush(_ pack: BlobID, _ jobs: BoundedQueue<[Job]>) {
        guard let gathered = pending.removeValue(forKey: pack) else { return }
        pendingBlobs -= gathered.jobs.count
        let sorted = gathered.jobs.sorted { $0.location.blob.offset < $1.location.blob.offset }
        var read: [Job] = []
        var readStart = 0
        var readEnd = 0
        for job in sorted {
            let start = Int(job.location.blob.offset)
            let end = start + Int(job.location.blob.length)
            if !read.isEmpty && (start - readEnd > limits.gap || max(end, readEnd) - readStart > limits.bytes) {
                _ = jobs.push(read)
                read = []
            }
            if read.isEmpty { readStart = start; readEnd = end }
            read.append(job)
            readEnd = max(readEnd, end)
        }
        if !read.isEmpty { _ = jobs.push(read) }
    }

    private func flushAll(_ jobs: BoundedQueue<[Job]>) {
        for pack in Array(pending.keys) { flush(pack, jobs) }
    }
}

/// Reads a file's blobs in order, decoding several at once, and hands the plaintext to a consumer
/// on the calling thread: used to dump a stream to stdout or into a database client.
public final class OrderedBlobReader {
    private let repository: Repository
    private let locations: [BlobLocation]
    private let workers: Int

    public init(repository: Repository, index: MasterIndex, content: [BlobID], workers: Int = Machine.cores) throws {
        self.repository = repository
        self.workers = max(1, workers)
        locations = try content.map { id in
            guard let location = index.lookup(id) else {
                throw KhoError(.integrity, "Data blob \(id.shortHex) is not in the index: the repository is missing data; run `kho check`.")
            }
            return location
        }
    }

    public func run(_ consume: ([UInt8]) throws -> Void) throws {
        let window = workers * 4
        let results = Locked<[Int: Result<[UInt8], Error>]>([:])
        let ready = NSCondition()
        let next = Locked(0)
        let consumed = Locked(0)
        let stop = Locked(false)
        let repository = self.repository
        let locations = self.locations
        var threads: [Worker] = []
        for n in 0..<workers {
            threads.append(Worker(name: "kho-read-\(n)") {
                let codec = Result { try BlobCodec(repository: repository) }
                while true {
                    // Stay within the window so memory stays bounded.
                    ready.lock()
                    while !stop.current && next.current < locations.count && next.current - consumed.current >= window { ready.wait() }
                    ready.unlock()
                    if stop.current { return }
                    let i = next.withLock { n -> Int in let i = n; n += 1; return i }
                    if i >= locations.count { return }
                    let result = Result { try codec.get().loadBytes(locations[i], from: repository) }
                    results.withLock { $0[i] = result }
                    ready.lock(); ready.broadcast(); ready.unlock()
                }
            })
        }
        defer {
            stop.withLock { $0 = true }
            ready.lock(); ready.broadcast(); ready.unlock()
            threads.forEach { $0.join() }
        }
        for i in 0..<locations.count {
            ready.lock()
            while results.withLock({ $0[i] == nil }) { ready.wait() }
            ready.unlock()
            let result = results.withLock { $0.removeValue(forKey: i)! }
            consumed.withLock { $0 = i + 1 }
            ready.lock(); ready.broadcast(); ready.unlock()
            try consume(try result.get())
        }
    }
}
