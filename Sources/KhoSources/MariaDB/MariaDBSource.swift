import Foundation
import KhoCore
import KhoSupport

/// MariaDB databases dumped with `mariadb-dump --single-transaction --routines --events
/// --triggers`, streamed into the repository; beside each dump, read in the dump's transaction once
/// it ended, its schema fingerprint (`<db>.schema.json`, `MariaDBSchema`) and what it needs around
/// it on a fresh server (`<db>.globals.json`, `MariaDBGlobals`: character set, collation, comment,
/// users and roles with their privileges on it). Reading `mysql.*` needs SELECT on it (MariaDB 10.5
/// or later).
///
/// To record a manifest of exactly what the dump reads, kho briefly takes a global read lock,
/// opens its own consistent-snapshot transaction, starts the dump, waits until the dump's
/// transaction exists (both then see the same committed state), and releases the lock: writes
/// pause for that moment only. The manifest: `MariaDBManifest`.
public struct MariaDBSource: BackupSource {
    public var name: String
    public var endpoint: DatabaseEndpoint
    public var databases: [String]
    public var limits: SourceLimits
    public var kind: SourceKind { .mariadb }
    public var summary: String { "mariadb \(endpoint.user)@\(endpoint.host):\(endpoint.port)/\(databases.joined(separator: ","))" }

    public static let checksumMethod = MariaDBManifest.checksumMethod

    public init(name: String, endpoint: DatabaseEndpoint, databases: [String], limits: SourceLimits = SourceLimits()) {
        self.name = name
        self.endpoint = endpoint
        self.databases = databases
        self.limits = limits
    }

    static func tool(_ names: [String], source: String) throws -> String {
        for name in names { if let path = findProgram(name) { return path } }
        throw KhoError(.source, "Source \(source): \(names[0]) is not installed or not on PATH: install Debian's mariadb-client.")
    }

    /// The whole environment of a MariaDB tool kho starts (mariadb-dump, the client loading a
    /// dump): no secret of kho's, the password (if any) as MYSQL_PWD for this child only.
    static func environment(_ endpoint: DatabaseEndpoint) throws -> [String: String] {
        var env: [String: String] = [:]
        if let password = try endpoint.password() { env["MYSQL_PWD"] = password }
        return ChildEnvironment.minimal(env)
    }

    /// Options for the client or mariadb-dump: `options`, then where the server is and who logs in,
    /// each as one `--name=value` word (a value is never read as an option). For a scratch server,
    /// no option file is read (`--no-defaults`, which must come first).
    static func arguments(_ endpoint: DatabaseEndpoint, _ options: [String]) -> [String] {
        let place = endpoint.isSocket ? ["--protocol=SOCKET", "--socket=" + endpoint.host]
            : ["--protocol=TCP", "--host=" + endpoint.host, "--port=" + String(endpoint.port)]
        return (endpoint.isolated ? ["--no-defaults"] : []) + options + place + ["--user=" + endpoint.user]
    }

    /// `CHECK TABLE … EXTENDED` on `tables` of `database`: one line per row the server returns
    /// (table, op, message type, text, tab-separated), every name quoted.
    package static func checkTables(_ endpoint: DatabaseEndpoint, database: String, tables: [String], source: String) throws -> [String] {
        guard !tables.isEmpty else { return [] }
        let connection = try MariaDBConnection(endpoint: endpoint, database: nil, source: source)
        let names = tables.map { SQLIdentifier.mariadb(database) + "." + SQLIdentifier.mariadb($0) }.joined(separator: ", ")
        return try connection.query("CHECK TABLE \(names) EXTENDED").map { row in row.map { $0 ?? "NULL" }.joined(separator: "\t") }
    }

    /// Whether this mariadb-dump can dump the history rows of system-versioned tables
    /// (`--dump-history`, MariaDB 10.11 and later): without it a restore keeps only their current rows.
    static func dumpsHistory(_ program: String) -> Bool {
        historyOption.withLock { known in
            if let answer = known[program] { return answer }
            // try?: a mariadb-dump whose help cannot be read is asked for nothing new; the dump
            // itself then says what is wrong.
            let answer = (try? helpText(program))?.contains("--dump-history") ?? false
            known[program] = answer
            return answer
        }
    }
    private static let historyOption = Locked<[String: Bool]>([:])

