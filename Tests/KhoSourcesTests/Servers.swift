import Foundation
import Glibc
@testable import KhoSources
import KhoSupport
import Testing

// The minimal start-up of a real PostgreSQL and MariaDB for the client tests (copied in spirit from
// Tests/KhoIntegrationTests/Servers.swift until shared test helpers have a target of their own):
// each server in its own folder, on 127.0.0.1 and a free port, stopped by `stop()`.

struct ServerError: Error, CustomStringConvertible {
    var description: String
    init(_ text: String) { description = text }
}

enum Tools {
    static let standardDirectories = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]

    static func find(_ name: String) -> String? {
        standardDirectories.map { $0 + "/" + name }.first { access($0, X_OK) == 0 }
    }

    static func postgresBin() -> String? {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
        return versions.map { "\(root)/\($0)/bin" }.first { bin in ["initdb", "pg_ctl", "psql"].allSatisfy { access(bin + "/" + $0, X_OK) == 0 } }
    }

    static var postgresAvailable: Bool { postgresBin() != nil && find("runuser") != nil && getpwnam("postgres") != nil && geteuid() == 0 }
    static var mariadbAvailable: Bool {
        find("mariadbd") != nil && find("mariadb-install-db") != nil && find("mariadb") != nil && getpwnam("mysql") != nil && geteuid() == 0
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ServerError("socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { throw ServerError("bind(127.0.0.1:0) failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func folder(_ label: String, owner: String) throws -> String {
        var template = Array("/tmp/kho-sources-\(label)-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else { throw ServerError("mkdtemp failed") }
        let path = String(cString: template)
        guard let entry = getpwnam(owner) else { throw ServerError("no user \(owner)") }
        chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid)
        chmod(path, 0o755)
        return path
    }

    /// Runs a program to its end, its output (both streams) returned; throws unless it exits 0.
    /// The output goes through a file: a server the program starts inherits the descriptors, and
    /// a pipe would never reach its end.
    @discardableResult
    static func run(_ program: String, _ arguments: [String], input: String? = nil) throws -> String {
        let outputPath = "/tmp/kho-sources-output-\(UInt64.random(in: 0...UInt64.max))"
        defer { unlink(outputPath) }
        var inputPath = "/dev/null"
        if let input {
            inputPath = "/tmp/kho-sources-input-\(UInt64.random(in: 0...UInt64.max))"
            try Data(input.utf8).write(to: URL(fileURLWithPath: inputPath))
        }
        defer { if input != nil { unlink(inputPath) } }
        // posix_spawn and waitpid: Foundation's Process can miss the exit of a child whose own
        // child (a server) lives on.
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, inputPath, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([program] + arguments).map { strdup($0) } + [nil]
        let environment: [String] = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8"]
        let envp = environment.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var pid: pid_t = 0
        guard posix_spawn(&pid, program, &actions, nil, argv, envp) == 0 else { throw ServerError("cannot start \(program)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        guard status == 0 else { throw ServerError("\(program) \(arguments.joined(separator: " ")) failed: \(text)") }
        return text
    }
}

/// A PostgreSQL cluster whose TCP logins need `password` (SCRAM); the socket stays trusted.
final class TestPostgres: @unchecked Sendable {
    let bin: String
    let dir: String
    let port: Int
    let password: String
    private var running = false

    init(password: String) throws {
        guard let bin = Tools.postgresBin(), let runuser = Tools.find("runuser") else { throw ServerError("PostgreSQL is not installed") }
        self.bin = bin
        self.password = password
        dir = try Tools.folder("pg", owner: "postgres")
        port = try Tools.freePort()
        let pwfile = dir + "/pwfile"
        try Data((password + "\n").utf8).write(to: URL(fileURLWithPath: pwfile))
        let entry = getpwnam("postgres")!
        chown(pwfile, entry.pointee.pw_uid, entry.pointee.pw_gid)
        try Tools.run(runuser, ["-u", "postgres", "--", bin + "/initdb", "-D", dir + "/data", "-U", "postgres", "-E", "UTF8", "--locale=C",
                                "--no-sync", "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile=" + pwfile])
        try Tools.run(runuser, ["-u", "postgres", "--", bin + "/pg_ctl", "-D", dir + "/data", "-l", dir + "/server.log", "-w", "-t", "60",
                                "-o", "-p \(port) -k \(dir) -c listen_addresses=127.0.0.1 -c fsync=off", "start"])
        running = true
    }

    func endpoint(_ database: String = "postgres", password: String? = nil) -> DatabaseEndpoint {
        DatabaseEndpoint(host: "127.0.0.1", port: port, user: "postgres", database: database, passwordEnv: password.map { _ in "KHO_SOURCES_TEST_PG_PASSWORD" })
    }

    /// A connection that logs in with the right password (given to libpq through the endpoint's file).
    func connect(_ database: String = "postgres") throws -> PostgresConnection {
        let file = dir + "/client-password"
        if access(file, R_OK) != 0 { try Data(password.utf8).write(to: URL(fileURLWithPath: file)) }
        var endpoint = endpoint(database)
        endpoint.passwordFile = file
        return try PostgresConnection(endpoint: endpoint, database: database, source: "test")
    }

    /// psql through the trusted socket, unaligned and tab-separated, as kho's old SQLSession ran it.
    func psql(_ sql: String, database: String = "postgres") throws -> String {
        try Tools.run(bin + "/psql", ["-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h", dir, "-p", String(port), "-U", "postgres",
                                      "-d", database], input: sql)
    }

    func stop() {
        guard running, let runuser = Tools.find("runuser") else { return }
        _ = try? Tools.run(runuser, ["-u", "postgres", "--", bin + "/pg_ctl", "-D", dir + "/data", "-m", "immediate", "-w", "stop"])
        running = false
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// A MariaDB server with a user `kho` that logs in over TCP with `password`.
final class TestMariaDB: @unchecked Sendable {
    let dir: String
    let port: Int
    let password: String
    private var process: Process?
    var socket: String { dir + "/sock" }

    init(password: String) throws {
        guard let server = Tools.find("mariadbd"), let install = Tools.find("mariadb-install-db") else { throw ServerError("MariaDB is not installed") }
        self.password = password
        dir = try Tools.folder("mariadb", owner: "mysql")
        port = try Tools.freePort()
        try Tools.run(install, ["--no-defaults", "--datadir=\(dir)/data", "--tmpdir=\(dir)", "--user=mysql", "--auth-root-authentication-method=normal",
                                "--skip-test-db"])
        let process = Process()
        process.executableURL = URL(fileURLWithPath: server)
        process.arguments = ["--no-defaults", "--datadir=\(dir)/data", "--tmpdir=\(dir)", "--user=mysql", "--port=\(port)", "--bind-address=127.0.0.1",
                             "--socket=\(socket)", "--pid-file=\(dir)/pid", "--skip-log-bin", "--log-error=\(dir)/error.log", "--skip-name-resolve",
                             "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci", "--innodb-buffer-pool-size=64M"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        let deadline = Date().addingTimeInterval(60)
        while (try? root().query("SELECT 1")) == nil {
            guard Date() < deadline, process.isRunning else { throw ServerError("MariaDB did not start: \((try? String(contentsOfFile: dir + "/error.log", encoding: .utf8)) ?? "")") }
            usleep(100_000)
        }
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
        let file = dir + "/client-password"
        if access(file, R_OK) != 0 { FileManager.default.createFile(atPath: file, contents: Data(password.utf8), attributes: [.posixPermissions: 0o600]) }
        return DatabaseEndpoint(host: "127.0.0.1", port: port, user: "kho", database: database, passwordFile: file, isolated: true)
    }

    func connect(_ database: String? = nil) throws -> MariaDBConnection {
        try MariaDBConnection(endpoint: endpoint(database ?? ""), database: database, source: "test")
    }

    /// The mariadb client as kho's old SQLSession ran it (batch, raw, no column names).
    func client(_ sql: String, database: String? = nil) throws -> String {
        var arguments = ["--no-defaults", "--protocol=SOCKET", "--socket=\(socket)", "--user=root", "--batch", "--skip-column-names", "--raw",
                         "--default-character-set=utf8mb4"]
        if let database { arguments.append("--database=" + database) }
        return try Tools.run(Tools.find("mariadb")!, arguments, input: sql)
    }

    func stop() {
        guard let process, process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
        self.process = nil
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: dir)
    }
}
