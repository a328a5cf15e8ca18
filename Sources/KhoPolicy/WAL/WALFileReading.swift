import Foundation
import Glibc
import KhoCore
import KhoSupport

/// How the agent reads WAL files: from its own cluster's `pg_wal` (read-ahead), or through a
/// descriptor a client opened (never by a path a client named).
enum WALFileReading {
    /// The largest file the archive takes (a 64 MiB segment; history and backup files are smaller).
    static let limit = WALObject.largestSegmentSize

    /// `name` from `<data directory>/pg_wal`, or nil when it is gone (archived and recycled
    /// meanwhile). `pg_wal` itself may be a symlink to another disk, as initdb --waldir makes it;
    /// the file inside is opened without following a link.
    static func fromPgWal(_ name: WALFileName, dataDirectory: String) throws -> (file: [UInt8], identity: WALFileIdentity)? {
        let folder = dataDirectory + "/pg_wal"
        let directory = try Syscall.call("open", folder) { open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(directory) }
        let path = folder + "/" + name.description
        let (fd, code) = Syscall.attempt { openat(directory, name.description, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK) }
        if code == ENOENT { return nil }
        if code != 0 { throw KhoError.posix("open", path, errno: code) }
        defer { close(fd) }
        let file = try fromDescriptor(fd, shown: path)
        return (file, try WALFileIdentity(descriptor: fd, shown: path))
    }

    /// The whole file behind `fd`, read from offset 0 whatever the descriptor's position. Only
    /// regular files are read (a FIFO or a device could block the agent or never end); what is
    /// not one, or too large, is refused with `.integrity`.
    static func fromDescriptor(_ fd: Int32, shown: String) throws -> [UInt8] {
        var info = stat()
        try Syscall.call("fstat", shown) { fstat(fd, &info) }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw KhoError(.integrity, "\(shown) is not a regular file: nothing was archived; archive_command must pass PostgreSQL's %p.")
        }
        guard info.st_size <= limit else {
            throw KhoError(.integrity, "\(shown) is \(info.st_size) bytes, more than any WAL file kho archives: nothing was archived; archive_command must pass PostgreSQL's %p.")
        }
        var file = [UInt8](repeating: 0, count: Int(info.st_size))
        var total = try file.withUnsafeMutableBytes { try Syscall.preadFull(fd, $0, offset: 0, shown) }
        // A file that grew after fstat is read on to its end, within the limit: the archive then
        // refuses a segment of the wrong size rather than storing a prefix.
        if total == file.count {
            var more = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = try more.withUnsafeMutableBytes { try Syscall.preadFull(fd, $0, offset: total, shown) }
                if n == 0 { break }
                guard total + n <= limit else {
                    throw KhoError(.integrity, "\(shown) grew past the largest WAL file kho archives while it was read: nothing was archived.")
                }
                file.append(contentsOf: more[0..<n])
                total += n
            }
        }
        if total < file.count { file.removeLast(file.count - total) }
        return file
    }
}

/// What says a file was not changed since it was read: device, inode, size, and the modification
/// and change times to the nanosecond. Any write moves the change time (which, unlike the
/// modification time, no one can set back), so a descriptor with the identity of a file the
/// read-ahead pushed reads the bytes it pushed; PostgreSQL never writes a segment once it is
/// `.ready`, and recycles it (a rename and a rewrite, both moving the change time) only after
/// the archive said "stored".
struct WALFileIdentity: Equatable, Sendable {
    var device: UInt64
    var inode: UInt64
    var size: Int64
    var modified: timespec
    var changed: timespec

    init(descriptor fd: Int32, shown: String) throws {
        var info = stat()
        try Syscall.call("fstat", shown) { fstat(fd, &info) }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        modified = info.st_mtim
        changed = info.st_ctim
    }

    static func == (a: WALFileIdentity, b: WALFileIdentity) -> Bool {
        a.device == b.device && a.inode == b.inode && a.size == b.size
            && a.modified.tv_sec == b.modified.tv_sec && a.modified.tv_nsec == b.modified.tv_nsec
            && a.changed.tv_sec == b.changed.tv_sec && a.changed.tv_nsec == b.changed.tv_nsec
    }
}
