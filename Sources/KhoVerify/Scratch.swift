import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoSources

/// Scratch targets a drill creates and always destroys: also when a step fails, and when the
/// process is interrupted (the command line calls `ScratchRegistry.tearDownAll()` from its signal
/// handler).
public enum ScratchRegistry {
    private static let live = Locked<[ObjectIdentifier: ScratchTarget]>([:])
    /// Set once the process is being interrupted: the signal handler owns the teardown from then on.
    static let interrupted = Locked(false)

    /// Run by `tearDownAll` once the scratch targets are gone (a drill marks its catalog record).
    private static let interruptActions = Locked<[UUID: @Sendable () -> Void]>([:])

    static func register(_ target: ScratchTarget) { live.withLock { $0[ObjectIdentifier(target)] = target } }
    static func unregister(_ target: ScratchTarget) { live.withLock { $0[ObjectIdentifier(target)] = nil } }

    static func onInterrupt(_ action: @escaping @Sendable () -> Void) -> UUID {
        let id = UUID()
        interruptActions.withLock { $0[id] = action }
        return id
    }

    static func removeOnInterrupt(_ id: UUID) { interruptActions.withLock { $0[id] = nil } }

    /// For the signal handler, which exits right after: stops the helper programs a drill is
    /// waiting for (initdb, pg_ctl, mariadb-install-db, pg_amcheck …), so that nothing writes into
    /// a scratch folder any more, then stops every scratch server and removes every scratch folder.
    /// A drill thread that reaches its own teardown meanwhile waits for this one and then never
    /// returns, so it cannot record a half-done drill or exit before the folders are gone.
    public static func tearDownAll() {
        interrupted.withLock { $0 = true }
        Shell.killRunning()
        let targets = Array(live.current.values)
        for target in targets { target.tearDown(interrupting: true) }
        // kho's own threads run on until the process exits: a restore into a scratch folder torn
        // down first can create it again by name (its target's missing folders) while a scratch
        // server is still being stopped. Removed once more, last.
        for target in targets { target.removeFolder() }
        for action in interruptActions.current.values { action() }
    }
}

public class ScratchTarget: @unchecked Sendable {
    public let directory: String
    /// Held for the whole teardown, so that a second caller waits until the first has finished.
    private let teardown = NSLock()
    private var done = false

    init(prefix: String) throws {
        var template = Array((NSTemporaryDirectory() + "kho-drill-\(prefix)-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw KhoError(.failure, "Cannot create a scratch folder for the drill in \(NSTemporaryDirectory()): \(String(cString: strerror(errno))).")
        }
        directory = String(cString: made)
        ScratchRegistry.register(self)
        // mkdtemp's 0700 stays: restored data (and a scratch server's socket) is for kho alone;
        // a scratch server's folder is handed to the server's user, still 0700.
        if ScratchRegistry.interrupted.current { tearDown() }
    }

    /// Stops what runs and removes the folder; safe to call twice, and from two threads.
    public func tearDown() { tearDown(interrupting: false) }

    func tearDown(interrupting: Bool) {
        teardown.lock()
        if !done {
            stop()
            // A helper killed by an interruption may have left a child behind (initdb's server,
            // a postmaster pg_ctl had just forked): nothing that names the folder may survive it.
            Shell.killProcesses(naming: directory)
            removeFolder()
            done = true
            ScratchRegistry.unregister(self)
        }
        teardown.unlock()
        if !interrupting && ScratchRegistry.interrupted.current {
            // The signal handler is tearing everything down and exits the process in a moment.
            while true { pause() }
        }
    }

    func stop() {}

    /// Removes the folder. After an interruption kho's restore threads may still be writing into
    /// it (files of a base backup): a pass that meets their new files fails, so it is repeated,
    /// for a few seconds at most, until the folder is gone (their writes then fail).
    func removeFolder() {
        let deadline = Date().addingTimeInterval(5)
        while true {
            // try?: the folder is private (0700) and in TMPDIR; a teardown must go on to unregister
            // whatever is left, and the loop checks whether it is gone.
            try? FileManager.default.removeItem(atPath: directory)
            var info = stat()
            if lstat(directory, &info) != 0 && errno == ENOENT { return }
            if Date() > deadline { return }
            usleep(10_000)
        }
    }

    deinit { tearDown() }
}

enum Shell {
    /// Helper programs running now (each leads its own process group).
    private static let running = Locked<Set<pid_t>>([])

