import Foundation
import Glibc
import KhoCore
import KhoSupport

/// Where a point-in-time recovery stops (PostgreSQL's `recovery_target_*` settings).
public enum RecoveryTarget: Sendable, Equatable, CustomStringConvertible {
    /// Replay commits up to and including this time (`recovery_target_inclusive` = on).
    case time(Date)
    /// A restore point made by `pg_create_restore_point` (kho's markers are such points).
    case restorePoint(String)
    case lsn(LSN)
    /// Everything archived.
    case latest
    /// The earliest consistent point of the base backup.
    case immediate

    /// Checks what comes from an operator before it reaches a configuration file.
    public static func restorePoint(checking name: String) throws -> RecoveryTarget {
        // PostgreSQL's MAXFNAMELEN (64) with its NUL; printable text only, so that the name cannot
        // end the configuration line it is written into.
        guard !name.isEmpty, name.utf8.count < 64, name.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7f }) else {
            throw KhoError(.usage, "\"\(name.prefix(64))\" is not a restore point name PostgreSQL can have (1 to 63 bytes of printable text): give the name passed to pg_create_restore_point.")
        }
        return .restorePoint(name)
    }

    /// The settings written for this target, values unquoted.
    var settings: [(String, String)] {
        switch self {
        case .time(let date): return [("recovery_target_time", PostgresRecovery.utc(date)), ("recovery_target_inclusive", "on")]
        case .restorePoint(let name): return [("recovery_target_name", name)]
        case .lsn(let lsn): return [("recovery_target_lsn", lsn.description), ("recovery_target_inclusive", "on")]
        case .latest: return []
        case .immediate: return [("recovery_target", "immediate")]
        }
    }

    public var description: String {
        switch self {
        case .time(let date): return "time \(PostgresRecovery.utc(date))"
        case .restorePoint(let name): return "restore point \(name)"
        case .lsn(let lsn): return "WAL position \(lsn)"
        case .latest: return "the end of the archived WAL"
        case .immediate: return "the end of the base backup"
        }
    }
}

/// What a recovery reached, from the server's own log and control file.
public struct RecoveryReached: Sendable, Equatable, Codable {
    /// The timeline the promoted cluster continues on.
    public var timeline: UInt32?
    /// PostgreSQL's "recovery stopping …" line: where and why it stopped (absent for `latest`).
    public var stoppedAt: String?
    /// The commit time of the last transaction replayed ("last completed transaction was at log time").
    public var lastCommit: String?
    /// Where redo ended ("redo done at X/Y").
    public var redoDone: String?
    /// Seconds from the server's start to its promotion.
    public var replaySeconds: Double
}

/// Turns a restored base backup into a recovering cluster: `recovery.signal`, the recovery settings
/// in `postgresql.auto.conf` between `# kho restore` markers, and, on request, starts it and waits
/// until it has reached the target and been promoted (docs/design/pitr.md section 6).
public struct PostgresRecovery: Sendable {
    public let dataDirectory: String

    public init(dataDirectory: String) {
        self.dataDirectory = dataDirectory
    }

    static func utc(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss.SSSSSS"
        return formatter.string(from: date) + "+00"
    }

