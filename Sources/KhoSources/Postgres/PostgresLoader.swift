import Foundation
import KhoCore
import KhoSupport

/// Restores a PostgreSQL dump: kho's own statements (does the target exist, create, rename, drop)
/// go through a libpq connection with every name quoted and every value a parameter; the dump
/// itself is loaded by `psql`, the engine's own tool, in one transaction.
struct PostgresLoader {
    var target: DatabaseEndpoint
    var sourceName: String

    var tools: PostgresSource {
        PostgresSource(name: sourceName, endpoint: target, databases: [target.database], includeGlobals: false)
    }

    func connect(_ database: String) throws -> PostgresConnection {
        try PostgresConnection(endpoint: target, database: database, source: sourceName)
    }

    func plan() throws -> (exists: Bool, empty: Bool) {
        let exists = try connect("postgres").value("SELECT count(*) FROM pg_database WHERE datname = $1", [target.database]) == "1"
        guard exists else { return (false, true) }
        let count = try connect(target.database).value("""
            SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r','p','v','m','S','f') AND n.nspname NOT IN ('pg_catalog','information_schema')
              AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
            """) ?? "0"
        return (true, count == "0")
    }

    /// Loads into the database `loadName` (created first when `createDatabase`); with `replace`,
    /// `loadName` is a new database renamed to the target's name once the load succeeded, and the
    /// old one is kept under another name.
    func load(into loadName: String, replace: Bool, createDatabase: Bool, expected: DumpManifest.Database?, start: Date,
              produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws -> DatabaseRestoreResult {
        let quote = SQLIdentifier.postgres
        let admin = try connect("postgres")
        if createDatabase {
            try admin.query("CREATE DATABASE \(quote(loadName)) TEMPLATE template0")
        }
        var bytes: Int64 = 0
        do {
            bytes = try feedPsql(database: loadName, produce: produce)
        } catch {
            // The database kho created holds a half-loaded dump: remove it; the original is untouched.
            if createDatabase {
                // try?: the load's own error is the one to report; a database left behind has a
                // __kho_restore_ name and holds nothing that is not in the repository.
                _ = try? admin.query("DROP DATABASE IF EXISTS \(quote(loadName))")
            }
            throw error
        }
        var keptAs: String?
        if replace {
            let aside = "\(target.database)__kho_replaced_\(Int(Date().timeIntervalSince1970))"
            try admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                            [target.database])
            try admin.query("ALTER DATABASE \(quote(target.database)) RENAME TO \(quote(aside))")
            try admin.query("ALTER DATABASE \(quote(loadName)) RENAME TO \(quote(target.database))")
            keptAs = aside
        }
        let seconds = Date().timeIntervalSince(start)
        var comparison: ManifestComparison?
        if let expected {
            comparison = ManifestComparison(expected: expected.tables, actual: try PostgresManifest.tables(try connect(target.database)))
        }
        return DatabaseRestoreResult(engine: .postgres, database: target.database, bytesLoaded: bytes, seconds: seconds,
                                     replacedDatabaseKeptAs: keptAs, comparison: comparison)
    }

    private func feedPsql(database: String, produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws -> Int64 {
        let psql = try tools.tool("psql")
        let env = try tools.environment(database: database)
        let arguments = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-w", "--single-transaction", "-o", "/dev/null"]
        return try ClientFeeder.feed(program: psql, arguments: arguments, environment: env, engine: "postgres",
                                     sourceName: sourceName, produce: produce)
    }
}