    /// Kills every running helper program with its children (their process groups).
    static func killRunning() {
        for pid in running.current { kill(-pid, SIGKILL) }
        // The drill thread reaps its helper; wait (briefly) until every group is gone, so that
        // no killed program still writes when the folders are removed.
        let deadline = Date().addingTimeInterval(10)
        for pid in running.current {
            while groupAlive(pid) && Date() < deadline { usleep(10_000) }
        }
    }

    /// Whether a process of the group still runs (zombies waiting for their parent do not count:
    /// an orphan's parent may take its time to reap it).
    static func groupAlive(_ group: pid_t) -> Bool {
        // try?: without /proc, kill(-group, 0) answers the same question, zombies included.
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return kill(-group, 0) == 0 }
        for name in names where pid_t(name) != nil {
            guard let data = FileManager.default.contents(atPath: "/proc/\(name)/stat"),
                  let text = String(data: data, encoding: .utf8), let close = text.lastIndex(of: ")") else { continue }
            // After the command's closing parenthesis: state, parent, process group.
            let fields = text[text.index(after: close)...].split(separator: " ")
            if fields.count > 2, fields[0] != "Z", fields[0] != "X", pid_t(fields[2]) == group { return true }
        }
        return false
    }

    /// Kills (SIGKILL) every process whose command line contains `path`, and waits until they are gone.
    static func killProcesses(naming path: String) {
        let needle = Array(path.utf8)
        func matching() -> [pid_t] {
            // try?: without /proc no process can be found by its command line; the folder is removed regardless.
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
            return names.compactMap { name -> pid_t? in
                guard let pid = pid_t(name), pid != getpid(),
                      let data = FileManager.default.contents(atPath: "/proc/\(name)/cmdline"), !data.isEmpty else { return nil }
                let bytes = Array(data)
                guard bytes.count >= needle.count else { return nil }
                for start in 0...(bytes.count - needle.count) where bytes[start] == needle[0] && Array(bytes[start..<start + needle.count]) == needle {
                    return pid
                }
                return nil
            }
        }
        var left = matching()
        let deadline = Date().addingTimeInterval(10)
        while !left.isEmpty && Date() < deadline {
            for pid in left { kill(pid, SIGKILL) }
            usleep(20_000)
            left = matching()
        }
    }

