import Foundation
import Glibc
import KhoCore
import KhoSupport

/// What `kho binlog serve` last said about itself, in `<state>/<archive>.status` (JSON, 0600,
/// replaced whole): `kho status` reads it on the same host to tell a quiet server (the serve
/// caught up recently, nothing new to store) from a stalled archive.
public struct BinlogArchiverStatus: Codable, Sendable {
    public var source: String
    public var archive: String
    public var pid: Int32
    public var interval: Double
    /// When this status was written.
    public var updated: Date
    /// The last time every whole event the server had sent was stored.
    public var caughtUp: Date?
    public var lastError: String?

    /// `$KHO_STATE_DIR/binlog`, else `/var/lib/kho/binlog`: where `kho binlog serve` keeps its
    /// spool folders and status files.
    public static var stateFolder: String {
        ProcessInfo.processInfo.environment["KHO_STATE_DIR"].flatMap { $0.isEmpty ? nil : $0 + "/binlog" } ?? "/var/lib/kho/binlog"
    }

    public static func path(folder: String, archive: BinlogArchiveID) -> String { folder + "/" + archive.description + ".status" }

    func write(to path: String) throws {
        let data = Array(try JSON.encoder.encode(self))
        let temporary = path + ".tmp"
        let fd = try Syscall.call("open", temporary) { open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        do {
            try data.withUnsafeBytes { try Syscall.writeAll(fd, $0, temporary) }
            close(fd)
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        try Syscall.call("rename", path) { rename(temporary, path) }
    }

    /// The status file for `archive`, or nil when there is none (no serve ran on this host).
    public static func read(folder: String, archive: BinlogArchiveID) throws -> BinlogArchiverStatus? {
        let path = path(folder: folder, archive: archive)
        guard access(path, F_OK) == 0 else { return nil }
        do {
            return try JSON.decoder.decode(BinlogArchiverStatus.self, from: Data(try Syscall.readFile(path, limit: 64 << 10)))
        } catch let error as KhoError {
            throw error
        } catch {
            throw KhoError(.failure, "\(path) is not a status file kho binlog serve wrote (\(error)): remove it; the serve writes it again.")
        }
    }
}
