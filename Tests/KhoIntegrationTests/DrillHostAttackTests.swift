import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoTestSupport
import Testing

// Attacks on the drill host (issue #17): hostile identifiers reaching database clients, local
// users connecting to a drill's scratch servers, file drills creating setuid files and device
// nodes. Each test drives the real `kho` binary against real servers.

// MARK: a drill paused while its scratch target runs

/// Runs `kho verify --json --source SOURCE` with the tests-only pause (KHO_TEST_DRILL_PAUSE): once
/// the scratch target is loaded, kho writes what it made (key=value lines: host, port, directory)
/// into the pause file and waits until the file is removed. `body` runs meanwhile.
func pausedDrill(_ bench: DrillBench, source: String, _ body: (_ info: [String: String]) throws -> Void) throws -> (ProcessResult, [DrillEvidenceJSON]) {
    let pause = bench.box.path("drill-pause")
    unlink(pause)
    let child = try bench.start(["verify", "--json", "--source", source], env: ["KHO_TEST_DRILL_PAUSE": pause])
    var info: [String: String] = [:]
    do {
        try ServerSupport.waitUntil("the drill of \(source) pauses with its scratch target running", timeout: 180) {
            if let text = try? String(contentsOfFile: pause, encoding: .utf8), text.hasSuffix("\n.\n") {
                for line in text.split(separator: "\n") {
                    guard let equal = line.firstIndex(of: "=") else { continue }
                    info[String(line[..<equal])] = String(line[line.index(after: equal)...])
                }
                return true
            }
            if !child.isRunning { throw ServerError("kho ended before its drill of \(source) paused: \(child.wait())") }
            return false
        }
        try body(info)
    } catch {
        unlink(pause)
        _ = child.wait()
        throw error
    }
    unlink(pause)
    let result = child.wait()
    let evidence = try #require(try? result.decode([DrillEvidenceJSON].self), "\(result)")
    return (result, evidence)
}

/// Sockets that processes started from `folder` listen on: TCP ports (any address) and unix
/// socket paths, found through /proc (whatever kho says about them).
func listeningSockets(of folder: String) -> (tcp: [Int], unix: [String]) {
    var inodes = Set<String>()
    for line in processesMentioning(folder) {
        guard let pid = line.split(separator: ":").first else { continue }
        let fdDir = "/proc/\(pid)/fd"
        for fd in (try? FileManager.default.contentsOfDirectory(atPath: fdDir)) ?? [] {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: fdDir + "/" + fd),
                  target.hasPrefix("socket:[") else { continue }
            inodes.insert(String(target.dropFirst(8).dropLast()))
        }
    }
    var ports: [Int] = []
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = procText(table)
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            // local_address rem_address st … inode (field 9)
            guard fields.count > 9, fields[3] == "0A", inodes.contains(String(fields[9])),
                  let portHex = fields[1].split(separator: ":").last, let port = Int(portHex, radix: 16) else { continue }
            ports.append(port)
        }
    }
    var paths: [String] = []
    let unixText = procText("/proc/net/unix")
    for line in unixText.split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        // Num RefCount Protocol Flags Type St Inode Path
        guard fields.count >= 8, inodes.contains(String(fields[6])), fields[7].hasPrefix("/") else { continue }
        paths.append(String(fields[7]))
    }
    return (Array(Set(ports)).sorted(), Array(Set(paths)).sorted())
}

/// A /proc file read to its end with read(2): /proc reports a size of 0, and a reader that trusts
/// the size or stops after one page misses the sockets listed further down, as happens when a
/// full test run has hundreds of sockets open.
func procText(_ path: String) -> String {
    // try?: a /proc table that cannot be read lists nothing; the expectations then say so.
    (try? readFile(path)).map { String(decoding: $0, as: UTF8.self) } ?? ""
}

/// Runs a program as the unprivileged user `nobody`.
func asNobody(_ program: String, _ arguments: [String], scratch: String) throws -> ToolResult {
    let runuser = try #require(ScratchPostgres.runuser, "runuser is needed to act as another local user")
    return try ServerSupport.run(runuser, ["-u", "nobody", "--", "/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "HOME=/nonexistent",
                                           "PGCONNECT_TIMEOUT=5", program] + arguments, scratch: scratch, timeout: 60)
}

