import Foundation
import KhoCore
import KhoSupport

/// PostgreSQL databases dumped with `pg_dump --format=plain` (uncompressed, so that it
/// deduplicates), streamed into the repository with no temporary file, plus the cluster's roles
/// and tablespaces (`pg_dumpall --globals-only`) as `globals.sql`.
///
/// For each database kho opens a REPEATABLE READ transaction on its own connection, exports its
/// snapshot, and has `pg_dump --snapshot` read exactly that snapshot; in the same transaction it
/// records the manifest (`PostgresManifest`), the schema fingerprint (`<db>.schema.json`,
/// `PostgresFingerprint`) and what a restore onto a fresh server needs besides the dump
/// (`<db>.globals.json`, `PostgresGlobals`: the database's properties, its roles, tablespaces).
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

    /// pg_dumpall --globals-only: the whole cluster's roles and tablespaces, for an operator who
    /// wants them; restores use each database's own globals file since issue 19.
    static let clusterGlobalsFile = "globals.sql"

    /// The files one database leaves in the snapshot: its dump, its schema fingerprint, its globals.
    static func files(_ database: String) -> (dump: String, schema: String, globals: String) {
        ("\(database).sql", "\(database).schema.json", "\(database).globals.json")
    }

    /// Every file name of the snapshot must be one file: a database named `globals` would have
    /// its dump in the cluster's globals.sql, and a database named twice would be dumped twice.
    static func checkFileNames(databases: [String], includeGlobals: Bool, source: String) throws {
        var seen: Set<String> = includeGlobals ? [clusterGlobalsFile] : []
        for database in databases {
            let files = PostgresSource.files(database)
            for file in [files.dump, files.schema, files.globals] where !seen.insert(file).inserted {
                if file == clusterGlobalsFile {
                    throw KhoError(.usage, "Source \(source): the database globals would be dumped to globals.sql, which holds the cluster's roles (pg_dumpall --globals-only): back it up with --no-globals (its roles and properties are recorded in globals.globals.json all the same), or in a source of its own with --no-globals.")
                }
                throw KhoError(.usage, "Source \(source): the database \(database) is named twice (or clashes with another's file \(file)): name each database once.")
            }
        }
    }

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

    /// The server's version and the database's size, for the manifest.
    static func facts(_ connection: PostgresConnection) throws -> (version: String, size: Int64) {
        let facts = try connection.query("SELECT current_setting('server_version'), pg_database_size(current_database())").first ?? []
        return ((facts.first ?? nil) ?? "", Int64((facts.count > 1 ? facts[1] : nil) ?? "0") ?? 0)
    }

    /// What a dump records of a database besides the dump itself, read on `connection` inside the
    /// dump's exported snapshot: the manifest's entry, the schema fingerprint and the globals.
    struct Described {
        var entry: DumpManifest.Database
        var schema: [UInt8]
        var globals: [UInt8]
    }

    /// Reads what `Described` holds. The tables first: the fingerprint fixes output settings that
    /// the checksums must not see. `sequenceValues`: what the dump set its sequences to, when it
    /// has been read already.
    static func describe(_ connection: PostgresConnection, database: String, sizeBytes: Int64,
                         sequenceValues: [String: PostgresSequenceScanner.Value]?) throws -> Described {
        let files = PostgresSource.files(database)
        let tables = try PostgresManifest.tables(connection)
        let (fingerprint, globals) = try PostgresFingerprint.read(connection, local: true, sequenceValues: sequenceValues)
        let entry = DumpManifest.Database(name: database, file: files.dump, sizeBytes: sizeBytes, tables: tables,
                                          schemaFile: files.schema, schemaDigest: try fingerprint.digest, globalsFile: files.globals)
        return Described(entry: entry, schema: try fingerprint.encoded(), globals: try globals.encoded())
    }

    /// `pg_dump` of `database` reading the exported `snapshot` (not started).
    func dumpStream(_ pgDump: String, database: String, snapshot: String) throws -> CommandStream {
        CommandStream(command: "exec \(shellQuote(pgDump)) --format=plain --snapshot=\(shellQuote(snapshot)) -w",
                      displayName: "source \(name): pg_dump \(database)", environment: try environment(database: database), timeout: limits.timeout)
    }

    public func dumpPlan() throws -> DumpPlan {
        let pgDump = try tool("pg_dump")
        // Reach the server first, so that a wrong password or host gets one clear sentence.
        for database in databases {
            try connect(database: database).query("SELECT 1")
        }
        try PostgresSource.checkFileNames(databases: databases, includeGlobals: includeGlobals, source: name)
        var inputs: [Archiver.StreamInput] = []
        if includeGlobals {
            let pgDumpAll = try tool("pg_dumpall")
            inputs.append(Archiver.StreamInput(name: PostgresSource.clusterGlobalsFile) {
                let stream = CommandStream(command: "exec \(shellQuote(pgDumpAll)) --globals-only -w",
                                           displayName: "source \(name): pg_dumpall --globals-only", environment: try environment(database: nil),
                                           timeout: limits.timeout)
                try stream.start()
                return ({ try stream.read($0) }, { try stream.finish() })
            })
        }
        let recorded = Locked<[DumpManifest.Database]>([])
        let extras = Locked<[String: [UInt8]]>([:])
        let version = Locked("")
        for database in databases {
            let files = PostgresSource.files(database)
            inputs.append(Archiver.StreamInput(name: files.dump) {
                let connection = try connect(database: database)
                try connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                let (snapshotID, marker) = try PostgresMarker.exportWithMarker(dump: connection, other: { try connect(database: database) },
                                                                               source: name, database: database)
                var pitrMarker: DumpManifest.PITRMarker?
                var markerAbsent: String?
                switch marker {
                case .made(let made): pitrMarker = made
                case .none(let why): markerAbsent = String(why.prefix(300))
                }
                let facts = try PostgresSource.facts(connection)
                version.withLock { $0 = facts.version }
                let stream = try dumpStream(pgDump, database: database, snapshot: snapshotID)
                try stream.start()
                let sequences = PostgresSequenceScanner()
                return ({ buffer in
                    let count = try stream.read(buffer)
                    sequences.feed(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
                    return count
                }, {
                    try stream.finish()
                    sequences.finish()
                    // Still inside the exported snapshot: the manifest, the schema and the globals
                    // describe what the dump saw.
                    let described = try PostgresSource.describe(connection, database: database, sizeBytes: facts.size, sequenceValues: sequences.values)
                    try connection.query("COMMIT")
                    extras.withLock {
                        $0[files.schema] = described.schema
                        $0[files.globals] = described.globals
                    }
                    recorded.withLock {
                        var entry = described.entry
                        entry.pitrMarker = pitrMarker
                        entry.pitrMarkerAbsent = markerAbsent
                        $0.append(entry)
                    }
                })
            })
            for file in [files.schema, files.globals] {
                inputs.append(Archiver.StreamInput.bytes(name: file) {
                    guard let bytes = extras.current[file] else {
                        throw KhoError(.failure, "Source \(name): \(file) was not recorded with the dump of \(database): report this as a bug.")
                    }
                    return bytes
                })
            }
        }
        return DumpPlan(streams: inputs) {
            try DumpManifest(engine: .postgres, serverVersion: version.current, checksumMethod: PostgresSource.checksumMethod,
                             databases: recorded.current).json
        }
    }
}
