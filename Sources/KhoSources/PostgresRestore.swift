import Foundation
import Glibc
import KhoCore
import KhoSupport

/// What a database restore did, for the summary and the drill evidence.
public struct DatabaseRestoreResult: Codable, Sendable {
    public var engine: String
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
/// after the load succeeded.
public struct DatabaseLoader {
    public var engine: String
    public var target: DatabaseEndpoint
    public var replace: Bool
    public var sourceName: String

    public init(engine: String, target: DatabaseEndpoint, replace: Bool, sourceName: String) {
        self.engine = engine
        self.target = target
        self.replace = replace
        self.sourceName = sourceName
    }

    var postgres: PostgresSource {
        PostgresSource(name: sourceName, endpoint: target, databases: [target.database], includeGlobals: false)
    }

    /// Checks the target before anything is read from the repository: whether it exists and is empty.
    public func plan() throws -> (exists: Bool, empty: Bool) {
        switch engine {
        case "postgres":
            let admin = try postgres.session(database: "postgres")
            defer { admin.close() }
            let exists = try admin.query("SELECT count(*) FROM pg_database WHERE datname = \(literal(target.database));").last == "1"
            guard exists else { return (false, true) }
            let session = try postgres.session(database: target.database)
            defer { session.close() }
            let count = try session.query("""
                SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r','p','v','m','S','f') AND n.nspname NOT IN ('pg_catalog','information_schema')
                  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%';
                """).last ?? "0"
            return (true, count == "0")
        case "mariadb":
            return try MariaDBSource.plan(target: target, sourceName: sourceName)
        default:
            throw KhoError(.usage, "Restoring into \(engine) databases is not supported: use --to-file and load it with the engine's tools.")
        }
    }

    /// An escape-string literal: read the same whatever the server's standard_conforming_strings.
    func literal(_ text: String) -> String {
        "E'" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "''") + "'"
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
        let loadTarget = target.with(database: loadName)
        if engine == "mariadb" {
            return try MariaDBSource.load(into: loadTarget, original: target, replace: state.exists && replace, createDatabase: !state.exists || replace,
                                          expected: expected, sourceName: sourceName, start: start, produce: produce)
        }
        let admin = try postgres.session(database: "postgres")
        if !state.exists || replace {
            _ = try admin.query("CREATE DATABASE \(PostgresSource.quoteIdentifier(loadName)) TEMPLATE template0;")
        }
        var bytes: Int64 = 0
        do {
            bytes = try feedPsql(database: loadName, produce: produce)
        } catch {
            // The database kho created holds a half-loaded dump: remove it; the original is untouched.
            if !state.exists || replace {
                _ = try? admin.query("DROP DATABASE IF EXISTS \(PostgresSource.quoteIdentifier(loadName));")
            }
            admin.close()
            throw error
        }
        var keptAs: String?
        if state.exists && replace {
            let aside = "\(target.database)__kho_replaced_\(Int(Date().timeIntervalSince1970))"
            _ = try admin.query("""
                SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = \(literal(target.database)) AND pid <> pg_backend_pid();
                ALTER DATABASE \(PostgresSource.quoteIdentifier(target.database)) RENAME TO \(PostgresSource.quoteIdentifier(aside));
                ALTER DATABASE \(PostgresSource.quoteIdentifier(loadName)) RENAME TO \(PostgresSource.quoteIdentifier(target.database));
                """)
            keptAs = aside
        }
        admin.close()
        let seconds = Date().timeIntervalSince(start)
        var comparison: ManifestComparison?
        if let expected {
            let session = try postgres.session(database: target.database)
            defer { session.close() }
            comparison = ManifestComparison(expected: expected.tables, actual: try PostgresSource.tables(session))
        }
        return DatabaseRestoreResult(engine: engine, database: target.database, bytesLoaded: bytes, seconds: seconds,
                                     replacedDatabaseKeptAs: keptAs, comparison: comparison)
    }

    private func feedPsql(database: String, produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws -> Int64 {
        let psql = try postgres.tool("psql")
        let env = try postgres.environment(database: database)
        let arguments = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-w", "--single-transaction", "-o", "/dev/null"]
        return try ClientFeeder.feed(program: psql, arguments: arguments, environment: env, engine: "postgres",
                                     sourceName: sourceName, produce: produce)
    }
}

/// Runs a database client and writes a dump into its standard input. `environment` is the
/// client's whole environment (see `ChildEnvironment`).
enum ClientFeeder {
    static func feed(program: String, arguments: [String], environment: [String: String], engine: String, sourceName: String,
                     produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws -> Int64 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        process.environment = environment
        let input = Pipe()
        let errors = Pipe()
        process.standardInput = input
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        try process.run()
        let stderrText = Locked<[UInt8]>([])
        let errorFD = errors.fileHandleForReading.fileDescriptor
        let reader = Worker(name: "kho-client-stderr") {
            var buffer = [UInt8](repeating: 0, count: 8192)
            while true {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(errorFD, $0.baseAddress, 8192) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                stderrText.withLock { if $0.count < 65536 { $0.append(contentsOf: buffer[0..<n]) } }
            }
        }
        let fd = input.fileHandleForWriting.fileDescriptor
        var written: Int64 = 0
        var writeError: Error?
        do {
            try produce { chunk in
                try Syscall.writeAll(fd, chunk, "the \(engine) client")
                written += Int64(chunk.count)
            }
        } catch {
            writeError = error
        }
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        reader.join()
        let text = Secrets.mask(String(decoding: stderrText.current, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        if process.terminationStatus != 0 || process.terminationReason != .exit {
            if text.isEmpty, let writeError { throw writeError }
            let first = text.split(separator: "\n").prefix(3).joined(separator: " | ")
            throw KhoError(.source, "Source \(sourceName): loading the dump failed (\(engine) client exited with status \(process.terminationStatus): \(first)); the target was left as it was before.")
        }
        if let writeError { throw writeError }
        return written
    }
}
