import Foundation
import KhoCore
import KhoSupport

/// A PostgreSQL cluster's physical base backup: `pg_basebackup -D - -Ft -Xnone` streamed into the
/// repository with no temporary copy, each tar member stored as a file (`PhysicalArchiver`),
/// described by a `PhysicalBackupManifest` (FORMAT.md section 21).
///
/// Fails closed: a pg_basebackup that exits non-zero or is killed, a stream that ends early, a
/// file the server's `backup_manifest` lists but the stream lacked, a system identifier that does
/// not match the server's: no snapshot.
public struct PostgresBaseBackup: BackupSource {
    /// pg_basebackup's `--checkpoint`: `spread` does not disturb a busy server, `fast` starts now.
    public enum Checkpoint: String, Sendable, CaseIterable {
        case fast, spread
    }

    public var name: String
    public var endpoint: DatabaseEndpoint
    public var checkpoint: Checkpoint
    public var limits: SourceLimits
    public var kind: SourceKind { .postgresBase }
    /// Every base backup carries this tag, so that `snapshots --tag base` lists them.
    public static let tag = "base"
    public var summary: String { "postgres-base \(endpoint.user)@\(endpoint.host):\(endpoint.port)" }

    /// The members whose content kho reads besides storing them, and the most bytes each may have.
    static let backupManifestMember = "backup_manifest"
    static let backupLabelMember = "backup_label"
    static let controlMember = "global/pg_control"
    static let versionMember = "PG_VERSION"
    static let captured: [String: Int] = [backupManifestMember: 512 << 20, backupLabelMember: 64 << 10, controlMember: 64 << 10, versionMember: 64]

    public init(name: String, endpoint: DatabaseEndpoint, checkpoint: Checkpoint = .spread, limits: SourceLimits = SourceLimits()) {
        self.name = name
        self.endpoint = endpoint
        self.checkpoint = checkpoint
        self.limits = limits
    }

    /// The connection and password rules of the dump source: PG* variables for the child, the
    /// password as PGPASSWORD for that child only.
    private var dumpSource: PostgresSource { PostgresSource(name: name, endpoint: endpoint, databases: [], includeGlobals: false, limits: limits) }

    public func dumpPlan() throws -> DumpPlan {
        throw KhoError(.usage, "Source \(name) is a base backup: it is stored member by member, not as dump streams; run it with kho backup --postgres-base.")
    }

    /// What the server says about itself before the backup starts.
    struct ServerFacts {
        var version: String
        var systemIdentifier: UInt64
        var segmentSize: Int
        var pageSize: Int
        var dataChecksums: Bool
        var settings: PhysicalBackupManifest.HotStandbySettings
        var superuser: String
    }

    func serverFacts() throws -> ServerFacts {
        let connection = try dumpSource.connect(database: endpoint.database)
        let extra = try connection.value("SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')") ?? "0"
        guard extra == "0" else {
            throw KhoError(.usage, "Source \(name): the cluster has \(extra) tablespace(s) besides pg_default and pg_global, and pg_basebackup writes only one tablespace to a stream; no backup was started: back it up with dumps (kind postgres) until kho supports tablespaces.")
        }
        let archiveMode = try connection.value("SELECT current_setting('archive_mode')") ?? "off"
        guard archiveMode != "off" else {
            throw KhoError(.usage, "Source \(name): archive_mode is off, so the WAL this base backup needs would not be archived and the backup could never be restored; no backup was started: set archive_mode = on and an archive_command (kho wal setup prints them).")
        }
        let names = ["server_version", "wal_segment_size", "block_size", "data_checksums", "max_connections", "max_worker_processes",
                     "max_wal_senders", "max_prepared_transactions", "max_locks_per_transaction"]
        var values: [String: String] = [:]
        for row in try connection.query("SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])", ["{" + names.joined(separator: ",") + "}"]) {
            if row.count == 2, let key = row[0], let value = row[1] { values[key] = value }
        }
        func number(_ key: String) throws -> Int {
            guard let text = values[key], let value = Int(text) else {
                throw KhoError(.source, "Source \(name): the server did not report \(key); kho needs PostgreSQL 13 or later for base backups.")
            }
            return value
        }
        guard let sysid = try connection.value("SELECT system_identifier FROM pg_control_system()").flatMap({ UInt64($0) }) else {
            throw KhoError(.source, "Source \(name): the server did not report its system identifier (pg_control_system()).")
        }
        let superuser = try connection.value("SELECT rolname FROM pg_roles WHERE oid = 10") ?? ""
        return ServerFacts(version: values["server_version"] ?? "", systemIdentifier: sysid, segmentSize: try number("wal_segment_size"),
                           pageSize: try number("block_size"), dataChecksums: values["data_checksums"] == "on",
                           settings: .init(maxConnections: try number("max_connections"), maxWorkerProcesses: try number("max_worker_processes"),
                                           maxWalSenders: try number("max_wal_senders"), maxPreparedTransactions: try number("max_prepared_transactions"),
                                           maxLocksPerTransaction: try number("max_locks_per_transaction")),
                           superuser: superuser)
    }

