import ArgumentParser
import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoSources

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore a snapshot: files into a folder, or a database dump into a database, a file or standard output.",
        discussion: """
        The snapshot is named directly (SNAPSHOT or --snapshot), or found by --source NAME: the newest
        snapshot of that source, or the newest taken at or before --at. A time without an offset is
        read in --time-zone, else $KHO_TIME_ZONE, else Asia/Ho_Chi_Minh (never the machine's zone).
        kho first prints the plan (times with their offset and zone) and, on a terminal, asks before
        going on (--yes skips the question).

        It never overwrites: a folder target must be new or empty unless --overwrite; a database that
        exists and has tables is refused unless --replace, which loads into a new database and swaps
        it in only after the load succeeded (the old one is kept under a new name).

        With --pitr (and --database, --to-database), one PostgreSQL database of the source's cluster
        as it was at --at (or --restore-point, --lsn, --latest): the cluster is recovered from its
        base backup and archived WAL in a private scratch cluster, and the database carried over by
        the same restore, compared with the recovered one.

        Exit 12 when data is damaged or the restored database does not match the snapshot's manifest.
        """
    )

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "Snapshot: `latest`, an ID or a unique prefix.")
    var snapshotArgument: String?

    @Option(name: .customLong("snapshot"), help: "Snapshot ID or prefix (same as the argument).")
    var snapshotOption: String?

    @Option(help: "Restore the newest snapshot of this source (the --source-name or --stdin-name it was backed up with).")
    var source: String?

    @Option(help: "With --source: the newest snapshot taken at or before this time, e.g. \"2026-11-28 23:00\" (read in --time-zone, else $KHO_TIME_ZONE, else Asia/Ho_Chi_Minh), or with an offset: \"2026-11-28 23:00 +07\", 2026-11-28T23:00:00+07:00.")
    var at: String?

    @OptionGroup var zone: TimeZoneOption

    @Option(help: "Folder to restore files into.")
    var target: String?

    @Option(name: .customLong("to-database"), help: "Load the dump into this database: postgres://USER@HOST:PORT/DB or mariadb://USER@HOST:PORT/DB (with --pitr: the database as it was at the point).")
    var toDatabase: String?

    @Option(name: .customLong("to-data-directory"), help: "Restore a PostgreSQL cluster to a point in time into this new data directory: the base backup of --source before the target and its archived WAL (--at, --restore-point, --lsn or --latest).")
    var toDataDirectory: String?

    @OptionGroup var pointInTime: PointInTimeOptions

    @Option(name: .customLong("to-file"), help: "Write the dump to this file.")
    var toFile: String?

    @Flag(help: "Write the dump to standard output.")
    var stdout = false

    @Option(help: "Which database of a multi-database snapshot to restore (its name at backup time); with --pitr, the database of the recovered cluster.")
    var database: String?

    @Option(name: .customLong("password-file"), help: "File holding the target database's password.")
    var passwordFile: String?

    @Option(name: .customLong("password-env"), help: "Environment variable holding the target database's password.")
    var passwordEnv: String?

    @Option(help: "Restore only paths matching this shell pattern, and everything below matching folders (repeatable).")
    var include: [String] = []

    @Flag(help: "Replace files that already exist in the target folder or file.")
    var overwrite = false

    @Flag(help: "Replace a database that exists: load into a new one, then swap names when the load succeeded.")
    var replace = false

    @Option(name: .customLong("map-role"), help: "Create a role (PostgreSQL) or user (MariaDB) of the snapshot under another name on the target: OLD=NEW (repeatable).")
    var mapRole: [String] = []

    @Option(name: .customLong("map-tablespace"), help: "Put what lived in a PostgreSQL tablespace into another one on the target: OLD=NEW (repeatable; pg_default for the default).")
    var mapTablespace: [String] = []

    @Flag(name: .customLong("role-passwords"), help: "Give created roles and users the password hashes recorded at backup (by default they are created without a password).")
    var rolePasswords = false

    @Flag(help: "Do not ask for confirmation.")
    var yes = false

    @Flag(help: "Print the summary as JSON.")
    var json = false

    func validate() throws {
        let targets = [target != nil, toDatabase != nil, toFile != nil, stdout, toDataDirectory != nil].filter { $0 }.count
        guard targets == 1 else {
            throw ValidationError("Give exactly one place to restore to: --target DIR, --to-database URL, --to-file PATH, --stdout or --to-data-directory DIR.")
        }
        if pointInTime.pitr {
            guard toDatabase != nil else {
                throw ValidationError("--pitr loads one database of the recovered cluster into --to-database URL; to restore the whole cluster to a point use --to-data-directory without --pitr.")
            }
            try pointInTime.validateDatabase(source: source, at: at, snapshot: snapshotArgument ?? snapshotOption, database: database)
            return
        }
        if toDataDirectory != nil {
            try pointInTime.validate(source: source, at: at, snapshot: snapshotArgument ?? snapshotOption)
            return
        }
        try pointInTime.refuseWithoutDataDirectory()
        let selectors = [snapshotArgument != nil, snapshotOption != nil].filter { $0 }.count
        if selectors > 1 { throw ValidationError("Give the snapshot once: as the argument or with --snapshot.") }
        if selectors == 0 && source == nil {
            throw ValidationError("Name the snapshot (an ID, a prefix or `latest`) or the source with --source NAME.")
        }
        if at != nil && source == nil { throw ValidationError("--at needs --source NAME.") }
        if let at {
            let zone: TimeZone
            do { zone = try self.zone.zone() } catch let error as KhoError { throw ValidationError(error.message) }
            if LocalTime.parse(at, zone: zone) == nil { throw ValidationError(LocalTime.notATime(at, option: "--at").message) }
        }
    }

    /// The zone --at is read and the plan's times are shown in (see `TimeZoneOption`).
    var displayZone: TimeZone {
        // try?: TimeZoneOption.validate() has already refused a zone that does not resolve.
        (try? zone.zone()) ?? DisplayZone.defaultZone
    }

    func selectSnapshot(_ repo: Repository) throws -> Snapshot {
        let instant = try at.map { try LocalTime.parse($0, option: "--at", zone: displayZone) }
        // Messages name the instant with its offset and zone, whatever form the operator typed.
        var selector = SnapshotSelector(reference: snapshotArgument ?? snapshotOption, source: source, at: instant,
                                        atText: instant.map { ZonedTime.formatNamed($0, in: displayZone) })
        // A dump goes into a database, a file or standard output: the source's newest dump, not
        // its newest base backup (which restores with --target, or to a point with --to-data-directory).
        if target == nil { selector.family = .logical }
        return try selector.select(in: repo)
    }

    func confirm(_ plan: String) throws {
        if !json { Terminal.write(STDERR_FILENO, plan + "\n") }
        guard !yes, isatty(STDIN_FILENO) != 0, isatty(STDERR_FILENO) != 0 else { return }
        Terminal.write(STDERR_FILENO, "Go ahead? [y/N] ")
        let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
        guard answer == "y" || answer == "yes" else {
            throw KhoError(.usage, "Restore cancelled; nothing was changed.")
        }
    }

    func run() throws {
        if let toDataDirectory {
            try restorePointInTime(into: toDataDirectory)
            return
        }
        if pointInTime.pitr {
            try restoreDatabaseAtPoint()
            return
        }
        try repository.withRepository(exclusive: false, command: "restore") { repo in
            let index = try repo.loadIndex()
            let snap = try selectSnapshot(repo)
            if let target {
                try restoreFiles(repo, index: index, snapshot: snap, target: target)
            } else {
                try restoreDump(repo, index: index, snapshot: snap)
            }
        }
    }

    /// The snapshot as the plan names it: its time with offset and zone, and, with --at, how the
    /// time typed was read.
    private func describe(_ snap: Snapshot) -> String {
        let zone = displayZone
        let what = snap.source.name.map { "source \($0)" } ?? snap.paths.joined(separator: " ")
        var text = "snapshot \(snap.shortID) of \(what), taken \(Format.namedTime(snap.time, zone)) on \(snap.hostname), \(Format.bytes(snap.summary?.totalSize ?? 0))"
        if let at, let asked = LocalTime.parse(at, zone: zone) {
            let how = LocalTime.carriesOffset(at) ? "with its own offset" : "read in \(DisplayZone.name(of: zone))"
            text += " (the newest at or before --at \"\(at)\", \(how): \(Format.time(asked, zone)))"
        }
        return text
    }

    private func restoreFiles(_ repo: Repository, index: MasterIndex, snapshot snap: Snapshot, target: String) throws {
        try confirm("Plan: restore \(describe(snap)) into the folder \(target)")
        var options = RestoreOptions()
        options.includes = include
        options.overwrite = overwrite
        options.workers = repo.storage.suggestedRestoreWorkers(options.workers)
        let progress = ProgressCounter()
        let line = ProgressLine(progress: progress, label: "restore", enabled: !json)
        let summary: RestoreSummary
        do {
            defer { line.finish() }
            summary = try Restorer(repository: repo, index: index, options: options, progress: progress) { message in
                Terminal.warning(message)
            }.restore(snapshot: snap, target: target)
        }
        if json {
            try Terminal.json(summary)
        } else {
            Terminal.out("restored \(summary.files) files, \(summary.directories) folders, \(summary.otherEntries) other entries, \(Format.bytes(summary.bytes)) in \(Format.duration(summary.duration))")
            if summary.errors > 0 {
                Terminal.out("\(summary.errors) entries could not be restored: see the warnings above and run `kho check --read-data`.")
            }
        }
        try finish(Verdict(summary))
    }

    static func printComparison(_ comparison: ManifestComparison, expected: String = "recorded at backup") {
        Terminal.out("manifest comparison (\(expected) → restored):")
        for row in comparison.rows {
            let rows = "\(row.expectedRows.map(String.init) ?? "-") → \(row.actualRows.map(String.init) ?? "-")"
            Terminal.out("  \(row.table.rightPad(32)) \(rows.rightPad(24)) \(row.outcome.rawValue)")
        }
        Terminal.out(comparison.equal ? "every table present, row counts and checksums equal" : "THE RESTORED DATABASE DIFFERS FROM THE SNAPSHOT'S MANIFEST")
    }

    private func restoreDump(_ repo: Repository, index: MasterIndex, snapshot snap: Snapshot) throws {
        let (file, expected) = try DumpSelector.dump(in: snap, database: database)
        let node = try TreeLookup(repository: repo, index: index).node(at: file, in: snap)
        let reader = try OrderedBlobReader(repository: repo, index: index, content: node.content)
        let progress = ProgressCounter()
        progress.setTotals(files: 1, bytes: Int64(node.size))
        let start = Date()

        if stdout || toFile != nil {
            let destination = toFile ?? "standard output"
            try confirm("Plan: write \(file) of \(describe(snap)) to \(destination)")
            var fd = STDOUT_FILENO
            // With --overwrite the dump goes to a new file beside the old one and is renamed over
            // it once whole: a restore that fails leaves the old file, and a symlink planted under
            // the name is replaced, never written through.
            var written: String?
            if let toFile {
                let path = overwrite ? try RestoreFile.temporaryPath(beside: toFile) : toFile
                fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                guard fd >= 0 else {
                    if errno == EEXIST {
                        throw KhoError(.usage, "\(toFile) exists: choose a new file name, or pass --overwrite to replace it.")
                    }
                    throw KhoError.posix("open", toFile, errno: errno)
                }
                written = path
            }
            var finished = false
            defer {
                if fd != STDOUT_FILENO { close(fd) }
                if overwrite, !finished, let written { unlink(written) }
            }
            let line = ProgressLine(progress: progress, label: "restore", enabled: !json && !stdout)
            defer { line.finish() }
            try reader.run { bytes in
                try bytes.withUnsafeBytes { try Syscall.writeAll(fd, $0, destination) }
                progress.add(bytes: Int64(bytes.count))
            }
            if fd != STDOUT_FILENO { try Syscall.call("fsync", destination) { fsync(fd) } }
            if let toFile, let written, written != toFile {
                try Syscall.call("rename", toFile) { rename(written, toFile) }
            }
            if let toFile { try RestoreFile.syncFolder(of: toFile) }
            finished = true
            line.finish()
            var comparison: ManifestComparison?
            if let toFile, let expected, DumpManifest(snap.manifest)?.engineKind == .sqlite {
                comparison = ManifestComparison(expected: expected.tables,
                                                actual: try SQLiteSource.manifestTables(path: toFile, source: snap.source.name ?? file))
            }
            if !stdout {
                let seconds = Date().timeIntervalSince(start)
                if let comparison, !json { Restore.printComparison(comparison) }
                if json {
                    try Terminal.json(["file": file, "destination": destination, "bytes": String(node.size), "seconds": String(format: "%.3f", seconds)])
                } else {
                    Terminal.out("wrote \(Format.bytes(Int64(node.size))) to \(destination) in \(Format.duration(seconds))")
                }
            }
            try finish(Verdict(comparison))
            return
        }

        let url = toDatabase!
        let spec = try SourceSpec.database(url: url, name: snap.source.name ?? file, passwordFile: passwordFile, passwordEnv: passwordEnv)
        let engine = spec.kind.rawValue
        let endpoint = spec.endpoint!
        if let kind = DumpManifest(snap.manifest)?.engine, kind != engine {
            throw KhoError(.usage, "Snapshot \(snap.shortID) holds a \(kind) dump; it cannot be loaded into \(engine): give a \(kind):// URL.")
        }
        let options = try databaseRestoreOptions()
        let restore = try spec.restore(options: options, dumpFile: file, recorded: expected,
                                       files: try SnapshotFiles(repository: repo, index: index, snapshot: snap))
        let plan = try restore.plan()
        var header = "Plan: restore \(file) of \(describe(snap)) into \(engine)://\(endpoint.user)@\(endpoint.host):\(endpoint.port)/\(endpoint.database)"
        if spec.kind == .postgres, let hint = pointInTimeHint(repo, snapshot: snap, database: expected?.name ?? endpoint.database) { header += "\n" + hint }
        if spec.kind == .mariadb, let hint = binlogHint(repo, snapshot: snap, database: expected?.name ?? endpoint.database) { header += "\n" + hint }
        if !plan.refusals.isEmpty {
            if !json { Terminal.write(STDERR_FILENO, ([header] + plan.lines).joined(separator: "\n") + "\n") }
            throw plan.refusal
        }
        try confirm(([header] + plan.lines).joined(separator: "\n"))
        let line = ProgressLine(progress: progress, label: "restore", enabled: !json)
        let result: DatabaseRestoreResult
        do {
            defer { line.finish() }
            result = try restore.run(plan) { progress.add(bytes: $0) }
        }
        if json {
            try Terminal.json(result)
        } else {
            Terminal.out("restored \(Format.bytes(result.bytesLoaded)) into \(result.database) in \(Format.duration(result.seconds)) (achieved recovery time)")
            if let kept = result.replacedDatabaseKeptAs {
                Terminal.out("the database it replaced is kept as \(kept); drop it once you no longer need it")
            }
            for note in result.notes { Terminal.out("note: \(note)") }
            if let comparison = result.comparison { Restore.printComparison(comparison) }
            if let schema = result.schema { Restore.printSchema(schema) }
        }
        try finish(result.equal ? .success : .damaged)
    }

    /// With --at, when the dump is older than the time asked for and the source's WAL archive
    /// reaches that time: the line saying that --pitr would restore the database as it was then.
    private func pointInTimeHint(_ repo: Repository, snapshot: Snapshot, database: String) -> String? {
        guard let at, let source, let instant = LocalTime.parse(at, zone: displayZone), snapshot.time < instant else { return nil }
        do {
            _ = try PointInTimePlan.make(repository: repo, source: source, target: .time(instant), baseBackup: nil)
        } catch {
            // A hint only: without an archive, a base backup or continuity to the time there is
            // nothing to suggest, and the dump's restore goes on as asked.
            return nil
        }
        return "  note: the dump is \(Format.duration(instant.timeIntervalSince(snapshot.time))) older than --at; source \(source)'s archived WAL reaches that time: add --pitr --database \(database) to restore the database as it was at exactly \(Format.namedTime(instant, displayZone))"
    }

    /// The same for a MariaDB source whose archived binary log continues from a dump before --at.
    private func binlogHint(_ repo: Repository, snapshot: Snapshot, database: String) -> String? {
        guard let at, let source, let instant = LocalTime.parse(at, zone: displayZone), snapshot.time < instant else { return nil }
        // try?: a hint only; without a positioned dump or an archive there is nothing to suggest.
        guard let plan = try? MariaDBPointInTimePlan.make(repository: repo, source: source, database: database, target: instant),
              !plan.chain.files.isEmpty, plan.chain.gap == nil else { return nil }
        return "  note: the dump is \(Format.duration(instant.timeIntervalSince(snapshot.time))) older than --at; source \(source)'s archived binary log continues from a dump: add --pitr --database \(database) to restore the database as it was at \(Format.namedTime(instant, displayZone))"
    }

    static func printSchema(_ schema: SchemaComparison) {
        if schema.equal {
            Terminal.out("schema: \(schema.compared) objects (tables, columns, indexes, constraints, views, functions, triggers, sequences, types, grants, roles, the database's properties) equal to the snapshot's")
            return
        }
        Terminal.out("schema: \(schema.differences.count) of \(schema.compared) objects differ from the snapshot's:")
        for difference in schema.differences { Terminal.out("  \(difference.sentence)") }
    }

    /// What the flags ask of a restore into a database server (a dump's, or one database's at a point).
    func databaseRestoreOptions() throws -> DatabaseRestoreOptions {
        var options = DatabaseRestoreOptions()
        options.replace = replace
        options.roleMap = try Restore.mapping(mapRole, option: "--map-role")
        options.tablespaceMap = try Restore.mapping(mapTablespace, option: "--map-tablespace")
        options.rolePasswords = rolePasswords
        return options
    }

    /// `OLD=NEW` pairs of a repeatable option.
    static func mapping(_ pairs: [String], option: String) throws -> [String: String] {
        var map: [String: String] = [:]
        for pair in pairs {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex, pair.index(after: equals) != pair.endIndex else {
                throw KhoError(.usage, "\(option) \(pair) is not OLD=NEW: write e.g. \(option) app_owner=app_owner_2026.")
            }
            let old = String(pair[..<equals]), new = String(pair[pair.index(after: equals)...])
            if map[old] != nil { throw KhoError(.usage, "\(option) names \(old) twice: give one new name for it.") }
            map[old] = new
        }
        return map
    }
}

enum RestoreFile {
    /// A new name in the folder of `path`, for a file renamed over `path` once written.
    static func temporaryPath(beside path: String) throws -> String {
        let folder = (path as NSString).deletingLastPathComponent
        let name = ".\((path as NSString).lastPathComponent).kho-\(Hex.encode(try Random.bytes(6)))"
        return folder.isEmpty ? name : folder + "/" + name
    }

    /// Syncs the folder that holds `path`, so that the file's name survives a power cut.
    static func syncFolder(of path: String) throws {
        var folder = (path as NSString).deletingLastPathComponent
        if folder.isEmpty { folder = "." }
        let fd = try Syscall.call("open", folder) { open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        defer { close(fd) }
        try Syscall.call("fsync", folder) { fsync(fd) }
    }
}
