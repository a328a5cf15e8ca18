import Foundation
import Glibc

/// Files that hold a secret kho generated (a key secret): created new, never over an existing file
/// or through a link, readable by their owner only, and durable before kho says they exist.
public enum SecretFile {
    public static func create(_ path: String, contents: [UInt8], owner: uid_t, group: gid_t) throws {
        let (fd, code) = Syscall.attempt { open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o400) }
        if code == EEXIST {
            throw KhoError(.usage, "\(path) exists: kho writes a new secret only into a new file; pass another path, or remove the old file once nothing uses it.")
        }
        if code != 0 { throw KhoError.posix("open", path, errno: code) }
        do {
            defer { close(fd) }
            try Syscall.call("fchown", path) { fchown(fd, owner, group) }
            try Syscall.call("fchmod", path) { fchmod(fd, 0o400) }
            try contents.withUnsafeBytes { try Syscall.writeAll(fd, $0, path) }
            try Syscall.call("fsync", path) { fsync(fd) }
        } catch {
            unlink(path)
            throw error
        }
        let folder = (path as NSString).deletingLastPathComponent
        let directory = try Syscall.call("open", folder.isEmpty ? "." : folder) { open(folder.isEmpty ? "." : folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(directory) }
        try Syscall.call("fsync", folder) { fsync(directory) }
    }
}