/// Runs SQL in a database whose name psql must not read as a connection string (`-d dbname=…`
/// would be one): the name goes in PGDATABASE.
func psqlIn(_ pg: ScratchPostgres, _ database: String, _ sql: String) throws {
    let script = try ServerSupport.scriptFile(sql, in: pg.dir)
    defer { unlink(script) }
    let arguments = Array(pg.psqlArguments(database: "unused").dropLast(2)) + ["-f", script]
    try ServerSupport.require(pg.program("psql"), arguments, scratch: pg.dir, environment: ServerSupport.environment(["PGDATABASE": database]))
}

/// A short path in /tmp for a file an injected command would create.
func pwnedMarker() -> String { "/tmp/kho-pwned-" + Hex.encode(randomBytes(4)) }

// MARK: the tests

@Suite("drill host attacks", .serialized, .scratchPostgres, .scratchMariaDB,
       .enabled(if: ScratchPostgres.isAvailable, Comment(rawValue: ScratchPostgres.unavailableReason ?? "")),
       .enabled(if: ScratchMariaDB.isAvailable, Comment(rawValue: ScratchMariaDB.unavailableReason ?? "")))
struct DrillHostAttackTests {
    @Test("a MariaDB table named with a backtick and \\! (x`; \\! touch FILE #) runs no command in the drill, which still checks it")
    func mariadbBacktickTable() throws {
        try requireRoot()
        let marker = pwnedMarker()
        defer { unlink(marker) }
        try mariadbHostileNames(label: "drill-tick-maria", database: "drill_evil_tick",
                                tables: ["x`; \\! touch \(marker) #", "plain"], markers: [marker])
    }

    @Test("MariaDB tables named with newlines and \\!, in a database named with a backtick and a space, run no command in backup, drill or restore; the drill still checks every table")
    func mariadbNewlineNames() throws {
        try requireRoot()
        let markers = [pwnedMarker(), pwnedMarker(), pwnedMarker()]
        defer { for marker in markers { unlink(marker) } }
        try mariadbHostileNames(label: "drill-newline-maria", database: "drill`e v",
                                tables: ["x`; \\! touch \(markers[0]) #", "y\n\\! touch \(markers[1])\nz", "plain"], markers: markers)
    }

