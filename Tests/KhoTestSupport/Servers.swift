import Foundation
import Glibc
import Testing

// Scratch database servers for tests that need a real PostgreSQL or MariaDB: each one lives in its
// own temporary folder, listens on a random free loopback port, and is stopped (and its folder
// removed) by `stop()`, or by `deinit` as a safety net.
//
// - `ScratchPostgres`: a cluster made by `initdb` (run as the `postgres` user through `runuser`:
//   initdb and the server refuse root), trust authentication, or SCRAM passwords over TCP with
//   `password:`. `psql(_:)` runs SQL through the server's socket and returns the rows.
// - `ScratchMariaDB`: `mariadb-install-db` into a folder owned by `mysql`, then `mariadbd`. `sql(_:)`
//   runs SQL with the `mariadb` client.
// - `BackgroundSQL`: a client (`psql`, `mariadb`, `sqlite3`) kept busy with a block of SQL written to
//   its standard input over and over, until `stop()` — the "other process that keeps writing".
// - Suite traits `.scratchPostgres` / `.scratchMariaDB` start one server for a whole suite and make
//   it available to its tests as `ScratchPostgres.shared` / `ScratchMariaDB.shared`.
//
// Tests that need a server should be marked `.enabled(if: ScratchPostgres.isAvailable, …)` (or the
// MariaDB / SQLite equivalent) so that a machine without the binaries skips them with a reason;
// `scripts/test` installs them.

/// A failure while setting up or talking to a scratch server.
package struct ServerError: Error, CustomStringConvertible {
    package var description: String
    package init(_ text: String) { description = text }
}

/// Output of a helper program (psql, mariadb, sqlite3, initdb …).
package struct ToolResult {
    package var status: Int32?
    package var stdout: String
    package var stderr: String
    package var succeeded: Bool { status == 0 }
}

package enum ServerSupport {
    /// The first executable called `name` in `directories`.
    package static func find(_ name: String, in directories: [String]) -> String? {
        directories.map { $0 + "/" + name }.first { access($0, X_OK) == 0 }
    }

    package static let standardDirectories = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]

    /// A port on 127.0.0.1 that nothing listens on right now (the kernel picks it).
    package static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ServerError("socket() failed: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw ServerError("bind(127.0.0.1:0) failed: \(String(cString: strerror(errno)))") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw ServerError("getsockname failed: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// A new folder /tmp/kho-<label>-XXXXXX (mode 0755).
    package static func makeTemporaryFolder(_ label: String) throws -> String {
        var template = Array("/tmp/kho-\(label)-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw ServerError("mkdtemp(/tmp/kho-\(label)-XXXXXX) failed: \(String(cString: strerror(errno)))")
        }
        let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        chmod(path, 0o755)
        return path
    }

    /// Gives `path` and everything below it to `user` (as `chown -R`).
    package static func chownTree(_ path: String, to user: String) throws {
        // getpwnam_r, not getpwnam: suites start PostgreSQL and MariaDB in parallel, and getpwnam's
        // one static answer can be overwritten by the other thread's ("mysql" owning a postgres
        // folder: initdb then fails with "Permission denied").
        var entry = passwd()
        var found: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16384)
        guard getpwnam_r(user, &entry, &buffer, buffer.count, &found) == 0, found != nil else {
            throw ServerError("there is no user \(user) on this machine")
        }
        let (uid, gid) = (entry.pw_uid, entry.pw_gid)
        func walk(_ p: String) {
            lchown(p, uid, gid)
            var info = stat()
            guard lstat(p, &info) == 0, info.st_mode & S_IFMT == S_IFDIR,
                  let names = try? FileManager.default.contentsOfDirectory(atPath: p) else { return }
            for name in names { walk(p + "/" + name) }
        }
        walk(path)
    }

    /// The environment for helper programs: this process's, without variables that would point a
    /// client at another server or a kho repository.
    package static func environment(_ extra: [String: String] = [:]) -> [String: String] {
        var env = ProcessInfo.processInfo.environment.filter { key, _ in
            !key.hasPrefix("KHO_") && !key.hasPrefix("PG") && !key.hasPrefix("MYSQL")
        }
        env["LC_ALL"] = "C.UTF-8"
        for (key, value) in extra { env[key] = value }
        return env
    }

    /// Runs a program to its end; its output goes through files in `scratch`.
    package static func run(_ executable: String, _ arguments: [String], input: StandardInput = .null, scratch: String,
                    environment: [String: String] = ServerSupport.environment(), timeout: Double = 120) throws -> ToolResult {
        let child = try Child.spawn(executable, arguments, environment: environment, input: input, scratch: scratch)
        let result = child.wait(timeout: timeout)
        return ToolResult(status: result.exitCode, stdout: result.out, stderr: result.err)
    }

    /// Runs a program and throws with its output unless it exits 0.
    @discardableResult
    package static func require(_ executable: String, _ arguments: [String], input: StandardInput = .null, scratch: String,
                        environment: [String: String] = ServerSupport.environment(), timeout: Double = 120) throws -> String {
        let result = try run(executable, arguments, input: input, scratch: scratch, environment: environment, timeout: timeout)
        guard result.succeeded else {
            throw ServerError("\(([executable] + arguments).joined(separator: " ")) exited with \(result.status.map(String.init) ?? "a signal"):\n\(result.stderr)\(result.stdout)")
        }
        return result.stdout
    }

    /// Polls `condition` every 50 ms until it holds; throws `what` after `timeout` seconds.
    package static func waitUntil(_ what: String, timeout: Double = 60, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if try condition() { return }
            if Date() > deadline { throw ServerError("gave up after \(Int(timeout)) s waiting until \(what)") }
            usleep(50_000)
        }
    }

    /// Writes `sql` to a new file in `folder` (readable by every user) and returns its path.
    package static func scriptFile(_ sql: String, in folder: String) throws -> String {
        let path = folder + "/script-\(UInt64.random(in: 0...UInt64.max)).sql"
        try writeFile(path, Array(sql.utf8), mode: 0o644)
        return path
    }
}