    /// The relation-file block size of this source's previous base backup, so that its blocks
    /// dedup; the default for the first one.
    static func blockSize(source: String, host: String, repository: Repository) throws -> Int {
        let previous = try repository.listSnapshots().last {
            $0.source.sourceKind == .postgresBase && $0.source.name == source && $0.hostname == host
        }
        return PhysicalBackupManifest(previous?.manifest)?.blockSize ?? PhysicalArchiver.defaultBlockSize
    }

    public func backup(with archiver: Archiver, repository: Repository) throws -> Snapshot {
        let pgBaseBackup = try dumpSource.tool("pg_basebackup")
        let facts = try serverFacts()
        let blockSize = try PostgresBaseBackup.blockSize(source: name, host: limits.recordedHost, repository: repository)
        let physical = try PhysicalArchiver(archiver: archiver, blockSize: blockSize)
        physical.capture = PostgresBaseBackup.captured
        let label = "kho-\(UUID().uuidString.lowercased())"
        // Every argument is kho's own text; where to connect and the password travel in PG*
        // variables of this child only.
        let stream = CommandStream(
            command: "exec \(shellQuote(pgBaseBackup)) -D - -Ft -Xnone --checkpoint=\(checkpoint.rawValue) --label=\(label) --no-password",
            displayName: "source \(name): pg_basebackup", environment: try dumpSource.environment(database: nil), timeout: limits.timeout)
        try stream.start()
        let tar = TarStream(what: "The output of pg_basebackup (source \(name))") { try stream.read($0) }
        do {
            return try physical.backup(tar, sourceName: name, source: SnapshotSource(kind: .postgresBase, name: name),
                                       tags: [PostgresBaseBackup.tag],
                                       finish: { try stream.finish() }) { contents in
                try SizeGuard.check(source: name, total: contents.totalSize, ratio: limits.minSizeRatio, repository: repository, host: limits.recordedHost,
                                    family: .physical)
                let manifest = try describe(contents, facts: facts, label: label, blockSize: blockSize)
                try PostgresBaseBackup.requireArchivedWAL(in: repository, cluster: manifest.cluster, from: manifest.startSegment,
                                                          through: manifest.endSegment, source: name)
                return try manifest.json
            }
        } catch {
            guard tar.reachedEndOfInput else {
                stream.terminate()
                throw error
            }
            // pg_basebackup closed its output: it ended, and why it did (a refused login, a
            // server that stopped the backup, a kill) is the error to show, if it failed.
            try stream.finish()
            throw error
        }
    }

