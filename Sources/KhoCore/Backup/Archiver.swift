import Foundation
import KhoSupport
import Glibc
import Logging

/// What a backup is asked to do.
public struct BackupOptions: Sendable {
    public var excludes: [String] = []
    public var tags: [String] = []
    public var hostname: String = Host.name
    /// Compression level for new blobs; nil uses the repository's default.
    public var compressionLevel: Int?
    /// The snapshot whose unchanged files need not be read; nil picks the newest snapshot of the
    /// same host and paths.
    public var parent: String?
    /// Read every file even when the parent says it is unchanged.
    public var force = false
    public var time: Date?
    public var workers: Int = Machine.cores
    /// Packs uploaded at the same time (`--connections`): 1 suits a local disk; an object store
    /// answers each request after a round trip, so several in flight keep the line busy.
    public var uploaders: Int = 1
    public var source: SnapshotSource?
    public var manifest: JSONValue?
    public init() {}
}

/// Makes snapshots: walks files (or reads one stream), cuts them into chunks, and hands the chunks
/// to a `BlobSaver`. Trees are built on the calling thread as the walk finishes each folder.
public final class Archiver {
    public let repository: Repository
    // Internal rather than private: PhysicalArchiver (a tar stream's members as files) shares the
    // pipeline, the summary and the commit.
    let index: MasterIndex
    let options: BackupOptions
    let saver: BlobSaver
    private let codec: BlobCodec
    let streamChunker: StreamChunker
    var summary = BackupSummary()
    private var partial = false
    private var hardLinks: [HardLinkKey: [BlobID]] = [:]
    public let progress: ProgressCounter
    private let warn: (String) -> Void

    private struct HardLinkKey: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    public init(repository: Repository, index: MasterIndex, options: BackupOptions, progress: ProgressCounter = ProgressCounter(),
                warn: @escaping (String) -> Void) throws {
        self.repository = repository
        self.index = index
        self.options = options
        self.progress = progress
        self.warn = warn
        codec = try BlobCodec(repository: repository)
        saver = try BlobSaver(repository: repository, index: index, compressionLevel: options.compressionLevel, workers: options.workers,
                          uploaders: max(1, options.uploaders))
        streamChunker = StreamChunker(chunker: repository.chunker)
    }

    // MARK: files and folders

