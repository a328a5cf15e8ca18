import Foundation
import KhoCore
import KhoSupport

/// A source as a policy describes it; `make()` gives the working source.
public struct SourceSpec: Sendable {
    /// One kind type for policies, snapshots and dumps (`SourceKind` in KhoCore).
    public typealias Kind = SourceKind
    public var name: String
    public var kind: Kind
    public var paths: [String] = []
    public var excludes: [String] = []
    public var endpoint: DatabaseEndpoint?
    public var databases: [String] = []
    public var globals = true
    public var sqlitePath: String?
    public var command: String?
    public var restoreCommand: String?
    /// A base backup's pg_basebackup --checkpoint.
    public var checkpoint: PostgresBaseBackup.Checkpoint = .spread
    public var limits = SourceLimits()
    /// How old the newest archived WAL segment of the source may be (`wal-rpo:`, PostgreSQL
    /// sources); nil: `SourceSpec.defaultWALRPO`.
    public var walRPO: TimeInterval?
    /// Five minutes: a few times a typical `archive_timeout` of 60 s, so that a quiet server that
    /// switches segments on the timeout is never late.
    public static let defaultWALRPO: TimeInterval = 300
    /// Where the source's name is written in its policy file (line, column).
    public var nameLocation: (line: Int, column: Int) = (1, 1)

    public init(name: String, kind: Kind) {
        self.name = name
        self.kind = kind
    }

    /// The database or command source, or nil for files (the archiver walks those itself).
    public func make() -> BackupSource? {
        switch kind {
        case .files, .stdin: return nil
        case .postgres: return PostgresSource(name: name, endpoint: endpoint!, databases: databases, includeGlobals: globals, limits: limits)
        case .mariadb: return MariaDBSource(name: name, endpoint: endpoint!, databases: databases, limits: limits)
        case .sqlite: return SQLiteSource(name: name, path: sqlitePath!, limits: limits)
        case .command: return CommandSource(name: name, command: command!, restoreCommand: restoreCommand, limits: limits)
        case .postgresBase: return PostgresBaseBackup(name: name, endpoint: endpoint!, checkpoint: checkpoint, limits: limits)
        }
    }

    public var summary: String {
        switch kind {
        case .files: return "files \(paths.joined(separator: " "))"
        default: return make()?.summary ?? kind.rawValue
        }
    }
}