    /// Before a base backup is recorded: when this repository archives the cluster's WAL, the
    /// archive must be this source's and hold every segment from `from` through `through`
    /// (pg_basebackup -X none made the server wait until its archive_command had succeeded for
    /// them, but that archive_command may archive elsewhere or lag behind a restart), so that no
    /// base backup is recorded that kho could not recover. A cluster whose WAL this repository
    /// does not archive is backed up all the same: its base backup restores as files, and kho says
    /// at restore time that it has no WAL for it.
    static func requireArchivedWAL(in repository: Repository, cluster: String, from: String, through: String, source: String) throws {
        let archive = try WALArchive.inventory(in: repository)
        guard let record = archive.records.last(where: { $0.cluster == cluster && !archive.isRetired($0) }) else { return }
        guard record.source == source else {
            throw KhoError(.usage, "Source \(source): this repository archives the WAL of cluster \(cluster) as source \(record.source); no snapshot was written: give the base backup the archive's source name (--source-name \(record.source)) so that a restore finds both.")
        }
        let size = try WALSegmentSize(bytes: record.segmentSize)
        let sysid = try SystemIdentifier(parsing: cluster)
        let first = try WALFileName(parsing: from)
        let last = try WALFileName(parsing: through)
        let start = first.segmentNumber(segmentSize: size)
        let end = last.segmentNumber(segmentSize: size)
        guard end >= start, end - start < 1 << 20 else {
            throw KhoError(.source, "Source \(source): the base backup's WAL runs from \(from) to \(through), which is not a range; no snapshot was written: run the backup again.")
        }
        // Segments are on the start's timeline, the last ones on the end's after a promotion
        // during the backup; the archive holds them under whichever timeline wrote them.
        for number in start...end {
            let candidates = Set([first.timeline, last.timeline]).map { WALFileName.segment(timeline: $0, number: number, segmentSize: size) }
            var found = false
            for name in candidates where try repository.storage.exists(name.handle(cluster: sysid)) { found = true; break }
            guard found else {
                throw KhoError(.integrity, "Source \(source): WAL segment \(candidates[0]) that the base backup needs is not in the archive; no snapshot was written: check that archive_command runs kho wal push for source \(source) (`kho wal setup`), then take the base backup again.")
            }
        }
    }

    /// Checks what the stream held against the server's own `backup_manifest` and the server's
    /// facts, and builds the snapshot's manifest.
    func describe(_ contents: PhysicalContents, facts: ServerFacts, label: String, blockSize: Int) throws -> PhysicalBackupManifest {
        func missing(_ member: String) -> KhoError {
            KhoError(.source, "Source \(name): the stream of pg_basebackup held no \(member); no snapshot was written: check that the server is PostgreSQL 13 or later and run the backup again.")
        }
        guard let manifestBytes = contents.captured[PostgresBaseBackup.backupManifestMember] else { throw missing("backup_manifest") }
        guard let labelBytes = contents.captured[PostgresBaseBackup.backupLabelMember] else { throw missing("backup_label") }
        guard let control = contents.captured[PostgresBaseBackup.controlMember], control.count >= 8 else { throw missing("global/pg_control") }
        guard let versionBytes = contents.captured[PostgresBaseBackup.versionMember],
              let major = Int(String(decoding: versionBytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw missing("PG_VERSION")
        }
        let serverManifest = try BaseBackupManifest.parse(manifestBytes, source: name)
        for file in serverManifest.files {
            guard let size = contents.files[file.path] else {
                throw KhoError(.source, "Source \(name): backup_manifest lists \(file.path.debugDescription), which the stream of pg_basebackup did not hold; no snapshot was written: run the backup again.")
            }
            guard size == file.size else {
                throw KhoError(.source, "Source \(name): backup_manifest gives \(file.path.debugDescription) \(file.size) bytes, the stream held \(size); no snapshot was written: run the backup again.")
            }
        }
        let backupLabel = try BackupLabel.parse(labelBytes, source: name)
        guard backupLabel.label == label else {
            throw KhoError(.source, "Source \(name): the backup_label names the backup \(backupLabel.label.debugDescription), not kho's \(label); no snapshot was written: was the stream another backup's?")
        }
        guard backupLabel.startLSN == serverManifest.startLSN, backupLabel.timeline == serverManifest.timeline else {
            throw KhoError(.source, "Source \(name): backup_label and backup_manifest disagree on where the backup starts; no snapshot was written: run the backup again.")
        }
        let sysid = control.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard sysid == facts.systemIdentifier else {
            throw KhoError(.source, "Source \(name): the backup's pg_control names the cluster \(SystemIdentifier(sysid)), the server said \(SystemIdentifier(facts.systemIdentifier)); no snapshot was written: check that host and port name one server.")
        }
        let segmentSize = try WALSegmentSize(bytes: facts.segmentSize)
        let start = WALFileName.segment(timeline: serverManifest.timeline, containing: serverManifest.startLSN, segmentSize: segmentSize)
        // The stop LSN points just past the last record the backup needs: the segment before it
        // when it falls on a boundary (PostgreSQL's XLByteToPrevSeg).
        let lastByte = LSN(max(serverManifest.endLSN.value, 1) - 1)
        let end = WALFileName.segment(timeline: serverManifest.endTimeline, containing: lastByte, segmentSize: segmentSize)
        let stopTime = try dumpSource.connect(database: endpoint.database).value("SELECT extract(epoch FROM clock_timestamp())")
            .flatMap { Double($0) }.map { Date(timeIntervalSince1970: $0) } ?? Date()
        let files = contents.files.count
        return PhysicalBackupManifest(
            engine: SourceKind.postgres.rawValue, serverVersion: facts.version, majorVersion: major, cluster: SystemIdentifier(sysid).description,
            timeline: serverManifest.timeline, startLSN: serverManifest.startLSN.description, endLSN: serverManifest.endLSN.description,
            startSegment: start.description, endSegment: end.description, segmentSize: facts.segmentSize, blockSize: blockSize,
            pageSize: facts.pageSize, dataChecksums: facts.dataChecksums, settings: facts.settings, superuser: facts.superuser,
            stopTime: stopTime, label: label, backupManifestSHA256: try SHA256.hash(manifestBytes).hex, files: files, bytes: contents.totalSize)
    }
}

/// The parts of PostgreSQL's `backup_manifest` (version 1 and 2) kho checks: the files and their
/// sizes, and the WAL range.
struct BaseBackupManifest {
    struct File { var path: String; var size: UInt64 }
    var files: [File]
    var timeline: UInt32
    var startLSN: LSN
    var endTimeline: UInt32
    var endLSN: LSN

