import Foundation
import Glibc
import KhoCore
import KhoSupport

/// The steps of a restore to a point that `kho restore --to-data-directory` and the PITR drill
/// share (docs/design/pitr.md sections 6 and 8): the base backup's files restored into a new
/// folder, then recovery through a WAL fetch server this process runs, until promotion.
public enum PointInTimeRestore {
    /// Restores the plan's base backup into `staging` (a new, private folder; the data directory
    /// is its `data`), every entry created as `owner`'s. A file that cannot be restored is an
    /// integrity error: no half data directory goes on to recovery.
    public static func restoreFiles(repository: Repository, plan: PointInTimePlan, into staging: String, owner: (uid: uid_t, gid: gid_t),
                                    progress: ProgressCounter = ProgressCounter(),
                                    warning: @escaping @Sendable (String) -> Void) throws -> RestoreSummary {
        let index = try repository.loadIndex()
        var options = RestoreOptions()
        options.workers = repository.storage.suggestedRestoreWorkers(options.workers)
        // Owned by the server's user as each entry is created, so that the restore's one syncfs
        // covers the owners too and no second walk chowns every file (the production host's
        // uids mean nothing here). No setuid or setgid bits: a data directory has no use for them,
        // and a chown after the fact used to clear them.
        options.restoreOwners = true
        options.adjust = { stored in
            var node = stored
            node.uid = owner.uid
            node.gid = owner.gid
            node.mode &= ~UInt32(0o6000)
            return node
        }
        let summary = try Restorer(repository: repository, index: index, options: options, progress: progress, warn: warning)
            .restore(snapshot: plan.base, target: staging)
        guard summary.errors == 0 else {
            throw KhoError(.integrity, "\(summary.errors) files of base backup \(plan.base.shortID) could not be restored (see the warnings above): the restore stopped before a data directory was put in place; run `kho check --read-data`.")
        }
        return summary
    }

    /// What recovery reached and what the fetch server served.
    public struct Recovered: Sendable {
        public var reached: RecoveryReached
        public var served: WALFetchServer.Statistics
    }

    /// Writes the recovery settings into `dataDirectory` (owned by the user the server runs as),
    /// serves the archive's WAL on a socket in `socketFolder` (that user's, 0700), starts the
    /// server and waits until it has reached `target` and been promoted.
    public static func recover(repository: Repository, plan: PointInTimePlan, dataDirectory: String, socketFolder: String,
                               owner: (uid: uid_t, gid: gid_t), port: Int?, keepArchiving: Bool, timeout: TimeInterval,
                               logFile: String) throws -> Recovered {
        let server = try WALFetchServer(repository: repository, record: plan.record, socketPath: socketFolder + "/fetch.sock",
                                        allowedUser: owner.uid, allowedGroup: owner.gid)
        defer { server.stop() }
        server.readAhead(from: try WALFileName(parsing: plan.manifest.startSegment))
        let recovery = PostgresRecovery(dataDirectory: dataDirectory)
        try recovery.configure(restoreCommand: "\(shellQuote(try KhoExecutable.path())) wal fetch --server \(shellQuote(server.socketPath)) %f \"%p\"",
                               target: plan.target, promote: true, port: port, keepArchiving: keepArchiving, label: plan.base.shortID)
        let reached: RecoveryReached
        do {
            reached = try recovery.startAndWait(logFile: logFile, timeout: timeout)
        } catch let error as KhoError where error.kind == .failure && PostgresRecovery.endedBeforeTarget(logFile: logFile) {
            // PostgreSQL replayed all it was given without passing the target: say why in kho's
            // terms (the plan knows how far the archive reaches), not only in the server's.
            let end = plan.continuity.reached?.description ?? "-"
            if let gap = plan.continuity.gap {
                throw KhoError(.integrity, "Recovery replayed the archived WAL up to \(end) without reaching \(plan.target): the archive has a gap at \(gap), and what confirms the target lies beyond it; choose an earlier target or a base backup after the gap, and run `kho check`. The data directory \(dataDirectory) was left as replayed, not started.")
            }
            throw KhoError(.usage, "Recovery replayed every archived WAL file (up to \(end)) without reaching \(plan.target): PostgreSQL confirms a time only when it replays a commit after it, and none is archived yet; choose an earlier target, wait for the next segment to be archived, or use --latest. The data directory \(dataDirectory) was left as replayed, not started.")
        }
        return Recovered(reached: reached, served: server.statistics)
    }
}

public enum KhoExecutable {
    /// This kho's absolute path, for commands PostgreSQL runs later.
    public static func path() throws -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { throw KhoError.posix("readlink", "/proc/self/exe", errno: errno) }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The new data directory of a restore to a point.
public enum DataDirectoryTarget {
    /// Refuses a folder in use or with content: a restore never overwrites a cluster.
    public static func check(_ directory: String) throws {
        if FileManager.default.fileExists(atPath: directory + "/postmaster.pid") {
            throw KhoError(.usage, "\(directory) is the data directory of a cluster that may be running (postmaster.pid): choose a new folder.")
        }
        var info = stat()
        if lstat(directory, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFDIR else { throw KhoError(.usage, "\(directory) exists and is not a folder: choose a new folder.") }
            let entries = try FileManager.default.contentsOfDirectory(atPath: directory)
            guard entries.isEmpty else {
                throw KhoError(.usage, "\(directory) is not empty: a restore to a point writes a new data directory; choose a new or empty folder.")
            }
        } else if errno != ENOENT {
            throw KhoError.posix("lstat", directory, errno: errno)
        }
        let parent = (directory as NSString).deletingLastPathComponent
        guard FileManager.default.fileExists(atPath: parent) else {
            throw KhoError(.usage, "\(parent) does not exist: create the folder that will hold the data directory first.")
        }
    }

    /// Moves the restored `data` folder (restored as `owner`'s by `restoreFiles`, and synced) to
    /// `directory`, makes it `owner`'s and 0700 as PostgreSQL requires, and syncs the folder that
    /// holds it, so that the new name is on disk too.
    public static func place(_ restored: String, at directory: String, owner: (uid: uid_t, gid: gid_t)) throws {
        if rmdir(directory) != 0 && errno != ENOENT {
            throw KhoError.posix("rmdir", directory, errno: errno)
        }
        try Syscall.call("rename", directory) { rename(restored, directory) }
        let fd = try Syscall.call("open", directory) { open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        defer { close(fd) }
        try Syscall.call("fchown", directory) { fchown(fd, owner.uid, owner.gid) }
        try Syscall.call("fchmod", directory) { fchmod(fd, 0o700) }
        try Syscall.call("fsync", directory) { fsync(fd) }
        let parent = (directory as NSString).deletingLastPathComponent
        let parentFD = try Syscall.call("open", parent) { open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(parentFD) }
        try Syscall.call("fsync", parent) { fsync(parentFD) }
    }

    /// A private folder for the WAL socket, reachable by the server's user only.
    public static func stateFolder(owner: (uid: uid_t, gid: gid_t)) throws -> String {
        let path = "/tmp/kho-restore-\(UInt64.random(in: 0...UInt64.max))"
        try Syscall.call("mkdir", path) { mkdir(path, 0o700) }
        try Syscall.call("chown", path) { chown(path, owner.uid, owner.gid) }
        return path
    }
}