    /// Backs up `database` with `tables` (rows whose values hold `\\! touch`), drills it and
    /// restores it into another database: no marker may appear, and the drill checks every table.
    func mariadbHostileNames(label: String, database: String, tables: [String], markers: [String]) throws {
        let maria = try ScratchMariaDB.requireShared()
        let bench = try DrillBench(label)
        func q(_ name: String) -> String { "`" + name.replacingOccurrences(of: "`", with: "``") + "`" }
        try maria.sql("DROP DATABASE IF EXISTS \(q(database)); CREATE DATABASE \(q(database)) CHARACTER SET utf8mb4;")
        for (i, table) in tables.enumerated() {
            try maria.sql("CREATE TABLE \(q(database)).\(q(table)) (id INT PRIMARY KEY, note VARCHAR(60)) ENGINE=InnoDB;"
                          + "USE \(q(database)); INSERT INTO \(q(database)).\(q(table)) SELECT seq, CONCAT('\\\\! touch \(markers.last!) ', seq) FROM seq_1_to_\(10 + i);")
        }
        try bench.writePolicy("evil", """
            sources:
              - name: evil-maria
                kind: mariadb
                host: 127.0.0.1
                port: \(maria.port)
                databases: ['\(database.replacingOccurrences(of: "'", with: "''"))']
            objectives:
              rpo: 24h
              rto: 1h

            """)
        try bench.ok(["run", "--all"])
        let (result, drills) = try bench.verify(["--source", "evil-maria"])
        for marker in markers { #expect(access(marker, F_OK) != 0, "a table name ran `touch \(marker)`") }
        #expect(result.exitCode == 0, "\(result)")
        let drill = try #require(drills.first, "\(result)")
        #expect(drill.passed, "\(drill)")
        let check = try #require(drill.checks.first { $0.name.hasPrefix("CHECK TABLE") }, "\(drill)")
        #expect(check.outcome == "pass", "\(check.output)")
        // One OK status line per table.
        #expect(check.output.split(separator: "\n").filter { $0.hasSuffix("\tOK") }.count == tables.count, "\(check.output)")
        #expect(drill.comparison?.rows.count == tables.count && drill.comparison?.rows.allSatisfy { $0.outcome == "equal" } == true, "\(drill)")

        // A restore into a new database on the same server runs no command either.
        try maria.sql("DROP DATABASE IF EXISTS drill_evil_copy;")
        let restored = try bench.run(["restore", "--source", "evil-maria", "--database", database, "--to-database", maria.url("drill_evil_copy"), "--yes"])
        for marker in markers { #expect(access(marker, F_OK) != 0, "restoring ran `touch \(marker)`") }
        #expect(restored.exitCode == 0, "\(restored)")
        #expect(try maria.value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'drill_evil_copy';") == String(tables.count))
        try maria.sql("DROP DATABASE IF EXISTS \(q(database)); DROP DATABASE IF EXISTS drill_evil_copy;")
    }

    @Test("PostgreSQL databases named --x, with quotes, and like a conninfo string (dbname=… host=… port=…) are backed up and drilled as themselves; no other database is touched")
    func postgresHostileNames() throws {
        try requireRoot()
        let pg = try ScratchPostgres.requireShared()
        let bench = try DrillBench("drill-evil-pg")
        let marker = pwnedMarker()
        defer { unlink(marker) }
        func q(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
        // A victim: the database a conninfo-like name points at.
        try pg.psql("DROP DATABASE IF EXISTS drill_victim;")
        try pg.createDatabase("drill_victim")
        let databases = ["--drill-x", "drill q\"u'ote", "dbname=drill_victim host=127.0.0.1 port=\(pg.port)"]
        for (i, database) in databases.enumerated() {
            try pg.psql("DROP DATABASE IF EXISTS \(q(database));")
            try pg.psql("CREATE DATABASE \(q(database)) TEMPLATE template0;")
            try psqlIn(pg, database, """
                CREATE SCHEMA "s'q""x";
                CREATE TABLE "s'q""x"."t""; \\! touch \(marker); --" (id int PRIMARY KEY, note text);
                INSERT INTO "s'q""x"."t""; \\! touch \(marker); --" SELECT i, '\\! touch \(marker)' FROM generate_series(1, \(20 + i)) i;
                CREATE TABLE "--plain" (id int PRIMARY KEY);
                INSERT INTO "--plain" SELECT generate_series(1, 5);
                """)
        }
        func yaml(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "''") + "'" }
        try bench.writePolicy("evil", """
            sources:
              - name: evil-pg
                kind: postgres
                host: 127.0.0.1
                port: \(pg.port)
                databases: [\(databases.map(yaml).joined(separator: ", "))]
            objectives:
              rpo: 24h
              rto: 1h

            """)
        let run = try bench.run(["run", "--all"])
        #expect(run.exitCode == 0, "\(run)")
        let (result, drills) = try bench.verify(["--source", "evil-pg"])
        #expect(access(marker, F_OK) != 0, "a name ran `touch \(marker)`")
        #expect(result.exitCode == 0, "\(result)")
        let drill = try #require(drills.first, "\(result)")
        #expect(drill.passed, "\(drill)")
        // Each database was dumped as itself (its tables, with its row counts), and checked.
        let rows = drill.comparison?.rows ?? []
        #expect(rows.count == 2 * databases.count && rows.allSatisfy { $0.outcome == "equal" }, "\(drill)")
        #expect(Set(rows.compactMap(\.expectedRows)) == [5, 20, 21, 22], "\(drill)")
        for database in databases {
            #expect(drill.checks.contains { $0.name == "pg_amcheck \(database)" && $0.outcome == "pass" }, "\(drill)")
        }
        // The victim the conninfo-like name points at was neither dumped nor loaded into.
        #expect(try pg.value("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%';",
                             database: "drill_victim") == "0")
        for database in databases { try pg.psql("DROP DATABASE IF EXISTS \(q(database));") }
        try pg.psql("DROP DATABASE IF EXISTS drill_victim;")
    }