    /// Runs a program and returns its exit status and combined output (bounded). The output goes
    /// through a file, not a pipe: a server that the program starts inherits the descriptors, and
    /// a pipe would then never reach its end. The file is unlinked at once, so that nothing is left
    /// behind even when the process is interrupted. The program leads its own process group, which
    /// the signal handler kills.
    @discardableResult
    /// Once an interruption began, only the teardown (`duringTeardown`) starts programs.
    static func run(_ program: String, _ arguments: [String], environment: [String: String] = ChildEnvironment.minimal(),
                    duringTeardown: Bool = false) -> (status: Int32, output: String) {
        let outputPath = NSTemporaryDirectory() + "kho-drill-output-\(UInt64.random(in: 0...UInt64.max))"
        let outputFD = open(outputPath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard outputFD >= 0 else { return (127, "cannot create \(outputPath): \(String(cString: strerror(errno)))") }
        unlink(outputPath)
        defer { close(outputFD) }
        // posix_spawn and waitpid directly: the child is reaped here, whatever else the process does.
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outputFD, 1)
        posix_spawn_file_actions_adddup2(&actions, outputFD, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        // `environment` is the program's whole environment: kho's secrets stay in kho.
        let env = environment.map { "\($0.key)=\($0.value)" }
        let argv = ([program] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let spawned = running.withLock { set -> Int32 in
            if ScratchRegistry.interrupted.current && !duringTeardown { return ECANCELED }
            let code = posix_spawn(&pid, program, &actions, &attributes, argv, envp)
            if code == 0 { set.insert(pid) }
            return code
        }
        guard spawned == 0 else { return (127, "cannot start \(program): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        running.withLock { _ = $0.remove(pid) }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while data.count < 64 << 10 {
            let n = buffer.withUnsafeMutableBytes { pread(outputFD, $0.baseAddress, $0.count, off_t(data.count)) }
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        let exitStatus: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (exitStatus, String(decoding: data.prefix(64 << 10), as: UTF8.self))
    }

    static func find(_ name: String) -> String? { findProgram(name, serverFirst: true) }
}

/// A temporary PostgreSQL cluster that only kho can reach (initdb in a scratch folder; as the
/// `postgres` user when kho runs as root, since initdb refuses root). It listens on no TCP port:
/// its one socket is in the scratch folder (0700, the server's user), and it lets in only the
/// operating-system users mapped to its superuser (peer authentication: kho's user and the
/// server's own), so that a local user can neither reach the restored data nor run programs
/// through it (COPY … TO PROGRAM).
public final class ScratchPostgres: ScratchTarget, @unchecked Sendable {
    /// Only names the socket file (.s.PGSQL.5432) in the private folder: no TCP port is opened,
    /// so none is chosen, and none can be taken by another process.
    public let port = 5432
    private let bin: String
    private let asRoot = geteuid() == 0
    /// The role kho logs in as (the peer map names it): `postgres`, or a recovered cluster's
    /// bootstrap superuser.
    public let superuser: String

    public init() throws {
        superuser = "postgres"
        guard let initdb = Shell.find("initdb") else {
            throw KhoError(.failure, "The drill needs PostgreSQL's server programs (initdb, pg_ctl): install Debian's postgresql package.")
        }
        bin = (initdb as NSString).deletingLastPathComponent
        try super.init(prefix: "pg")
        do {
            if asRoot { try Scratch.giveFolder(directory, to: "postgres") }
            let data = directory + "/data"
            let made = runAsOwner(bin + "/initdb", ["-D", data, "--auth-local=peer", "--auth-host=reject", "-E", "UTF8", "--locale=C.UTF-8", "-U", "postgres"])
            guard made.status == 0 else {
                throw KhoError(.failure, "initdb of the scratch cluster failed: \(made.output.split(separator: "\n").last ?? "")")
            }
            // Peer authentication maps kho's user (and the server's) to the superuser; nothing else
            // gets in. Settings go into the files, not onto pg_ctl's command line, which pg_ctl
            // hands to a shell.
            let me = asRoot ? "root" : Scratch.userName()
            try Scratch.write(data + "/pg_hba.conf", "local all all peer map=kho\n")
            try Scratch.write(data + "/pg_ident.conf", "kho \(me) postgres\nkho postgres postgres\n")
            try Scratch.write(data + "/postgresql.conf", """

                listen_addresses = ''
                port = \(port)
                unix_socket_directories = \(Scratch.configQuote(directory))
                unix_socket_permissions = 0700

                """, append: true)
            let started = runAsOwner(bin + "/pg_ctl", ["-D", data, "-l", directory + "/server.log", "-w", "-t", "60", "start"])
            guard started.status == 0 else {
                // try?: the log only adds detail to the message; the error is thrown either way.
                let log = (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? ""
                throw KhoError(.failure, "The scratch PostgreSQL did not start: \(log.split(separator: "\n").last ?? Substring(started.output)).")
            }
        } catch {
            tearDown()
            throw error
        }
    }

    /// A cluster recovered from a base backup (the PITR drill, PITRDrill.swift): `fill` puts the
    /// data directory at `<folder>/data`, owned by `owner`, and starts it; from then on the
    /// teardown stops it and removes the folder like any scratch cluster's.
    init(recovering bin: String, superuser: String, fill: (_ folder: String, _ owner: (uid: uid_t, gid: gid_t)) throws -> Void) throws {
        self.bin = bin
        self.superuser = superuser
        try super.init(prefix: "pitr")
        do {
            let owner: (uid: uid_t, gid: gid_t)
            if asRoot {
                try Scratch.giveFolder(directory, to: "postgres")
                guard let entry = getpwnam("postgres") else {
                    throw KhoError(.failure, "The drill needs the system user postgres (created by the server's Debian package): install the package.")
                }
                owner = (entry.pointee.pw_uid, entry.pointee.pw_gid)
            } else {
                owner = (geteuid(), getegid())
            }
            try fill(directory, owner)
        } catch {
            tearDown()
            throw error
        }
    }

    private func runAsOwner(_ program: String, _ arguments: [String], duringTeardown: Bool = false) -> (status: Int32, output: String) {
        asRoot ? Shell.run("/usr/sbin/runuser", ["-u", "postgres", "--", program] + arguments, duringTeardown: duringTeardown)
            : Shell.run(program, arguments, duringTeardown: duringTeardown)
    }

    /// The socket folder as host: kho's clients reach the cluster through its private socket.
    public func endpoint(database: String) -> DatabaseEndpoint {
        DatabaseEndpoint(host: directory, port: port, user: superuser, database: database, isolated: true)
    }

    override func stop() {
        // The System V shared memory segment the postmaster named in its pid file: a server
        // stopped while it was still starting (an interrupted drill) does not remove it itself.
        let segment = sharedMemorySegment()
        _ = runAsOwner(bin + "/pg_ctl", ["-D", directory + "/data", "-m", "immediate", "-w", "stop"], duringTeardown: true)
        if let (key, id) = segment {
            var info = shmid_ds()
            // Only that segment (same key): it goes once its last process has detached.
            if shmctl(id, IPC_STAT, &info) == 0 && info.shm_perm.__key == key { _ = shmctl(id, IPC_RMID, nil) }
        }
    }

    /// Line 7 of postmaster.pid: the segment's key and ID.
    private func sharedMemorySegment() -> (key: key_t, id: Int32)? {
        // try?: no pid file means the postmaster never created its segment.
        guard let text = try? String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= 7 else { return nil }
        let fields = lines[6].split(separator: " ")
        guard fields.count == 2, let key = key_t(fields[0]), let id = Int32(fields[1]) else { return nil }
        return (key, id)
    }
}

/// A temporary MariaDB server that only kho can reach: no networking, its socket in the scratch
/// folder (0700, the server's user), and root logs in only as the operating-system root
/// (unix_socket authentication; the account of kho's own user when kho is not root).
public final class ScratchMariaDB: ScratchTarget, @unchecked Sendable {
    private var process: Subprocess?
    private let user: String
    public var socket: String { directory + "/sock" }

    public init() throws {
        guard let install = Shell.find("mariadb-install-db") ?? Shell.find("mysql_install_db"),
              let server = Shell.find("mariadbd") ?? Shell.find("mysqld") else {
            throw KhoError(.failure, "The drill needs MariaDB's server programs (mariadb-install-db, mariadbd): install Debian's mariadb-server package.")
        }
        let root = geteuid() == 0
        user = root ? "root" : Scratch.userName()
        try super.init(prefix: "mariadb")
        do {
            if root { try Scratch.giveFolder(directory, to: "mysql") }
            // Temporary files in the scratch folder too: the server runs as mysql, which may not be
            // allowed to write to kho's TMPDIR (InnoDB then fails to start).
            var installArguments = ["--no-defaults", "--datadir=\(directory)/data", "--tmpdir=\(directory)",
                                    "--auth-root-authentication-method=socket", "--skip-test-db"]
            installArguments += root ? ["--user=mysql"] : ["--auth-root-socket-user=\(user)"]
            let made = Shell.run(install, installArguments)
            guard made.status == 0 else {
                throw KhoError(.failure, "mariadb-install-db for the scratch server failed: \(made.output.split(separator: "\n").last ?? "")")
            }
            var arguments = ["--no-defaults", "--datadir=\(directory)/data", "--skip-networking",
                             "--socket=\(socket)", "--pid-file=\(directory)/pid", "--tmpdir=\(directory)", "--skip-log-bin",
                             "--log-error=\(directory)/error.log"]
            if root { arguments.append("--user=mysql") }
            let process = try Subprocess(program: server, arguments: arguments, environment: ChildEnvironment.minimal(), stderrLimit: 16 << 10)
            self.process = process
            let deadline = Date().addingTimeInterval(60)
            while !answers() {
                if Date() > deadline || process.hasEnded {
                    // try?: the log only adds detail to the message; the error is thrown either way.
                    let log = (try? String(contentsOfFile: directory + "/error.log", encoding: .utf8)) ?? ""
                    throw KhoError(.failure, "The scratch MariaDB did not start: \(log.split(separator: "\n").last ?? "no log").")
                }
                Thread.sleep(forTimeInterval: 0.2)
            }
        } catch {
            tearDown()
            throw error
        }
    }

    /// Whether the server takes kho's login and answers a query yet.
    private func answers() -> Bool {
        do {
            try MariaDBConnection(endpoint: endpoint(database: ""), database: nil, source: "drill scratch", connectTimeout: 5).query("SELECT 1")
            return true
        } catch {
            // Not up yet (no socket, or still starting): the caller's deadline reports a server
            // that never comes up, with its log.
            return false
        }
    }

    /// The socket file as host.
    public func endpoint(database: String) -> DatabaseEndpoint {
        DatabaseEndpoint(host: socket, port: 0, user: user, database: database, isolated: true)
    }

    override func stop() {
        guard let process else { return }
        process.signal(SIGTERM)
        let deadline = Date().addingTimeInterval(30)
        while !process.hasEnded && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        process.signal(SIGKILL)
        process.wait()
    }
}

/// A scratch folder (for files and SQLite drills).
public final class ScratchFolder: ScratchTarget, @unchecked Sendable {
    public init() throws { try super.init(prefix: "files") }
}

/// Small pieces the scratch servers share.
enum Scratch {
    /// Hands the (empty, 0700) scratch folder to a server's user.
    static func giveFolder(_ path: String, to user: String) throws {
        guard let entry = getpwnam(user) else {
            throw KhoError(.failure, "The drill needs the system user \(user) (created by the server's Debian package): install the package.")
        }
        guard chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid) == 0, chmod(path, 0o700) == 0 else {
            throw KhoError.posix("chown", path, errno: errno)
        }
    }

    static func userName() -> String {
        guard let entry = getpwuid(geteuid()) else { return String(geteuid()) }
        return String(cString: entry.pointee.pw_name)
    }

    /// Writes a server's configuration file (keeping its owner and mode: it exists already).
    static func write(_ path: String, _ text: String, append: Bool = false) throws {
        let fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | (append ? O_APPEND : O_TRUNC))
        guard fd >= 0 else { throw KhoError.posix("open", path, errno: errno) }
        defer { close(fd) }
        try Array(text.utf8).withUnsafeBytes { try Syscall.writeAll(fd, $0, path) }
    }

    /// A value in postgresql.conf: single quotes, with quotes and backslashes escaped.
    static func configQuote(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "''") + "'"
    }
}
