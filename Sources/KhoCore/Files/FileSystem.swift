import Foundation
import Glibc
import KhoSupport

// renameat2, syncfs and sync_file_range, which Glibc's module does not export.
@_silgen_name("renameat2") private func systemRenameat2(_ oldFD: Int32, _ old: UnsafePointer<CChar>, _ newFD: Int32,
                                                        _ new: UnsafePointer<CChar>, _ flags: UInt32) -> Int32
@_silgen_name("syncfs") private func systemSyncfs(_ fd: Int32) -> Int32
@_silgen_name("sync_file_range") private func systemSyncFileRange(_ fd: Int32, _ offset: Int64, _ count: Int64, _ flags: UInt32) -> Int32

/// Helpers for walking and recreating directory trees by file descriptor, so that paths of any
/// length work and names stay the exact bytes the filesystem holds.
package enum FileSystem {
    /// Writes out everything of the filesystem that holds `fd`: data, metadata and folder entries.
    package static func syncFilesystem(_ fd: Int32) -> Int32 { systemSyncfs(fd) }

    /// Asks the kernel to start writing `count` bytes of `fd` at `offset` to disk now, without
    /// waiting for them (SYNC_FILE_RANGE_WRITE; PostgreSQL's pre-sync does the same). A hint only:
    /// durability still comes from the fsync or syncfs that follows, which reports any failure.
    package static func startWriteback(_ fd: Int32, offset: Int, count: Int) {
        // The result is not looked at: a refusal only means the later sync does all the work.
        _ = systemSyncFileRange(fd, Int64(offset), Int64(count), 2)
    }

    /// O_NOATIME, which Glibc's module does not export (Linux value).
    static let noAccessTime: Int32 = 0o1000000

    /// A NUL-terminated copy of `name` for system calls.
    static func withCName<R>(_ name: [UInt8], _ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        var c = name.map { CChar(bitPattern: $0) }
        c.append(0)
        return try c.withUnsafeBufferPointer { try body($0.baseAddress!) }
    }

    /// Names in the directory `fd` (without `.` and `..`), as bytes, sorted bytewise.
    static func entries(of fd: Int32, path: String) throws -> [[UInt8]] {
        let copy = try Syscall.call("dup", path) { dup(fd) }
        guard let dir = fdopendir(copy) else {
            let code = errno
            close(copy)
            throw KhoError.posix("fdopendir", path, errno: code)
        }
        defer { closedir(dir) }
        var names: [[UInt8]] = []
        errno = 0
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw -> [UInt8] in
                let base = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
                return Array(UnsafeBufferPointer(start: base, count: strlen(raw.baseAddress!.assumingMemoryBound(to: CChar.self))))
            }
            if name == [0x2e] || name == [0x2e, 0x2e] { continue }
            names.append(name)
        }
        if errno != 0 { throw KhoError.posix("readdir", path, errno: errno) }
        names.sort { $0.lexicographicallyPrecedes($1) }
        return names
    }

    static func lstat(at fd: Int32, _ name: [UInt8]) -> (Glibc.stat?, Int32) {
        var info = Glibc.stat()
        let (result, code) = withCName(name) { cname in Syscall.attempt { fstatat(fd, cname, &info, AT_SYMLINK_NOFOLLOW) } }
        return result == 0 ? (info, 0) : (nil, code)
    }

    static func node(name: [UInt8], from info: Glibc.stat) -> Node? {
        let kind: NodeKind
        switch info.st_mode & S_IFMT {
        case S_IFREG: kind = .file
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symlink
        case S_IFIFO: kind = .fifo
        case S_IFCHR: kind = .characterDevice
        case S_IFBLK: kind = .blockDevice
        case S_IFSOCK: kind = .socket
        default: return nil
        }
        var node = Node(name: name, kind: kind)
        node.mode = UInt32(info.st_mode & 0o7777)
        node.uid = info.st_uid
        node.gid = info.st_gid
        node.size = kind == .file ? UInt64(info.st_size) : 0
        node.mtime = Timespec(seconds: Int64(info.st_mtim.tv_sec), nanoseconds: UInt32(info.st_mtim.tv_nsec))
        node.ctime = Timespec(seconds: Int64(info.st_ctim.tv_sec), nanoseconds: UInt32(info.st_ctim.tv_nsec))
        node.inode = UInt64(info.st_ino)
        node.device = UInt64(info.st_dev)
        node.links = UInt32(info.st_nlink)
        if kind == .characterDevice || kind == .blockDevice { node.rdev = UInt64(info.st_rdev) }
        return node
    }

    static func readLink(at fd: Int32, _ name: [UInt8], path: String) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = try withCName(name) { cname in
            try Syscall.call("readlinkat", path) { buffer.withUnsafeMutableBufferPointer { readlinkat(fd, cname, UnsafeMutableRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), 4096) } }
        }
        return Array(buffer[0..<n])
    }

    /// Splits an absolute or relative path into its components, dropping empty ones and `.`.
    static func components(_ path: String) -> [[UInt8]] {
        Array(path.utf8).split(separator: UInt8(ascii: "/")).map(Array.init).filter { $0 != [0x2e] }
    }

    /// Opens a directory, component by component below `base`, so that paths longer than
    /// PATH_MAX work.
    static func openDirectory(_ components: [[UInt8]], below base: Int32, path: String) throws -> Int32 {
        var fd = try Syscall.call("dup", path) { dup(base) }
        for component in components {
            let next = withCName(component) { cname in Syscall.attempt { openat(fd, cname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) } }
            close(fd)
            guard next.0 >= 0 else { throw KhoError.posix("openat", path, errno: next.1) }
            fd = next.0
        }
        return fd
    }

    /// Shell-style match of `pattern` against a path or, for patterns without a slash, against
    /// any single component of it.
    static func matches(_ pattern: String, path: [UInt8]) -> Bool {
        if pattern.contains("/") {
            let trimmed = pattern.hasPrefix("/") ? pattern : "*/" + pattern
            return withCName(path) { fnmatch(trimmed, $0, 0) == 0 } || withCName(path) { fnmatch(pattern, $0, 0) == 0 }
        }
        for component in path.split(separator: UInt8(ascii: "/")) {
            if withCName(Array(component), { fnmatch(pattern, $0, 0) == 0 }) { return true }
        }
        return false
    }

    /// RENAME_EXCHANGE: swap two entries in one step (Linux value).
    static let renameExchange: UInt32 = 2

    static func renameat2(_ oldFD: Int32, _ old: UnsafePointer<CChar>, _ newFD: Int32, _ new: UnsafePointer<CChar>, _ flags: UInt32) -> Int32 {
        systemRenameat2(oldFD, old, newFD, new, flags)
    }

    /// Creates `path` and its missing parents with `mode`, syncing the folder each new one was
    /// made in: a folder whose entry is not on disk vanishes with everything in it at a power cut.
    package static func makeFolders(_ path: String, mode: mode_t) throws {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        var missing: [String] = []
        var current = absolute
        while current != "/" && !current.isEmpty {
            if access(current, F_OK) == 0 { break }
            guard errno == ENOENT else { throw KhoError.posix("stat", current, errno: errno) }
            missing.append(current)
            current = (current as NSString).deletingLastPathComponent
        }
        for folder in missing.reversed() {
            let (made, code) = Syscall.attempt { mkdir(folder, mode) }
            if made != 0 && code != EEXIST { throw KhoError.posix("mkdir", folder, errno: code) }
            let parent = (folder as NSString).deletingLastPathComponent
            let fd = try Syscall.call("open", parent) { open(parent.isEmpty ? "/" : parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
            defer { close(fd) }
            try Syscall.call("fsync", parent) { fsync(fd) }
        }
    }

    /// Why a user other than root and the running user could change what `path` names, or nil:
    /// each component of the path as written (symlinks included) and each folder of the path
    /// they resolve to must belong to root or the running user, and must not be writable by
    /// others, unless it is a sticky folder such as /tmp (whose entries others cannot rename or
    /// remove). `includingItself`: whether `path` itself is held to the same rule (else only
    /// the folders above it). A missing `path` is checked from its nearest existing folder.
    package static func trustProblem(_ path: String, includingItself: Bool) -> String? {
        let me = geteuid()
        func problem(_ current: String, isItself: Bool) -> String? {
            var info = Glibc.stat()
            guard Glibc.lstat(current, &info) == 0 else {
                return errno == ENOENT ? nil : "\(current) cannot be checked (\(String(cString: strerror(errno))))"
            }
            let what = isItself ? "it" : "\(current) on its way"
            if info.st_uid != 0 && info.st_uid != me {
                return "\(what) belongs to user \(info.st_uid); make it belong to root (chown root)"
            }
            guard info.st_mode & S_IFMT != S_IFLNK else { return nil }
            let groupWritable = info.st_mode & S_IWGRP != 0 && info.st_gid != 0
            let othersWritable = info.st_mode & S_IWOTH != 0
            let sticky = !isItself && info.st_mode & S_IFMT == S_IFDIR && info.st_mode & S_ISVTX != 0
            if (groupWritable || othersWritable) && !sticky {
                return "\(what) can be changed by \(othersWritable ? "every user" : "the group \(info.st_gid)"); remove that write permission (chmod go-w)"
            }
            return nil
        }
        func prefixes(_ path: String) -> [String] {
            var parts: [String] = []
            var current = path
            while true {
                parts.append(current)
                if current == "/" || current.isEmpty { break }
                let parent = (current as NSString).deletingLastPathComponent
                current = parent.isEmpty ? "/" : parent
            }
            return parts
        }
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        // The path as written: a symlink on the way that another user owns could point anywhere.
        for (n, current) in prefixes(absolute).enumerated() where n > 0 || includingItself {
            if let found = problem(current, isItself: n == 0) { return found }
        }
        // Where it leads: every folder of the resolved path, from the nearest one that exists.
        var existing = absolute
        var skipped = 0
        while access(existing, F_OK) != 0 && existing != "/" {
            existing = (existing as NSString).deletingLastPathComponent
            if existing.isEmpty { existing = "/" }
            skipped += 1
        }
        guard let resolved = realpath(existing, nil) else { return "\(existing) cannot be resolved (\(String(cString: strerror(errno))))" }
        let real = String(cString: resolved)
        free(resolved)
        for (n, current) in prefixes(real).enumerated() where n > 0 || skipped > 0 || includingItself {
            if let found = problem(current, isItself: n == 0 && skipped == 0) { return found }
        }
        return nil
    }
}
