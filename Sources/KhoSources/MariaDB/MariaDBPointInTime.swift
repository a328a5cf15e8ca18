import Foundation
import Glibc
import KhoCore
import KhoSupport

/// One MariaDB database as it was at a time (docs/design/pitr.md section 9): the newest dump whose
/// binary log position was taken at or before the time, and the archived binary log from that
/// position up to the time. Everything that can refuse (no such dump, a statement-format log, a
/// gap in the archive) refuses in `make` or `fetch`, before anything is written to the target.
public struct MariaDBPointInTimePlan: Sendable {
    public var source: String
    public var database: String
    public var snapshot: Snapshot
    public var dumpFile: String
    public var recorded: DumpManifest.Database
    public var position: DumpManifest.BinlogPosition
    public var record: BinlogArchiveRecord
    public var chain: BinlogChain
    /// Nil: everything archived (--latest).
    public var target: Date?
    let archive: BinlogArchive

    /// Events logged in a second up to `target`'s second are applied; the log has whole seconds.
    public var bound: UInt32? { target.map { UInt32(clamping: Int64($0.timeIntervalSince1970.rounded(.down)) + 1) } }

    public static func make(repository: Repository, source: String, database: String, target: Date?) throws -> MariaDBPointInTimePlan {
        let dumps: [(Snapshot, DumpManifest.Database)] = try repository.listSnapshots().compactMap { snapshot in
            guard snapshot.source.name == source, snapshot.source.sourceKind == .mariadb, !snapshot.partial,
                  let entry = DumpManifest(snapshot.manifest)?.databases.first(where: { $0.name == database }) else { return nil }
            return (snapshot, entry)
        }
        guard !dumps.isEmpty else {
            throw KhoError(.usage, "Source \(source) has no MariaDB dump of database \(database): list its snapshots with `kho snapshots`, and give --database the name it was backed up under.")
        }
        let positioned = dumps.compactMap { snapshot, entry -> (Snapshot, DumpManifest.Database, DumpManifest.BinlogPosition, Date)? in
            guard let position = entry.binlogPosition, let time = Timestamp.parse(position.time) else { return nil }
            return (snapshot, entry, position, time)
        }
        guard !positioned.isEmpty else {
            let why = dumps.last?.1.binlogPositionAbsent ?? "they were taken by a kho before binary log positions were recorded"
            throw KhoError(.usage, "No dump of \(database) (source \(source)) records a binary log position (\(why)): turn on log_bin, GRANT BINLOG MONITOR to the backup user and take a dump; replays start from there.")
        }
        let usable = positioned.filter { target == nil || $0.3 <= target! }
        guard let chosen = usable.max(by: { $0.3 < $1.3 }) else {
            let oldest = positioned.min { $0.3 < $1.3 }!
            throw KhoError(.usage, "The oldest dump of \(database) with a binary log position (source \(source)) was taken at \(oldest.2.time), after the time asked for: choose a later time.")
        }
        let (snapshot, entry, position, _) = chosen
        if let format = position.format, format.uppercased() != "ROW" {
            throw KhoError(.usage, "The server's binlog_format was \(format) when dump \(snapshot.shortID) was taken: one database is replayed from a ROW binary log only (statements name the database they ran in, not the one they changed); set binlog_format = ROW on the server and take a new dump.")
        }
        let file = try BinlogFileName(position.file)
        let (dumpFile, _) = try DumpSelector.dump(in: snapshot, database: database)
        let archive = try BinlogArchive(repository: repository, source: source)
        guard let record = try archive.record() else {
            throw KhoError(.usage, "Source \(source) has no archived binary log: run `kho binlog serve --source \(source) --mariadb URL` on the backup host, then restore to a time after it started.")
        }
        guard record.serverId == position.serverId else {
            throw KhoError(.integrity, "Source \(source)'s binary log archive is of the server with server_id \(record.serverId), the dump \(snapshot.shortID) was taken on server_id \(position.serverId): nothing was written; archive each server under its own source name.")
        }
        let chain = try BinlogChain.from(try archive.inventory(), file: file, position: position.position) { try archive.fileEnd($0).size }
        return MariaDBPointInTimePlan(source: source, database: database, snapshot: snapshot, dumpFile: dumpFile, recorded: entry, position: position,
                                      record: record, chain: chain, target: target, archive: archive)
    }

    /// The archived files a replay reads, fetched into `folder` (private, the caller removes it).
    public struct Fetched: Sendable {
        public var paths: [String]
        public var files: [String]
        public var bytes: Int64
        /// The last event before the bound after the dump's position: what the replay applies last.
        public var lastApplied: Date?
        /// Whether the archive holds an event at or after the bound (it reaches the time).
        public var reachesTarget: Bool
    }

