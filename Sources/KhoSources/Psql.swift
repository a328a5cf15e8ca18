import Foundation
import Glibc
import KhoCore
import KhoSupport

/// Where a PostgreSQL or MariaDB server is and how to log in. The password comes from a file or
/// an environment variable, never from a policy or a command line.
public struct DatabaseEndpoint: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var user: String
    public var database: String
    public var passwordFile: String?
    public var passwordEnv: String?
    /// A drill's scratch server: kho's clients take none of the administrator's client settings
    /// (PG* variables, ~/.my.cnf), which could send them, and the restored data, elsewhere.
    public var isolated = false

    public init(host: String, port: Int, user: String, database: String, passwordFile: String? = nil, passwordEnv: String? = nil,
                isolated: Bool = false) {
        self.host = host
        self.port = port
        self.user = user
        self.database = database
        self.passwordFile = passwordFile
        self.passwordEnv = passwordEnv
        self.isolated = isolated
    }

    /// A host that starts with `/` is a unix socket: PostgreSQL's socket folder, MariaDB's socket file.
    public var isSocket: Bool { host.hasPrefix("/") }

    /// Where a PostgreSQL client connects, as libpq's environment variables for that child only.
    /// A value there is taken as it is: never as an option (`--x`), nor as more key=value pairs,
    /// which libpq makes of a database name containing `=` given on the command line or inside a
    /// connection string (`dbname=x host=elsewhere` would send the dump, or load it, elsewhere).
    public func libpqEnvironment(database: String?) -> [String: String] {
        var env = ["PGHOST": host, "PGPORT": String(port), "PGUSER": user]
        if let database { env["PGDATABASE"] = database }
        return env
    }

    /// Parses `postgres://user@host:port/db` or `mariadb://user@host:port/db` (also `mysql://`).
    /// A password in the URL is refused: it would show in `ps` and in logs.
    public static func parse(_ url: String) throws -> (engine: String, endpoint: DatabaseEndpoint) {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw KhoError(.usage, "\(url) is not a database URL: write postgres://USER@HOST:PORT/DATABASE or mariadb://USER@HOST:PORT/DATABASE.")
        }
        let engine: String
        switch scheme {
        case "postgres", "postgresql": engine = "postgres"
        case "mariadb", "mysql": engine = "mariadb"
        default:
            throw KhoError(.usage, "\(url) names the engine \(scheme): kho restores into postgres:// or mariadb:// databases.")
        }
        if components.password != nil {
            throw KhoError(.usage, "\(url) contains a password: remove it and give the password in a file or environment variable instead.")
        }
        let database = String(components.path.drop { $0 == "/" })
        guard !database.isEmpty else {
            throw KhoError(.usage, "\(url) names no database: add /DATABASE at the end.")
        }
        let endpoint = DatabaseEndpoint(host: components.host ?? "127.0.0.1",
                                        port: components.port ?? (engine == "postgres" ? 5432 : 3306),
                                        user: components.user ?? (engine == "postgres" ? "postgres" : "root"),
                                        database: database)
        return (engine, endpoint)
    }

    /// The password, if one is configured; a configured but missing secret is an error naming it.
    public func password() throws -> String? {
        if let passwordFile {
            guard let data = FileManager.default.contents(atPath: passwordFile) else {
                throw KhoError(.usage, "The password file \(passwordFile) cannot be read: check the path and its permissions.")
            }
            let value = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .newlines)
            Secrets.register(value)
            return value
        }
        if let passwordEnv {
            guard let value = ProcessInfo.processInfo.environment[passwordEnv] else {
                throw KhoError(.usage, "The environment variable \(passwordEnv) that should hold the database password is not set.")
            }
            Secrets.register(value)
            return value
        }
        return nil
    }

    public func with(database: String) -> DatabaseEndpoint {
        var copy = self
        copy.database = database
        return copy
    }
}

/// Quotes a word for /bin/sh.
func shellQuote(_ word: String) -> String {
    "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

/// Finds a program on PATH or in the usual places of Debian's PostgreSQL and MariaDB packages.
/// With `serverFirst`, PostgreSQL's own folder (newest version) comes before PATH: a scratch
/// server and its tools should be of one version; a dump tool is taken from PATH first, so that an
/// administrator's choice wins.
public func findProgram(_ name: String, serverFirst: Bool = false) -> String? {
    let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
    var postgres: [String] = []
    if let versions = try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql") {
        postgres = versions.sorted(by: >).map { "/usr/lib/postgresql/\($0)/bin" }
    }
    let dirs = (serverFirst ? postgres + path : path + postgres) + ["/usr/sbin", "/sbin"]
    for dir in dirs where access(dir + "/" + name, X_OK) == 0 { return dir + "/" + name }
    return nil
}

