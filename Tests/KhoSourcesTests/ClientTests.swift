import Foundation
import Glibc
@testable import KhoSources
import KhoSupport
import KhoTestSupport
import Testing

/// Values and names an attacker (or an unlucky administrator) could put in a database, a table name
/// or a policy: quotes of every kind, backslashes, psql's and mariadb's own commands (`\!` runs a
/// shell there), statement separators, comments, newlines and tabs, placeholders, unicode.
let hostile = [
    "O'Brien", "say \"hi\"", "back\\slash\\", "\\! touch /tmp/kho-sources-hostile-marker", "x'; DROP TABLE canary; --",
    "line one\nline two", "tab\there", "`tick`", "$1", "?", "/* not a comment */", "Nguyễn Thị Minh Khai ✓ 中文", "\\echo __kho_done__",
]
let marker = "/tmp/kho-sources-hostile-marker"

@Suite("identifier quoting")
struct QuotingTests {
    @Test("PostgreSQL and MariaDB identifiers: the quote character doubled, nothing else touched")
    func quoting() {
        #expect(SQLIdentifier.postgres("plain") == "\"plain\"")
        #expect(SQLIdentifier.postgres("a\"b") == "\"a\"\"b\"")
        #expect(SQLIdentifier.postgres("x\"; DROP TABLE t; --") == "\"x\"\"; DROP TABLE t; --\"")
        #expect(SQLIdentifier.postgres("back\\slash`") == "\"back\\slash`\"")
        #expect(SQLIdentifier.mariadb("plain") == "`plain`")
        #expect(SQLIdentifier.mariadb("a`b") == "`a``b`")
        #expect(SQLIdentifier.mariadb("x`; DROP TABLE t; --") == "`x``; DROP TABLE t; --`")
        #expect(SQLIdentifier.mariadb("say \"hi\" 'there'\\") == "`say \"hi\" 'there'\\`")
    }

    @Test("errors are classified by the library's words when there is no code")
    func classification() {
        #expect(ClientFailure.classify("FATAL:  password authentication failed for user \"x\"") == .login)
        #expect(ClientFailure.classify("fe_sendauth: no password supplied") == .noPassword)
        #expect(ClientFailure.classify("connection to server at \"127.0.0.1\", port 1 failed: Connection refused") == .unreachable)
        #expect(ClientFailure.classify("could not open file \"x\": No such file or directory") == .other)
        #expect(ClientFailure.unreachable.error(detail: "refused", engine: "postgres", source: "s").retryable)
        #expect(!ClientFailure.login.error(detail: "denied", engine: "postgres", source: "s").retryable)
    }
}

@Suite("PostgreSQL client (libpq)", .serialized, .enabled(if: ScratchPostgres.isAvailable, Comment(rawValue: ScratchPostgres.unavailableReason ?? "")))
struct PostgresClientTests {
    @Test("hostile values come back as data, hostile names are one identifier, a wrong password and a stopped server say what to do")
    func client() throws {
        unlink(marker)
        let server = try TestPostgres(password: "mật khẩu 'đúng' \\ \"x\"")
        defer { server.stop() }
        let connection = try server.connect()
        try connection.query("CREATE TABLE canary(id int)")
        for value in hostile {
            #expect(try connection.value("SELECT $1::text", [value]) == value)
            #expect(try connection.query("SELECT $1::text, $2::text", [value, nil]) == [[value, nil]])
        }
        // One statement per call: a second one is refused, not run.
        #expect(throws: KhoError.self) { try connection.query("SELECT 1; DROP TABLE canary") }
        #expect(try connection.value("SELECT count(*) FROM canary") == "0")

        // Databases and tables named with every hostile string: created, filled and counted through
        // quoted names and parameters, and the manifest reads what psql (kho's old way) printed.
        try connection.query("CREATE DATABASE \(SQLIdentifier.postgres("db " + hostile[4])) TEMPLATE template0")
        let database = try server.connect("db " + hostile[4])
        try database.query("CREATE SCHEMA \(SQLIdentifier.postgres("schéma \"s\""))")
        for (i, name) in hostile.enumerated() {
            let table = SQLIdentifier.postgres("schéma \"s\"") + "." + SQLIdentifier.postgres(name)
            try database.query("CREATE TABLE \(table) (id int, value text, amount numeric)")
            for (j, value) in hostile.prefix(i + 1).enumerated() {
                try database.query("INSERT INTO \(table) VALUES ($1, $2, $3)", [String(j), value, j % 2 == 0 ? nil : "12.50"])
            }
        }
        let tables = try PostgresManifest.tables(database)
        #expect(tables.count == hostile.count)
        #expect(Set(tables.map(\.name)) == Set(hostile))
        for table in tables {
            #expect(table.schema == "schéma \"s\"")
            #expect(table.rows == Int64(hostile.firstIndex(of: table.name)! + 1))
            let quoted = SQLIdentifier.postgres(table.schema) + "." + SQLIdentifier.postgres(table.name)
            let printed = try server.psql("SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0) FROM ONLY \(quoted) AS t;",
                                          database: "db " + hostile[4])
            #expect(printed == "\(table.rows)\t\(table.checksum)\n", "\(table.name)")
        }
        #expect(access(marker, F_OK) != 0, "a value ran as a client command")
        #expect(try connection.value("SELECT count(*) FROM canary") == "0")