    /// A value in postgresql.conf: single quotes, quotes doubled and backslashes escaped. Text with
    /// control characters is refused: it could end the line and start another setting.
    static func quote(_ value: String) throws -> String {
        guard value.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7f }) else {
            throw KhoError(.usage, "A recovery setting would contain a control character: choose names and paths without them.")
        }
        return "'" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "''") + "'"
    }

    /// The data directory's owner: the server must run as that user, and every file kho adds is theirs.
    public func owner() throws -> (uid: uid_t, gid: gid_t, name: String) {
        var info = stat()
        try Syscall.call("stat", dataDirectory) { lstat(dataDirectory, &info) }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            throw KhoError(.usage, "\(dataDirectory) is not a folder: give the data directory the base backup was restored into.")
        }
        guard let entry = getpwuid(info.st_uid) else {
            throw KhoError(.usage, "\(dataDirectory) belongs to user \(info.st_uid), who has no account here: give it to the user PostgreSQL runs as (chown -R postgres).")
        }
        return (info.st_uid, info.st_gid, String(cString: entry.pointee.pw_name))
    }

    /// Writes the recovery configuration. `restoreCommand` is complete shell text (PostgreSQL runs
    /// it through the shell); `promote` chooses `recovery_target_action` promote over pause.
    /// `archive_mode` is turned off unless `keepArchiving`: a copy must not write into the archive
    /// of the cluster it came from.
    public func configure(restoreCommand: String, target: RecoveryTarget, promote: Bool, port: Int?, keepArchiving: Bool,
                          label: String) throws {
        let owner = try owner()
        for leftover in ["postmaster.pid", "postmaster.opts", "standby.signal"] {
            let path = dataDirectory + "/" + leftover
            if unlink(path) != 0 && errno != ENOENT { throw KhoError.posix("unlink", path, errno: errno) }
        }
        guard FileManager.default.fileExists(atPath: dataDirectory + "/PG_VERSION") else {
            throw KhoError(.usage, "\(dataDirectory) has no PG_VERSION: it is not a restored PostgreSQL data directory; restore a base backup into it first.")
        }
        let pgWAL = dataDirectory + "/pg_wal"
        if mkdir(pgWAL, 0o700) == 0 {
            try Syscall.call("chown", pgWAL) { chown(pgWAL, owner.uid, owner.gid) }
        } else if errno != EEXIST {
            throw KhoError.posix("mkdir", pgWAL, errno: errno)
        }
        var lines = ["", "# kho restore \(label): recovery settings (remove this block after the recovery)",
                     "restore_command = \(try Self.quote(restoreCommand))",
                     "recovery_target_timeline = 'latest'",
                     "recovery_target_action = \(promote ? "'promote'" : "'pause'")"]
        for (name, value) in target.settings { lines.append("\(name) = \(try Self.quote(value))") }
        // The restored configuration came from the production cluster, where a database
        // superuser can set anything with ALTER SYSTEM: commands it would run on this host during
        // or after recovery are emptied (restore_command above is kho's own).
        lines += ["recovery_end_command = ''", "archive_cleanup_command = ''"]
        if !keepArchiving { lines += ["archive_mode = 'off'", "archive_command = ''"] }
        if let port { lines.append("port = \(port)") }
        lines.append("# end of kho restore \(label)")
        try append(lines.joined(separator: "\n") + "\n", to: dataDirectory + "/postgresql.auto.conf", owner: owner)
        try write([], to: dataDirectory + "/recovery.signal", owner: owner)
        // A data directory without postgresql.conf (Debian keeps it in /etc/postgresql) gets a
        // minimal one that lets in local peers only.
        if !FileManager.default.fileExists(atPath: dataDirectory + "/postgresql.conf") {
            try write(Array("# written by kho restore \(label): the original configuration was not in the data directory\n".utf8),
                      to: dataDirectory + "/postgresql.conf", owner: owner)
        }
        if !FileManager.default.fileExists(atPath: dataDirectory + "/pg_hba.conf") {
            try write(Array("# written by kho restore \(label)\nlocal all all peer\n".utf8), to: dataDirectory + "/pg_hba.conf", owner: owner)
        }
    }

    /// Settings of the restored configuration that make the server load code by path when it
    /// starts (`shared_preload_libraries = '/…/x.so'`), which the plan names before `--start`:
    /// production's own libraries are expected, a path into the data directory is not.
    public func codeLoadingSettings() -> [String] {
        var found: [String] = []
        for file in ["postgresql.conf", "postgresql.auto.conf"] {
            // try?: a file that is not there sets nothing.
            guard let text = try? String(contentsOfFile: dataDirectory + "/" + file, encoding: .utf8) else { continue }
            for raw in text.split(separator: "\n") {
                let line = raw.trimmingCharacters(in: .whitespaces)
                guard !line.hasPrefix("#") else { continue }
                for name in ["shared_preload_libraries", "local_preload_libraries", "session_preload_libraries", "dynamic_library_path"]
                where line.hasPrefix(name) && line.contains("/") {
                    found.append("\(file): \(line.prefix(200))")
                }
            }
        }
        return found
    }

    private func append(_ text: String, to path: String, owner: (uid: uid_t, gid: gid_t, name: String)) throws {
        let existed = FileManager.default.fileExists(atPath: path)
        let fd = try Syscall.call("open", path) { open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600) }
        defer { close(fd) }
        try Array(text.utf8).withUnsafeBytes { try Syscall.writeAll(fd, $0, path) }
        try Syscall.call("fsync", path) { fsync(fd) }
        if !existed { try Syscall.call("fchown", path) { fchown(fd, owner.uid, owner.gid) } }
    }

    private func write(_ bytes: [UInt8], to path: String, owner: (uid: uid_t, gid: gid_t, name: String)) throws {
        let fd = try Syscall.call("open", path) { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600) }
        defer { close(fd) }
        try bytes.withUnsafeBytes { try Syscall.writeAll(fd, $0, path) }
        try Syscall.call("fsync", path) { fsync(fd) }
        try Syscall.call("fchown", path) { fchown(fd, owner.uid, owner.gid) }
    }

    /// The data directory's major version, as PG_VERSION says (nil when it is not a number).
    func majorVersion() throws -> (text: String, number: Int?) {
        let version = try Syscall.readFile(dataDirectory + "/PG_VERSION", limit: 64)
        let major = String(decoding: version, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return (major, Int(major))
    }

    /// The server programs of the data directory's major version (Debian's layout).
    public func binDirectory() throws -> String {
        let major = try majorVersion().text
        let bin = "/usr/lib/postgresql/\(major)/bin"
        guard Int(major) != nil, access(bin + "/pg_ctl", X_OK) == 0 else {
            throw KhoError(.usage, "The base backup is of PostgreSQL \(major), whose server programs (\(bin)) are not installed here: install postgresql-\(major) to start it.")
        }
        return bin
    }

    /// Starts the server as the data directory's owner (through runuser when kho is root), with its
    /// log in `logFile` and messages in English (what `waitForPromotion` reads), and waits until it
    /// has reached the target and been promoted.
    public func startAndWait(logFile: String, timeout: TimeInterval, progress: (String) -> Void = { _ in }) throws -> RecoveryReached {
        let owner = try owner()
        let bin = try binDirectory()
        // The log file is the owner's: the server writes it.
        let fd = try Syscall.call("open", logFile) { open(logFile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600) }
        try Syscall.call("fchown", logFile) { fchown(fd, owner.uid, owner.gid) }
        close(fd)
        let started = Date()
        // -o is shell text for pg_ctl: only constants go there.
        // -W: pg_ctl would give up after 60 s while a long replay goes on; kho waits itself.
        // The base backup's pg_control says "in production", so the server first syncs the whole
        // data directory, by default one fsync per file: a disk cache flush each, which on a host
        // writing other data took from 0.1 to 3 s before replay began. kho synced these files
        // when it restored them; syncfs (PostgreSQL 14 and later) is then one quick call. For
        // this start only: the cluster's own configuration keeps its method.
        let syncMethod = (try majorVersion().number ?? 0) >= 14 ? " -c recovery_init_sync_method=syncfs" : ""
        var arguments = [bin + "/pg_ctl", "-D", dataDirectory, "-l", logFile, "-W", "-o", "-c logging_collector=off -c lc_messages=C" + syncMethod, "start"]
        if geteuid() == 0 && owner.uid != 0 { arguments = ["/usr/sbin/runuser", "-u", owner.name, "--"] + arguments }
        let result = try Subprocess.collect(arguments[0], Array(arguments.dropFirst()), environment: ChildEnvironment.minimal())
        guard result.termination.succeeded else {
            throw KhoError(.failure, "pg_ctl could not start the recovering cluster in \(dataDirectory): \(lastLines(logFile, or: result.error)); nothing else was changed.")
        }
        var seenRunning = false
        var tick = 0
        while true {
            tick += 1
            // A base backup's pg_control says "in production" from the start (it is the
            // primary's): promotion is when PostgreSQL has removed recovery.signal and the
            // postmaster reports itself ready for connections.
            if !FileManager.default.fileExists(atPath: dataDirectory + "/recovery.signal"), postmasterStatus() == "ready",
               let state = try controlState(bin: bin), state.inProduction {
                let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
                var reached = RecoveryReached(timeline: state.timeline, replaySeconds: Date().timeIntervalSince(started))
                for line in log.split(separator: "\n") {
                    if let range = line.range(of: "recovery stopping ") { reached.stoppedAt = String(line[range.lowerBound...]) }
                    if let range = line.range(of: "last completed transaction was at log time ") { reached.lastCommit = String(line[range.upperBound...]) }
                    if let range = line.range(of: "redo done at ") { reached.redoDone = String(line[range.upperBound...].prefix { $0 != " " }) }
                }
                return reached
            }
            // pg_ctl -W returns before the postmaster has written its pid file: the server is
            // gone only once it was seen running, or when it never appears.
            let running = serverRunning()
            if running { seenRunning = true }
            if !running && (seenRunning || Date().timeIntervalSince(started) > 60) {
                throw KhoError(.failure, "The recovering cluster in \(dataDirectory) stopped before it was promoted: \(lastLines(logFile, or: "")); the archive may not reach the target (see `kho wal ls`), or choose an earlier target.")
            }
            if Date().timeIntervalSince(started) > timeout {
                throw KhoError(.failure, "The cluster in \(dataDirectory) did not finish recovery within \(Int(timeout)) s: it is still running; follow \(logFile), or stop it with pg_ctl -D \(dataDirectory) stop.", retryable: true)
            }
            // The log is read for the progress line about every 200 ms, not at every look.
            if tick % 10 == 1 { progress(lastLines(logFile, or: "", count: 1)) }
            // 20 ms: the promotion is seen within a frame of happening (200 ms was a tenth of the
            // whole recovery of a small replay); a look before the pid file says "ready" is a
            // stat and a small read, and pg_controldata runs only once recovery.signal is gone.
            usleep(20_000)
        }
    }

    /// Whether the server's log says recovery ran out of WAL before its target (PostgreSQL's
    /// FATAL "recovery ended before configured recovery target was reached"; kho starts it with
    /// `lc_messages=C`, so the text is the English one).
    public static func endedBeforeTarget(logFile: String) -> Bool {
        guard let log = try? Syscall.readFile(logFile, limit: 64 << 20) else { return false }
        return String(decoding: log, as: UTF8.self).contains("recovery ended before configured recovery target was reached")
    }

    private func controlState(bin: String) throws -> (inProduction: Bool, timeline: UInt32?)? {
        let result = try Subprocess.collect(bin + "/pg_controldata", ["-D", dataDirectory], environment: ["LC_ALL": "C", "PATH": "/usr/bin:/bin"])
        guard result.termination.succeeded else { return nil }
        var production = false
        var timeline: UInt32?
        for line in result.output.split(separator: "\n") {
            if line.hasPrefix("Database cluster state:") { production = line.hasSuffix("in production") }
            if line.hasPrefix("Latest checkpoint's TimeLineID:") { timeline = UInt32(line.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "") }
        }
        return (production, timeline)
    }

    /// The postmaster's own status line in postmaster.pid (`starting`, `standby`, `ready`, `stopping`).
    private func postmasterStatus() -> String? {
        // try?: no pid file yet means no status yet.
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= 8 else { return nil }
        return lines[7].trimmingCharacters(in: .whitespaces)
    }

    private func serverRunning() -> Bool {
        // try?: no pid file means no server.
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8),
              let pid = text.split(separator: "\n").first.flatMap({ pid_t($0) }), pid > 0 else { return false }
        return kill(pid, 0) == 0 || errno == EPERM
    }

    private func lastLines(_ path: String, or fallback: String, count: Int = 3) -> String {
        // try?: the log only adds detail to a message that is given either way.
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? fallback
        return text.split(separator: "\n").suffix(count).joined(separator: " / ")
    }
}