    /// Fetches the chain's pieces up to the first holding an event past the time. Refuses with an
    /// integrity error when a gap comes before the time (or, for --latest, anywhere after the dump).
    public func fetch(into folder: String) throws -> Fetched {
        var fetched = Fetched(paths: [], files: [], bytes: 0, lastApplied: nil, reachesTarget: false)
        let bound = self.bound ?? UInt32.max
        var last: UInt32?
        files: for file in chain.files {
            let path = folder + "/" + file.name.description
            let fd = try Syscall.call("open", path) { open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
            defer { close(fd) }
            fetched.paths.append(path)
            fetched.files.append(file.name.description)
            let first = file.name == chain.files.first?.name
            for piece in file.pieces where piece.end <= file.contiguous {
                // Of the dump's file, mariadb-binlog reads the events at its start (the format
                // description) and then seeks to the position: the pieces between stay a hole.
                if first && piece.offset > 0 && piece.end <= position.position { continue }
                let bytes = try archive.load(piece).bytes
                try Syscall.call("lseek", path) { lseek(fd, off_t(piece.offset), SEEK_SET) }
                try bytes.withUnsafeBytes { try Syscall.writeAll(fd, $0, path) }
                fetched.bytes += Int64(bytes.count)
                // Events before the dump's position are in the dump already.
                guard !first || piece.end > position.position else { continue }
                let skip = first && piece.offset < position.position ? Int(position.position - piece.offset) : 0
                let seen = bytes.withUnsafeBytes { BinlogEvents.lastTime(UnsafeRawBufferPointer(rebasing: $0[skip...]), atFileStart: piece.offset == 0 && skip == 0, before: bound) }
                last = seen.last ?? last
                if seen.passed {
                    fetched.reachesTarget = true
                    break files
                }
            }
        }
        fetched.lastApplied = last.map { Date(timeIntervalSince1970: Double($0)) }
        if !fetched.reachesTarget, let gap = chain.gap {
            let reach = fetched.lastApplied.map { "its last event before the gap is at \(Timestamp.format($0))" } ?? "no event after the dump's position precedes it"
            throw KhoError(.integrity, "Source \(source)'s archived binary log has a gap between dump \(snapshot.shortID)'s position (\(position.file):\(position.position)) and the time asked for: \(gap); \(reach). Nothing was written: restore to a time before the gap, or from a dump taken after it.")
        }
        return fetched
    }

    /// mariadb-binlog's options: from the dump's position, up to the bound; with `rewriteTo`, only
    /// the database's events, renamed when the name differs.
    func readerArguments(rewriteTo newName: String?) -> [String] {
        // Not strict about GTID order: an archive can hold another writer's GTIDs out of order (a
        // replay an older kho loaded into the source server, a multi-source set-up).
        var arguments = ["--no-defaults", "--skip-gtid-strict-mode", "--start-position=\(position.position)"]
        if let bound {
            var time = time_t(bound)
            var parts = tm()
            gmtime_r(&time, &parts)
            arguments.append(String(format: "--stop-datetime=%04d-%02d-%02d %02d:%02d:%02d", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                                    Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec)))
        }
        if let newName {
            arguments.append("--database=" + database)
            if newName != database { arguments.append("--rewrite-db=" + database + "->" + newName) }
        }
        return arguments
    }

