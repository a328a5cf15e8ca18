import Foundation
import KhoCore
import KhoSupport

/// What a database restore did, for the summary and the drill evidence.
public struct DatabaseRestoreResult: Codable, Sendable {
    public var engine: SourceKind
    public var database: String
    public var bytesLoaded: Int64
    public var seconds: Double
    /// When --replace moved an existing database aside, its new name.
    public var replacedDatabaseKeptAs: String?
    public var comparison: ManifestComparison?
}

/// Loads a stored dump into a database through the engine's own client, streaming from the
/// repository. It never overwrites: a target that exists and holds tables is refused unless
/// `replace` is set, and then the dump is loaded into a new database whose name is swapped in only
/// after the load succeeded. The engines' own loaders (`PostgresLoader`, `MariaDBLoader`) do the work.
public struct DatabaseLoader {
    public var engine: SourceKind
    public var target: DatabaseEndpoint
    public var replace: Bool
    public var sourceName: String

    public init(engine: SourceKind, target: DatabaseEndpoint, replace: Bool, sourceName: String) {
        self.engine = engine
        self.target = target
        self.replace = replace
        self.sourceName = sourceName
    }

    /// Checks the target before anything is read from the repository: whether it exists and is empty.
    public func plan() throws -> (exists: Bool, empty: Bool) {
        switch engine {
        case .postgres: return try PostgresLoader(target: target, sourceName: sourceName).plan()
        case .mariadb: return try MariaDBLoader(target: target, sourceName: sourceName).plan()
        default:
            throw KhoError(.usage, "Restoring into \(engine) databases is not supported: use --to-file and load it with the engine's tools.")
        }
    }

    /// Creates the database (or a scratch one for `replace`), feeds it the dump from `produce`, and
    /// swaps names when asked. `produce` writes the dump into the given sink.
    public func load(expected: DumpManifest.Database?, produce: (_ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws -> DatabaseRestoreResult {
        let start = Date()
        let state = try plan()
        if state.exists && !state.empty && !replace {
            throw KhoError(.usage, "The database \(target.database) on \(target.host):\(target.port) exists and is not empty: restore into a new name, or pass --replace to load into a new database and swap it in when the load succeeded.")
        }
        let loadName = state.exists && replace ? "\(target.database)__kho_restore_\(UInt32.random(in: 0...UInt32.max))" : target.database
        let swap = state.exists && replace
        let create = !state.exists || replace
        if engine == .mariadb {
            return try MariaDBLoader(target: target, sourceName: sourceName)
                .load(into: loadName, replace: swap, createDatabase: create, expected: expected, start: start, produce: produce)
        }
        return try PostgresLoader(target: target, sourceName: sourceName)
            .load(into: loadName, replace: swap, createDatabase: create, expected: expected, start: start, produce: produce)
    }
}
