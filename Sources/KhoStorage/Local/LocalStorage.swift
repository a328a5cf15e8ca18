import Foundation
import Glibc
import KhoCore
import KhoSupport

/// A repository in a folder on a local or mounted filesystem.
///
/// Every save writes a temporary file beside the target, fsyncs it, renames it into place and
/// fsyncs the folder, so that a crash leaves either the whole file or nothing under the final name.
/// Temporary files start with `.tmp-`; listing ignores them and `kho prune` removes old ones.
public struct LocalStorage: Storage {
    public let root: String
    /// Open pack files, so that a restore reading thousands of small blobs from one pack opens it
    /// once, not once per blob.
    private let descriptors = DescriptorCache()

    public init(path: String) {
        var trimmed = path
        while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed.removeLast() }
        root = trimmed
    }

    public var location: String { root }

    private func path(_ handle: Handle) -> String { root + "/" + handle.path }

    private func folder(of handle: Handle) -> String {
        let full = path(handle)
        return String(full[..<full.lastIndex(of: "/")!])
    }

    public func isEmpty() throws -> Bool {
        guard let dir = opendir(root) else {
            if errno == ENOENT { return true }
            throw KhoError.posix("opendir", root, errno: errno)
        }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.baseAddress!.assumingMemoryBound(to: CChar.self)) }
            if name != "." && name != ".." { return false }
        }
        return true
    }

    /// Creates `path` and its missing parents.
    private func makeFolders(_ path: String) throws {
        if mkdir(path, 0o700) == 0 {
            // The new folder's entry must reach the disk before files inside it count as saved.
            if let slash = path.lastIndex(of: "/"), slash != path.startIndex { try syncFolder(String(path[..<slash])) }
            return
        }
        if errno == EEXIST { return }
        guard errno == ENOENT, let slash = path.lastIndex(of: "/"), slash != path.startIndex else {
            throw KhoError.posix("mkdir", path, errno: errno)
        }
        try makeFolders(String(path[..<slash]))
        if mkdir(path, 0o700) != 0 && errno != EEXIST { throw KhoError.posix("mkdir", path, errno: errno) }
        try syncFolder(String(path[..<slash]))
    }

    private func syncFolder(_ path: String) throws {
        let fd = try Syscall.call("open", path) { open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        try Syscall.call("fsync", path) { fsync(fd) }
    }

    /// Writes `data` into a new temporary file in `folder` (made when missing), fsynced and
    /// closed, and returns its path; nothing is left behind when it fails.
    private func writeTemporary(in folder: String, _ handle: Handle, data: [UInt8]) throws -> String {
        let temporary = folder + "/.tmp-" + Hex.encode(try Random.bytes(8))
        var (fd, code) = Syscall.attempt { open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
        if code == ENOENT {
            try makeFolders(folder)
            (fd, code) = Syscall.attempt { open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
        }
        guard code == 0 else { throw KhoError.posix("open", temporary, errno: code) }
        do {
            try data.withUnsafeBytes { try Syscall.writeAll(fd, $0, handle.path) }
            try Syscall.call("fsync", handle.path) { fsync(fd) }
            // close is never retried: after EINTR the descriptor is already gone on Linux.
            let closing = fd
            fd = -1
            if close(closing) != 0 && errno != EINTR { throw KhoError.posix("close", handle.path, errno: errno) }
        } catch {
            if fd >= 0 { close(fd) }
            unlink(temporary)
            throw error
        }
        return temporary
    }

    public func save(_ handle: Handle, data: [UInt8]) throws {
        let folder = folder(of: handle)
        let temporary = try writeTemporary(in: folder, handle, data: data)
        do {
            try Syscall.call("rename", handle.path) { rename(temporary, path(handle)) }
        } catch {
            unlink(temporary)
            throw error
        }
        try syncFolder(folder)
    }

    /// Writes a fsynced temporary file, then `link(2)`s it to the final name, which fails with
    /// EEXIST instead of replacing (rename would replace): of two writers, exactly one links.
    /// The folder is fsynced on both outcomes, so that "already stored" also means "durable",
    /// even when the earlier writer crashed between its link and its folder fsync.
    public func saveIfAbsent(_ handle: Handle, data: [UInt8]) throws -> Bool {
        let folder = folder(of: handle)
        let target = path(handle)
        let temporary = try writeTemporary(in: folder, handle, data: data)
        let (_, linkCode) = Syscall.attempt { link(temporary, target) }
        // After a link the temporary name is a second name of the file, and otherwise it is
        // garbage: it goes on every path, before the folder fsync so that one fsync makes both
        // the new name and the removal durable. (A crash in between leaves a `.tmp-` name, which
        // listings skip and prune removes.)
        unlink(temporary)
        switch linkCode {
        case 0:
            try syncFolder(folder)
            return true
        case EEXIST:
            try syncFolder(folder)
            return false
        case EPERM, EOPNOTSUPP:
            throw KhoError(.storage, "The filesystem holding \(root) does not support hard links (link(2) failed on \(handle.path)), which kho needs to store a file without ever replacing one: put the repository on a local POSIX filesystem (ext4, XFS, btrfs, ZFS) or NFS.")
        default:
            throw KhoError.posix("link", target, errno: linkCode)
        }
    }

    public func makeStreamWriter(for kind: FileKind) throws -> (any StorageStreamWriter)? {
        try LocalStreamWriter(storage: self, kind: kind)
    }

    /// The folder a handle's file lives in, created if missing.
    func prepareFolder(for handle: Handle) throws -> String {
        let folder = folder(of: handle)
        try makeFolders(folder)
        return folder
    }

    func syncFolderPublic(_ path: String) throws { try syncFolder(path) }

    public func load(_ handle: Handle, offset: Int, length: Int?) throws -> [UInt8] {
        let file = path(handle)
        let cached = handle.kind == .data && length != nil
        let fd: Int32
        if cached {
            fd = try descriptors.acquire(file) { path in
                let (fd, code) = Syscall.attempt { open(path, O_RDONLY | O_CLOEXEC) }
                if code == ENOENT { throw KhoError.missing(handle, in: root) }
                guard code == 0 else { throw KhoError.posix("open", path, errno: code) }
                return fd
            }
        } else {
            let (opened, code) = Syscall.attempt { open(file, O_RDONLY | O_CLOEXEC) }
            if code == ENOENT { throw KhoError.missing(handle, in: root) }
            guard code == 0 else { throw KhoError.posix("open", file, errno: code) }
            fd = opened
        }
        defer { if cached { descriptors.release(file) } else { close(fd) } }
        let count: Int
        if let length {
            count = length
        } else {
            var info = Glibc.stat()
            try Syscall.call("fstat", file) { fstat(fd, &info) }
            count = max(0, Int(info.st_size) - offset)
        }
        guard count <= handle.kind.maximumSize else { throw handle.kind.tooLarge(handle, size: count, in: root) }
        var got = 0
        let bytes = try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            got = try Syscall.preadFull(fd, UnsafeMutableRawBufferPointer(buffer), offset: offset, file)
            initialized = got
        }
        if got != count {
            throw KhoError(.integrity, "\(handle.path) is shorter than expected (wanted \(count) bytes at offset \(offset), found \(got)): the file is truncated; run `kho check`.")
        }
        return bytes
    }

    public func stat(_ handle: Handle) throws -> StoredFile {
        var info = Glibc.stat()
        let file = path(handle)
        let (_, code) = Syscall.attempt { statPath(file, &info) }
        if code == ENOENT { throw KhoError.missing(handle, in: root) }
        guard code == 0 else { throw KhoError.posix("stat", file, errno: code) }
        return StoredFile(name: handle.name, size: Int(info.st_size),
                          modified: Date(timeIntervalSince1970: Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9))
    }

    private func entries(of folder: String) throws -> [(name: String, isDirectory: Bool)] {
        guard let dir = opendir(folder) else {
            if errno == ENOENT { return [] }
            throw KhoError.posix("opendir", folder, errno: errno)
        }
        defer { closedir(dir) }
        var result: [(String, Bool)] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.baseAddress!.assumingMemoryBound(to: CChar.self)) }
            if name.hasPrefix(".") { continue }
            // Some filesystems (XFS, NFS) report DT_UNKNOWN: treat those as possible folders.
            result.append((name, entry.pointee.d_type == DT_DIR || entry.pointee.d_type == DT_UNKNOWN))
        }
        return result
    }

    public func list(_ kind: FileKind) throws -> [StoredFile] {
        if kind.hasNestedFolders { return try list(kind, under: "") }
        if kind == .config {
            return try exists(.config) ? [try stat(.config)] : []
        }
        var names: [String] = []
        let base = root + "/" + kind.folder
        if kind == .data {
            for sub in try entries(of: base) where sub.isDirectory && sub.name.count == 2 {
                var info = Glibc.stat()
                guard statPath(base + "/" + sub.name, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else { continue }
                names += try entries(of: base + "/" + sub.name).map(\.name)
            }
        } else {
            names = try entries(of: base).map(\.name)
        }
        return try names.compactMap { name in
            do { return try stat(Handle(kind, name)) } catch let error as KhoError where error.kind == .integrity { return nil }
        }
    }

    /// Walks the folder and its subfolders (without following symbolic links: a link planted in
    /// the storage must not make a listing leave it). Only `wal` and `binlog` have nested folders.
    public func list(_ kind: FileKind, under folder: String) throws -> [StoredFile] {
        let prefix = try StorageFolder.prefix(folder)
        guard kind.hasNestedFolders else {
            if prefix.isEmpty { return try list(kind) }
            throw KhoError(.usage, "\(kind.rawValue) files have no subfolders, so none can be listed under \"\(folder)\": this is a bug in the caller; report it.")
        }
        var result: [StoredFile] = []
        try walk(root + "/" + kind.folder + "/" + prefix, relative: prefix, into: &result)
        return result
    }

    private func walk(_ folder: String, relative: String, into result: inout [StoredFile]) throws {
        for entry in try entries(of: folder) {
            var info = Glibc.stat()
            let full = folder + (folder.hasSuffix("/") ? "" : "/") + entry.name
            let (_, code) = Syscall.attempt { lstat(full, &info) }
            // Removed between the listing and the lstat: it is not there any more.
            if code == ENOENT { continue }
            guard code == 0 else { throw KhoError.posix("lstat", full, errno: code) }
            switch info.st_mode & S_IFMT {
            case S_IFDIR:
                try walk(full, relative: relative + entry.name + "/", into: &result)
            case S_IFREG:
                result.append(StoredFile(name: relative + entry.name, size: Int(info.st_size),
                                         modified: Date(timeIntervalSince1970: Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9)))
            default:
                continue
            }
        }
    }

    /// Every folder below `folder`, itself included (for the temporary-file sweep).
    private func foldersBelow(_ folder: String) throws -> [String] {
        var result = [folder]
        for entry in try entries(of: folder) where entry.isDirectory {
            var info = Glibc.stat()
            guard lstat(folder + "/" + entry.name, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else { continue }
            result += try foldersBelow(folder + "/" + entry.name)
        }
        return result
    }

    public func remove(_ handle: Handle) throws {
        let file = path(handle)
        descriptors.forget(file)
        let (_, code) = Syscall.attempt { unlink(file) }
        if code == ENOENT { return }
        guard code == 0 else { throw KhoError.posix("unlink", file, errno: code) }
        try syncFolder(folder(of: handle))
    }

    /// Temporary files left by interrupted saves, with their age in seconds.
    public func leftoverTemporaryFiles() throws -> [(path: String, age: TimeInterval)] {
        var result: [(String, TimeInterval)] = []
        var folders = FileKind.allCases.filter { $0 != .config }.map { root + "/" + $0.folder } + [root]
        for sub in try entries(of: root + "/data") where sub.isDirectory { folders.append(root + "/data/" + sub.name) }
        // An interrupted WAL save leaves its temporary file in a cluster or timeline-log folder.
        folders += try foldersBelow(root + "/" + FileKind.wal.folder).dropFirst()
        folders += try foldersBelow(root + "/" + FileKind.binlog.folder).dropFirst()
        for folder in folders {
            guard let dir = opendir(folder) else { continue }
            defer { closedir(dir) }
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.baseAddress!.assumingMemoryBound(to: CChar.self)) }
                guard name.hasPrefix(".tmp-") else { continue }
                var info = Glibc.stat()
                if statPath(folder + "/" + name, &info) == 0 {
                    result.append((folder + "/" + name, Date().timeIntervalSince1970 - Double(info.st_mtim.tv_sec)))
                }
            }
        }
        return result
    }
}

