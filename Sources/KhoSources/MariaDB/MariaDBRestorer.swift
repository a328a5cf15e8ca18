import Foundation
import KhoCore
import KhoSupport

/// Restores a MariaDB dump: kho's own statements (does the target exist, create, drop, swap)
/// go through a Connector/C connection with every name quoted and every value a parameter; the
/// dump itself is loaded by the `mariadb` client in sandbox mode (statements only, none of the
/// client's own commands), the engine's own tool.
struct MariaDBRestorer: EngineRestorer {
    var target: DatabaseEndpoint
    var sourceName: String

    func connect() throws -> MariaDBConnection {
        try MariaDBConnection(endpoint: target, database: nil, source: sourceName)
    }

    func state() throws -> (exists: Bool, empty: Bool) {
        let connection = try connect()
        let exists = try connection.value("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", [target.database]) == "1"
        guard exists else { return (false, true) }
        let count = try connection.value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", [target.database]) ?? "0"
        return (true, count == "0")
    }

    /// Drops every table and view of `database` (what a failed load into an existing, empty
    /// database left there).
    static func dropTablesAndViews(_ admin: MariaDBConnection, database: String) throws {
        let quote = SQLIdentifier.mariadb
        let objects = try admin.query("SELECT TABLE_TYPE, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", [database])
        try admin.query("SET FOREIGN_KEY_CHECKS = 0")
        for object in objects {
            guard object.count == 2, let name = object[1] else { continue }
            try admin.query("DROP \(object[0] == "VIEW" ? "VIEW" : "TABLE") IF EXISTS \(quote(database)).\(quote(name))")
        }
        try admin.query("SET FOREIGN_KEY_CHECKS = 1")
    }

    /// Loads into the database `loadName` (created first when `createDatabase`). With `replace`,
    /// `loadName` is a scratch database whose tables are swapped with the target's in one atomic
    /// RENAME TABLE after the load succeeded.
    func plan(_ request: RestoreRequest) throws -> DatabaseRestorePlan {
        let state = try state()
        return DatabaseRestorePlan.basic(engine: .mariadb, request: request, exists: state.exists, empty: state.empty)
    }

    func load(_ plan: DatabaseRestorePlan, _ request: RestoreRequest, progress: @escaping (Int64) -> Void) throws -> LoadOutcome {
        let quote = SQLIdentifier.mariadb
        let loadName = plan.loadName, createDatabase = plan.createDatabase, replace = plan.swap
        let expected = request.recorded
        let produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void = { write in
            try request.files.stream(request.dumpFile) { chunk in
                try write(chunk)
                progress(Int64(chunk.count))
            }
        }
        let original = target
        let loadTarget = target.with(database: loadName)
        let admin = try connect()
        if createDatabase {
            try admin.query("CREATE DATABASE \(quote(loadName)) CHARACTER SET utf8mb4")
        }
        let client = try MariaDBSource.tool(["mariadb", "mysql"], source: sourceName)
        let sourceDatabase = expected?.name ?? original.database
        var bytes: Int64 = 0
        do {
            // The dump names its database (USE `x`); point it at the target instead.
            bytes = try ClientFeeder.feed(program: client,
                                          arguments: MariaDBSource.arguments(loadTarget, ["--sandbox", "--database=" + loadName]),
                                          environment: try MariaDBSource.environment(loadTarget), engine: "mariadb", sourceName: sourceName) { write in
                try withoutActuallyEscaping(write) { write in
                    let filter = DatabaseNameFilter(from: sourceDatabase, to: loadName)
                    try produce { chunk in try filter.process(chunk, write) }
                    try filter.flush(write)
                }
            }
        } catch {
            // try?: the load's own error is the one to report; what is left is named in no manifest
            // and holds nothing that is not in the repository.
            if createDatabase {
                _ = try? admin.query("DROP DATABASE IF EXISTS \(quote(loadName))")
            } else {
                // The target existed without tables (plan() checked) and MariaDB cannot roll back
                // DDL: the tables and views it holds now came from this failed load.
                try? MariaDBRestorer.dropTablesAndViews(admin, database: loadName)
            }
            throw error
        }
        var keptAs: String?
        if replace {
            // RENAME TABLE cannot move views or tables with triggers to another database, and
            // routines and events stay where they are: swapping would fail half way or mix the old
            // database's objects into the restored one. Refuse before touching the original.
            let unmovable = try admin.query("""
                SELECT CONCAT(kind, ' ', db, '.', name) FROM (
                  SELECT 'view' AS kind, TABLE_SCHEMA AS db, TABLE_NAME AS name FROM information_schema.VIEWS
                  UNION ALL SELECT 'trigger', TRIGGER_SCHEMA, TRIGGER_NAME FROM information_schema.TRIGGERS
                  UNION ALL SELECT LOWER(ROUTINE_TYPE), ROUTINE_SCHEMA, ROUTINE_NAME FROM information_schema.ROUTINES
                  UNION ALL SELECT 'event', EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS) AS objects
                WHERE db IN (?, ?) ORDER BY 1
                """, [original.database, loadName]).compactMap { $0.first ?? nil }
            if !unmovable.isEmpty {
                // try?: the refusal below is what matters; a scratch database left behind has a
                // __kho_restore_ name.
                _ = try? admin.query("DROP DATABASE IF EXISTS \(quote(loadName))")
                let shown = unmovable.prefix(5).joined(separator: ", ") + (unmovable.count > 5 ? " and \(unmovable.count - 5) more" : "")
                throw KhoError(.source, "Source \(sourceName): the dump loaded, but MariaDB cannot move views, triggers, routines or events between databases (\(shown)), so --replace cannot swap it in; \(original.database) was left as it was: restore into a new database name and point the application at it, or drop \(original.database) and restore again.")
            }
            let aside = "\(original.database)__kho_replaced_\(Int(Date().timeIntervalSince1970))"
            try admin.query("CREATE DATABASE \(quote(aside))")
            let old = try MariaDBManifest.names(admin, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", [original.database])
            let new = try MariaDBManifest.names(admin, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", [loadName])
            let moves = old.map { "\(quote(original.database)).\(quote($0)) TO \(quote(aside)).\(quote($0))" }
                + new.map { "\(quote(loadName)).\(quote($0)) TO \(quote(original.database)).\(quote($0))" }
            if !moves.isEmpty { try admin.query("RENAME TABLE \(moves.joined(separator: ", "))") }
            try admin.query("DROP DATABASE \(quote(loadName))")
            keptAs = aside
        }
        return LoadOutcome(bytes: bytes, replacedDatabaseKeptAs: keptAs, notes: [])
    }

    func tables(_ plan: DatabaseRestorePlan, _ request: RestoreRequest) throws -> [DumpManifest.Table] {
        try MariaDBManifest.tables(try connect(), database: target.database)
    }

    func fingerprints(_ plan: DatabaseRestorePlan, _ request: RestoreRequest, recorded: SchemaFingerprint) throws
        -> (expected: SchemaFingerprint, actual: SchemaFingerprint) {
        throw KhoError(.failure, "MariaDB schema fingerprints are not compared yet.")
    }
}
