import Foundation
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

/// Writes a snapshot's files back: the calling thread walks the trees and creates entries; worker
/// threads read, verify and write file content in parallel, each at its offset.
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
    /// Blobs that lie one after the other in one pack, gathered so that a worker reads them with
    /// one read (on S3: one ranged GET instead of one per blob; a tree's small files share packs).
    private var run: [Job] = []
    /// A run ends at this many bytes of pack, this many blobs (each holds its file open until
    /// written), or a gap wider than `runGap` (bytes of other snapshots' blobs read for nothing).
    private static let runBytes = 4 << 20
    private static let runBlobs = 64
    private static let runGap = 256 << 10
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

    public init(repository: Repository, index: MasterIndex, options: RestoreOptions, progress: ProgressCounter = ProgressCounter(),
                warn: @escaping @Sendable (String) -> Void) {
        self.repository = repository
        self.index = index
        self.options = options
        self.progress = progress
        self.warn = warn
        codec = BlobCodec(repository: repository)
    }

    /// An open file being filled by workers; closed with its metadata when its last blob lands.
    private final class FileSink: @unchecked Sendable {
        let fd: Int32
        let node: Node
        let path: String
        let restoreOwners: Bool
        private let remaining: Locked<Int>

        init(fd: Int32, node: Node, path: String, blobs: Int, restoreOwners: Bool) {
            self.fd = fd
            self.node = node
            self.path = path
            self.restoreOwners = restoreOwners
            remaining = Locked(blobs)
        }

        func blobDone() {
            let left = remaining.withLock { n -> Int in n -= 1; return n }
            if left == 0 { finish() }
        }

        func finish() {
            Restorer.applyMetadata(fd: fd, node: node, restoreOwners: restoreOwners)
            close(fd)
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
        try walk(tree: tree, path: []) { path, node, included in
            if included && node.kind == .file { files += 1; bytes += Int64(node.size) }
        }
        return (files, bytes)
    }

    private func walk(tree: BlobID, path: [UInt8], parentIncluded: Bool = false,
                      _ visit: ([UInt8], Node, Bool) throws -> Void) throws {
        let loaded = try loadTree(tree)
        for node in loaded.nodes {
            let childPath = path + [UInt8(ascii: "/")] + node.name
            let included = parentIncluded || isIncluded(childPath)
            try visit(childPath, node, included)
            if node.kind == .directory, let subtree = node.subtree {
                try walk(tree: subtree, path: childPath, parentIncluded: included, visit)
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
        try prepareTarget(target)
        let totals = try measure(tree: root)
        progress.setTotals(files: totals.files, bytes: totals.bytes)
        let rootFD = try Syscall.call("open", target) { open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(rootFD) }

        let jobs = BoundedQueue<[Job]>(capacity: options.workers * 2)
        let failure = FirstError()
        var workers: [Worker] = []
        for n in 0..<options.workers {
            workers.append(Worker(name: "kho-restore-\(n)") { [repository, progress, warn, errors] in
                let codec = BlobCodec(repository: repository)
                while let run = jobs.pop() {
                  let base = Int(run[0].location.blob.offset)
                  let end = Int(run[run.count - 1].location.blob.offset) + Int(run[run.count - 1].location.blob.length)
                  let loaded = Result { try repository.storage.load(Handle(.data, run[0].location.pack.hex), offset: base, length: end - base) }
                  for job in run {
                    do {
                        let start = Int(job.location.blob.offset) - base
                        try loaded.get().withUnsafeBytes { raw in
                            let sealed = UnsafeRawBufferPointer(rebasing: raw[start..<(start + Int(job.location.blob.length))])
                            try codec.open(sealed, blob: job.location.blob) { plain in
                                try Restorer.writeSkippingZeros(job.sink.fd, plain, offset: job.offset, fileSize: Int(job.sink.node.size), job.sink.path)
                            }
                        }
                        progress.add(bytes: Int64(job.location.blob.rawLength))
                    } catch let error as KhoError where error.kind == .storageFull {
                        // Stops the restore; said once by the caller, not once per blob in flight.
                        failure.record(error)
                    } catch let error as KhoError {
                        errors.withLock { $0 += 1 }
                        warn("\(job.sink.path): \(error.message)")
                    } catch {
                        failure.record(error)
                    }
                    job.sink.blobDone()
                  }
                }
            })
        }
        do {
            try restoreTree(root, fd: rootFD, rootFD: rootFD, components: [], targetPath: target,
                            parentIncluded: false, jobs: jobs, failure: failure)
            flushRun(jobs)
        } catch {
            jobs.close()
            workers.forEach { $0.join() }
            throw error
        }
        jobs.close()
        workers.forEach { $0.join() }
        try failure.check()
        // Folder times last: creating entries inside a folder changes its mtime.
        applyDirectoryMetadata(rootFD: rootFD)
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
    /// from its parent (the list is in creation order, which is parent-first).
    private func applyDirectoryMetadata(rootFD: Int32) {
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
    }

    static func isZero(_ buffer: UnsafeRawBufferPointer) -> Bool {
        let words = buffer.count / 8
        let base = buffer.baseAddress!
        for i in 0..<words where base.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
        for i in (words * 8)..<buffer.count where buffer[i] != 0 { return false }
        return true
    }

    private func prepareTarget(_ target: String) throws {
        var info = Glibc.stat()
        if stat(target, &info) != 0 {
            guard errno == ENOENT else { throw KhoError.posix("stat", target, errno: errno) }
            do {
                try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            } catch {
                throw KhoError(.failure, "Cannot create the restore target \(target): \(error.localizedDescription).")
            }
            return
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw KhoError(.usage, "The restore target \(target) exists and is not a folder: choose a new or empty folder.")
        }
        let fd = try Syscall.call("open", target) { open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        if !options.overwrite, !(try FileSystem.entries(of: fd, path: target)).isEmpty {
            throw KhoError(.usage, "The restore target \(target) is not empty: choose a new or empty folder, or pass --overwrite to replace what is there.")
        }
    }

    private func restoreTree(_ tree: BlobID, fd: Int32, rootFD: Int32, components: [[UInt8]], targetPath: String,
                             parentIncluded: Bool, jobs: BoundedQueue<[Job]>, failure: FirstError) throws {
        let loaded: Tree
        do {
            loaded = try loadTree(tree)
        } catch let error as KhoError where error.kind == .integrity {
            let shown = components.isEmpty ? "/" : "/" + components.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
            warn("\(shown): \(error.message)")
            summary.errors += 1
            return
        }
        for node in loaded.nodes {
            try failure.check()
            let childComponents = components + [node.name]
            let relative = childComponents.flatMap { [UInt8(ascii: "/")] + $0 }
            let included = parentIncluded || isIncluded(relative)
            let shown = targetPath + String(decoding: relative, as: UTF8.self)
            switch node.kind {
            case .directory:
                guard let subtree = node.subtree else { continue }
                if !included && !hasIncludedDescendant(subtree, path: relative) { continue }
                let sub = try makeDirectory(node.name, in: fd, path: shown)
                defer { close(sub) }
                createdDirectories.append((childComponents, node))
                summary.directories += 1
                try restoreTree(subtree, fd: sub, rootFD: rootFD, components: childComponents, targetPath: targetPath,
                                parentIncluded: included, jobs: jobs, failure: failure)
            case .file where included:
                try restoreFile(node, in: fd, rootFD: rootFD, components: childComponents, path: shown, jobs: jobs)
            case .symlink where included:
                try removeExisting(node.name, in: fd)
                try FileSystem.withCName(node.name) { name in
                    _ = try FileSystem.withCName(node.linkTarget) { target in
                        try Syscall.call("symlinkat", shown) { symlinkat(target, fd, name) }
                    }
                    if options.restoreOwners { _ = fchownat(fd, name, node.uid, node.gid, AT_SYMLINK_NOFOLLOW) }
                    var times = [timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds)),
                                 timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds))]
                    _ = utimensat(fd, name, &times, AT_SYMLINK_NOFOLLOW)
                }
                summary.otherEntries += 1
            case .fifo, .characterDevice, .blockDevice, .socket:
                guard included else { continue }
                try removeExisting(node.name, in: fd)
                let type: mode_t
                switch node.kind {
                case .fifo: type = S_IFIFO
                case .characterDevice: type = S_IFCHR
                case .blockDevice: type = S_IFBLK
                default: type = S_IFSOCK
                }
                let made = FileSystem.withCName(node.name) { name in
                    Syscall.attempt { mknodat(fd, name, type | mode_t(node.mode & 0o777), dev_t(node.rdev)) }
                }
                if made.0 != 0 {
                    warn("\(shown): cannot create \(node.kind.name) (\(String(cString: strerror(made.1)))), skipped")
                    summary.errors += 1
                    continue
                }
                FileSystem.withCName(node.name) { name in
                    if options.restoreOwners { _ = fchownat(fd, name, node.uid, node.gid, AT_SYMLINK_NOFOLLOW) }
                    _ = fchmodat(fd, name, mode_t(node.mode), 0)
                    var times = [timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds)),
                                 timespec(tv_sec: Int(node.mtime.seconds), tv_nsec: Int(node.mtime.nanoseconds))]
                    _ = utimensat(fd, name, &times, AT_SYMLINK_NOFOLLOW)
                }
                summary.otherEntries += 1
            default:
                continue
            }
        }
    }

    private func hasIncludedDescendant(_ tree: BlobID, path: [UInt8]) -> Bool {
        if options.includes.isEmpty { return true }
        var found = false
        struct Found: Error {}
        do {
            try walk(tree: tree, path: path) { _, _, included in
                if included { found = true; throw Found() }
            }
        } catch {}
        return found
    }

    private func makeDirectory(_ name: [UInt8], in fd: Int32, path: String) throws -> Int32 {
        try FileSystem.withCName(name) { cname in
            let (made, code) = Syscall.attempt { mkdirat(fd, cname, 0o700) }
            if made != 0 && code != EEXIST { throw KhoError.posix("mkdirat", path, errno: code) }
            return try Syscall.call("openat", path) { openat(fd, cname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        }
    }

    private func removeExisting(_ name: [UInt8], in fd: Int32) throws {
        guard options.overwrite else { return }
        FileSystem.withCName(name) { cname in _ = unlinkat(fd, cname, 0) }
    }

    private func restoreFile(_ node: Node, in fd: Int32, rootFD: Int32, components: [[UInt8]], path: String,
                             jobs: BoundedQueue<[Job]>) throws {
        let linkKey = HardLinkKey(device: node.device, inode: node.inode)
        if node.links > 1, let first = hardLinks[linkKey] {
            try removeExisting(node.name, in: fd)
            // By descriptor and exact bytes: the first name may lie below a path longer than
            // PATH_MAX, or hold bytes that are not UTF-8.
            if let folder = try? FileSystem.openDirectory(Array(first.dropLast()), below: rootFD, path: path) {
                defer { close(folder) }
                let linked = FileSystem.withCName(first.last!) { existing in
                    FileSystem.withCName(node.name) { name in Syscall.attempt { linkat(folder, existing, fd, name, 0) } }
                }
                if linked.0 == 0 {
                    summary.files += 1
                    progress.add(files: 1)
                    return
                }
            }
        }
        try removeExisting(node.name, in: fd)
        let flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
        let file = try FileSystem.withCName(node.name) { name in
            try Syscall.call("openat", path) { openat(fd, name, flags, 0o600) }
        }
        summary.files += 1
        progress.add(files: 1)
        if node.links > 1 { hardLinks[linkKey] = components }
        if node.content.count > 1 {
            // Sized first: its blobs land out of order from several workers, and writes inside
            // the file's length do not move its end again and again. A one-blob file gets its
            // length from its one write (see writeSkippingZeros).
            let (result, code) = Syscall.attempt { ftruncate(file, off_t(node.size)) }
            if result != 0 { close(file); throw KhoError.posix("ftruncate", path, errno: code) }
        }
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
        if locations.isEmpty {
            Restorer.applyMetadata(fd: file, node: node, restoreOwners: options.restoreOwners)
            close(file)
            return
        }
        let sink = FileSink(fd: file, node: node, path: path, blobs: locations.count, restoreOwners: options.restoreOwners)
        var offset = 0
        for location in locations {
            enqueue(Job(sink: sink, location: location, offset: offset), jobs)
            offset += Int(location.blob.rawLength)
        }
    }

    /// Adds a blob to the current run, handing the run to the workers first when the blob does
    /// not continue it.
    private func enqueue(_ job: Job, _ jobs: BoundedQueue<[Job]>) {
        if let first = run.first, let last = run.last {
            let lastEnd = Int(last.location.blob.offset) + Int(last.location.blob.length)
            let start = Int(job.location.blob.offset)
            let continues = job.location.pack == last.location.pack && start >= lastEnd && start - lastEnd <= Restorer.runGap
                && start + Int(job.location.blob.length) - Int(first.location.blob.offset) <= Restorer.runBytes
                && run.count < Restorer.runBlobs
            if !continues { flushRun(jobs) }
        }
        run.append(job)
    }

    private func flushRun(_ jobs: BoundedQueue<[Job]>) {
        guard !run.isEmpty else { return }
        _ = jobs.push(run)
        run = []
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
                let codec = BlobCodec(repository: repository)
                while true {
                    // Stay within the window so memory stays bounded.
                    ready.lock()
                    while !stop.current && next.current < locations.count && next.current - consumed.current >= window { ready.wait() }
                    ready.unlock()
                    if stop.current { return }
                    let i = next.withLock { n -> Int in let i = n; n += 1; return i }
                    if i >= locations.count { return }
                    let result = Result { try codec.loadBytes(locations[i], from: repository) }
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