    private static func helpText(_ program: String) throws -> String {
        let child = try Subprocess(program: program, arguments: ["--no-defaults", "--help"], environment: ChildEnvironment.minimal(),
                                   output: .pipe)
        var text: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = try buffer.withUnsafeMutableBytes { try child.read($0) }
            if count == 0 { break }
            text += buffer[0..<count]
        }
        _ = child.wait()
        return String(decoding: text, as: UTF8.self)
    }

    /// The tables of the `mysql` schema the globals are read from (`MariaDBGlobalsReader`).
    static let accountTables = ["global_priv", "db", "tables_priv", "columns_priv", "procs_priv", "roles_mapping"]

    /// Refuses before any dump starts when the login cannot read the accounts and privileges a
    /// restore onto a fresh server needs: otherwise the dump would stream whole and fail at its end.
    func checkAccountsReadable() throws {
        let connection = try MariaDBConnection(endpoint: endpoint, database: nil, source: name)
        for table in MariaDBSource.accountTables {
            do {
                try connection.query("SELECT 1 FROM mysql.\(SQLIdentifier.mariadb(table)) LIMIT 0")
            } catch let error as KhoError where error.kind == .source {
                throw KhoError(.source, "Source \(name): the user \(endpoint.user) cannot read mysql.\(table), which kho reads to back up the database's users and privileges (\(error.message)): GRANT SELECT ON mysql.* TO the backup user and run the backup again.")
            }
        }
    }

    public func dumpPlan() throws -> DumpPlan {
        let dump = try MariaDBSource.tool(["mariadb-dump", "mysqldump"], source: name)
        let env = try MariaDBSource.environment(endpoint)
        try checkAccountsReadable()
        let recorded = Locked<[DumpManifest.Database]>([])
        let version = Locked("")
        var inputs: [Archiver.StreamInput] = []
        for database in databases {
            let file = "\(database).sql"
            let schemaFile = "\(database).schema.json", globalsFile = "\(database).globals.json"
            // Read in the dump's transaction once the dump ended, stored right after it.
            let recordedFiles = Locked<[String: [UInt8]]>([:])
            inputs.append(Archiver.StreamInput(name: file) {
                let connection = try MariaDBConnection(endpoint: endpoint, database: database, source: name)
                // While FLUSH TABLES WITH READ LOCK waits (for a long query, LOCK TABLES, a schema
                // change), every write on the server waits behind it: bound the wait by the source's
                // timeout, and by a minute at most.
                let lockWait = max(1, Int(min(limits.timeout ?? 60, 60).rounded(.up)))
                try connection.query("SET SESSION lock_wait_timeout = \(lockWait)")
                try connection.query("FLUSH TABLES WITH READ LOCK")
                try connection.query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                // Still under the lock: the binary log position is the snapshot's, exactly.
                let binlog = try MariaDBBinlogPosition.read(connection)
                let facts = try connection.query("SELECT VERSION(), COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()").first ?? []
                version.withLock { $0 = (facts.first ?? nil) ?? "" }
                let size = Int64((facts.count > 1 ? facts[1] : nil) ?? "0") ?? 0
                let options = MariaDBSource.arguments(endpoint, ["--single-transaction", "--routines", "--events", "--triggers", "--hex-blob"]
                                                          + (MariaDBSource.dumpsHistory(dump) ? ["--dump-history"] : []))
                let stream = CommandStream(
                    command: "exec \(shellQuote(dump)) \(options.map(shellQuote).joined(separator: " ")) --databases -- \(shellQuote(database))",
                    displayName: "source \(name): mariadb-dump \(database)", environment: env, timeout: limits.timeout)
                try stream.start()
                // mariadb-dump starts its consistent-snapshot transaction before it names the first
                // database; once that line is out, both snapshots exist and writes may resume.
                var prefix: [UInt8] = []
                let marker = Array("\n-- Current Database:".utf8)
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let n = try buffer.withUnsafeMutableBytes { try stream.read($0) }
                    if n == 0 { break }
                    prefix.append(contentsOf: buffer[0..<n])
                    if prefix.count > 4 << 20 || prefix.firstRange(of: marker) != nil { break }
                }
                do {
                    try connection.query("UNLOCK TABLES")
                } catch {
                    stream.terminate()
                    throw error
                }
                var served = 0
                return ({ out in
                    if served < prefix.count {
                        let n = min(out.count, prefix.count - served)
                        prefix.withUnsafeBytes { out.baseAddress!.copyMemory(from: $0.baseAddress! + served, byteCount: n) }
                        served += n
                        return n
                    }
                    return try stream.read(out)
                }, {
                    try stream.finish()
                    let tables = try MariaDBManifest.tables(connection, database: database)
                    let globals = try MariaDBGlobalsReader.read(connection, database: database)
                    let fingerprint = try MariaDBSchema.fingerprint(connection, database: database, globals: globals)
                    try connection.query("COMMIT")
                    let digest = try fingerprint.digest
                    let (schemaBytes, globalsBytes) = (try fingerprint.encoded(), try globals.encoded())
                    recordedFiles.withLock { $0 = [schemaFile: schemaBytes, globalsFile: globalsBytes] }
                    var entry = DumpManifest.Database(name: database, file: file, sizeBytes: size, tables: tables,
                                                      schemaFile: schemaFile, schemaDigest: digest, globalsFile: globalsFile)
                    entry.binlogPosition = binlog.0
                    entry.binlogPositionAbsent = binlog.absent
                    recorded.withLock { $0.append(entry) }
                })
            })
            for name in [schemaFile, globalsFile] {
                inputs.append(Archiver.StreamInput.bytes(name: name) {
                    guard let bytes = recordedFiles.current[name] else {
                        throw KhoError(.failure, "Source \(self.name): \(name) was not recorded before it was stored; report this as a bug.")
                    }
                    return bytes
                })
            }
        }
        return DumpPlan(streams: inputs) {
            try DumpManifest(engine: .mariadb, serverVersion: version.current, checksumMethod: MariaDBSource.checksumMethod,
                             databases: recorded.current).json
        }
    }
}
