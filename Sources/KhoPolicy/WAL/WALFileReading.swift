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
    static func fromPgWal(_ name: WALFileName, dataDirectory: String) throws -> [UInt8]? {
        let folder = dataDirectory + "/pg_wal"
        let directory = try Syscall.call("open", folder) { open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(directory) }
        let path = folder + "/" + name.description
        let (fd, code) = Syscall.attempt { openat(directory, name.description, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK) }
        if code == ENOENT { return nil }
        if code != 0 { throw KhoError.posix("open", path, errno: code) }
        defer { close(fd) }
        return try fromDescriptor(fd, shown: path)
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
