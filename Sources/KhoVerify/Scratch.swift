import Foundation
import Glibc
import KhoCore
import KhoSources

/// Scratch targets a drill creates and always destroys: also when a step fails, and when the
/// process is interrupted (the command line calls `ScratchRegistry.tearDownAll()` from its signal
/// handler).
public enum ScratchRegistry {
    private static let live = Locked<[ObjectIdentifier: ScratchTarget]>([:])

    static func register(_ target: ScratchTarget) { live.withLock { $0[ObjectIdentifier(target)] = target } }
    static func unregister(_ target: ScratchTarget) { live.withLock { $0[ObjectIdentifier(target)] = nil } }

    public static func tearDownAll() {
        for target in live.current.values { target.tearDown() }
    }
}

public class ScratchTarget: @unchecked Sendable {
    public let directory: String
    private let done = Locked(false)

    init(prefix: String) throws {
        var template = Array((NSTemporaryDirectory() + "kho-drill-\(prefix)-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw KhoError(.failure, "Cannot create a scratch folder for the drill in \(NSTemporaryDirectory()): \(String(cString: strerror(errno))).")
        }
        directory = String(cString: made)
        chmod(directory, 0o755)
        ScratchRegistry.register(self)
    }

    /// Stops what runs and removes the folder; safe to call twice.
    public func tearDown() {
        let already = done.withLock { flag -> Bool in defer { flag = true }; return flag }
        if already { return }
        stop()
        try? FileManager.default.removeItem(atPath: directory)
        ScratchRegistry.unregister(self)
    }

    func stop() {}

    deinit { tearDown() }
}

enum Shell {
    /// Runs a program and returns its exit status and combined output (bounded). The output goes
    /// through a file, not a pipe: a server that the program starts inherits the descriptors, and
    /// a pipe would then never reach its end.
    @discardableResult
    static func run(_ program: String, _ arguments: [String], environment: [String: String] = [:]) -> (status: Int32, output: String) {
        let outputPath = NSTemporaryDirectory() + "kho-drill-output-\(UInt64.random(in: 0...UInt64.max))"
        defer { unlink(outputPath) }
        // posix_spawn and waitpid directly: the child is reaped here, whatever else the process does.
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let env = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }.map { "\($0.key)=\($0.value)" }
        let argv = ([program] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, program, &actions, nil, argv, envp)
        guard spawned == 0 else { return (127, "cannot start \(program): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let data = FileManager.default.contents(atPath: outputPath) ?? Data()
        let exitStatus: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (exitStatus, String(decoding: data.prefix(64 << 10), as: UTF8.self))
    }

    static func find(_ name: String) -> String? {
        var dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
        if let versions = try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql") {
            dirs = versions.sorted(by: >).map { "/usr/lib/postgresql/\($0)/bin" } + dirs
        }
        dirs += ["/usr/sbin", "/sbin"]
        for dir in dirs where access(dir + "/" + name, X_OK) == 0 { return dir + "/" + name }
        return nil
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// A temporary PostgreSQL cluster on a random loopback port (initdb in a scratch folder; as the
/// `postgres` user when kho runs as root, since initdb refuses root).
public final class ScratchPostgres: ScratchTarget, @unchecked Sendable {
    public let port: Int
    private let bin: String
    private let asRoot = geteuid() == 0

    public init() throws {
        guard let initdb = Shell.find("initdb") else {
            throw KhoError(.failure, "The drill needs PostgreSQL's server programs (initdb, pg_ctl): install Debian's postgresql package.")
        }
        bin = (initdb as NSString).deletingLastPathComponent
        port = Shell.freePort()
        try super.init(prefix: "pg")
        if asRoot { _ = Shell.run("/bin/chown", ["postgres", directory]) }
        let data = directory + "/data"
        let made = runAsOwner(bin + "/initdb", ["-D", data, "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "-U", "postgres"])
        guard made.status == 0 else {
            tearDown()
            throw KhoError(.failure, "initdb of the scratch cluster failed: \(made.output.split(separator: "\n").last ?? "")")
        }
        let started = runAsOwner(bin + "/pg_ctl", ["-D", data, "-l", directory + "/server.log", "-w", "-t", "60",
                                                   "-o", "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1", "start"])
        guard started.status == 0 else {
            let log = (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? ""
            tearDown()
            throw KhoError(.failure, "The scratch PostgreSQL did not start: \(log.split(separator: "\n").last ?? Substring(started.output)).")
        }
    }

    private func runAsOwner(_ program: String, _ arguments: [String]) -> (status: Int32, output: String) {
        asRoot ? Shell.run("/usr/sbin/runuser", ["-u", "postgres", "--", program] + arguments) : Shell.run(program, arguments)
    }

    public func endpoint(database: String) -> DatabaseEndpoint {
        DatabaseEndpoint(host: "127.0.0.1", port: port, user: "postgres", database: database)
    }

    override func stop() {
        _ = runAsOwner(bin + "/pg_ctl", ["-D", directory + "/data", "-m", "immediate", "-w", "stop"])
    }
}

/// A temporary MariaDB server on a random loopback port, in a scratch data folder.
public final class ScratchMariaDB: ScratchTarget, @unchecked Sendable {
    public let port: Int
    private var process: Process?

    public init() throws {
        guard let install = Shell.find("mariadb-install-db") ?? Shell.find("mysql_install_db"),
              let server = Shell.find("mariadbd") ?? Shell.find("mysqld") else {
            throw KhoError(.failure, "The drill needs MariaDB's server programs (mariadb-install-db, mariadbd): install Debian's mariadb-server package.")
        }
        port = Shell.freePort()
        try super.init(prefix: "mariadb")
        let root = geteuid() == 0
        if root { _ = Shell.run("/bin/chown", ["mysql:mysql", directory]) }
        var installArguments = ["--datadir=\(directory)/data", "--auth-root-authentication-method=normal", "--skip-test-db"]
        if root { installArguments.append("--user=mysql") }
        let made = Shell.run(install, installArguments)
        guard made.status == 0 else {
            tearDown()
            throw KhoError(.failure, "mariadb-install-db for the scratch server failed: \(made.output.split(separator: "\n").last ?? "")")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: server)
        var arguments = ["--no-defaults", "--datadir=\(directory)/data", "--port=\(port)", "--bind-address=127.0.0.1",
                         "--socket=\(directory)/sock", "--pid-file=\(directory)/pid", "--skip-log-bin", "--log-error=\(directory)/error.log"]
        if root { arguments.append("--user=mysql") }
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        let client = Shell.find("mariadb") ?? "/usr/bin/mariadb"
        let deadline = Date().addingTimeInterval(60)
        while Shell.run(client, ["--protocol=TCP", "-h", "127.0.0.1", "-P", String(port), "-u", "root", "-e", "SELECT 1"]).status != 0 {
            if Date() > deadline || !process.isRunning {
                let log = (try? String(contentsOfFile: directory + "/error.log", encoding: .utf8)) ?? ""
                tearDown()
                throw KhoError(.failure, "The scratch MariaDB did not start: \(log.split(separator: "\n").last ?? "no log").")
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
    }

    public func endpoint(database: String) -> DatabaseEndpoint {
        DatabaseEndpoint(host: "127.0.0.1", port: port, user: "root", database: database)
    }

    override func stop() {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

/// A scratch folder (for files and SQLite drills).
public final class ScratchFolder: ScratchTarget, @unchecked Sendable {
    public init() throws { try super.init(prefix: "files") }
}