    private struct Raw: Decodable {
        struct RawFile: Decodable {
            var Path: String?
            var EncodedPath: String?
            var Size: UInt64
            enum CodingKeys: String, CodingKey { case Path, EncodedPath = "Encoded-Path", Size }
        }
        struct Range: Decodable {
            var Timeline: UInt32
            var StartLSN: String
            var EndLSN: String
            enum CodingKeys: String, CodingKey { case Timeline, StartLSN = "Start-LSN", EndLSN = "End-LSN" }
        }
        var Files: [RawFile]
        var WALRanges: [Range]
        enum CodingKeys: String, CodingKey { case Files, WALRanges = "WAL-Ranges" }
    }

    static func parse(_ bytes: [UInt8], source: String) throws -> BaseBackupManifest {
        let raw: Raw
        do {
            raw = try JSONDecoder().decode(Raw.self, from: Data(bytes))
        } catch {
            throw KhoError(.source, "Source \(source): the backup_manifest of pg_basebackup is not the JSON kho expects (\(error)); no snapshot was written.")
        }
        var files: [File] = []
        files.reserveCapacity(raw.Files.count)
        for file in raw.Files {
            if let path = file.Path {
                files.append(File(path: path, size: file.Size))
            } else if let encoded = file.EncodedPath, let decoded = Hex.decode(encoded) {
                files.append(File(path: String(decoding: decoded, as: UTF8.self), size: file.Size))
            } else {
                throw KhoError(.source, "Source \(source): the backup_manifest has a file without a path; no snapshot was written.")
            }
        }
        // Ranges run from the start timeline to the end one, oldest first.
        guard let first = raw.WALRanges.first, let last = raw.WALRanges.last else {
            throw KhoError(.source, "Source \(source): the backup_manifest names no WAL range; no snapshot was written.")
        }
        return BaseBackupManifest(files: files, timeline: first.Timeline, startLSN: try LSN(parsing: first.StartLSN),
                                  endTimeline: last.Timeline, endLSN: try LSN(parsing: last.EndLSN))
    }
}

/// `backup_label`: `KEY: value` lines written by the server at the backup's start.
struct BackupLabel {
    var startLSN: LSN
    var timeline: UInt32
    var label: String

    static func parse(_ bytes: [UInt8], source: String) throws -> BackupLabel {
        var values: [String: String] = [:]
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            values[String(line[..<colon])] = String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
        }
        // "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)"
        guard let location = values["START WAL LOCATION"]?.split(separator: " ").first, let start = try? LSN(parsing: location),
              let timeline = values["START TIMELINE"].flatMap({ UInt32($0) }), let label = values["LABEL"] else {
            throw KhoError(.source, "Source \(source): the backup_label of pg_basebackup lacks its start location, timeline or label; no snapshot was written.")
        }
        return BackupLabel(startLSN: start, timeline: timeline, label: label)
    }
}
