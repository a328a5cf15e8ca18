import Foundation
import KhoCore
import KhoSupport

/// PostgreSQL databases dumped with `pg_dump --format=plain` (uncompressed, so that it
/// deduplicates), streamed into the repository with no temporary file, plus the cluster's roles
/// and tablespaces (`pg_dumpall --globals-only`) as `globals.sql`.
///
/// For each database kho opens a REPEATABLE READ transaction, exports its snapshot, and has
/// `pg_dump --snapshot` read exactly that snapshot; in the same transaction it records the manifest:
/// per table the row count and the sum of the first 64 bits of each row's MD5 (over the row's text
/// form), which does not depend on the order the server returns rows.
public struct PostgresSource: BackupSource {
    public var name: String
    public var endpoint: DatabaseEndpoint
    public var databases: [String]
    public var includeGlobals: Bool
    public var limits: SourceLimits
    public var kind: String { "postgres" }
    public var summary: String {
        "postgres \(endpoint.user)@\(endpoint.host):\(endpoint.port)/\(databases.joined(separator: ","))"
    }

    public static let checksumMethod = "postgres: sum over rows of the first 64 bits of md5(row::text), as a decimal number"

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

    /// The whole environment of a PostgreSQL client kho starts: where to connect (see
    /// `DatabaseEndpoint.libpqEnvironment`), the password (if any) as PGPASSWORD for this child
    /// only, no secret of kho's, and none of the administrator's PG* settings for a drill's
    /// scratch server.
    func environment(database: String?) throws -> [String: String] {
        var env = endpoint.isolated ? ChildEnvironment.minimal() : ChildEnvironment.postgres()
        env["PGDATABASE"] = nil
        env["PGCONNECT_TIMEOUT"] = "10"
        env["PGAPPNAME"] = "kho"
        env.merge(endpoint.libpqEnvironment(database: database)) { _, new in new }
        if let password = try endpoint.password() { env["PGPASSWORD"] = password }
        return env
    }

    /// psql reads statements from kho only: no ~/.psqlrc (-X), stops at the first error. Every
    /// identifier kho writes into them is quoted (`quoteIdentifier`) and every value is a literal.
    func session(database: String) throws -> SQLSession {
        try SQLSession(engine: "postgres", program: try tool("psql"),
                       arguments: ["-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-w"],
                       environment: try environment(database: database), sourceName: name)
    }

    public func backup(with archiver: Archiver, repository: Repository) throws -> Snapshot {
        let pgDump = try tool("pg_dump")
        // Reach the server first, so that a wrong password or host gets one clear sentence.
        for database in databases {
            let probe = try session(database: database)
            _ = try probe.query("SELECT 1;")
            probe.close()
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
                let session = try session(database: database)
                let exported = try session.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\nSELECT pg_export_snapshot();")
                guard let snapshotID = exported.last, !snapshotID.isEmpty else {
                    throw KhoError(.source, "Source \(name): PostgreSQL did not export a snapshot for \(database).")
                }
                let facts = try session.query("SELECT current_setting('server_version'), pg_database_size(current_database());")
                let parts = (facts.last ?? "").split(separator: "\t").map(String.init)
                version.withLock { $0 = parts.first ?? "" }
                let size = Int64(parts.count > 1 ? parts[1] : "0") ?? 0
                let stream = CommandStream(
                    command: "exec \(shellQuote(pgDump)) --format=plain --snapshot=\(shellQuote(snapshotID)) -w",
                    displayName: "source \(name): pg_dump \(database)", environment: try environment(database: database), timeout: limits.timeout)
                try stream.start()
                return ({ try stream.read($0) }, {
                    try stream.finish()
                    // Still inside the exported snapshot: the manifest sees what the dump saw.
                    let tables = try PostgresSource.tables(session)
                    _ = try session.query("COMMIT;")
                    session.close()
                    recorded.withLock { $0.append(DumpManifest.Database(name: database, file: file, sizeBytes: size, tables: tables)) }
                })
            })
        }
        return try archiver.backupStreams(inputs, sourceName: name) { total in
            try SizeGuard.check(source: name, total: total, ratio: limits.minSizeRatio, repository: repository, host: limits.recordedHost)
            return try DumpManifest(engine: "postgres", serverVersion: version.current, checksumMethod: PostgresSource.checksumMethod,
                                    databases: recorded.current).json
        }
    }

    /// Every ordinary and partitioned table outside the system schemas, with its row count and
    /// checksum, in schema and name order.
    static func tables(_ session: SQLSession) throws -> [DumpManifest.Table] {
        let names = try session.query("""
            SELECT encode(convert_to(n.nspname, 'UTF8'), 'hex'), encode(convert_to(c.relname, 'UTF8'), 'hex') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
            ORDER BY n.nspname, c.relname;
            """)
        var tables: [DumpManifest.Table] = []
        for line in names where !line.isEmpty {
            let parts = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            // Names come as hex: psql prints them raw, and a tab or newline in one would split it.
            guard parts.count == 2, let schemaBytes = Hex.decode(parts[0]), let tableBytes = Hex.decode(parts[1]) else {
                throw KhoError(.source, "PostgreSQL returned a table name kho cannot read (\(line.prefix(80))): report this as a bug.")
            }
            let (schema, table) = (String(decoding: schemaBytes, as: UTF8.self), String(decoding: tableBytes, as: UTF8.self))
            let quoted = quoteIdentifier(schema) + "." + quoteIdentifier(table)
            let result = try session.query(
                "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0) FROM ONLY \(quoted) AS t;")
            let values = (result.last ?? "").split(separator: "\t").map(String.init)
            tables.append(DumpManifest.Table(schema: schema, name: table, rows: Int64(values.first ?? "") ?? -1,
                                             checksum: values.count > 1 ? values[1] : ""))
        }
        return tables
    }

    static func quoteIdentifier(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