/// A line-oriented conversation with a `psql` or `mariadb` client kept open, so that kho can hold
/// one transaction (and its snapshot) while other processes read the same data.
final class SQLSession {
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let errors = Pipe()
    private var buffer: [UInt8] = []
    private let marker = "__kho_done_\(UInt32.random(in: 0...UInt32.max))__"
    let sourceName: String
    let engine: String

    /// `arguments` start the client in a quiet, unaligned, tuples-only mode; `environment` is the
    /// client's whole environment (see `ChildEnvironment`).
    init(engine: String, program: String, arguments: [String], environment: [String: String], sourceName: String) throws {
        self.engine = engine
        self.sourceName = sourceName
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        process.environment = environment
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        do {
            try process.run()
        } catch {
            throw KhoError(.source, "Source \(sourceName): cannot start \(program): \(error.localizedDescription).")
        }
    }

    /// Runs statements and returns the rows printed, one string per line (fields tab-separated).
    func query(_ sql: String) throws -> [String] {
        let echo = engine == "postgres" ? "\\echo \(marker)\n" : "SELECT '\(marker)';\n"
        let text = sql + "\n" + echo
        do {
            try input.fileHandleForWriting.write(contentsOf: Data(text.utf8))
        } catch {
            throw failure()
        }
        var lines: [String] = []
        while let line = readLine() {
            if line == marker { return lines }
            lines.append(line)
        }
        throw failure()
    }

    private func readLine() -> String? {
        let fd = output.fileHandleForReading.fileDescriptor
        while true {
            if let newline = buffer.firstIndex(of: 0x0a) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 65536) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return nil }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }

    /// The error the client reported when it stopped.
    private func failure() -> KhoError {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        let text = Secrets.mask(String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines))
        return SQLSession.describe(text, engine: engine, source: sourceName)
    }

    /// Turns a client's error text into one sentence that names the source and the likely fix.
    static func describe(_ text: String, engine: String, source: String) -> KhoError {
        let lower = text.lowercased()
        // The mariadb client frames a failed statement with lines of dashes and the statement
        // itself; the line that says what went wrong starts with ERROR.
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let detail = lines.first { $0.hasPrefix("ERROR") }
            ?? lines.first { !$0.isEmpty && !$0.allSatisfy { $0 == "-" } }
            ?? "no error output"
        if lower.contains("password authentication failed") || lower.contains("access denied for user") {
            return KhoError(.source, "Source \(source): the server refused the login (\(detail)): check the user and the password file or variable.")
        }
        if lower.contains("no password supplied") {
            return KhoError(.source, "Source \(source): the server asks for a password and none was given (\(detail)): give it with a password file or environment variable.")
        }
        if lower.contains("access denied; you need") || lower.contains("command denied") || lower.contains("permission denied") {
            return KhoError(.source, "Source \(source): the \(engine) user lacks a privilege (\(detail)): grant it, or use a user that has it.")
        }
        if lower.contains("lock wait timeout exceeded") {
            return KhoError(.source, "Source \(source): \(engine) gave up waiting for a lock (\(detail)): another session holds the tables (a long query, LOCK TABLES or a schema change); run the backup again once it is done.", retryable: true)
        }
        if lower.contains("does not exist") && lower.contains("database") || lower.contains("unknown database") {
            return KhoError(.source, "Source \(source): the database does not exist (\(detail)): check the database name.")
        }
        if lower.contains("connection refused") || lower.contains("could not connect") || lower.contains("can't connect")
            || lower.contains("no such file or directory") && lower.contains("socket") || lower.contains("timeout expired") {
            return KhoError(.source, "Source \(source): the \(engine) server cannot be reached (\(detail)): check host and port and that the server runs.", retryable: true)
        }
        return KhoError(.source, "Source \(source): \(engine) reported an error: \(detail)")
    }

    func close() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }

    deinit {
        if process.isRunning {
            try? input.fileHandleForWriting.close()
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
        }
    }
}
