import Foundation
import KhoCore
import KhoSupport

/// PostgreSQL databases dumped with `pg_dump --format=plain` (uncompressed, so that it
/// deduplicates), streamed into the repository with no temporary file, plus the cluster's roles
/// and tablespaces (`pg_dumpall --globals-only`) as `globals.sql`.
///
/// For each database kho opens a REPEATABLE READ transaction on its own connection, exports its
/// snapshot, and has `pg_dump --snapshot` read exactly that snapshot; in the same transaction it
/// records the manifest (`PostgresManifest`).
public struct PostgresSource: BackupSource {
    public var name: String
    public var endpoint: DatabaseEndpoint
    public var databases: [String]
    public var includeGlobals: Bool
    public var limits: SourceLimits
    public var kind: SourceKind { .postgres }
    public var summary: String {
        "postgres \(endpoint.user)@\(endpoint.host):\(endpoint.port)/\(databases.joined(separator: ","))"
    }

    public static let checksumMethod = PostgresManifest.checksumMethod

    public init(name: String, endpoint: DatabaseEndpoint, databases: [String], includeGlobals: Bool = true, limits: SourceLimits = SourceLimits()) {
        self.name = name
        self.endpoint = endpoint
        self.databases = databases
        self.includeGlobals = includeGlobals
        self.limits = limits
    }

    func tool(_ program: String) throws -> String {
        guard let path = findProgram(program) else {
            throw KhoError(.source, "Source \(name): \(program) is not installed or not on PATH: install Debian's postgresql-client.")
        }
        return path
    }

    /// The whole environment of a PostgreSQL tool kho starts (pg_dump, pg_dumpall, psql loading a
    /// dump): where to connect (see `DatabaseEndpoint.libpqEnvironment`), the password (if any) as
    /// PGPASSWORD for this child only, no secret of kho's, and none of the administrator's PG*
    /// settings for a drill's scratch server.
    func environment(database: String?) throws -> [String: String] {
        var env = endpoint.isolated ? ChildEnvironment.minimal() : ChildEnvironment.postgres()
        env["PGDATABASE"] = nil
        env["PGCONNECT_TIMEOUT"] = "10"
        env["PGAPPNAME"] = "kho"
        env.merge(endpoint.libpqEnvironment(database: database)) { _, new in new }
        if let password = try endpoint.password() { env["PGPASSWORD"] = password }
        return env
    }

    /// A libpq connection to `database` for kho's own queries.
    func connect(database: String) throws -> PostgresConnection {
        try PostgresConnection(endpoint: endpoint, database: database, source: name)
    }

    public func dumpPlan() throws -> DumpPlan {
        let pgDump = try tool("pg_dump")
        // Reach the server first, so that a wrong password or host gets one clear sentence.
        for database in databases {
            try connect(database: database).query("SELECT 1")
        }
        var inputs: [Archiver.StreamInput] = []
        if includeGlobals {
            let pgDumpAll = try tool("pg_dumpall")
            inputs.append(Archiver.StreamInput(name: "globals.sql") {
                let stream = CommandStream(command: "exec \(shellQuote(pgDumpAll)) --globals-only -w",
                                           displayName: "source \(name): pg_dumpall --globals-only", environment: try environment(database: nil),
                                           timeout: limits.timeout)
                try stream.start()
                return ({ try stream.read($0) }, { try stream.finish() })
            })
        }
        let recorded = Locked<[DumpManifest.Database]>([])
        let version = Locked("")
        for database in databases {
            let file = "\(database).sql"
            inputs.append(Archiver.StreamInput(name: file) {
                let connection = try connect(database: database)
                try connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                guard let snapshotID = try connection.value("SELECT pg_export_snapshot()"), !snapshotID.isEmpty else {
                    throw KhoError(.source, "Source \(name): PostgreSQL did not export a snapshot for \(database).")
                }
                let facts = try connection.query("SELECT current_setting('server_version'), pg_database_size(current_database())").first ?? []
                version.withLock { $0 = (facts.first ?? nil) ?? "" }
                let size = Int64((facts.count > 1 ? facts[1] : nil) ?? "0") ?? 0
                let stream = CommandStream(
                    command: "exec \(shellQuote(pgDump)) --format=plain --snapshot=\(shellQuote(snapshotID)) -w",
                    displayName: "source \(name): pg_dump \(database)", environment: try environment(database: database), timeout: limits.timeout)
                try stream.start()
                return ({ try stream.read($0) }, {
                    try stream.finish()
                    // Still inside the exported snapshot: the manifest sees what the dump saw.
                    let tables = try PostgresManifest.tables(connection)
                    try connection.query("COMMIT")
                    recorded.withLock { $0.append(DumpManifest.Database(name: database, file: file, sizeBytes: size, tables: tables)) }
                })
            })
        }
        return DumpPlan(streams: inputs) {
            try DumpManifest(engine: .postgres, serverVersion: version.current, checksumMethod: PostgresSource.checksumMethod,
                             databases: recorded.current).json
        }
    }
}