        // A wrong password: the server's refusal, in one sentence that says what to check.
        let wrongFile = server.dir + "/wrong-password"
        try Data("not the password".utf8).write(to: URL(fileURLWithPath: wrongFile))
        var wrong = server.endpoint()
        wrong.passwordFile = wrongFile
        do {
            _ = try PostgresConnection(endpoint: wrong, database: "postgres", source: "test")
            Issue.record("a wrong password logged in")
        } catch let error as KhoError {
            #expect(error.kind == .source)
            #expect(!error.retryable)
            #expect(error.message == "Source test: the server refused the login (connection to server at \"127.0.0.1\", port \(server.port) failed: FATAL:  password authentication failed for user \"postgres\"): check the user and the password file or variable.")
        }

        // A stopped server: worth a retry.
        server.stop()
        do {
            _ = try server.connect()
            Issue.record("connected to a stopped server")
        } catch let error as KhoError {
            #expect(error.kind == .source)
            #expect(error.retryable)
            #expect(error.message.hasPrefix("Source test: the postgres server cannot be reached (connection to server at \"127.0.0.1\", port \(server.port) failed: Connection refused"), "\(error.message)")
            #expect(error.message.hasSuffix("check host and port and that the server runs."))
        }
    }
}

@Suite("MariaDB client (Connector/C)", .serialized, .enabled(if: ScratchMariaDB.isAvailable, Comment(rawValue: ScratchMariaDB.unavailableReason ?? "")))
struct MariaDBClientTests {
    @Test("hostile values come back as data, hostile names are one identifier, a wrong password and a stopped server say what to do")
    func client() throws {
        unlink(marker)
        let server = try TestMariaDB(password: "mật khẩu 'đúng' \\ \"x\"")
        defer { server.stop() }
        let connection = try server.connect()
        try connection.query("CREATE DATABASE canary_db")
        try connection.query("CREATE TABLE canary_db.canary(id int)")
        for value in hostile {
            #expect(try connection.value("SELECT ?", [value]) == value)
            #expect(try connection.query("SELECT ?, ?", [value, nil]) == [[value, nil]])
        }
        // Multi-statements are off: a second statement is refused, not run.
        #expect(throws: KhoError.self) { try connection.query("SELECT 1; DROP TABLE canary_db.canary") }
        #expect(try connection.value("SELECT COUNT(*) FROM canary_db.canary") == "0")

        // A database and tables with hostile names (MariaDB refuses names that end with a space
        // and names longer than 64 characters; none of these does), filled through parameters;
        // the manifest reads what the mariadb client (kho's old way) printed.
        let databaseName = "db " + hostile[4]
        try connection.query("CREATE DATABASE \(SQLIdentifier.mariadb(databaseName)) CHARACTER SET utf8mb4")
        for (i, name) in hostile.enumerated() {
            let table = SQLIdentifier.mariadb(databaseName) + "." + SQLIdentifier.mariadb(name)
            try connection.query("CREATE TABLE \(table) (id int, \(SQLIdentifier.mariadb("value " + name)) text, amount decimal(10,2))")
            for (j, value) in hostile.prefix(i + 1).enumerated() {
                try connection.query("INSERT INTO \(table) VALUES (?, ?, ?)", [String(j), value, j % 2 == 0 ? nil : "12.50"])
            }
        }
        let tables = try MariaDBManifest.tables(connection, database: databaseName)
        #expect(Set(tables.map(\.name)) == Set(hostile))
        for table in tables {
            #expect(table.rows == Int64(hostile.firstIndex(of: table.name)! + 1))
            let columns = ["id", "value " + table.name, "amount"].map { "QUOTE(\(SQLIdentifier.mariadb($0)))" }.joined(separator: ", ")
            let printed = try server.client("SELECT COUNT(*), COALESCE(SUM(CAST(CONV(SUBSTRING(MD5(CONCAT_WS('|', \(columns))), 1, 16), 16, 10) AS DECIMAL(65,0))), 0) FROM \(SQLIdentifier.mariadb(databaseName)).\(SQLIdentifier.mariadb(table.name));")
            #expect(printed == "\(table.rows)\t\(table.checksum)\n", "\(table.name)")
        }
        let checked = try MariaDBSource.checkTables(server.endpoint(), database: databaseName, tables: hostile, source: "test")
        #expect(checked.filter { $0.hasSuffix("\tstatus\tOK") }.count == hostile.count, "\(checked)")
        #expect(access(marker, F_OK) != 0, "a value ran as a client command")
        #expect(try connection.value("SELECT COUNT(*) FROM canary_db.canary") == "0")

        // A wrong password.
        let wrongFile = server.dir + "/wrong-password"
        try Data("not the password".utf8).write(to: URL(fileURLWithPath: wrongFile))
        var wrong = server.endpoint()
        wrong.passwordFile = wrongFile
        do {
            _ = try MariaDBConnection(endpoint: wrong, database: nil, source: "test")
            Issue.record("a wrong password logged in")
        } catch let error as KhoError {
            #expect(error.kind == .source)
            #expect(!error.retryable)
            #expect(error.message == "Source test: the server refused the login (Access denied for user 'kho'@'127.0.0.1' (using password: YES)): check the user and the password file or variable.")
        }

        // A stopped server: worth a retry.
        server.stop()
        do {
            _ = try server.connect()
            Issue.record("connected to a stopped server")
        } catch let error as KhoError {
            #expect(error.kind == .source)
            #expect(error.retryable)
            #expect(error.message.hasPrefix("Source test: the mariadb server cannot be reached (Can't connect to server on '127.0.0.1'"), "\(error.message)")
        }
    }
}
