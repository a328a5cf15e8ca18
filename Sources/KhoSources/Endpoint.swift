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
    package func libpqEnvironment(database: String?) -> [String: String] {
        var env = ["PGHOST": host, "PGPORT": String(port), "PGUSER": user]
        if let database { env["PGDATABASE"] = database }
        return env
    }

    /// Parses `postgres://user@host:port/db` or `mariadb://user@host:port/db` (also `mysql://`).
    /// A password in the URL is refused: it would show in `ps` and in logs.
    public static func parse(_ url: String) throws -> (engine: SourceKind, endpoint: DatabaseEndpoint) {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw KhoError(.usage, "\(url) is not a database URL: write postgres://USER@HOST:PORT/DATABASE or mariadb://USER@HOST:PORT/DATABASE.")
        }
        let engine: SourceKind
        switch scheme {
        case "postgres", "postgresql": engine = .postgres
        case "mariadb", "mysql": engine = .mariadb
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
                                        port: components.port ?? (engine == .postgres ? 5432 : 3306),
                                        user: components.user ?? (engine == .postgres ? "postgres" : "root"),
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
            guard let value = ClientPasswords.value(passwordEnv) else {
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
package func shellQuote(_ word: String) -> String {
    "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

/// Finds a program on PATH or in the usual places of Debian's PostgreSQL and MariaDB packages.
/// With `serverFirst`, PostgreSQL's own folder (newest version) comes before PATH: a scratch
/// server and its tools should be of one version; a dump tool is taken from PATH first, so that an
/// administrator's choice wins.
package func findProgram(_ name: String, serverFirst: Bool = false) -> String? {
    let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
    var postgres: [String] = []
    // try?: no /usr/lib/postgresql means no Debian server package: PATH alone is searched.
    if let versions = try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql") {
        postgres = versions.sorted(by: >).map { "/usr/lib/postgresql/\($0)/bin" }
    }
    let dirs = (serverFirst ? postgres + path : path + postgres) + ["/usr/sbin", "/sbin"]
    for dir in dirs where access(dir + "/" + name, X_OK) == 0 { return dir + "/" + name }
    return nil
}
