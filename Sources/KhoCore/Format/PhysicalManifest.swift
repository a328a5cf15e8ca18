import Foundation
import KhoSupport

/// What a physical base backup recorded (FORMAT.md section 21): where in the WAL it starts and
/// ends, what a recovery from it needs, and how its files were cut. Stored as the snapshot's
/// `manifest` of a `postgres-base` snapshot.
public struct PhysicalBackupManifest: Codable, Sendable, Equatable {
    /// The five settings a hot standby (and a recovering scratch cluster) needs at least as high
    /// as the primary's.
    public struct HotStandbySettings: Codable, Sendable, Equatable {
        public var maxConnections: Int
        public var maxWorkerProcesses: Int
        public var maxWalSenders: Int
        public var maxPreparedTransactions: Int
        public var maxLocksPerTransaction: Int

        enum CodingKeys: String, CodingKey {
            case maxConnections = "max_connections", maxWorkerProcesses = "max_worker_processes", maxWalSenders = "max_wal_senders"
            case maxPreparedTransactions = "max_prepared_transactions", maxLocksPerTransaction = "max_locks_per_transaction"
        }

        public init(maxConnections: Int, maxWorkerProcesses: Int, maxWalSenders: Int, maxPreparedTransactions: Int, maxLocksPerTransaction: Int) {
            self.maxConnections = maxConnections
            self.maxWorkerProcesses = maxWorkerProcesses
            self.maxWalSenders = maxWalSenders
            self.maxPreparedTransactions = maxPreparedTransactions
            self.maxLocksPerTransaction = maxLocksPerTransaction
        }
    }

    public static let physicalKind = "physical"

    /// `postgres`.
    public var engine: String
    /// `physical`: tells this manifest from a dump's.
    public var kind: String
    /// The server's full version (`server_version`), e.g. "15.10".
    public var serverVersion: String
    /// The major version from the backup's `PG_VERSION`.
    public var majorVersion: Int
    /// The system identifier, 16 lower-case hex digits (as in `wal/<sysid>/`).
    public var cluster: String
    public var timeline: UInt32
    public var startLSN: String
    public var endLSN: String
    /// The first and last WAL segment a recovery from this backup needs to become consistent.
    public var startSegment: String
    public var endSegment: String
    public var segmentSize: Int
    /// kho's fixed cut for relation files (a multiple of `pageSize`).
    public var blockSize: Int
    /// PostgreSQL's page size (`block_size`).
    public var pageSize: Int
    public var dataChecksums: Bool
    public var settings: HotStandbySettings
    /// The name of role 10, the bootstrap superuser.
    public var superuser: String
    /// When the backup ended, by the server's clock, read just after pg_basebackup finished: at or
    /// after the real stop, so a recovery target after it is always reachable from this backup.
    public var stopTime: Date
    public var label: String
    /// SHA-256 of the `backup_manifest` member, and what it lists.
    public var backupManifestSHA256: String
    public var files: Int
    public var bytes: Int64

    public init(engine: String, serverVersion: String, majorVersion: Int, cluster: String, timeline: UInt32, startLSN: String, endLSN: String,
                startSegment: String, endSegment: String, segmentSize: Int, blockSize: Int, pageSize: Int, dataChecksums: Bool,
                settings: HotStandbySettings, superuser: String, stopTime: Date, label: String, backupManifestSHA256: String,
                files: Int, bytes: Int64) {
        self.engine = engine
        kind = PhysicalBackupManifest.physicalKind
        self.serverVersion = serverVersion
        self.majorVersion = majorVersion
        self.cluster = cluster
        self.timeline = timeline
        self.startLSN = startLSN
        self.endLSN = endLSN
        self.startSegment = startSegment
        self.endSegment = endSegment
        self.segmentSize = segmentSize
        self.blockSize = blockSize
        self.pageSize = pageSize
        self.dataChecksums = dataChecksums
        self.settings = settings
        self.superuser = superuser
        self.stopTime = stopTime
        self.label = label
        self.backupManifestSHA256 = backupManifestSHA256
        self.files = files
        self.bytes = bytes
    }

    public var json: JSONValue {
        get throws { try JSON.decoder.decode(JSONValue.self, from: try JSON.encoder.encode(self)) }
    }

    /// The manifest of a physical snapshot; nil for any other (a dump's, an older kho's).
    public init?(_ value: JSONValue?) {
        // try?: a value that is not a physical manifest is none, as for DumpManifest.
        guard let value, let data = try? JSON.encoder.encode(value),
              let manifest = try? JSON.decoder.decode(PhysicalBackupManifest.self, from: data),
              manifest.kind == PhysicalBackupManifest.physicalKind else { return nil }
        self = manifest
    }
}