    /// Backs up `paths` (files or folders) and writes the snapshot.
    public func backup(paths: [String]) throws -> Snapshot {
        summary.start = Date()
        let absolute = try paths.map { try Archiver.absolutePath($0) }
        for path in absolute {
            var info = Glibc.stat()
            if lstat(path, &info) != 0 {
                saver.abort(KhoError(.usage, "missing path"))
                throw KhoError(.usage, "\(path) does not exist or cannot be read (\(String(cString: strerror(errno)))): check the path.")
            }
        }
        let parentSnapshot = try findParent(paths: absolute)
        var parentRoot: Tree?
        if let parentSnapshot, let treeID = parentSnapshot.treeID {
            // try?: the parent only lets unchanged files be skipped; without it every file is read.
            parentRoot = try? repository.loadTree(treeID, index: index, codec: codec)
        }
        let rootID: BlobID
        do {
            let trie = PathTrie(paths: absolute)
            let rootFD = try Syscall.call("open", "/") { open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
            defer { close(rootFD) }
            rootID = try saveSelection(trie, fd: rootFD, path: [], depth: 0, parent: parentRoot)
        } catch {
            saver.abort(error)
            throw error
        }
        return try commit(root: rootID, paths: absolute, parent: parentSnapshot?.id,
                          source: options.source ?? SnapshotSource(kind: .files))
    }

    static func absolutePath(_ path: String) throws -> String {
        var base = path
        if !path.hasPrefix("/") {
            base = FileManager.default.currentDirectoryPath + "/" + path
        }
        var parts: [Substring] = []
        for part in base.split(separator: "/") {
            if part == "." || part.isEmpty { continue }
            if part == ".." { _ = parts.popLast(); continue }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    private func findParent(paths: [String]) throws -> Snapshot? {
        if options.force { return nil }
        if let parent = options.parent {
            return try repository.findSnapshot(parent)
        }
        let wanted = paths.sorted()
        return try repository.listSnapshots().last {
            $0.hostname == options.hostname && $0.paths.sorted() == wanted && $0.source.sourceKind == .files
        }
    }

    /// The folders leading to the selected paths: only selected entries are walked fully.
    private final class PathTrie {
        var children: [[UInt8]: PathTrie] = [:]
        var selected = false

        init() {}

        convenience init(paths: [String]) {
            self.init()
            for path in paths {
                var node = self
                let components = FileSystem.components(path)
                if components.isEmpty { selected = true }
                for component in components {
                    if let child = node.children[component] {
                        node = child
                    } else {
                        let child = PathTrie()
                        node.children[component] = child
                        node = child
                    }
                }
                node.selected = true
            }
        }
    }

    /// `depth` counts the folders from `/` down to `fd` (see `TreeDepth`).
    private func saveSelection(_ trie: PathTrie, fd: Int32, path: [UInt8], depth: Int, parent: Tree?) throws -> BlobID {
        if trie.selected {
            return try saveDirectoryContents(fd: fd, path: path, depth: depth, parent: parent)
        }
        var nodes: [Node] = []
        for name in trie.children.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let child = trie.children[name]!
            let childPath = path + [UInt8(ascii: "/")] + name
            let (info, code) = FileSystem.lstat(at: fd, name)
            guard let info, var node = FileSystem.node(name: name, from: info) else {
                throw KhoError(.source, "\(String(decoding: childPath, as: UTF8.self)) cannot be read (\(String(cString: strerror(code)))): check the path and permissions.")
            }
            let parentNode = parent?.node(named: name)
            if child.selected {
                if let saved = try saveEntry(node: node, at: fd, path: childPath, depth: depth + 1, parent: parentNode) { nodes.append(saved) }
            } else {
                if node.kind == .symlink {
                    // A folder on the way to a selected path may be a symlink (/lib → usr/lib, /var/run
                    // → /run): follow it, so that the selected path is saved under the name it was given.
                    var target = Glibc.stat()
                    let (followed, _) = FileSystem.withCName(name) { cname in Syscall.attempt { fstatat(fd, cname, &target, 0) } }
                    if followed == 0, let folder = FileSystem.node(name: name, from: target), folder.kind == .directory { node = folder }
                }
                guard node.kind == .directory else {
                    warning(childPath, "is no longer a folder, the paths below it are not saved")
                    continue
                }
                guard depth + 1 <= TreeDepth.maximum else {
                    throw KhoError(.usage, "\(String(decoding: childPath, as: UTF8.self)) is more than \(TreeDepth.maximum) folders deep: kho does not back up paths that deep.")
                }
                let sub = try FileSystem.withCName(name) { cname in
                    try Syscall.call("openat", String(decoding: childPath, as: UTF8.self)) { openat(fd, cname, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
                }
                defer { close(sub) }
                node.subtree = try saveSelection(child, fd: sub, path: childPath, depth: depth + 1, parent: try parentTree(of: parentNode))
                nodes.append(node)
            }
        }
        return try saveTree(Tree(nodes: nodes))
    }

    private func parentTree(of node: Node?) throws -> Tree? {
        guard let node, node.kind == .directory, let subtree = node.subtree else { return nil }
        // try?: as for the parent's root: without it this folder's files are all read.
        return try? repository.loadTree(subtree, index: index, codec: codec)
    }

    func saveTree(_ tree: Tree) throws -> BlobID {
        // Names from readdir are always plain; this is the last guard for every other way a name
        // gets into a tree (a stream's name, a source's), so that no snapshot kho writes can make
        // a restore leave its target.
        if let bad = tree.nodes.first(where: { !Node.isPlainName($0.name) }) {
            throw KhoError(.usage, "\(String(decoding: bad.name, as: UTF8.self).debugDescription) cannot be stored as a file name: a name must not be empty, `.` or `..`, nor contain `/` or NUL; choose another name.")
        }
        return try saver.save(tree.encoded(), kind: .tree)
    }

    private func warning(_ path: [UInt8], _ text: String) {
        partial = true
        summary.warnings += 1
        warn("\(String(decoding: path, as: UTF8.self)): \(text)")
    }

    private func isExcluded(_ path: [UInt8]) -> Bool {
        options.excludes.contains { FileSystem.matches($0, path: path) }
    }

    private func saveDirectoryContents(fd: Int32, path: [UInt8], depth: Int, parent: Tree?) throws -> BlobID {
        let pathString = String(decoding: path, as: UTF8.self)
        let names: [[UInt8]]
        do {
            names = try FileSystem.entries(of: fd, path: pathString)
        } catch let error as KhoError {
            warning(path, "cannot list folder: \(error.message)")
            return try saveTree(Tree(nodes: []))
        }
        var nodes: [Node] = []
        nodes.reserveCapacity(names.count)
        for name in names {
            let childPath = path + [UInt8(ascii: "/")] + name
            if isExcluded(childPath) { continue }
            let (info, code) = FileSystem.lstat(at: fd, name)
            guard let info else {
                warning(childPath, code == ENOENT ? "vanished during backup, not saved" : "cannot be read (\(String(cString: strerror(code)))), not saved")
                continue
            }
            guard let node = FileSystem.node(name: name, from: info) else { continue }
            if let saved = try saveEntry(node: node, at: fd, path: childPath, depth: depth + 1, parent: parent?.node(named: name)) {
                nodes.append(saved)
            }
        }
        return try saveTree(Tree(nodes: nodes))
    }

    /// Saves one entry found in the folder `fd`; nil when it vanished or could not be read.
    /// `depth` is the entry's own depth from `/`.
    private func saveEntry(node: Node, at fd: Int32, path: [UInt8], depth: Int, parent: Node?) throws -> Node? {
        var node = node
        switch node.kind {
        case .directory:
            guard depth <= TreeDepth.maximum else {
                // Anyone who can write below a backed-up folder can make it this deep: the rest
                // of the backup goes on without it, rather than failing every night.
                warning(path, "is more than \(TreeDepth.maximum) folders deep, not saved")
                return nil
            }
            let (sub, code) = FileSystem.withCName(node.name) { cname in
                Syscall.attempt { openat(fd, cname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            }
            guard sub >= 0 else {
                warning(path, code == ENOENT ? "vanished during backup, not saved" : "cannot open folder (\(String(cString: strerror(code)))), not saved")
                return nil
            }
            defer { close(sub) }
            summary.directories += 1
            node.subtree = try saveDirectoryContents(fd: sub, path: path, depth: depth, parent: try parentTree(of: parent))
        case .symlink:
            do {
                node.linkTarget = try FileSystem.readLink(at: fd, node.name, path: String(decoding: path, as: UTF8.self))
            } catch let error as KhoError {
                warning(path, "cannot read link: \(error.message)")
                return nil
            }
            summary.otherEntries += 1
        case .file:
            return try saveFile(node: node, at: fd, path: path, parent: parent)
        default:
            summary.otherEntries += 1
        }
        return node
    }

    private func saveFile(node: Node, at fd: Int32, path: [UInt8], parent: Node?) throws -> Node? {
        var node = node
        summary.totalSize += Int64(node.size)
        if let parent, parent.kind == .file, parent.size == node.size, parent.mtime == node.mtime,
           parent.ctime == node.ctime, parent.inode == node.inode,
           parent.content.allSatisfy({ saver.has($0) }) {
            node.content = parent.content
            summary.filesUnchanged += 1
            progress.add(files: 1, bytes: Int64(node.size))
            return node
        }
        let linkKey = HardLinkKey(device: node.device, inode: node.inode)
        if node.links > 1, let content = hardLinks[linkKey] {
            node.content = content
            if parent == nil { summary.filesNew += 1 } else { summary.filesUnchanged += 1 }
            progress.add(files: 1)
            return node
        }
        var (file, code) = FileSystem.withCName(node.name) { cname in
            Syscall.attempt { openat(fd, cname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | FileSystem.noAccessTime) }
        }
        if file < 0 && code == EPERM {
            (file, code) = FileSystem.withCName(node.name) { cname in
                Syscall.attempt { openat(fd, cname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
            }
        }
        guard file >= 0 else {
            warning(path, code == ENOENT ? "vanished during backup, not saved" : "cannot open (\(String(cString: strerror(code)))), not saved")
            return nil
        }
        defer { close(file) }
        posix_fadvise(file, 0, 0, POSIX_FADV_SEQUENTIAL)
        let pathString = String(decoding: path, as: UTF8.self)
        var size: UInt64 = 0
        var content: [BlobID] = []
        streamChunker.reset()
        do {
            while try streamChunker.next(read: { buffer in
                try Syscall.call("read", pathString) { Glibc.read(file, buffer.baseAddress, buffer.count) }
            }, { chunk in
                content.append(try saver.save(chunk, kind: .data))
                size += UInt64(chunk.count)
                progress.add(bytes: Int64(chunk.count))
            }) {}
        } catch let error as KhoError where error.kind == .failure || error.kind == .source {
            warning(path, "read failed: \(error.message), not saved")
            return nil
        }
        node.content = content
        // What was read is what the snapshot holds, even if the file changed while being read.
        summary.totalSize += Int64(size) - Int64(node.size)
        node.size = size
        summary.bytesRead += Int64(size)
        if parent == nil { summary.filesNew += 1 } else { summary.filesChanged += 1 }
        progress.add(files: 1)
        if node.links > 1 { hardLinks[linkKey] = content }
        return node
    }

    // MARK: streams

    /// One stream to store as a file at the snapshot's root. `open` starts it (a dump command);
    /// `finish` runs after its end and throws when the source failed, so that nothing is committed.
    public struct StreamInput {
        public var name: String
        public var open: () throws -> (read: StreamChunker.Read, finish: () throws -> Void)
        public init(name: String, open: @escaping () throws -> (read: StreamChunker.Read, finish: () throws -> Void)) {
            self.name = name
            self.open = open
        }

        /// A stream of bytes made in memory when it is opened (a file recorded while an earlier
        /// stream was read, such as a dump's schema fingerprint).
        public static func bytes(name: String, _ make: @escaping () throws -> [UInt8]) -> StreamInput {
            StreamInput(name: name) {
                let bytes = try make()
                var served = 0
                return ({ out in
                    let count = min(out.count, bytes.count - served)
                    if count > 0 { bytes.withUnsafeBytes { out.baseAddress!.copyMemory(from: $0.baseAddress! + served, byteCount: count) } }
                    served += count
                    return count
                }, {})
            }
        }
    }

    /// Backs up one stream as a file named `name` at the snapshot's root.
    public func backupStream(name: String, read: StreamChunker.Read, finish: () throws -> Void) throws -> Snapshot {
        try withoutActuallyEscaping(read) { read in
            try withoutActuallyEscaping(finish) { finish in
                try backupStreams([StreamInput(name: name, open: { (read, finish) })], sourceName: name)
            }
        }
    }

    /// Backs up several streams, one after the other, into one snapshot. `beforeCommit` gets the
    /// total size and may return the dump manifest, or throw to refuse the snapshot (a dump that
    /// shrank suspiciously).
    public func backupStreams(_ inputs: [StreamInput], sourceName: String,
                              beforeCommit: (Int64) throws -> JSONValue? = { _ in nil }) throws -> Snapshot {
        summary.start = Date()
        let now = Date()
        let stamp = Timespec(seconds: Int64(now.timeIntervalSince1970),
                             nanoseconds: UInt32((now.timeIntervalSince1970.truncatingRemainder(dividingBy: 1)) * 1e9))
        let rootID: BlobID
        var manifest: JSONValue?
        do {
            var nodes: [Node] = []
            for input in inputs where !Node.isPlainName(input.name) {
                // Refused before any command starts: the name is the file a restore creates.
                throw KhoError(.usage, "The stream name \(input.name.debugDescription) is not a plain file name: it must not be empty, `.` or `..`, nor contain `/` or NUL; choose another --stdin-name or source name.")
            }
            for input in inputs {
                var node = Node(name: Array(input.name.utf8), kind: .file)
                node.mode = 0o600
                node.uid = getuid()
                node.gid = getgid()
                node.mtime = stamp
                node.ctime = stamp
                let (read, finish) = try input.open()
                var size: UInt64 = 0
                streamChunker.reset()
                while try streamChunker.next(read: read, { chunk in
                    node.content.append(try saver.save(chunk, kind: .data))
                    size += UInt64(chunk.count)
                    progress.add(bytes: Int64(chunk.count))
                }) {}
                try finish()
                node.size = size
                summary.bytesRead += Int64(size)
                summary.totalSize += Int64(size)
                nodes.append(node)
            }
            manifest = try beforeCommit(summary.totalSize)
            rootID = try saveTree(Tree(nodes: nodes))
        } catch {
            saver.abort(error)
            throw error
        }
        let host = options.hostname
        // try?: the parent is recorded for information and the new/changed count; a stream is
        // read whole either way, and a storage that fails here fails the save below.
        let parent = try? repository.listSnapshots().last { $0.source.name == sourceName && $0.hostname == host }
        if parent == nil { summary.filesNew = inputs.count } else { summary.filesChanged = inputs.count }
        return try commit(root: rootID, paths: inputs.map(\.name), parent: parent?.id,
                          source: options.source ?? SnapshotSource(kind: .stdin, name: sourceName), manifest: manifest)
    }

    func commit(root: BlobID, paths: [String], parent: String?, source: SnapshotSource, manifest: JSONValue? = nil,
                extraTags: [String] = []) throws -> Snapshot {
        let stats = try saver.finish()
        summary.blobsNew = stats.blobsNew
        summary.bytesNewRaw = stats.bytesNewRaw
        summary.bytesAdded = stats.bytesAdded
        summary.packsWritten = stats.packsWritten
        summary.end = Date()
        var snapshot = Snapshot(time: options.time ?? summary.start, tree: root, paths: paths, hostname: options.hostname,
                                username: Host.user, tags: options.tags + extraTags.filter { !options.tags.contains($0) }, parent: parent, source: source,
                                partial: partial, summary: summary, manifest: manifest ?? options.manifest)
        snapshot.keyID = repository.keyID
        // A backup that lost its lock may have had packs removed by a prune: it records nothing.
        try RepositoryLock.checkHeld(repository.storage, confirm: true)
        let id = try repository.saveSnapshot(snapshot)
        snapshot.id = id.hex
        // The snapshot file counts toward what this backup added.
        // try?: only the summary's byte count; the snapshot is written and named already.
        if let size = try? repository.storage.stat(Handle(.snapshot, id.hex)).size {
            snapshot.summary?.bytesAdded += Int64(size)
        }
        return snapshot
    }
}
