import Foundation
import KhoCore
import KhoSupport

/// Restores a PostgreSQL dump: kho's own statements (does the target exist, create, rename, drop)
/// go through a libpq connection with every name quoted and every value a parameter; the dump
/// itself is loaded by `psql`, the engine's own tool, in one transaction.
struct PostgresRestorer: EngineRestorer {
    var target: DatabaseEndpoint
    var sourceName: String

    var tools: PostgresSource {
        PostgresSource(name: sourceName, endpoint: target, databases: [target.database], includeGlobals: false)
    }

    func connect(_ database: String) throws -> PostgresConnection {
        try PostgresConnection(endpoint: target, database: database, source: sourceName)
    }

    func state() throws -> (exists: Bool, empty: Bool) {
        let exists = try connect("postgres").value("SELECT count(*) FROM pg_database WHERE datname = $1", [target.database]) == "1"
        guard exists else { return (false, true) }
        let count = try connect(target.database).value("""
            SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r','p','v','m','S','f') AND n.nspname NOT IN ('pg_catalog','information_schema')
              AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
            """) ?? "0"
        return (true, count == "0")
    }

    func plan(_ request: RestoreRequest) throws -> DatabaseRestorePlan {
        let state = try state()
        return DatabaseRestorePlan.basic(engine: .postgres, request: request, exists: state.exists, empty: state.empty)
    }

    func load(_ plan: DatabaseRestorePlan, _ request: RestoreRequest, progress: @escaping (Int64) -> Void) throws -> LoadOutcome {
        let quote = SQLIdentifier.postgres
        let loadName = plan.loadName, createDatabase = plan.createDatabase, replace = plan.swap
        let admin = try connect("postgres")
        var notes: [String] = []
        if request.options.scratch, request.files.size("globals.sql") != nil {
            notes.append(try loadGlobalsIntoScratch(request))
        }
        let produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void = { write in
            try request.files.stream(request.dumpFile) { chunk in
                try write(chunk)
                progress(Int64(chunk.count))
            }
        }
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
        return LoadOutcome(bytes: bytes, replacedDatabaseKeptAs: keptAs, notes: notes)
    }

    func tables(_ plan: DatabaseRestorePlan, _ request: RestoreRequest) throws -> [DumpManifest.Table] {
        try PostgresManifest.tables(try connect(target.database))
    }

    func fingerprints(_ plan: DatabaseRestorePlan, _ request: RestoreRequest, recorded: SchemaFingerprint) throws
        -> (expected: SchemaFingerprint, actual: SchemaFingerprint) {
        throw KhoError(.failure, "PostgreSQL schema fingerprints are not compared yet.")
    }

    /// A drill's scratch cluster gets the cluster's roles and tablespaces first, so that ownership
    /// in the dump resolves; "already exists" errors are expected. Without the production password
    /// hashes: the scratch cluster is no place to keep (or crack) them, and its roles need none.
    private func loadGlobalsIntoScratch(_ request: RestoreRequest) throws -> String {
        let stripped = GlobalsFilter.withoutPasswords(try request.files.read("globals.sql", limit: GlobalsFilter.limit))
        let fed = try ClientFeederAccess.loadIgnoringErrors(endpoint: target.with(database: "postgres")) { write in
            try stripped.bytes.withUnsafeBytes { try write($0) }
        }
        return "roles and tablespaces loaded into the scratch cluster (\(fed) bytes; \(stripped.removed) password hashes left out)"
    }

    private func feedPsql(database: String, produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws -> Int64 {
        let psql = try tools.tool("psql")
        let env = try tools.environment(database: database)
        let arguments = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-w", "--single-transaction", "-o", "/dev/null"]
        return try ClientFeeder.feed(program: psql, arguments: arguments, environment: env, engine: "postgres",
                                     sourceName: sourceName, produce: produce)
    }
}
