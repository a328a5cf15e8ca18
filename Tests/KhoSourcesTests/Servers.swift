import Foundation
import Glibc
@testable import KhoSources
import KhoSupport
import KhoTestSupport
import Testing

// The client tests' servers: KhoTestSupport's scratch PostgreSQL and MariaDB, with what these tests
// need on top — a login over TCP that takes a password (with quotes, backslashes and non-ASCII
// letters), and kho's client types connected to it.

/// A PostgreSQL cluster whose TCP logins need `password` (SCRAM); the socket stays trusted.
final class TestPostgres: @unchecked Sendable {
    private let server: ScratchPostgres
    /// Outlives the server, so that a test can try the password file after `stop()`.
    private let secrets: TemporaryFolder
    let password: String
    var dir: String { server.dir }
    var port: Int { server.port }

    init(password: String) throws {
        server = try ScratchPostgres(label: "sources-pg", password: password)
        secrets = try TemporaryFolder("sources-pg-secrets")
        self.password = password
        try writeFile(secrets.path + "/client-password", Array(password.utf8), mode: 0o600)
    }

    func endpoint(_ database: String = "postgres", password: String? = nil) -> DatabaseEndpoint {
        DatabaseEndpoint(host: "127.0.0.1", port: port, user: "postgres", database: database, passwordEnv: password.map { _ in "KHO_SOURCES_TEST_PG_PASSWORD" })
    }

    /// A connection that logs in with the right password (given to libpq through the endpoint's file).
    func connect(_ database: String = "postgres") throws -> PostgresConnection {
        var endpoint = endpoint(database)
        endpoint.passwordFile = secrets.path + "/client-password"
        return try PostgresConnection(endpoint: endpoint, database: database, source: "test")
    }

    /// psql through the trusted socket, unaligned and tab-separated, as kho's old SQLSession ran it.
    func psql(_ sql: String, database: String = "postgres") throws -> String {
        let script = try ServerSupport.scriptFile(sql, in: dir)
        defer { unlink(script) }
        return try ServerSupport.require(server.program("psql"), ["-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h", dir, "-p", String(port),
                                                                  "-U", "postgres", "-d", database],
                                         input: .file(script), scratch: dir)
    }

    func stop() { server.stop() }
}

/// A MariaDB server with a user `kho` that logs in over TCP with `password`.
final class TestMariaDB: @unchecked Sendable {
    private let server: ScratchMariaDB
    /// Outlives the server, so that a test can try the password file after `stop()`.
    private let secrets: TemporaryFolder
    let password: String
    var dir: String { server.dir }
    var port: Int { server.port }
    var socket: String { server.socketPath }

    init(password: String) throws {
        server = try ScratchMariaDB(label: "sources-mariadb")
        secrets = try TemporaryFolder("sources-mariadb-secrets")
        self.password = password
        try writeFile(secrets.path + "/client-password", Array(password.utf8), mode: 0o600)
        let quoted = password.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "''")
        try root().query("CREATE USER 'kho'@'%' IDENTIFIED BY '\(quoted)'")
        try root().query("GRANT ALL ON *.* TO 'kho'@'%'")
    }

    /// root through the socket, no password.
    func root(_ database: String? = nil) throws -> MariaDBConnection {
        try MariaDBConnection(endpoint: DatabaseEndpoint(host: socket, port: 0, user: "root", database: database ?? "", isolated: true),
                              database: database, source: "test")
    }

    /// kho's user over TCP, the password from a file.
    func endpoint(_ database: String = "") -> DatabaseEndpoint {
        DatabaseEndpoint(host: "127.0.0.1", port: port, user: "kho", database: database, passwordFile: secrets.path + "/client-password", isolated: true)
    }

    func connect(_ database: String? = nil) throws -> MariaDBConnection {
        try MariaDBConnection(endpoint: endpoint(database ?? ""), database: database, source: "test")
    }

    /// The mariadb client as kho's old SQLSession ran it (batch, raw, no column names).
    func client(_ sql: String, database: String? = nil) throws -> String {
        var arguments = ["--no-defaults", "--protocol=SOCKET", "--socket=\(socket)", "--user=root", "--batch", "--skip-column-names", "--raw",
                         "--default-character-set=utf8mb4"]
        if let database { arguments.append("--database=" + database) }
        let script = try ServerSupport.scriptFile(sql, in: dir)
        defer { unlink(script) }
        return try ServerSupport.require(ScratchMariaDB.client!, arguments, input: .file(script), scratch: dir)
    }

    func stop() { server.stop() }
}