private func statPath(_ path: String, _ info: inout Glibc.stat) -> Int32 {
    stat(path, &info)
}

/// A few open read-only descriptors, shared by threads, closed when idle ones exceed the limit or
/// their file is removed.
final class DescriptorCache: @unchecked Sendable {
    private struct Entry {
        var fd: Int32
        var users: Int
        var lastUse: UInt64
        /// Its file was removed while in use: close it when the last user is done.
        var doomed = false
    }
    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    private var clock: UInt64 = 0
    private let limit = 64

    func acquire(_ path: String, open: (String) throws -> Int32) throws -> Int32 {
        lock.lock()
        clock += 1
        if var entry = entries[path], !entry.doomed {
            entry.users += 1
            entry.lastUse = clock
            entries[path] = entry
            lock.unlock()
            return entry.fd
        }
        lock.unlock()
        let fd = try open(path)
        lock.lock()
        defer { lock.unlock() }
        if var existing = entries[path], !existing.doomed {
            // Another thread opened it meanwhile: use theirs.
            close(fd)
            existing.users += 1
            entries[path] = existing
            return existing.fd
        }
        entries[path] = Entry(fd: fd, users: 1, lastUse: clock)
        if entries.count > limit {
            let idle = entries.filter { $0.value.users == 0 }.sorted { $0.value.lastUse < $1.value.lastUse }
            for (victim, entry) in idle.prefix(entries.count - limit) {
                close(entry.fd)
                entries[victim] = nil
            }
        }
        return fd
    }

