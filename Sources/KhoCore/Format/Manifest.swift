import Foundation
import KhoSupport

/// What a database dump contained, recorded by the server in the same snapshot the dump read:
/// the proof that a later restore is correct (checksums equal) and complete (every table, every row).
public struct DumpManifest: Codable, Sendable, Equatable {
    public struct Table: Codable, Sendable, Equatable {
        public var schema: String
        public var name: String
        public var rows: Int64
        /// Computed by the server from every row's text; see the source for the formula.
        public var checksum: String
        public init(schema: String, name: String, rows: Int64, checksum: String) {
            self.schema = schema; self.name = name; self.rows = rows; self.checksum = checksum
        }
        public var qualifiedName: String { schema.isEmpty ? name : "\(schema).\(name)" }
    }

    public struct Database: Codable, Sendable, Equatable {
        public var name: String
        /// The file in the snapshot that holds this database's dump.
        public var file: String
        public var sizeBytes: Int64
        public var tables: [Table]
        /// The file in the snapshot that holds the database's schema fingerprint
        /// (`SchemaFingerprint` as JSON), read in the dump's snapshot; nil in manifests of a kho
        /// before issue 19, which compare on tables, rows and checksums only.
        public var schemaFile: String?
        /// The fingerprint's SHA-256 (`SchemaFingerprint.digest`), for evidence and reports.
        public var schemaDigest: String?
        /// The file in the snapshot that holds what the database needs besides its dump to come
        /// back whole on a fresh server, as the engine's JSON (`PostgresGlobals`, `MariaDBGlobals`):
        /// the database's own properties, the roles or users it needs and their grants. Nil in
        /// manifests of a kho before issue 19.
        public var globalsFile: String?
        /// A PostgreSQL restore point made beside the dump's snapshot (docs/design/pitr.md section
        /// 8): recovering the cluster's WAL to it gives back what the dump holds. Nil when the
        /// login may not make restore points, the cluster's wal_level is minimal, or the
        /// manifest is older than issue 20.
        public var pitrMarker: PITRMarker?
        /// Why there is no marker (PostgreSQL's refusal), so that a drill or report can say it.
        public var pitrMarkerAbsent: String?
        /// Where MariaDB's binary log stood while the dump's snapshot was taken (read under the
        /// dump's global read lock): replaying the archived binary log from here onto the restored
        /// dump continues it exactly. Nil when binary logging is off, the login may not read it,
        /// or the manifest is older than issue 20's MariaDB part.
        public var binlogPosition: BinlogPosition?
        /// Why there is no binary log position (logging off, or the server's refusal).
        public var binlogPositionAbsent: String?
        public init(name: String, file: String, sizeBytes: Int64, tables: [Table],
                    schemaFile: String? = nil, schemaDigest: String? = nil, globalsFile: String? = nil, pitrMarker: PITRMarker? = nil) {
            self.name = name; self.file = file; self.sizeBytes = sizeBytes; self.tables = tables
            self.schemaFile = schemaFile; self.schemaDigest = schemaDigest; self.globalsFile = globalsFile
            self.pitrMarker = pitrMarker
        }
    }

    /// A restore point and the snapshots that say how close it is to the dump's.
    public struct PITRMarker: Codable, Sendable, Equatable {
        /// The restore point's name, `kho-` and 16 hex digits.
        public var name: String
        /// Where the restore point's WAL record was written.
        public var lsn: String
        public var timeline: UInt32
        /// The cluster's system identifier, 16 lower-case hex digits.
        public var cluster: String
        /// `pg_current_snapshot()` of the dump's transaction (`xmin:xmax:xip,…`).
        public var snapshot: String
        /// `pg_current_snapshot()` read right after the restore point was made.
        public var snapshotAfter: String
        /// Whether the two snapshots were equal: no transaction took an ID or ended between the
        /// dump's snapshot and the restore point (the drill then proves the rest).
        public var equalAtDump: Bool
        public var attempts: Int

