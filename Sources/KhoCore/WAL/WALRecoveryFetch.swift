import Foundation
import Glibc
import KhoSupport

/// `kho wal fetch` as PostgreSQL's `restore_command` (docs/design/pitr.md section 4, standalone
/// mode): find the asked file in the source's archive, verify it, and write it where PostgreSQL
/// asked, whole or not at all.
///
/// PostgreSQL reads any failure of `restore_command` as "the archive has no such file" and ends
/// recovery there, promoting a cluster that silently lacks the rest of its WAL. So only one
/// answer means "not archived": the file is not stored and no later segment of its timeline is
/// (the normal end of WAL, or a history file of a timeline that does not exist). Everything else
/// that goes wrong, a gap included, throws, and the command line turns that into the exit code
/// that makes PostgreSQL stop recovery instead.
public enum WALRecoveryFetch {
    public enum Outcome: Sendable, Equatable {
        /// Written to the destination: this many bytes.
        case written(Int)
        /// Not in the archive, and nothing later on its timeline is: the end of the WAL.
        case notArchived
    }

    /// The archive record to fetch from: `cluster`'s when given (it must be this source's), else the
    /// source's current one.
    public static func record(source: String, cluster: SystemIdentifier?, in repository: Repository) throws -> WALArchiveRecord {
        if let cluster {
            let handle = WALArchiveRecord.handle(cluster: cluster)
            guard try repository.storage.exists(handle) else {
                throw KhoError(.integrity, "Cluster \(cluster) has no WAL archive in this repository: nothing can be fetched; check --cluster against `kho wal ls`.")
            }
            let record = try repository.openWALRecord(try repository.storage.load(handle), cluster: cluster)
            guard record.source == source else {
                throw KhoError(.integrity, "Cluster \(cluster) is archived for source \(record.source), not \(source): nothing was fetched; pass the source the archive belongs to.")
            }
            return record
        }
        guard let record = try WALArchive.currentRecord(source: source, in: repository) else {
            throw KhoError(.integrity, "Source \(source) has no WAL archive in this repository (or only retired ones): nothing can be fetched; check --source, or name a retired cluster with --cluster.")
        }
        return record
    }

    /// The file's bytes, verified; nil when it is not archived and nothing later on its timeline
    /// is. A missing segment with a later one archived on its timeline is a gap: `.integrity`.
    public static func find(name: WALFileName, record: WALArchiveRecord, in repository: Repository) throws -> [UInt8]? {
        let cluster = try SystemIdentifier(parsing: record.cluster)
        if let file = try WALArchive.fetch(name: name, cluster: cluster, record: record, from: repository) { return file }
        guard name.kind == .segment else { return nil }
        let segmentSize = try WALSegmentSize(bytes: record.segmentSize)
        let wanted = name.segmentNumber(segmentSize: segmentSize)
        // Only on this rare path (once per recovery, at its end): one listing of the cluster.
        for file in try repository.storage.list(.wal, under: cluster.description) {
            guard let stored = try? WALFileName(storedName: file.name), stored.kind == .segment || stored.kind == .partial,
                  stored.timeline == name.timeline else { continue }
            let number = stored.segmentNumber(segmentSize: segmentSize)
            if number > wanted {
                throw KhoError(.integrity, "\(name) is missing from the WAL archive of cluster \(cluster) although \(stored) of the same timeline is archived: the archive has a gap, and recovery must stop here rather than end early at the wrong point; run `kho check`, and recover from a base backup taken after the gap.")
            }
        }
        return nil
    }

    /// Fetches `name` and writes it to `destination` (PostgreSQL's `%p`).
    public static func run(name: WALFileName, destination: String, record: WALArchiveRecord, repository: Repository) throws -> Outcome {
        guard let file = try find(name: name, record: record, in: repository) else { return .notArchived }
        // PostgreSQL's %p: not synced, as the served mode's (WALFetchClient.fetch says why).
        try writeWhole(file, to: destination, durable: false)
        return .written(file.count)
    }

    /// Writes `bytes` to `path` through `<path>.kho-tmp`, renamed over `path`, so that PostgreSQL
    /// never finds an empty or partial file under the name (a prefetch that left one once broke
    /// recoveries with WAL-E). `durable` fsyncs the file before the rename and the folder after:
    /// a read-ahead folder is answered from after a crash, PostgreSQL's %p is not. The temporary
    /// file is created with O_EXCL and O_NOFOLLOW inside the folder opened once, so a link
    /// planted in its place is not followed.
    public static func writeWhole(_ bytes: [UInt8], to path: String, durable: Bool = true) throws {
        let slash = path.lastIndex(of: "/")
        let folder = slash.map { path[..<$0].isEmpty ? "/" : String(path[..<$0]) } ?? "."
        let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard !base.isEmpty, base != ".", base != "..", !path.utf8.contains(0) else {
            throw KhoError(.usage, "\"\(path.prefix(200))\" does not name a file to write: pass PostgreSQL's %p unchanged.")
        }
        let temporary = base + ".kho-tmp"
        let dir = try Syscall.call("open", folder) { open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(dir) }
        let (_, unlinkCode) = Syscall.attempt { unlinkat(dir, temporary, 0) }
        guard unlinkCode == 0 || unlinkCode == ENOENT else { throw KhoError.posix("unlink", folder + "/" + temporary, errno: unlinkCode) }
        let fd = try Syscall.call("open", folder + "/" + temporary) {
            openat(dir, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        }
        var renamed = false
        defer {
            if !renamed { unlinkat(dir, temporary, 0) }
        }
        do {
            defer { close(fd) }
            try bytes.withUnsafeBytes { try Syscall.writeAll(fd, $0, folder + "/" + temporary) }
            if durable { _ = try Syscall.call("fsync", folder + "/" + temporary) { fsync(fd) } }
        }
        _ = try Syscall.call("rename", path) { renameat(dir, temporary, dir, base) }
        renamed = true
        if durable { _ = try Syscall.call("fsync", folder) { fsync(dir) } }
    }
}
