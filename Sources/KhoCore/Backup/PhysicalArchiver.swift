import Foundation
import KhoSupport

/// What a physical archive read from its tar stream, for the source to check and describe before
/// the snapshot is written.
public struct PhysicalContents: Sendable {
    /// Every regular file's path (relative to the data directory) and size.
    public var files: [String: UInt64] = [:]
    /// The content of the members the source asked to see (`PhysicalArchiver.capture`).
    public var captured: [String: [UInt8]] = [:]
    public var totalSize: Int64 = 0
    public init() {}
}

/// Stores a data directory that arrives as a tar stream (pg_basebackup's): one tree node per
/// member, with the header's mode, owner and time, under one folder `data`, so that a plain restore
/// gives a data directory. Relation files are cut at fixed `blockSize` boundaries, every other
/// member by the repository's content-defined chunker (FORMAT.md section 21).
///
/// It shares the `Archiver`'s pipeline (blob saver, summary, tree guard, commit): one backup, one
/// archiver, whichever of the two walks the input.
public final class PhysicalArchiver {
    /// The folder at the snapshot's root that holds the data directory.
    public static let rootName = "data"
    /// 16 PostgreSQL pages: small enough that an unchanged page range dedups, large enough to keep
    /// the index near 8 entries a megabyte (FORMAT.md 21, design Q3).
    public static let defaultBlockSize = 128 << 10
    public static let pageSize = 8192
    public static let maximumBlockSize = 4 << 20

    public let archiver: Archiver
    public let blockSize: Int
    /// Members whose content the source needs (path → most bytes it may have).
    public var capture: [String: Int] = [:]

    public init(archiver: Archiver, blockSize: Int = PhysicalArchiver.defaultBlockSize) throws {
        guard blockSize >= PhysicalArchiver.pageSize, blockSize <= PhysicalArchiver.maximumBlockSize,
              blockSize % PhysicalArchiver.pageSize == 0 else {
            throw KhoError(.usage, "The block size \(blockSize) is not a multiple of 8192 between 8192 and \(PhysicalArchiver.maximumBlockSize): choose such a size.")
        }
        self.archiver = archiver
        self.blockSize = blockSize
    }

    /// Whether `path` (relative to the data directory) is a relation file: its pages change in
    /// place and it grows at the end, so fixed blocks dedup where content-defined chunks would
    /// not. `(base/\d+|global)/\d+(_(fsm|vm|init))?(\.\d+)?`
    public static func isRelationFile(_ path: String) -> Bool {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        let file: Substring
        switch parts.count {
        case 2 where parts[0] == "global": file = parts[1]
        case 3 where parts[0] == "base" && isDigits(parts[1]): file = parts[2]
        default: return false
        }
        var rest = file[...]
        let number = rest.prefix { $0.isASCII && $0.isNumber }
        guard !number.isEmpty else { return false }
        rest = rest.dropFirst(number.count)
        for fork in ["_fsm", "_vm", "_init"] where rest.hasPrefix(fork) {
            rest = rest.dropFirst(fork.count)
            break
        }
        if rest.isEmpty { return true }
        guard rest.first == "." else { return false }
        return isDigits(rest.dropFirst())
    }