    func release(_ path: String) {
        lock.lock()
        defer { lock.unlock() }
        guard var entry = entries[path] else { return }
        entry.users -= 1
        if entry.doomed && entry.users == 0 {
            close(entry.fd)
            entries[path] = nil
            return
        }
        entries[path] = entry
    }

    /// Drops the cached descriptor of a removed file (once nobody uses it).
    func forget(_ path: String) {
        lock.lock()
        defer { lock.unlock() }
        guard var entry = entries[path] else { return }
        if entry.users == 0 {
            close(entry.fd)
            entries[path] = nil
        } else {
            entry.doomed = true
            entries[path] = entry
        }
    }

    deinit {
        for entry in entries.values { close(entry.fd) }
    }
}

/// Streams a new file into a temporary file in the kind's folder; `commit` fsyncs it, renames it
/// to its final name (in the fan-out folder for packs) and fsyncs the folder.
final class LocalStreamWriter: StorageStreamWriter {
    private let storage: LocalStorage
    private let temporary: String
    private var fd: Int32 = -1
    private var failed: Error?

    init(storage: LocalStorage, kind: FileKind) throws {
        self.storage = storage
        let base = storage.root + "/" + (kind == .config ? "" : kind.folder)
        temporary = base + "/.tmp-" + Hex.encode(try Random.bytes(8))
    }

