import Foundation
import KhoCore
import KhoSupport
import KhoCatalog
import KhoSources
import KhoStorage

/// Checks restored files against the snapshot: every file's size, and its content by cutting it
/// with the repository's chunker and comparing the keyed chunk hashes with the snapshot's.
enum FileVerifier {
    static func verify(snapshot: Snapshot, repository: Repository, index: MasterIndex, restoredRoot: String) throws -> (checked: Int, missing: Int, mismatches: [String]) {
        guard let root = snapshot.treeID else { return (0, 0, ["snapshot names no tree"]) }
        let codec = try BlobCodec(repository: repository)
        let chunker = StreamChunker(chunker: repository.chunker)
        var checked = 0
        var missing = 0
        var mismatches: [String] = []
        func walk(_ tree: BlobID, _ path: String) throws {
            for node in try repository.loadTree(tree, index: index, codec: codec).nodes {
                let child = path + "/" + node.nameString
                if node.kind == .directory, let subtree = node.subtree {
                    try walk(subtree, child)
                    continue
                }
                guard node.kind == .file else { continue }
                checked += 1
                let full = restoredRoot + child
                let fd = open(full, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else {
                    missing += 1
                    mismatches.append("\(child): missing after restore")
                    continue
                }
                defer { close(fd) }
                var ids: [BlobID] = []
                var size: UInt64 = 0
                chunker.reset()
                while try chunker.next(read: { buffer in try Syscall.call("read", full) { read(fd, buffer.baseAddress, buffer.count) } }, { chunk in
                    ids.append(try codec.hasher.id(of: chunk))
                    size += UInt64(chunk.count)
                }) {}
                if size != node.size { mismatches.append("\(child): size \(size), snapshot says \(node.size)") }
                else if ids != node.content { mismatches.append("\(child): content differs from the snapshot") }
            }
        }
        try walk(root, "")
        return (checked, missing, mismatches)
    }
}

/// The modes a file drill gives restored entries, and their check against the snapshot.
enum DrillModes {
    /// Permission bits a drill applies: no setuid, setgid or sticky bit, nothing writable by
    /// group or others.
    static let applied: UInt32 = 0o755

    @Sendable static func adjust(_ node: Node) -> Node? {
        if node.kind == .characterDevice || node.kind == .blockDevice { return nil }
        var node = node
        node.mode &= applied
        return node
    }

    /// Every entry's mode against the snapshot's (as `adjust` applies it); device nodes are
    /// counted and must not exist.
    static func verify(snapshot: Snapshot, repository: Repository, index: MasterIndex, restoredRoot: String) throws
        -> (summary: String, mismatches: [String]) {
        guard let root = snapshot.treeID else { return ("", ["snapshot names no tree"]) }
        let codec = try BlobCodec(repository: repository)
        var checked = 0, special = 0, devices = 0
        var mismatches: [String] = []
        func walk(_ tree: BlobID, _ path: String) throws {
            for node in try repository.loadTree(tree, index: index, codec: codec).nodes {
                let child = path + "/" + node.nameString
                var info = stat()
                let present = lstat(restoredRoot + child, &info) == 0
                switch node.kind {
                case .characterDevice, .blockDevice:
                    devices += 1
                    if present { mismatches.append("\(child): a device node was created") }
                    continue
                case .symlink:
                    continue
                default:
                    break
                }
                checked += 1
                if node.mode & ~applied != 0 { special += 1 }
                if !present {
                    mismatches.append("\(child): missing after restore")
                } else if UInt32(info.st_mode) & 0o7777 != node.mode & applied {
                    mismatches.append("\(child): mode \(String(UInt32(info.st_mode) & 0o7777, radix: 8)), snapshot says \(String(node.mode, radix: 8)) (applied as \(String(node.mode & applied, radix: 8)))")
                }
                if node.kind == .directory, let subtree = node.subtree { try walk(subtree, child) }
            }
        }
        try walk(root, "")
        var summary = "\(checked) entries: modes equal to the snapshot"
        if special > 0 { summary += "; \(special) with setuid, setgid, sticky or group/other write bits, compared from the snapshot and not applied" }
        if devices > 0 { summary += "; \(devices) device nodes recorded in the snapshot, not created" }
        return (summary, mismatches)
    }
}