    @Test("while a drill runs, another local user cannot connect to its scratch PostgreSQL or MariaDB (no TCP, private socket folder, no trust); the scratch cluster holds no production password hash")
    func scratchServersAcceptOnlyKho() throws {
        try requireRoot()
        let pg = try ScratchPostgres.requireShared()
        let maria = try ScratchMariaDB.requireShared()
        let bench = try DrillBench("drill-private")
        try pg.psql("DROP DATABASE IF EXISTS drill_private;")
        try pg.createDatabase("drill_private")
        try pg.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10);", database: "drill_private")
        try pg.psql("DROP ROLE IF EXISTS drill_hash_role; CREATE ROLE drill_hash_role LOGIN PASSWORD 'production-password-hash-source';")
        // A role the database needs (it holds a grant there): the drill creates it, without its hash.
        try pg.psql("GRANT SELECT ON t TO drill_hash_role;", database: "drill_private")
        try maria.sql("DROP DATABASE IF EXISTS drill_private; CREATE DATABASE drill_private; USE drill_private; CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t SELECT seq FROM seq_1_to_10;")
        try bench.writePolicy("private", """
            sources:
              - name: private-pg
                kind: postgres
                host: 127.0.0.1
                port: \(pg.port)
                databases: [drill_private]
              - name: private-maria
                kind: mariadb
                host: 127.0.0.1
                port: \(maria.port)
                databases: [drill_private]
            objectives:
              rpo: 24h
              rto: 1h

            """)
        try bench.ok(["run", "--all"])
        let psql = pg.program("psql")
        let mariadb = try #require(ScratchMariaDB.client)

        let (pgResult, pgDrills) = try pausedDrill(bench, source: "private-pg") { info in
            let directory = try #require(info["directory"], "\(info)")
            var st = stat()
            #expect(stat(directory, &st) == 0 && st.st_mode & 0o077 == 0, "the scratch folder \(directory) is open to others: \(String(st.st_mode & 0o7777, radix: 8))")
            let sockets = listeningSockets(of: bench.tmp)
            #expect(sockets.tcp.isEmpty, "the scratch PostgreSQL listens on TCP ports \(sockets.tcp)")
            #expect(!sockets.unix.isEmpty, "no socket of the scratch PostgreSQL was found")
            for port in sockets.tcp {
                for user in ["postgres", "nobody"] {
                    let tried = try asNobody(psql, ["-X", "-w", "-h", "127.0.0.1", "-p", String(port), "-U", user, "-d", "postgres", "-c", "SELECT 1"], scratch: bench.box.dir)
                    #expect(!tried.succeeded, "nobody connected as \(user) to 127.0.0.1:\(port): \(tried.stdout)")
                }
            }
            for socket in sockets.unix {
                let folder = (socket as NSString).deletingLastPathComponent
                let port = socket.split(separator: ".").last.map(String.init) ?? "5432"
                for user in ["postgres", "nobody"] {
                    let tried = try asNobody(psql, ["-X", "-w", "-h", folder, "-p", port, "-U", user, "-d", "postgres", "-c", "SELECT 1"], scratch: bench.box.dir)
                    #expect(!tried.succeeded, "nobody connected as \(user) through \(socket): \(tried.stdout)")
                }
            }
            // kho itself (root) still can; the production role came without its password hash.
            let host = try #require(info["host"]), port = try #require(info["port"])
            let hash = try ServerSupport.require(psql, ["-X", "-w", "-A", "-t", "-h", host, "-p", port, "-U", "postgres", "-d", "postgres",
                                                        "-c", "SELECT rolname || ':' || coalesce(rolpassword, 'none') FROM pg_authid WHERE rolname = 'drill_hash_role'"],
                                                 scratch: bench.box.dir)
            #expect(hash.trimmingCharacters(in: .whitespacesAndNewlines) == "drill_hash_role:none", "\(hash)")
        }
        #expect(pgResult.exitCode == 0 && pgDrills.first?.passed == true, "\(pgResult)")