    /// Refuses, before anything is written, a replay that would not stay inside the restored
    /// database: a statement (DDL; rows are logged as row events) in the window that names the
    /// database explicitly (`db.table`) is replayed as written, so under a new name it would act on
    /// the original database, and one run from another default database is not replayed at all.
    public func checkStatements(_ fetched: Fetched, newName: String) throws {
        guard !fetched.paths.isEmpty else { return }
        let tool = try MariaDBSource.tool(["mariadb-binlog", "mysqlbinlog"], source: source)
        let reader = try Subprocess(program: tool, arguments: readerArguments(rewriteTo: nil) + fetched.paths,
                                    environment: ChildEnvironment.minimal(["TZ": "UTC"]), output: .pipe)
        var scanner = BinlogStatementScanner(database: database, renamed: newName != database)
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        do {
            while scanner.found == nil {
                let n = try buffer.withUnsafeMutableBytes { try reader.read($0) }
                if n == 0 { break }
                buffer.withUnsafeBytes { scanner.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            }
            scanner.finish()
        } catch {
            reader.signal(SIGKILL)
            reader.wait()
            throw error
        }
        if scanner.found != nil { reader.signal(SIGKILL) }
        let ended = reader.wait()
        if let line = scanner.found {
            let shown = String(decoding: line.prefix(160), as: UTF8.self)
            if scanner.finding == .statementChange {
                throw KhoError(.usage, "Between dump \(snapshot.shortID) and the time, \(database) was changed by a statement logged as a statement, not as rows (\(shown.debugDescription)): binlog_format was not ROW then, and one database cannot be replayed from statements; nothing was written: set binlog_format = ROW on the server (in its configuration too) and restore to a time after a later dump.")
            }
            throw KhoError(.usage, "Between dump \(snapshot.shortID) and the time, a statement names database \(database) explicitly or runs from another database (\(shown.debugDescription)): replayed into \(newName) it would change \(database) itself or be left out; nothing was written: restore under the same name into another server (--to-database mariadb://USER@OTHER-HOST/\(database)).")
        }
        guard ended.succeeded else {
            throw KhoError(.source, "Source \(source): mariadb-binlog could not read the archived binary log (\(ended)): \(reader.standardError.prefix(300)); nothing was written.")
        }
    }

    /// Fetches into a private folder below TMPDIR (mode 0700: binary logs hold every row
    /// change), runs `body`, and removes the folder whatever happened.
    /// `made` hears of the folder when it exists and (with nil) once it is gone, so that an
    /// interrupted restore can remove it too.
    public func withFetched<R>(made: (String?) -> Void = { _ in }, _ body: (Fetched) throws -> R) throws -> R {
        var template = Array((NSTemporaryDirectory() + "kho-binlog-XXXXXX").utf8CString)
        guard let created = mkdtemp(&template) else {
            throw KhoError(.failure, "Cannot create a private folder for the archived binary log in \(NSTemporaryDirectory()): \(String(cString: strerror(errno))); check TMPDIR.")
        }
        let folder = String(cString: created)
        made(folder)
        defer {
            MariaDBPointInTimePlan.remove(folder)
            made(nil)
        }
        return try body(try fetch(into: folder))
    }

    /// Removes a fetch folder and the files in it (it holds no folders).
    public static func remove(_ folder: String) {
        // try?: a listing that fails leaves nothing more to remove than rmdir does.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] { unlink(folder + "/" + name) }
        rmdir(folder)
    }

    /// `mariadb-binlog` over the fetched files, from the dump's position up to the time, only
    /// `database`'s events, renamed to `target.database`, into the `mariadb` client on the target.
    /// Only arguments, no shell; the password reaches the client as MYSQL_PWD.
    public func replay(_ fetched: Fetched, into target: DatabaseEndpoint) throws -> Int64 {
        guard !fetched.paths.isEmpty else { return 0 }
        for name in [database, target.database] where name.contains("->") || name.isEmpty {
            throw KhoError(.usage, "The database name \(name.debugDescription) cannot be given to mariadb-binlog's --rewrite-db (it holds \"->\"): restore into another name.")
        }
        let tool = try MariaDBSource.tool(["mariadb-binlog", "mysqlbinlog"], source: source)
        let arguments = readerArguments(rewriteTo: target.database)
        let reader = try Subprocess(program: tool, arguments: arguments + fetched.paths, environment: ChildEnvironment.minimal(["TZ": "UTC"]), output: .pipe)
        let client = try MariaDBSource.tool(["mariadb", "mysql"], source: source)
        let bytes: Int64
        do {
            bytes = try ClientFeeder.feed(program: client, arguments: MariaDBSource.arguments(target, ["--sandbox", "--binary-mode", "--database=" + target.database]),
                                          environment: try MariaDBSource.environment(target), engine: "mariadb", sourceName: source) { write in
                var filter = BinlogSessionFilter()
                var buffer = [UInt8](repeating: 0, count: 1 << 16)
                while true {
                    let n = try buffer.withUnsafeMutableBytes { try reader.read($0) }
                    if n == 0 { break }
                    try buffer.withUnsafeBytes { try filter.process(UnsafeRawBufferPointer(rebasing: $0[0..<n]), write) }
                }
                try filter.flush(write)
            }
        } catch let error as KhoError {
            // SIGKILL: a child inherits kho's ignored SIGTERM.
            reader.signal(SIGKILL)
            reader.wait()
            throw KhoError(error.kind, "Source \(source): replaying the binary log into \(target.database) failed (\(error.message)); \(target.database) holds the dump and part of the replay: drop it, fix the cause and restore again.")
        }
        let ended = reader.wait()
        guard ended.succeeded else {
            let text = Secrets.mask(reader.standardError.trimmingCharacters(in: .whitespacesAndNewlines)).split(separator: "\n").prefix(3).joined(separator: " | ")
            throw KhoError(.source, "Source \(source): mariadb-binlog failed (\(ended)): \(text); \(target.database) holds the dump and part of the replay: drop it and restore again.")
        }
        return bytes
    }
}
