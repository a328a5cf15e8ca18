import ArgumentParser
import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoSources

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Back up files and folders, standard input, or the output of a command.",
        discussion: """
        Exit codes: 0 snapshot written; 3 snapshot written but some files could not be read (it is
        marked partial); 1 no snapshot written.
        """
    )

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "Files and folders to back up.")
    var paths: [String] = []

    @Flag(help: "Back up standard input as one file.")
    var stdin = false

    @Option(name: .customLong("stdin-name"), help: "Name of the file that holds the stream (with --stdin or --command).")
    var stdinName: String?

    @Option(help: "Run this command (through /bin/sh) and back up its standard output; fails when it exits non-zero.")
    var command: String?

    @Option(help: "Stop the command or dump after this long (e.g. 2h) and fail.")
    var timeout: String?

    @Option(help: "Dump PostgreSQL databases: postgres://USER@HOST:PORT/DB[,DB...] (pg_dump plain format plus globals).")
    var postgres: String?

    @Option(name: .customLong("postgres-base"), help: "Physical base backup of a whole PostgreSQL cluster: postgres://USER@HOST:PORT (pg_basebackup; the login needs REPLICATION, the server archive_mode = on).")
    var postgresBase: String?

    @Option(help: "With --postgres-base: pg_basebackup's checkpoint, fast or spread (default spread: no burst of writes on a busy server).")
    var checkpoint: String?

    @Option(help: "Dump MariaDB/MySQL databases: mariadb://USER@HOST:PORT/DB[,DB...] (mariadb-dump --single-transaction).")
    var mariadb: String?

    @Option(help: "Copy a SQLite database with the online backup API (consistent while others write).")
    var sqlite: String?

    @Option(name: .customLong("source-name"), help: "Name of the database source, used to find it again for restore.")
    var sourceName: String?

    @Option(name: .customLong("password-file"), help: "File holding the database password.")
    var passwordFile: String?

    @Option(name: .customLong("password-env"), help: "Environment variable holding the database password.")
    var passwordEnv: String?

    @Flag(name: .customLong("no-globals"), help: "With --postgres: skip globals.sql (pg_dumpall --globals-only, the whole cluster's roles and tablespaces); each database's own roles and properties are recorded all the same.")
    var noGlobals = false

    @Option(name: .customLong("min-size-ratio"), help: "Fail when the dump is smaller than this share of the previous good dump of the source.")
    var minSizeRatio: Double = 0.5

    @Option(help: "Skip paths matching this shell pattern (repeatable).")
    var exclude: [String] = []

    @Option(help: "Add a tag to the snapshot (repeatable).")
    var tag: [String] = []

    @Option(help: "Host name recorded in the snapshot.")
    var host: String?

    @Option(help: "zstd level for new data (0 stores uncompressed); default is the repository's.")
    var compression: Int?

    @Option(help: "Snapshot to compare against for unchanged files (default: newest of this host and paths).")
    var parent: String?

    @Flag(help: "Read all files, even those the parent snapshot says are unchanged.")
    var force = false

    @Option(help: "Record this time (RFC 3339, e.g. 2026-11-01T02:00:00+07:00) instead of now (for imports and tests).")
    var time: String?

    @Flag(help: "Print the summary as JSON.")
    var json = false

    @Option(help: "Packs uploaded at the same time (default 1 for a folder, 4 for an S3 repository).")
    var connections: Int?

    func validate() throws {
        let modes = (paths.isEmpty ? 0 : 1) + (stdin ? 1 : 0) + (command == nil ? 0 : 1) + (postgres == nil ? 0 : 1) + (postgresBase == nil ? 0 : 1) + (mariadb == nil ? 0 : 1) + (sqlite == nil ? 0 : 1)
        guard modes == 1 else {
            throw ValidationError("Give exactly one of: paths to back up, --stdin, --command 'CMD', --postgres URL, --postgres-base URL, --mariadb URL or --sqlite PATH.")
        }
        if (postgres != nil || postgresBase != nil || mariadb != nil || sqlite != nil) && (sourceName ?? "").isEmpty {
            throw ValidationError("--postgres, --postgres-base, --mariadb and --sqlite need --source-name NAME, the name restore finds the source by.")
        }
        if let checkpoint {
            guard postgresBase != nil else { throw ValidationError("--checkpoint goes with --postgres-base.") }
            guard PostgresBaseBackup.Checkpoint(rawValue: checkpoint) != nil else {
                throw ValidationError("--checkpoint must be fast or spread; got \(checkpoint).")
            }
        }
        if !(0...1).contains(minSizeRatio) {
            throw ValidationError("--min-size-ratio must be between 0 (off) and 1; got \(minSizeRatio).")
        }
        if (stdin || command != nil) && (stdinName ?? "").isEmpty {
            throw ValidationError("--stdin and --command need --stdin-name NAME, the name the stream is stored under.")
        }
        if let name = stdinName, name.contains("/") {
            throw ValidationError("--stdin-name must be a plain file name without '/': got \(name).")
        }
        try Flags.checkConnections(connections)
        if let compression, !(0...22).contains(compression) {
            throw ValidationError("--compression must be 0 (off) to 22; got \(compression).")
        }
        if let time, Timestamp.parse(time) == nil {
            throw ValidationError("--time \(time) is not an RFC 3339 time: use e.g. 2026-11-01T02:00:00+07:00.")
        }
    }

    func run() throws {
        var options = BackupOptions()
        options.excludes = exclude
        options.tags = tag
        if let host { options.hostname = host }
        options.compressionLevel = compression
        options.parent = parent
        options.force = force
        options.time = time.flatMap(Timestamp.parse)
        let timeoutSeconds = try timeout.map { try DurationText.parse($0, option: "--timeout") }

        let snapshot: Snapshot = try repository.withRepository(exclusive: false, command: "backup") { repo in
            let index = try repo.loadIndex()
            let progress = ProgressCounter()
            let line = ProgressLine(progress: progress, label: "backup", enabled: !json)
            defer { line.finish() }
            var options = options
            options.uploaders = connections ?? repo.storage.suggestedUploaders
            if let spec = try databaseSource(timeout: timeoutSeconds), let source = spec.make() {
                options.source = SnapshotSource(kind: spec.kind, name: spec.name)
                let archiver = try Archiver(repository: repo, index: index, options: options, progress: progress) { message in
                    line.finish()
                    Terminal.warning(message)
                }
                return try source.backup(with: archiver, repository: repo)
            }
            if command != nil { options.source = SnapshotSource(kind: .command, name: stdinName) }
            let archiver = try Archiver(repository: repo, index: index, options: options, progress: progress) { message in
                line.finish()
                Terminal.warning(message)
            }
            if let command {
                let stream = CommandStream(command: command, timeout: timeoutSeconds)
                try stream.start()
                do {
                    let name = stdinName!
                    let host = options.hostname
                    // A command is a dump like any other: a suspicious shrink records nothing.
                    let input = Archiver.StreamInput(name: name) { ({ try stream.read($0) }, { try stream.finish() }) }
                    let result = try archiver.backupStreams([input], sourceName: name) { total in
                        try SizeGuard.check(source: name, total: total, ratio: minSizeRatio, repository: repo, host: host)
                        return nil
                    }
                    let stderrText = stream.standardError.trimmingCharacters(in: .whitespacesAndNewlines)
                    if !stderrText.isEmpty { Terminal.warning("the command wrote to its error output:\n\(stderrText)") }
                    return result
                } catch {
                    stream.terminate()
                    throw error
                }
            }
            if stdin {
                return try archiver.backupStream(name: stdinName!, read: { buffer in
                    try Syscall.call("read", "standard input") { Glibc.read(STDIN_FILENO, buffer.baseAddress, buffer.count) }
                }, finish: {})
            }
            return try archiver.backup(paths: paths)
        }
        try report(snapshot)
        try finish(Verdict(snapshot))
    }

    /// The database source the flags name (--postgres, --mariadb or --sqlite), as a policy would
    /// describe it; nil for files, standard input and commands.
    func databaseSource(timeout: TimeInterval?) throws -> SourceSpec? {
        var spec: SourceSpec
        if let sqlite {
            spec = SourceSpec.sqlite(path: sqlite, name: sourceName!)
        } else if let postgresBase {
            spec = try SourceSpec.postgresBase(url: postgresBase, name: sourceName!, passwordFile: passwordFile, passwordEnv: passwordEnv)
            spec.checkpoint = checkpoint.flatMap(PostgresBaseBackup.Checkpoint.init(rawValue:)) ?? .spread
        } else if let url = postgres ?? mariadb {
            let expected: SourceSpec.Kind = postgres != nil ? .postgres : .mariadb
            spec = try SourceSpec.database(url: url, name: sourceName!, passwordFile: passwordFile, passwordEnv: passwordEnv, databaseList: true)
            guard spec.kind == expected else {
                throw KhoError(.usage, "\(url) is a \(spec.kind.rawValue) URL, but it was given to --\(expected.rawValue).")
            }
            spec.globals = !noGlobals
        } else {
            return nil
        }
        spec.limits.timeout = timeout
        spec.limits.minSizeRatio = minSizeRatio
        spec.limits.hostname = host
        return spec
    }

    private func report(_ snapshot: Snapshot) throws {
        let s = snapshot.summary ?? BackupSummary()
        if json {
            struct Output: Encodable {
                var snapshot: String
                var partial: Bool
                var summary: BackupSummary
            }
            try Terminal.json(Output(snapshot: snapshot.id ?? "", partial: snapshot.partial, summary: s))
            return
        }
        Terminal.out("snapshot \(snapshot.shortID) saved\(snapshot.partial ? " (partial: \(s.warnings) entries could not be read)" : "")")
        Terminal.out("files:      \(s.filesNew) new, \(s.filesChanged) changed, \(s.filesUnchanged) unchanged")
        Terminal.out("folders:    \(s.directories)")
        Terminal.out("read:       \(Format.bytes(s.bytesRead)) of \(Format.bytes(s.totalSize))")
        Terminal.out("added:      \(Format.bytes(s.bytesAdded)) to the repository (\(Format.bytes(s.bytesNewRaw)) new data before compression)")
        let rate = s.duration > 0 ? Double(s.bytesRead) / s.duration : 0
        Terminal.out("duration:   \(Format.duration(s.duration)) (\(Format.bytes(Int64(rate)))/s)")
    }
}
