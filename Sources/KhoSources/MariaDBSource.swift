import Foundation
import KhoCore
import KhoSupport

/// MariaDB (and MySQL) databases dumped with `mariadb-dump --single-transaction --routines --events
/// --triggers`, streamed into the repository.
///
/// To record a manifest of exactly what the dump reads, kho briefly takes a global read lock,
/// opens its own consistent-snapshot transaction, starts the dump, waits until the dump's
/// transaction exists (both then see the same committed state), and releases the lock: writes
/// pause for that moment only. Per table the manifest holds the row count and the sum of the first
/// 64 bits of MD5 over each row's quoted column values.
public struct MariaDBSource: BackupSource {
    public var name: String
    public var endpoint: DatabaseEndpoint
    public var databases: [String]
    public var limits: SourceLimits
    public var kind: String { "mariadb" }
    public var summary: String { "mariadb \(endpoint.user)@\(endpoint.host):\(endpoint.port)/\(databases.joined(separator: ","))" }

    public static let checksumMethod = "mariadb: sum over rows of the first 64 bits of MD5(CONCAT_WS('|', QUOTE(column)...)), as a decimal number"

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

    /// The whole environment of a MariaDB client kho starts: no secret of kho's, the password (if
    /// any) as MYSQL_PWD for this child only.
    static func environment(_ endpoint: DatabaseEndpoint) throws -> [String: String] {
        var env: [String: String] = [:]
        if let password = try endpoint.password() { env["MYSQL_PWD"] = password }
        return ChildEnvironment.minimal(env)
    }

    /// Options for a client or mariadb-dump: `options`, then where the server is and who logs in,
    /// each as one `--name=value` word (a value is never read as an option). For a scratch server,
    /// no option file is read (`--no-defaults`, which must come first).
    static func arguments(_ endpoint: DatabaseEndpoint, _ options: [String]) -> [String] {
        let place = endpoint.isSocket ? ["--protocol=SOCKET", "--socket=" + endpoint.host]
            : ["--protocol=TCP", "--host=" + endpoint.host, "--port=" + String(endpoint.port)]
        return (endpoint.isolated ? ["--no-defaults"] : []) + options + place + ["--user=" + endpoint.user]
    }

    /// The `mariadb` client in sandbox mode: statements only, none of its own commands (`\!`
    /// runs a shell command, `\.` reads a file), wherever a name or a dump puts them.
    static func session(_ endpoint: DatabaseEndpoint, database: String?, source: String) throws -> SQLSession {
        var arguments = arguments(endpoint, ["--sandbox", "--batch", "--skip-column-names", "--raw", "--unbuffered", "--connect-timeout=10"])
        if let database { arguments.append("--database=" + database) }
        return try SQLSession(engine: "mariadb", program: try tool(["mariadb", "mysql"], source: source), arguments: arguments,
                              environment: try environment(endpoint), sourceName: source)
    }

    /// `CHECK TABLE … EXTENDED` on `tables` of `database`: the client's output lines (table, op,
    /// message type, text), through a sandboxed session with every name quoted.
    public static func checkTables(_ endpoint: DatabaseEndpoint, database: String, tables: [String], source: String) throws -> [String] {
        guard !tables.isEmpty else { return [] }
        let session = try session(endpoint, database: nil, source: source)
        defer { session.close() }
        let names = tables.map { quote(database) + "." + quote($0) }.joined(separator: ", ")
        return try session.query("CHECK TABLE \(names) EXTENDED;")
    }