    private static func isDigits(_ text: Substring) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }

    /// A folder being assembled: members arrive in the stream's order, a folder's own header may
    /// come after (or never, for a folder only implied by its members' names).
    private final class Folder {
        var node: Node
        var folders: [[UInt8]: Folder] = [:]
        var leaves: [[UInt8]: Node] = [:]
        var described = false

        init(node: Node) { self.node = node }
    }

    /// Reads `tar` to its end and writes the snapshot. `finish` runs after the end-of-archive
    /// marker and throws when the producer failed (pg_basebackup exited non-zero); `beforeCommit`
    /// sees what was read and returns the manifest, or throws to record nothing.
    public func backup(_ tar: TarStream, sourceName: String, source: SnapshotSource, tags: [String] = [], finish: () throws -> Void,
                       beforeCommit: (PhysicalContents) throws -> JSONValue?) throws -> Snapshot {
        let saver = archiver.saver
        archiver.summary.start = Date()
        var contents = PhysicalContents()
        let root = Folder(node: Node(name: Array(PhysicalArchiver.rootName.utf8), kind: .directory))
        root.node.mode = 0o700
        let rootID: BlobID
        var manifest: JSONValue?
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 64)
        defer { block.deallocate() }
        do {
            var owner: (uid: UInt32, gid: UInt32)?
            while let member = try tar.next() {
                // The data directory belongs to whoever owns its files (the server's user).
                if owner == nil { owner = (member.uid, member.gid) }
                guard member.components.count < TreeDepth.maximum - 8 else {
                    throw KhoError(.source, "The member \(member.path.debugDescription) is more than \(TreeDepth.maximum) folders deep; no snapshot was written.")
                }
                let folder = try folderFor(member, under: root)
                let name = member.components.last!
                var node = Node(name: name, kind: .file)
                // A data directory holds no setuid, setgid or sticky entry: a stream that claims
                // one would have a restore as root create it.
                node.mode = member.mode & 0o777
                node.uid = member.uid
                node.gid = member.gid
                node.mtime = Timespec(seconds: member.mtime, nanoseconds: 0)
                node.ctime = node.mtime
                switch member.kind {
                case .directory:
                    if folder.leaves[name] != nil { throw duplicate(member) }
                    let child = folder.folders[name] ?? Folder(node: node)
                    if child.described { throw duplicate(member) }
                    node.kind = .directory
                    child.node = node
                    child.described = true
                    folder.folders[name] = child
                    archiver.summary.directories += 1
                    continue
                case .symlink:
                    node.kind = .symlink
                    node.linkTarget = member.linkTarget
                    archiver.summary.otherEntries += 1
                case .file:
                    let limit = capture[member.path]
                    if let limit, member.size > UInt64(limit) {
                        throw KhoError(.source, "\(member.path) is \(member.size) bytes in the backup stream, more than the \(limit) kho reads: no snapshot was written.")
                    }
                    var kept: [UInt8]? = limit == nil ? nil : []
                    let record = { (chunk: UnsafeRawBufferPointer) throws in
                        node.content.append(try saver.save(chunk, kind: .data))
                        kept?.append(contentsOf: chunk)
                        self.archiver.progress.add(bytes: Int64(chunk.count))
                    }
                    if PhysicalArchiver.isRelationFile(member.path) {
                        try readBlocks(tar, into: block, record)
                    } else {
                        let chunker = archiver.streamChunker
                        chunker.reset()
                        while try chunker.next(read: { try tar.readContent($0) }, record) {}
                    }
                    node.size = member.size
                    contents.files[member.path] = member.size
                    if let kept { contents.captured[member.path] = kept }
                    contents.totalSize += Int64(member.size)
                    archiver.summary.bytesRead += Int64(member.size)
                    archiver.summary.totalSize += Int64(member.size)
                    archiver.progress.add(files: 1)
                }
                if folder.leaves[name] != nil || folder.folders[name] != nil { throw duplicate(member) }
                folder.leaves[name] = node
            }
            try tar.drain()
            try finish()
            if let owner {
                root.node.uid = owner.uid
                root.node.gid = owner.gid
            }
            let now = Date().timeIntervalSince1970
            root.node.mtime = Timespec(seconds: Int64(now), nanoseconds: 0)
            root.node.ctime = root.node.mtime
            manifest = try beforeCommit(contents)
            let dataNode = try saveFolder(root)
            rootID = try archiver.saveTree(Tree(nodes: [dataNode]))
        } catch {
            saver.abort(error)
            throw error
        }
        let host = archiver.options.hostname
        // A listing that fails here fails the backup, as any other read of the repository would.
        let parent = try archiver.repository.listSnapshots().last {
            $0.source.name == sourceName && $0.source.kind == source.kind && $0.hostname == host
        }
        if parent == nil { archiver.summary.filesNew = contents.files.count } else { archiver.summary.filesChanged = contents.files.count }
        return try archiver.commit(root: rootID, paths: [PhysicalArchiver.rootName], parent: parent?.id, source: source, manifest: manifest,
                                   extraTags: tags)
    }

    /// The folder that holds `member`, creating folders its name implies.
    private func folderFor(_ member: TarMember, under root: Folder) throws -> Folder {
        var folder = root
        for component in member.components.dropLast() {
            if folder.leaves[component] != nil {
                throw KhoError(.source, "The backup stream has \(member.path.debugDescription) below a member that is not a folder; no snapshot was written.")
            }
            if let next = folder.folders[component] {
                folder = next
            } else {
                var node = Node(name: component, kind: .directory)
                node.mode = 0o700
                node.uid = member.uid
                node.gid = member.gid
                let next = Folder(node: node)
                folder.folders[component] = next
                folder = next
            }
        }
        return folder
    }

    private func duplicate(_ member: TarMember) -> KhoError {
        KhoError(.source, "The backup stream holds \(member.path.debugDescription) twice; no snapshot was written: the stream is damaged or not pg_basebackup's.")
    }

    /// Cuts the current member into `block.count`-byte chunks (the last one shorter).
    private func readBlocks(_ tar: TarStream, into block: UnsafeMutableRawBufferPointer,
                            _ record: (UnsafeRawBufferPointer) throws -> Void) throws {
        while true {
            var filled = 0
            while filled < block.count {
                let n = try tar.readContent(UnsafeMutableRawBufferPointer(rebasing: block[filled...]))
                if n == 0 { break }
                filled += n
            }
            if filled == 0 { return }
            try record(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(block)[0..<filled]))
            if filled < block.count { return }
        }
    }

    /// Saves a folder's tree, its subfolders first; returns its node.
    private func saveFolder(_ folder: Folder) throws -> Node {
        var nodes = Array(folder.leaves.values)
        for child in folder.folders.values { nodes.append(try saveFolder(child)) }
        var node = folder.node
        node.subtree = try archiver.saveTree(Tree(nodes: nodes))
        return node
    }
}