// MARK: PostgreSQL

/// A PostgreSQL cluster of its own, on 127.0.0.1 and a random port, owned by the `postgres` user.
package final class ScratchPostgres: @unchecked Sendable {
    /// The newest /usr/lib/postgresql/*/bin that holds initdb, pg_ctl and postgres.
    package static let binDirectory: String? = {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .sorted { (Int($0) ?? 0, $0) > (Int($1) ?? 0, $1) }
        return versions.map { "\(root)/\($0)/bin" }.first { bin in
            ["initdb", "pg_ctl", "postgres", "psql"].allSatisfy { access(bin + "/" + $0, X_OK) == 0 }
        }
    }()

    package static let runuser = ServerSupport.find("runuser", in: ServerSupport.standardDirectories)

    /// Why the tests cannot start a cluster here, or nil when they can.
    package static let unavailableReason: String? = {
        if binDirectory == nil { return "PostgreSQL server binaries (initdb, pg_ctl, postgres, psql in /usr/lib/postgresql/*/bin) are missing: install postgresql" }
        if runuser == nil { return "runuser is missing (util-linux): initdb must run as the postgres user" }
        if getpwnam("postgres") == nil { return "there is no postgres user (install postgresql)" }
        if geteuid() != 0 { return "starting a scratch PostgreSQL cluster needs root (to run initdb as the postgres user)" }
        return nil
    }()

    package static var isAvailable: Bool { unavailableReason == nil }

    /// The server started by the `.scratchPostgres` suite trait, for the tests of that suite.
    @TaskLocal package static var shared: ScratchPostgres?

    /// `shared`, or a failed requirement that says the suite lacks the trait.
    package static func requireShared(sourceLocation: SourceLocation = #_sourceLocation) throws -> ScratchPostgres {
        try #require(shared, "this suite needs the .scratchPostgres trait", sourceLocation: sourceLocation)
    }

    package let bin: String
    /// The temporary folder: the data directory `data`, the socket, the log, scripts.
    package let dir: String
    package var dataDirectory: String { dir + "/data" }
    package var logFile: String { dir + "/server.log" }
    package private(set) var port = 0
    package let superuser = "postgres"
    /// With a password, TCP logins need it (SCRAM); logins through the socket stay trusted.
    package let password: String?
    package private(set) var isRunning = false

    /// Creates and starts the cluster; `settings` are postgresql.conf lines added before the start
    /// (e.g. `ScratchPostgres.archiving(command:)`).
    package init(label: String = "pg", password: String? = nil, settings: [String] = []) throws {
        guard let bin = ScratchPostgres.binDirectory, ScratchPostgres.unavailableReason == nil else {
            throw ServerError(ScratchPostgres.unavailableReason ?? "PostgreSQL is not available")
        }
        self.bin = bin
        self.password = password
        dir = try ServerSupport.makeTemporaryFolder(label)
        do {
            try ServerSupport.chownTree(dir, to: "postgres")
            var initdb = ["-D", dataDirectory, "-U", superuser, "-E", "UTF8", "--locale=C", "--no-sync"]
            if let password {
                let file = dir + "/pwfile"
                try writeFile(file, Array((password + "\n").utf8), mode: 0o600)
                try ServerSupport.chownTree(file, to: "postgres")
                initdb += ["--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile=" + file]
            } else {
                initdb += ["-A", "trust"]
            }
            try asPostgres(bin + "/initdb", initdb)
            if !settings.isEmpty {
                let conf = dataDirectory + "/postgresql.conf"
                let fd = open(conf, O_WRONLY | O_APPEND | O_CLOEXEC)
                guard fd >= 0 else { throw ServerError("open(\(conf)) failed: \(String(cString: strerror(errno)))") }
                defer { close(fd) }
                let text = Array(("\n" + settings.joined(separator: "\n") + "\n").utf8)
                guard text.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == text.count else {
                    throw ServerError("write(\(conf)) failed: \(String(cString: strerror(errno)))")
                }
            }
            try start()
        } catch {
            stop()
            throw error
        }
    }

    deinit { stop() }

    private func asPostgres(_ program: String, _ arguments: [String], timeout: Double = 120) throws {
        try ServerSupport.require(ScratchPostgres.runuser!, ["-u", "postgres", "--", program] + arguments, scratch: dir, timeout: timeout)
    }

    private func start() throws {
        // The port is free when chosen but another process could take it before the server binds:
        // try a few.
        var lastError: Error?
        for _ in 0..<4 {
            port = try ServerSupport.freeLoopbackPort()
            do {
                try asPostgres(bin + "/pg_ctl", ["-D", dataDirectory, "-l", logFile, "-w", "-t", "60",
                                                 "-o", "-p \(port) -k \(dir) -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off",
                                                 "start"])
                isRunning = true
                return
            } catch {
                lastError = error
            }
        }
        let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
        throw ServerError("the scratch PostgreSQL server did not start: \(lastError.map { "\($0)" } ?? "")\n\(log.suffix(2000))")
    }

    /// Stops the server (immediately: the data is thrown away) and removes the folder. Idempotent.
    package func stop() {
        if isRunning {
            let stopped = try? ServerSupport.run(ScratchPostgres.runuser!, ["-u", "postgres", "--", bin + "/pg_ctl", "-D", dataDirectory, "-m", "immediate", "-w", "stop"],
                                                 scratch: dir, timeout: 60)
            if stopped?.succeeded != true,
               let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8),
               let pid = text.split(separator: "\n").first.flatMap({ pid_t($0) }), pid > 0 {
                kill(pid, SIGKILL)  // the postmaster is not our child: PID 1 reaps it
            }
            isRunning = false
        }
        if !dir.isEmpty { try? removeTree(dir) }
    }

    /// postgresql.conf lines that archive every WAL file with `command` (`%p` is the file):
    /// `archive_timeout = 1` so that a test does not wait for segments to fill.
    package static func archiving(command: String) -> [String] {
        ["archive_mode = on", "archive_command = '" + command.replacingOccurrences(of: "'", with: "''") + "'", "archive_timeout = 1"]
    }

    /// A program of this server's version (psql, pg_dump, pgbench …).
    package func program(_ name: String) -> String { bin + "/" + name }

    /// The URL kho takes: postgres://USER@127.0.0.1:PORT/DATABASE.
    package func url(_ database: String, user: String = "postgres", port: Int? = nil) -> String {
        "postgres://\(user)@127.0.0.1:\(port ?? self.port)/\(database)"
    }

    /// Arguments for `psql` that reach this server through its socket (trusted even with a password).
    package func psqlArguments(database: String) -> [String] {
        ["-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h", dir, "-p", String(port), "-U", superuser, "-d", database]
    }

    /// Runs SQL as the superuser and returns what it printed (unaligned, tab-separated, no headers),
    /// without the final newline; throws with psql's error when a statement fails.
    @discardableResult
    package func psql(_ sql: String, database: String = "postgres") throws -> String {
        let script = try ServerSupport.scriptFile(sql, in: dir)
        defer { unlink(script) }
        let out = try ServerSupport.require(program("psql"), psqlArguments(database: database) + ["-f", script], scratch: dir)
        return out.hasSuffix("\n") ? String(out.dropLast()) : out
    }

    /// The rows a query printed, one string per row (columns tab-separated).
    package func rows(_ sql: String, database: String = "postgres") throws -> [String] {
        try psql(sql, database: database).split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
    }

    /// A single value.
    package func value(_ sql: String, database: String = "postgres") throws -> String {
        try psql(sql, database: database).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    package func createDatabase(_ name: String) throws {
        try psql("CREATE DATABASE \"\(name)\" TEMPLATE template0;")
    }

    /// The names of the databases (without the templates), sorted.
    package func databases() throws -> [String] {
        try rows("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1;")
    }

    /// Every row of every user table of `database`, as text in a defined order, hashed: equal
    /// fingerprints mean equal contents.
    package func fingerprint(_ database: String) throws -> String {
        let tables = try rows("""
            SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
            WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1;
            """, database: database)
        var parts: [String] = []
        for table in tables {
            parts.append(table + " " + (try value("SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '-') FROM \(table) t;", database: database)))
        }
        return parts.joined(separator: "\n")
    }
}

