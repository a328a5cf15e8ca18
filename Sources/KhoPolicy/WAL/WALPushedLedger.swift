import Foundation
import Glibc
import KhoCore
import KhoSupport

/// The agent's memory of what it pushed: `<state>/<source>.pushed`, one line
/// `<system identifier>/<name> <sha256>` per file (names restart at a rebuilt cluster), appended and fsynced after the repository holds the file, so that after a restart a
/// `kho wal push` of a file pushed before is answered without pushing it again. Local state, not
/// repository format: losing it only costs re-pushes, which the archive answers as repeats.
///
/// The file is held with an exclusive `flock` while the agent runs: a second agent for the same
/// source refuses to start instead of racing the first.
final class WALPushedLedger: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private let lock = NSLock()
    /// Entries kept in memory and in the file after compaction (8192 by default); older names are
    /// long archived and recycled by PostgreSQL.
    let kept: Int

    private(set) var entries: [String: BlobID] = [:]
    private var order: [String] = []
    /// Lines in the file, so that a long-running agent compacts it now and then.
    private var lines = 0

    init(path: String, kept: Int = 8192) throws {
        self.path = path
        self.kept = kept
        fd = try Syscall.call("open", path) { open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600) }
        do {
            let (_, code) = Syscall.attempt { flock(fd, LOCK_EX | LOCK_NB) }
            if code == EWOULDBLOCK {
                throw KhoError(.locked, "Another kho wal serve holds \(path): one agent per source and state folder; stop the other one, or give this one its own --state-directory.")
            } else if code != 0 {
                throw KhoError.posix("flock", path, errno: code)
            }
            try load()
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    private func load() throws {
        var info = stat()
        try Syscall.call("fstat", path) { fstat(fd, &info) }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw KhoError(.usage, "\(path) is not a regular file: remove it, or give kho wal serve another --state-directory.")
        }
        var text: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var offset = 0
        while true {
            let n = try buffer.withUnsafeMutableBytes { try Syscall.preadFull(fd, $0, offset: offset, path) }
            text.append(contentsOf: buffer[0..<n])
            offset += n
            if n < buffer.count { break }
        }
        // A line cut by a crash mid-append has no newline and no valid digest: it is skipped,
        // and the file it named is at worst pushed again.
        let lines = text.split(separator: UInt8(ascii: "\n"))
        for line in lines {
            let parts = line.split(separator: UInt8(ascii: " "))
            guard parts.count == 2, let key = WALPushedLedger.parseKey(String(decoding: parts[0], as: UTF8.self)),
                  let digest = BlobID(hex: String(decoding: parts[1], as: UTF8.self)) else { continue }
            remember(key, digest)
        }
        self.lines = lines.count
        if lines.count > kept * 2 { try compact() }
    }

    private func remember(_ name: String, _ digest: BlobID) {
        if entries.updateValue(digest, forKey: name) == nil { order.append(name) }
        if order.count > kept * 2 {
            for old in order.prefix(order.count - kept) { entries[old] = nil }
            order.removeFirst(order.count - kept)
        }
    }

    /// Rewrites the file in place with the newest `kept` entries, keeping the lock on it. A crash
    /// in the middle loses entries, which only costs pushes that the archive answers as repeats.
    private func compact() throws {
        let recent = order.suffix(kept)
        var text = ""
        for name in recent { if let digest = entries[name] { text += "\(name) \(digest.hex)\n" } }
        try Syscall.call("ftruncate", path) { ftruncate(fd, 0) }
        try Array(text.utf8).withUnsafeBytes { try Syscall.writeAll(fd, $0, path) }
        try Syscall.call("fsync", path) { fsync(fd) }
        lines = recent.count
    }

    static func key(_ name: WALFileName, cluster: SystemIdentifier) -> String {
        "\(cluster)/\(name)"
    }

    /// A key read back from the file, checked as a system identifier and a WAL name.
    private static func parseKey(_ text: String) -> String? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let cluster = try? SystemIdentifier(parsing: parts[0]),
              let name = try? WALFileName(parsing: parts[1]) else { return nil }
        return key(name, cluster: cluster)
    }

    func digest(of name: WALFileName, cluster: SystemIdentifier) -> BlobID? {
        let key = WALPushedLedger.key(name, cluster: cluster)
        return lock.withLock { entries[key] }
    }

    /// Records `name` of `cluster` as pushed with `digest`, durably.
    func append(name: WALFileName, cluster: SystemIdentifier, digest: BlobID) throws {
        let key = WALPushedLedger.key(name, cluster: cluster)
        let line = Array("\(key) \(digest.hex)\n".utf8)
        try lock.withLock {
            try line.withUnsafeBytes { try Syscall.writeAll(fd, $0, path) }
            try Syscall.call("fsync", path) { fsync(fd) }
            remember(key, digest)
            lines += 1
            if lines > kept * 2 { try compact() }
        }
    }
}