        public init(name: String, lsn: String, timeline: UInt32, cluster: String, snapshot: String, snapshotAfter: String, attempts: Int) {
            self.name = name; self.lsn = lsn; self.timeline = timeline; self.cluster = cluster
            self.snapshot = snapshot; self.snapshotAfter = snapshotAfter; equalAtDump = snapshot == snapshotAfter; self.attempts = attempts
        }
    }

    /// A MariaDB binary log position, as `SHOW MASTER STATUS` and `@@gtid_binlog_pos` gave it.
    public struct BinlogPosition: Codable, Sendable, Equatable {
        /// The binary log file the next event goes to, e.g. `mariadb-bin.000042`.
        public var file: String
        /// The byte offset in it where the next event starts.
        public var position: UInt64
        /// `@@gtid_binlog_pos`: the last GTID of each domain written to the binary log.
        public var gtid: String
        public var serverId: UInt32
        public var gtidDomainId: UInt32
        /// The server's clock (`UTC_TIMESTAMP(6)`, RFC 3339) under the lock: a restore to a time
        /// starts from the newest dump whose position was taken at or before it.
        public var time: String
        /// `@@binlog_format` under the lock: a replay from this position needs `ROW`.
        public var format: String?

        public init(file: String, position: UInt64, gtid: String, serverId: UInt32, gtidDomainId: UInt32, time: String, format: String?) {
            self.file = file; self.position = position; self.gtid = gtid
            self.serverId = serverId; self.gtidDomainId = gtidDomainId; self.time = time; self.format = format
        }
    }

    public var engine: String
    public var serverVersion: String
    /// How checksums were computed, so that a reader knows what equality means.
    public var checksumMethod: String
    public var databases: [Database]

    public init(engine: String, serverVersion: String, checksumMethod: String, databases: [Database]) {
        self.engine = engine
        self.serverVersion = serverVersion
        self.checksumMethod = checksumMethod
        self.databases = databases
    }

    public var json: JSONValue {
        get throws {
            try JSON.decoder.decode(JSONValue.self, from: try JSON.encoder.encode(self))
        }
    }

    public init?(_ value: JSONValue?) {
        // try?: a value that is not a dump manifest (another source's, an older kho's) is none.
        guard let value, let data = try? JSON.encoder.encode(value),
              let manifest = try? JSON.decoder.decode(DumpManifest.self, from: data) else { return nil }
        self = manifest
    }
}

/// A table-by-table comparison of a recorded manifest with one recomputed after a restore.
public struct ManifestComparison: Codable, Sendable {
    public enum Outcome: String, Codable, Sendable {
        case equal, missing, extra, rowsDiffer = "rows-differ", checksumDiffers = "checksum-differs"
    }

    public struct Row: Codable, Sendable {
        public var table: String
        public var expectedRows: Int64?
        public var actualRows: Int64?
        public var expectedChecksum: String?
        public var actualChecksum: String?
        public var outcome: Outcome
    }

    public var rows: [Row]
    public var equal: Bool { rows.allSatisfy { $0.outcome == .equal } }

    public init(expected: [DumpManifest.Table], actual: [DumpManifest.Table]) {
        var byName: [String: DumpManifest.Table] = [:]
        for table in actual { byName[table.qualifiedName] = table }
        var rows: [Row] = []
        for table in expected {
            let found = byName.removeValue(forKey: table.qualifiedName)
            let outcome: Outcome
            if let found {
                if found.rows != table.rows { outcome = .rowsDiffer }
                else if found.checksum != table.checksum { outcome = .checksumDiffers }
                else { outcome = .equal }
            } else {
                outcome = .missing
            }
            rows.append(Row(table: table.qualifiedName, expectedRows: table.rows, actualRows: found?.rows,
                            expectedChecksum: table.checksum, actualChecksum: found?.checksum, outcome: outcome))
        }
        for table in byName.values.sorted(by: { $0.qualifiedName < $1.qualifiedName }) {
            rows.append(Row(table: table.qualifiedName, expectedRows: nil, actualRows: table.rows,
                            expectedChecksum: nil, actualChecksum: table.checksum, outcome: .extra))
        }
        self.rows = rows
    }
}