// MARK: MariaDB

/// A MariaDB server of its own: a data directory made by `mariadb-install-db`, `mariadbd` on
/// 127.0.0.1 and a random port; `root` logs in over TCP without a password.
package final class ScratchMariaDB: @unchecked Sendable {
    package static let server = ServerSupport.find("mariadbd", in: ServerSupport.standardDirectories)
        ?? ServerSupport.find("mysqld", in: ServerSupport.standardDirectories)
    package static let installDB = ServerSupport.find("mariadb-install-db", in: ServerSupport.standardDirectories)
        ?? ServerSupport.find("mysql_install_db", in: ServerSupport.standardDirectories)
    package static let client = ServerSupport.find("mariadb", in: ServerSupport.standardDirectories)
        ?? ServerSupport.find("mysql", in: ServerSupport.standardDirectories)

    package static let unavailableReason: String? = {
        if server == nil || installDB == nil { return "MariaDB server binaries (mariadbd, mariadb-install-db) are missing: install mariadb-server" }
        if client == nil { return "the mariadb client is missing: install mariadb-client" }
        if getpwnam("mysql") == nil { return "there is no mysql user (install mariadb-server)" }
        if geteuid() != 0 { return "starting a scratch MariaDB server needs root (its folder belongs to the mysql user)" }
        return nil
    }()

    package static var isAvailable: Bool { unavailableReason == nil }

    /// The server started by the `.scratchMariaDB` suite trait.
    @TaskLocal package static var shared: ScratchMariaDB?

    package static func requireShared(sourceLocation: SourceLocation = #_sourceLocation) throws -> ScratchMariaDB {
        try #require(shared, "this suite needs the .scratchMariaDB trait", sourceLocation: sourceLocation)
    }

    package let dir: String
    package var dataDirectory: String { dir + "/data" }
    package var socketPath: String { dir + "/mariadb.sock" }
    package var pidFile: String { dir + "/mariadb.pid" }
    package var errorLog: String { dir + "/error.log" }
    package private(set) var port = 0
    private var process: Child?

    /// Binary logging (issue 20's MariaDB part): off unless a test asks for it.
    package struct BinaryLog: Sendable {
        package var serverId: Int
        /// The file names' stem: files are `<basename>.000001` … in the data directory.
        package var basename: String
        package var format: String
        package init(serverId: Int = 1, basename: String = "kho-bin", format: String = "ROW") {
            self.serverId = serverId; self.basename = basename; self.format = format
        }
    }
    package let binaryLog: BinaryLog?

    package init(label: String = "mariadb", binaryLog: BinaryLog? = nil) throws {
        guard ScratchMariaDB.unavailableReason == nil else { throw ServerError(ScratchMariaDB.unavailableReason!) }
        self.binaryLog = binaryLog
        dir = try ServerSupport.makeTemporaryFolder(label)
        do {
            try makeDirectories(dataDirectory)
            try ServerSupport.chownTree(dir, to: "mysql")
            // Temporary tables go to the server's own folder: two servers sharing /tmp can collide
            // on the names of their temporary tables while installing.
            try ServerSupport.require(ScratchMariaDB.installDB!, ["--no-defaults", "--datadir=" + dataDirectory, "--tmpdir=" + dir, "--user=mysql",
                                                                  "--auth-root-authentication-method=normal", "--skip-test-db"],
                                      scratch: dir, timeout: 180)
            try start()
        } catch {
            stop()
            throw error
        }
    }

    deinit { stop() }

    private func start() throws {
        var lastError = ""
        for _ in 0..<4 {
            port = try ServerSupport.freeLoopbackPort()
            let child = try Child.spawn(ScratchMariaDB.server!, [
                "--no-defaults", "--datadir=" + dataDirectory, "--tmpdir=" + dir, "--user=mysql", "--port=\(port)", "--bind-address=127.0.0.1",
                "--socket=" + socketPath, "--pid-file=" + pidFile, "--log-error=" + errorLog,
                "--skip-name-resolve", "--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=0",
                // What Debian's configuration sets; the built-in default is latin1.
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
            ] + binaryLogArguments, environment: ServerSupport.environment(), scratch: dir)
            process = child
            do {
                try ServerSupport.waitUntil("the scratch MariaDB server answers on port \(port)", timeout: 60) {
                    guard child.isRunning else { return true }
                    return (try? ServerSupport.run(ScratchMariaDB.client!, clientArguments(database: nil) + ["-e", "SELECT 1"], scratch: dir, timeout: 20))?.succeeded == true
                }
            } catch {
                lastError = "\(error)"
            }
            if child.isRunning && lastError.isEmpty { return }
            stopProcess()
            let log = (try? String(contentsOfFile: errorLog, encoding: .utf8)) ?? ""
            lastError += "\n" + String(log.suffix(2000))
            if !lastError.contains("already in use") && !lastError.contains("Can't start server") { break }
        }
        throw ServerError("the scratch MariaDB server did not start: \(lastError)")
    }

    private var binaryLogArguments: [String] {
        guard let binaryLog else { return ["--skip-log-bin"] }
        return ["--log-bin=" + binaryLog.basename, "--binlog-format=" + binaryLog.format, "--server-id=\(binaryLog.serverId)"]
    }

    private func stopProcess() {
        guard let process else { return }
        if process.isRunning {
            process.send(SIGTERM)
            // mariadbd shuts down cleanly on SIGTERM; a minute is far more than it needs.
            let ended = process.wait(timeout: 60)
            _ = ended
        }
        self.process = nil
    }

    /// Stops the server and removes its folder. Idempotent.
    package func stop() {
        stopProcess()
        if !dir.isEmpty { try? removeTree(dir) }
    }

    /// The URL kho takes: mariadb://USER@127.0.0.1:PORT/DATABASE.
    package func url(_ database: String, user: String = "root", port: Int? = nil) -> String {
        "mariadb://\(user)@127.0.0.1:\(port ?? self.port)/\(database)"
    }

    /// Arguments for the `mariadb` client that reach this server over TCP as root.
    package func clientArguments(database: String?) -> [String] {
        var arguments = ["--protocol=TCP", "-h", "127.0.0.1", "-P", String(port), "-u", "root",
                         "--batch", "--skip-column-names", "--raw", "--default-character-set=utf8mb4"]
        if let database { arguments.append(database) }
        return arguments
    }

    /// Runs SQL as root and returns what it printed (tab-separated rows), without the final newline.
    @discardableResult
    package func sql(_ sql: String, database: String? = nil) throws -> String {
        let script = try ServerSupport.scriptFile(sql, in: dir)
        defer { unlink(script) }
        let out = try ServerSupport.require(ScratchMariaDB.client!, clientArguments(database: database), input: .file(script), scratch: dir)
        return out.hasSuffix("\n") ? String(out.dropLast()) : out
    }

    package func rows(_ sql: String, database: String? = nil) throws -> [String] {
        try self.sql(sql, database: database).split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
    }

    package func value(_ sql: String, database: String? = nil) throws -> String {
        try self.sql(sql, database: database).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The databases, without the server's own, sorted.
    package func databases() throws -> [String] {
        try rows("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1;")
    }

    /// Every row of every table of `database`, hashed per table: equal fingerprints mean equal contents.
    package func fingerprint(_ database: String) throws -> String {
        let tables = try rows("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '\(database)' AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1;")
        var parts: [String] = []
        for table in tables {
            // CHECKSUM TABLE … EXTENDED reads every row.
            let checksum = try value("CHECKSUM TABLE `\(database)`.`\(table)` EXTENDED;")
            let count = try value("SELECT COUNT(*) FROM `\(database)`.`\(table)`;")
            parts.append("\(table) \(count) \(checksum.split(separator: "\t").last ?? "")")
        }
        return parts.joined(separator: "\n")
    }
}

// MARK: SQLite

package enum ScratchSQLite {
    package static let cli = ServerSupport.find("sqlite3", in: ServerSupport.standardDirectories)
    package static var isAvailable: Bool { cli != nil }
    package static let unavailableReason = "the sqlite3 command-line program is missing: install sqlite3"

    /// Runs SQL on the database file `path` with the sqlite3 program (waiting up to 10 s for locks).
    @discardableResult
    package static func sql(_ sql: String, path: String, scratch: String) throws -> String {
        let script = try ServerSupport.scriptFile(".timeout 10000\n.bail on\n" + sql, in: scratch)
        defer { unlink(script) }
        let out = try ServerSupport.require(cli!, ["-batch", "-noheader", "-separator", "\t", path], input: .file(script), scratch: scratch)
        return out.hasSuffix("\n") ? String(out.dropLast()) : out
    }

    package static func value(_ sql: String, path: String, scratch: String) throws -> String {
        try self.sql(sql, path: path, scratch: scratch).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

// MARK: a client that keeps writing

/// A database client fed the same block of SQL again and again through its standard input, until
/// `stop()` closes it. Stands for the application that keeps writing while a backup runs.
package final class BackgroundSQL: @unchecked Sendable {
    package let pid: pid_t
    private let socket: Int32
    private let block: [UInt8]
    private let prelude: [UInt8]
    private let stopping = NSLock()
    private var stopRequested = false
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)
    private let outputPath: String
    private var result: ToolResult?

    /// Starts `executable` reading `block` (repeated) on standard input; its output goes to a file in `scratch`.
    /// `prelude` is sent once, before the first block.
    package init(_ executable: String, _ arguments: [String], prelude: String = "", block: String, scratch: String,
         environment: [String: String] = ServerSupport.environment()) throws {
        self.block = Array(block.utf8)
        self.prelude = Array(prelude.utf8)
        outputPath = scratch + "/.writer-\(UInt64.random(in: 0...UInt64.max))"
        // A socket pair rather than a pipe: send(MSG_NOSIGNAL) fails instead of raising SIGPIPE
        // when the client has died.
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw ServerError("socketpair failed: \(String(cString: strerror(errno)))")
        }
        // Small buffers, so that the client has little queued work left when the test stops it.
        var small: Int32 = 4096
        setsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(pair[1], SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pair[1], 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([executable] + arguments).map { strdup($0) }
        let envp = environment.map { strdup("\($0.key)=\($0.value)") }
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let code = (argv + [nil]).withUnsafeBufferPointer { a in
            (envp + [nil]).withUnsafeBufferPointer { e in posix_spawn(&pid, executable, &actions, nil, a.baseAddress!, e.baseAddress!) }
        }
        close(pair[1])
        guard code == 0 else {
            close(pair[0])
            throw ServerError("posix_spawn(\(executable)) failed: \(String(cString: strerror(code)))")
        }
        self.pid = pid
        socket = pair[0]
        let thread = Thread { [unowned self] in self.feed() }
        thread.name = "kho-test-writer"
        self.thread = thread
        thread.start()
    }

    private var shouldStop: Bool { stopping.withLock { stopRequested } }

    private func feed() {
        defer { finished.signal() }
        guard sendAll(prelude) else { return }
        while !shouldStop {
            guard sendAll(block) else { return }
        }
    }

    /// False when the client is gone.
    private func sendAll(_ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { send(socket, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            done += n
        }
        return true
    }

    /// Whether the client still runs (it stops on its own only after an error).
    package var isRunning: Bool {
        if result != nil { return false }
        return kill(pid, 0) == 0 && !reapIfEnded()
    }

    private func reapIfEnded() -> Bool {
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        guard r == pid else { return false }
        record(status)
        return true
    }

    private func record(_ status: Int32) {
        let code: Int32? = status & 0x7f == 0 ? (status >> 8) & 0xff : nil
        let output = (try? readFile(outputPath)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        unlink(outputPath)
        result = ToolResult(status: code, stdout: output, stderr: output)
    }

    /// Ends the input after the current block; the client finishes what it read and exits.
    /// Returns its exit status and output.
    @discardableResult
    package func stop() -> ToolResult {
        if let result { return result }
        stopping.withLock { stopRequested = true }
        // The feeder finishes its block unless the client stopped reading (stuck behind a lock):
        // then the client is killed, which ends the feeder's write.
        if finished.wait(timeout: .now() + 60) == .timedOut {
            kill(pid, SIGKILL)
            finished.wait()
        }
        shutdown(socket, Int32(SHUT_WR))
        var status: Int32 = 0
        // A client that does not finish within two minutes is killed (the test then fails on its status).
        let deadline = Date().addingTimeInterval(120)
        while waitpid(pid, &status, WNOHANG) == 0 {
            if Date() > deadline { kill(pid, SIGKILL) }
            usleep(20_000)
        }
        close(socket)
        record(status)
        return result!
    }

    deinit {
        if result == nil {
            kill(pid, SIGKILL)
            stopping.withLock { stopRequested = true }
            shutdown(socket, Int32(SHUT_RDWR))
            finished.wait()
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            close(socket)
            unlink(outputPath)
        }
    }
}

// MARK: suite traits

/// Starts one `ScratchPostgres` for a whole suite (its tests find it in `ScratchPostgres.shared`)
/// and stops it when the suite ends.
package struct ScratchPostgresTrait: SuiteTrait, TestScoping {
    package var isRecursive: Bool { false }

    package func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard ScratchPostgres.isAvailable else { return try await function() }
        let server = try ScratchPostgres(label: "pg-suite")
        defer { server.stop() }
        try await ScratchPostgres.$shared.withValue(server) { try await function() }
    }
}

/// Starts one `ScratchMariaDB` for a whole suite (`ScratchMariaDB.shared`).
package struct ScratchMariaDBTrait: SuiteTrait, TestScoping {
    package var isRecursive: Bool { false }

    package func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard ScratchMariaDB.isAvailable else { return try await function() }
        let server = try ScratchMariaDB(label: "mariadb-suite")
        defer { server.stop() }
        try await ScratchMariaDB.$shared.withValue(server) { try await function() }
    }
}

extension Trait where Self == ScratchPostgresTrait {
    /// One scratch PostgreSQL cluster for the suite.
    package static var scratchPostgres: Self { Self() }
}

extension Trait where Self == ScratchMariaDBTrait {
    /// One scratch MariaDB server for the suite.
    package static var scratchMariaDB: Self { Self() }
}