    private func open() throws {
        var (opened, code) = Syscall.attempt { Glibc.open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
        if code == ENOENT {
            try FileManager.default.createDirectory(atPath: (temporary as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            (opened, code) = Syscall.attempt { Glibc.open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
        }
        guard code == 0 else { throw KhoError.posix("open", temporary, errno: code) }
        fd = opened
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        if let failed { throw failed }
        do {
            if fd < 0 { try open() }
            try Syscall.writeAll(fd, bytes, "a new pack")
        } catch {
            failed = error
            throw error
        }
    }

    func commit(as handle: Handle) throws {
        if let failed { throw failed }
        if fd < 0 { try open() }
        do {
            try Syscall.call("fsync", handle.path) { fsync(fd) }
            let closing = fd
            fd = -1
            if close(closing) != 0 && errno != EINTR { throw KhoError.posix("close", handle.path, errno: errno) }
            let folder = try storage.prepareFolder(for: handle)
            let target = storage.root + "/" + handle.path
            try Syscall.call("rename", handle.path) { rename(temporary, target) }
            try storage.syncFolderPublic(folder)
        } catch {
            abort()
            throw error
        }
    }

    func abort() {
        if fd >= 0 { close(fd); fd = -1 }
        unlink(temporary)
    }

    deinit { if fd >= 0 { close(fd); unlink(temporary) } }
}