    static func quote(_ name: String) -> String { "`" + name.replacingOccurrences(of: "`", with: "``") + "`" }
    static func literal(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "''") + "'"
    }

    public func backup(with archiver: Archiver, repository: Repository) throws -> Snapshot {
        let dump = try MariaDBSource.tool(["mariadb-dump", "mysqldump"], source: name)
        let env = try MariaDBSource.environment(endpoint)
        let recorded = Locked<[DumpManifest.Database]>([])
        let version = Locked("")
        var inputs: [Archiver.StreamInput] = []
        for database in databases {
            let file = "\(database).sql"
            inputs.append(Archiver.StreamInput(name: file) {
                let session = try MariaDBSource.session(endpoint, database: database, source: name)
                // While FLUSH TABLES WITH READ LOCK waits (for a long query, LOCK TABLES, a schema
                // change), every write on the server waits behind it: bound the wait by the source's
                // timeout, and by a minute at most.
                let lockWait = max(1, Int(min(limits.timeout ?? 60, 60).rounded(.up)))
                _ = try session.query("SET SESSION lock_wait_timeout = \(lockWait);\nFLUSH TABLES WITH READ LOCK;\nSTART TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY;")
                let facts = try session.query("SELECT VERSION(), COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE();")
                let parts = (facts.last ?? "").split(separator: "\t").map(String.init)
                version.withLock { $0 = parts.first ?? "" }
                let size = Int64(parts.count > 1 ? parts[1] : "0") ?? 0
                let options = MariaDBSource.arguments(endpoint, ["--single-transaction", "--routines", "--events", "--triggers", "--hex-blob"])
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
                    _ = try session.query("UNLOCK TABLES;")
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
                    let tables = try MariaDBSource.tables(session, database: database)
                    _ = try session.query("COMMIT;")
                    session.close()
                    recorded.withLock { $0.append(DumpManifest.Database(name: database, file: file, sizeBytes: size, tables: tables)) }
                })
            })
        }
        return try archiver.backupStreams(inputs, sourceName: name) { total in
            try SizeGuard.check(source: name, total: total, ratio: limits.minSizeRatio, repository: repository, host: limits.recordedHost)
            return try DumpManifest(engine: "mariadb", serverVersion: version.current, checksumMethod: MariaDBSource.checksumMethod,
                                    databases: recorded.current).json
        }
    }

    static func tables(_ session: SQLSession, database: String) throws -> [DumpManifest.Table] {
        let names = try names(session, "SELECT HEX(TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA = \(literal(database)) AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME;")
        var tables: [DumpManifest.Table] = []
        for table in names {
            let columns = try self.names(session, "SELECT HEX(COLUMN_NAME) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = \(literal(database)) AND TABLE_NAME = \(literal(table)) ORDER BY ORDINAL_POSITION;")
            let row = columns.map { "QUOTE(\(quote($0)))" }.joined(separator: ", ")
            let result = try session.query("SELECT COUNT(*), COALESCE(SUM(CAST(CONV(SUBSTRING(MD5(CONCAT_WS('|', \(row))), 1, 16), 16, 10) AS DECIMAL(65,0))), 0) FROM \(quote(database)).\(quote(table));")
            let values = (result.last ?? "").split(separator: "\t").map(String.init)
            tables.append(DumpManifest.Table(schema: "", name: table, rows: Int64(values.first ?? "") ?? -1, checksum: values.count > 1 ? values[1] : ""))
        }
        return tables
    }

    /// Names a query returns as HEX(…): the client prints names raw, and one with a tab or a
    /// newline in it would otherwise split into several.
    static func names(_ session: SQLSession, _ sql: String) throws -> [String] {
        try session.query(sql).filter { !$0.isEmpty }.map { line in
            guard let name = fromHex(line) else {
                throw KhoError(.source, "MariaDB returned a name kho cannot read (\(line.prefix(80))): report this as a bug.")
            }
            return name
        }
    }

    static func fromHex(_ text: String) -> String? {
        guard let bytes = Hex.decode(text) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func dropTablesAndViews(_ admin: SQLSession, database: String) throws {
        let objects = try admin.query("SELECT TABLE_TYPE, HEX(TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA = \(literal(database));")
        var statements = ["SET FOREIGN_KEY_CHECKS = 0;"]
        for line in objects where !line.isEmpty {
            let parts = line.split(separator: "\t", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            guard let name = fromHex(parts[1]) else { continue }
            statements.append("DROP \(parts[0] == "VIEW" ? "VIEW" : "TABLE") IF EXISTS \(quote(database)).\(quote(name));")
        }
        statements.append("SET FOREIGN_KEY_CHECKS = 1;")
        _ = try admin.query(statements.joined(separator: "\n"))
    }

    static func plan(target: DatabaseEndpoint, sourceName: String) throws -> (exists: Bool, empty: Bool) {
        let session = try self.session(target, database: nil, source: sourceName)
        defer { session.close() }
        let exists = try session.query("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = \(literal(target.database));").last == "1"
        guard exists else { return (false, true) }
        let count = try session.query("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = \(literal(target.database));").last ?? "0"
        return (true, count == "0")
    }

    /// Loads into `target` (created first). With `replace`, `target` is a scratch database whose
    /// tables are swapped with `original`'s in one atomic RENAME TABLE after the load succeeded.
    static func load(into target: DatabaseEndpoint, original: DatabaseEndpoint, replace: Bool, createDatabase: Bool,
                     expected: DumpManifest.Database?, sourceName: String, start: Date,
                     produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws -> DatabaseRestoreResult {
        let admin = try session(original, database: nil, source: sourceName)
        defer { admin.close() }
        if createDatabase {
            _ = try admin.query("CREATE DATABASE \(quote(target.database)) CHARACTER SET utf8mb4;")
        }
        let client = try tool(["mariadb", "mysql"], source: sourceName)
        let sourceDatabase = expected?.name ?? original.database
        var bytes: Int64 = 0
        do {
            // The dump names its database (USE `x`); point it at the target instead.
            bytes = try ClientFeeder.feed(program: client,
                                          arguments: arguments(target, ["--sandbox", "--database=" + target.database]),
                                          environment: try environment(target), engine: "mariadb", sourceName: sourceName) { write in
                try withoutActuallyEscaping(write) { write in
                    let filter = DatabaseNameFilter(from: sourceDatabase, to: target.database)
                    try produce { chunk in try filter.process(chunk, write) }
                    try filter.flush(write)
                }
            }
        } catch {
            if createDatabase {
                _ = try? admin.query("DROP DATABASE IF EXISTS \(quote(target.database));")
            } else {
                // The target existed without tables (plan() checked) and MariaDB cannot roll back
                // DDL: the tables and views it holds now came from this failed load.
                try? dropTablesAndViews(admin, database: target.database)
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
                WHERE db IN (\(literal(original.database)), \(literal(target.database))) ORDER BY 1;
                """).filter { !$0.isEmpty }
            if !unmovable.isEmpty {
                _ = try? admin.query("DROP DATABASE IF EXISTS \(quote(target.database));")
                let shown = unmovable.prefix(5).joined(separator: ", ") + (unmovable.count > 5 ? " and \(unmovable.count - 5) more" : "")
                throw KhoError(.source, "Source \(sourceName): the dump loaded, but MariaDB cannot move views, triggers, routines or events between databases (\(shown)), so --replace cannot swap it in; \(original.database) was left as it was: restore into a new database name and point the application at it, or drop \(original.database) and restore again.")
            }
            let aside = "\(original.database)__kho_replaced_\(Int(Date().timeIntervalSince1970))"
            _ = try admin.query("CREATE DATABASE \(quote(aside));")
            let old = try names(admin, "SELECT HEX(TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA = \(literal(original.database));")
            let new = try names(admin, "SELECT HEX(TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA = \(literal(target.database));")
            let moves = old.map { "\(quote(original.database)).\(quote($0)) TO \(quote(aside)).\(quote($0))" }
                + new.map { "\(quote(target.database)).\(quote($0)) TO \(quote(original.database)).\(quote($0))" }
            if !moves.isEmpty { _ = try admin.query("RENAME TABLE \(moves.joined(separator: ", "));") }
            _ = try admin.query("DROP DATABASE \(quote(target.database));")
            keptAs = aside
        }
        let seconds = Date().timeIntervalSince(start)
        var comparison: ManifestComparison?
        if let expected {
            comparison = ManifestComparison(expected: expected.tables, actual: try tables(admin, database: original.database))
        }
        return DatabaseRestoreResult(engine: "mariadb", database: original.database, bytesLoaded: bytes, seconds: seconds,
                                     replacedDatabaseKeptAs: keptAs, comparison: comparison)
    }
}

/// Rewrites the `CREATE DATABASE` / `USE` lines that `mariadb-dump --databases` writes, so that a
/// dump of one database loads into another name. Such lines appear in the header and again near the
/// end (before the final structure of views), so the whole stream is filtered: a line is held back
/// only while its start could be one of them; everything else passes through in place.
final class DatabaseNameFilter {
    let from: String
    let to: String
    /// The start of the current line, held back while it may be a line to rewrite.
    private var line: [UInt8] = []
    /// Whether the current line began at a line start and may still be a line to rewrite.
    private var holding = true
    private static let prefixes: [[UInt8]] = [Array("CREATE DATABASE".utf8), Array("USE ".utf8)]

    init(from: String, to: String) {
        self.from = from
        self.to = to
    }

    func process(_ chunk: UnsafeRawBufferPointer, _ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        var i = 0
        var passFrom = 0
        while i < chunk.count {
            if holding {
                let byte = chunk[i]
                line.append(byte)
                i += 1
                passFrom = i
                if byte == 0x0a {
                    try rewrite(line).withUnsafeBytes { try write($0) }
                    line.removeAll(keepingCapacity: true)
                } else if !DatabaseNameFilter.mayMatch(line) {
                    try line.withUnsafeBytes { try write($0) }
                    line.removeAll(keepingCapacity: true)
                    holding = false
                }
                continue
            }
            // Inside a line that stays as it is: pass everything up to its end through.
            if let newline = chunk[i...].firstIndex(of: 0x0a) {
                i = newline + 1
                holding = true
            } else {
                i = chunk.count
            }
            try write(UnsafeRawBufferPointer(rebasing: chunk[passFrom..<i]))
            passFrom = i
        }
    }

    func flush(_ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        try rewrite(line).withUnsafeBytes { try write($0) }
        line.removeAll()
        holding = true
    }

    /// Whether `start` is the beginning of a line that starts with one of the prefixes (or of a prefix).
    private static func mayMatch(_ start: [UInt8]) -> Bool {
        prefixes.contains { prefix in
            start.count <= prefix.count ? prefix.starts(with: start) : start.starts(with: prefix)
        }
    }

    private func rewrite(_ line: [UInt8]) -> [UInt8] {
        if line.starts(with: DatabaseNameFilter.prefixes[0]) { return [] }
        if line.starts(with: DatabaseNameFilter.prefixes[1]) {
            return Array("USE \(MariaDBSource.quote(to));".utf8) + (line.last == 0x0a ? [0x0a] : [])
        }
        return line
    }
}
