import KhoSupport

/// What a snapshot was taken from: recorded in every snapshot (`source.kind`), named by a policy's
/// `kind:`, and, for the database kinds, the engine a dump belongs to (`DumpManifest.engine`).
/// The repository stores the raw value; one type everywhere above it.
public enum SourceKind: String, Codable, Sendable, CaseIterable {
    case files, postgres, mariadb, sqlite, command
    /// A stream given on kho's standard input (`kho backup --stdin`).
    case stdin
    /// A PostgreSQL cluster's physical base backup (pg_basebackup), FORMAT.md section 21.
    case postgresBase = "postgres-base"

    /// The kinds a policy may name: a policy runs unattended and has no standard input.
    public static let policyKinds: [SourceKind] = [.files, .postgres, .mariadb, .sqlite, .command, .postgresBase]

    /// A database engine whose dumps kho can load back into a server.
    public var isLoadableDatabase: Bool { self == .postgres || self == .mariadb }

    /// Snapshots that retention rules keep apart from other snapshots of the same source name:
    /// a cluster's base backups and its nightly dumps are kept by separate rules.
    public var retentionFamily: RetentionFamily { self == .postgresBase ? .physical : .logical }
}

/// What a snapshot is a copy of, for retention: files and dumps (logical), or a data directory
/// that needs WAL to be used (physical).
public enum RetentionFamily: String, Codable, Sendable {
    case logical, physical
}

extension SnapshotSource {
    public init(kind: SourceKind, name: String? = nil) { self.init(kind: kind.rawValue, name: name) }

    /// The kind as a type; nil for a kind only a newer kho knows.
    public var sourceKind: SourceKind? { SourceKind(rawValue: kind) }
}

extension DumpManifest {
    public init(engine: SourceKind, serverVersion: String, checksumMethod: String, databases: [Database]) {
        self.init(engine: engine.rawValue, serverVersion: serverVersion, checksumMethod: checksumMethod, databases: databases)
    }

    /// The engine as a type; nil for an engine only a newer kho knows.
    public var engineKind: SourceKind? { SourceKind(rawValue: engine) }
}