        let (mariaResult, mariaDrills) = try pausedDrill(bench, source: "private-maria") { info in
            let directory = try #require(info["directory"], "\(info)")
            var st = stat()
            #expect(stat(directory, &st) == 0 && st.st_mode & 0o077 == 0, "the scratch folder \(directory) is open to others: \(String(st.st_mode & 0o7777, radix: 8))")
            let sockets = listeningSockets(of: bench.tmp)
            #expect(sockets.tcp.isEmpty, "the scratch MariaDB listens on TCP ports \(sockets.tcp)")
            #expect(!sockets.unix.isEmpty, "no socket of the scratch MariaDB was found")
            for port in sockets.tcp {
                for user in ["root", "mysql", "nobody"] {
                    let tried = try asNobody(mariadb, ["--no-defaults", "--protocol=TCP", "-h", "127.0.0.1", "-P", String(port), "-u", user, "-e", "SELECT 1"], scratch: bench.box.dir)
                    #expect(!tried.succeeded, "nobody connected as \(user) to 127.0.0.1:\(port): \(tried.stdout)")
                }
            }
            for socket in sockets.unix {
                for user in ["root", "mysql", "nobody"] {
                    let tried = try asNobody(mariadb, ["--no-defaults", "--protocol=SOCKET", "--socket=" + socket, "-u", user, "-e", "SELECT 1"], scratch: bench.box.dir)
                    #expect(!tried.succeeded, "nobody connected as \(user) through \(socket): \(tried.stdout)")
                }
            }
        }
        #expect(mariaResult.exitCode == 0 && mariaDrills.first?.passed == true, "\(mariaResult)")
        try expectNothingLeft(bench, after: "paused drills")
        try pg.psql("DROP DATABASE IF EXISTS drill_private; DROP ROLE IF EXISTS drill_hash_role;")
        try maria.sql("DROP DATABASE IF EXISTS drill_private;")
    }
}

@Suite("file drill attacks", .serialized)
struct FileDrillAttackTests {
    @Test("a file drill of a tree with setuid and setgid files, a device node and world-writable folders creates none of them, and still checks every mode")
    func noSetuidOrDevices() throws {
        try requireRoot()
        let bench = try DrillBench("drill-setuid")
        let tree = bench.box.path("tree")
        try makeDirectories(tree + "/open/inner")
        try writeFile(tree + "/suid-shell", Array("#!/bin/sh\nid\n".utf8), mode: 0o755)
        chmod(tree + "/suid-shell", 0o4755)
        try writeFile(tree + "/sgid", Array("x".utf8), mode: 0o644)
        chmod(tree + "/sgid", 0o2755)
        try writeFile(tree + "/open/inner/file", Array("data".utf8), mode: 0o666)
        chmod(tree + "/open", 0o1777)
        chmod(tree + "/open/inner", 0o777)
        #expect(mknod(tree + "/null-device", S_IFCHR | 0o666, dev_t((1 << 8) | 3)) == 0, "mknod: \(String(cString: strerror(errno)))")
        #expect(mknod(tree + "/disk-device", S_IFBLK | 0o660, dev_t(7 << 8)) == 0, "mknod: \(String(cString: strerror(errno)))")
        try bench.writePolicy("tree", """
            sources:
              - name: tree
                kind: files
                paths: [\(tree)]
            objectives:
              rpo: 24h
              rto: 1h

            """)
        try bench.ok(["run", "--all"])

        var seen = 0
        func inspect(_ root: String) {
            guard let walker = FileManager.default.enumerator(atPath: root) else { return }
            while let relative = walker.nextObject() as? String {
                let path = root + "/" + relative
                var st = stat()
                guard lstat(path, &st) == 0 else { continue }
                seen += 1
                let type = st.st_mode & S_IFMT
                #expect(type != S_IFCHR && type != S_IFBLK, "the drill created a device node \(path)")
                #expect(st.st_mode & (S_ISUID | S_ISGID) == 0, "the drill created \(path) with mode \(String(st.st_mode & 0o7777, radix: 8))")
                if type == S_IFDIR { #expect(st.st_mode & 0o002 == 0, "the drill created a world-writable folder \(path)") }
            }
        }
        let (result, drills) = try pausedDrill(bench, source: "tree") { info in
            let directory = try #require(info["directory"], "\(info)")
            var st = stat()
            #expect(stat(directory, &st) == 0 && st.st_mode & 0o077 == 0, "the scratch folder \(directory) is open to others: \(String(st.st_mode & 0o7777, radix: 8))")
            inspect(directory)
        }
        #expect(seen >= 5, "the paused drill's restored tree was not found (\(seen) entries)")
        #expect(result.exitCode == 0, "\(result)")
        let drill = try #require(drills.first, "\(result)")
        #expect(drill.passed, "\(drill)")
        let modes = try #require(drill.checks.first { $0.name == "file modes" }, "\(drill)")
        #expect(modes.outcome == "pass", "\(modes.output)")
        // Every entry but the tree's root folder: 3 files, 2 devices, 2 folders (and the tree folder).
        #expect(modes.output.contains("equal to the snapshot"), "\(modes.output)")
        #expect(modes.output.contains("2 device nodes"), "\(modes.output)")
        try expectNothingLeft(bench, after: "a file drill")
    }
}
