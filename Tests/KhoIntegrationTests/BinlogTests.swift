import Foundation
import Glibc
import KhoTestSupport
import Testing

// MariaDB's binary log and kho (issue 20, docs/design/pitr.md section 9): every dump records the
// binary log position its snapshot is at; `kho binlog serve` archives the log as it grows;
// `kho restore --pitr --at T --database D` loads the newest dump before T and replays the archived
// log from the dump's position up to T.

/// `binlogPosition` of one database in `kho snapshots --json`.
private func binlogPositions(_ sandbox: Sandbox) throws -> [(database: String, position: [String: Any]?, absent: String?)] {
    var found: [(String, [String: Any]?, String?)] = []
    for snapshot in try sandbox.snapshots() {
        let manifest = snapshot["manifest"] as? [String: Any]
        for database in manifest?["databases"] as? [[String: Any]] ?? [] {
            found.append((database["name"] as? String ?? "", database["binlogPosition"] as? [String: Any], database["binlogPositionAbsent"] as? String))
        }
    }
    return found
}

@Suite("MariaDB binary logs: positions in dumps, archiving, restore to a time", .serialized,
       .enabled(if: ScratchMariaDB.isAvailable, Comment(rawValue: ScratchMariaDB.unavailableReason ?? "")))
struct BinlogTests {
    @Test("a dump of a server with log_bin records the binary log position of its snapshot (mariadb-binlog starts from it); without log_bin it records none and why")
    func dumpsRecordTheirPosition() throws {
        let logged = try ScratchMariaDB(label: "binlog-position", binaryLog: .init(serverId: 7))
        defer { logged.stop() }
        let plain = try ScratchMariaDB(label: "binlog-none")
        defer { plain.stop() }
        let sandbox = try Sandbox("binlog-position")
        try sandbox.initRepository()
        for db in [logged, plain] {
            try db.sql("CREATE DATABASE registry; CREATE TABLE registry.births(id INT PRIMARY KEY, name VARCHAR(80)); INSERT INTO registry.births VALUES (1, 'Trần Thị Mai');")
        }
        try sandbox.ok("backup", "--mariadb", logged.url("registry"), "--source-name", "logged")
        try logged.sql("INSERT INTO registry.births VALUES (2, 'Lê Văn Nam');")
        let recorded = try binlogPositions(sandbox)
        let position = try #require(recorded.first?.position, "\(recorded)")
        let file = try #require(position["file"] as? String)
        let offset = try #require(position["position"] as? Int)
        #expect(file.hasPrefix("kho-bin.") && offset > 4, "\(position)")
        #expect(position["serverId"] as? Int == 7)
        #expect((position["gtid"] as? String)?.hasPrefix("0-7-") == true, "\(position)")
        #expect(try logged.value("SHOW MASTER STATUS;").hasPrefix(file))
        // The position is a place mariadb-binlog starts from: what follows it is the later insert, alone.
        let binlog = try #require(ServerSupport.find("mariadb-binlog", in: ServerSupport.standardDirectories))
        let replay = try ServerSupport.require(binlog, ["--no-defaults", "--read-from-remote-server", "--protocol=TCP", "--host=127.0.0.1", "--port=\(logged.port)",
                                                        "--user=root", "--start-position=\(offset)", "--verbose", file], scratch: sandbox.dir)
        #expect(replay.contains("INSERT INTO `registry`.`births`") && replay.contains("Lê Văn Nam") && !replay.contains("Trần Thị Mai"), "\(replay)")

        try sandbox.ok("backup", "--mariadb", plain.url("registry"), "--source-name", "plain")
        let none = try #require(try binlogPositions(sandbox).first { $0.position == nil })
        #expect(none.absent?.contains("log_bin") == true, "\(none)")
    }

    @Test("a policy copy of a mariadb source carries its archived binary log to the destination, sealed under the destination's key")
    func policyCopiesCarryTheBinaryLog() throws {
        let db = try ScratchMariaDB(label: "binlog-copy", binaryLog: .init(serverId: 21))
        defer { db.stop() }
        let sandbox = try Sandbox("binlog-copy")
        try sandbox.initRepository()
        let tmp = sandbox.path("tmp"), state = sandbox.path("state"), policies = sandbox.path("policies"), second = sandbox.path("second-site")
        for folder in [tmp, state, policies] { try makeDirectories(folder) }
        let secondPassword = "mat khau thu hai"
        try #require(try sandbox.kho(["init"], env: ["KHO_REPOSITORY": second, "KHO_PASSWORD": secondPassword]).exitCode == 0)
        let passwordFile = sandbox.path("repository.pass"), secondPasswordFile = sandbox.path("second.pass")
        try writeFile(passwordFile, Array(sandbox.password.utf8), mode: 0o600)
        try writeFile(secondPasswordFile, Array(secondPassword.utf8), mode: 0o600)
        try writeFile(policies + "/binlog.yaml", Array("""
            name: binlog-copy
            agency: Sở Tư pháp (kiểm thử)
            system: Hộ tịch
            security-level: 3
            schedule: "0 2 * * *"
            repository:
              path: \(sandbox.repo)
              password-file: \(passwordFile)
            copies:
              - path: \(second)
                password-file: \(secondPasswordFile)
            sources:
              - name: reg
                kind: mariadb
                host: 127.0.0.1
                port: \(db.port)
                user: root
                databases: [registry]
            objectives:
              rpo: 1d
              rto: 1h

            """.utf8))
        let env: [String: String?] = ["TMPDIR": tmp, "KHO_STATE_DIR": state, "KHO_POLICIES": policies]
        try db.sql("CREATE DATABASE registry; USE registry; CREATE TABLE registry.births(id INT PRIMARY KEY, name VARCHAR(80)); INSERT INTO registry.births SELECT seq, 'Nguyễn Văn' FROM seq_1_to_50; FLUSH BINARY LOGS;")
        var agent = try sandbox.start(["binlog", "serve", "--source", "reg", "--mariadb", db.url(""), "--interval", "1s", "--spool-directory", sandbox.path("spool/reg")], env: env)
        defer { agent.send(SIGKILL); agent.wait() }
        let serverFile = String(try db.value("SHOW MASTER STATUS;").split(separator: "\t")[0])
        try ServerSupport.waitUntil("the archive holds the server's current file", timeout: 30) {
            if !agent.isRunning { let ended = agent.wait(); throw ServerError("kho binlog serve ended: \(ended) \(ended.err)") }
            let listed = try sandbox.kho(["binlog", "ls", "--source", "reg", "--json", "--no-times"], env: env)
            let files = ((try? listed.json() as? [String: Any])?["files"] as? [[String: Any]]) ?? []
            return files.contains { $0["file"] as? String == serverFile }
        }
        let ran = try sandbox.kho(["run", "--all", "--json"], env: env.merging(["KHO_PASSWORD": nil]) { $1 })
        try #require(ran.exitCode == 0, "\(ran)")
        let secondEnv: [String: String?] = ["KHO_REPOSITORY": second, "KHO_PASSWORD": secondPassword]
        let copied = try sandbox.kho(["binlog", "ls", "--source", "reg", "--json", "--no-times"], env: secondEnv)
        #expect(copied.exitCode == 0, "\(copied)")
        let archive = try #require(try copied.json() as? [String: Any], "\(copied)")
        let files = (archive["files"] as? [[String: Any]] ?? []).compactMap { $0["file"] as? String }
        #expect(files.contains(serverFile) && (archive["gaps"] as? [Any])?.isEmpty == true, "\(archive)")
        #expect((archive["record"] as? [String: Any])?["serverId"] as? Int == 21, "\(archive)")
        #expect(try sandbox.kho(["check", "--read-data"], env: secondEnv).exitCode == 0)
    }

    @Test("kho binlog serve archives a server's binary log through a SIGKILL and a restart without gap or duplicate; --pitr --at T-1s --database gives back the rows and the table as they were before an incident and nothing after, from a kho copy too; a second server is refused; a removed binlog object refuses the restore with exit 12 and nothing created")
    func archiveAndRestoreToATime() throws {
        let db = try ScratchMariaDB(label: "binlog-pitr", binaryLog: .init(serverId: 11))
        defer { db.stop() }
        let sandbox = try Sandbox("binlog-pitr")
        try sandbox.initRepository()
        let tmp = sandbox.path("tmp"), state = sandbox.path("state")
        try makeDirectories(tmp)
        try makeDirectories(state)
        let policies = sandbox.path("policies")
        try makeDirectories(policies)
        let passwordFile = sandbox.path("repository.pass")
        try writeFile(passwordFile, Array(sandbox.password.utf8))
        chmod(passwordFile, 0o600)
        try writeFile(policies + "/binlog.yaml", Array("""
            name: binlog-test
            agency: Sở Tư pháp (kiểm thử)
            system: Hộ tịch
            security-level: 3
            schedule: "0 2 * * *"
            repository:
              path: \(sandbox.repo)
              password-file: \(passwordFile)
            sources:
              - name: reg
                kind: mariadb
                host: 127.0.0.1
                port: \(db.port)
                user: root
                databases: [registry]
                wal-rpo: 5m
            objectives:
              rpo: 1d
              rto: 1h

            """.utf8))
        let env: [String: String?] = ["TMPDIR": tmp, "KHO_STATE_DIR": state, "KHO_POLICIES": policies]
        /// `kho status --json`'s binary log of source reg.
        func binlogStatus() throws -> (exitCode: Int32?, status: [String: Any]?) {
            let result = try sandbox.kho(["status", "--json"], env: env)
            let sources = try? result.json() as? [[String: Any]]
            return (result.exitCode, sources?.first { $0["source"] as? String == "reg" }?["binlog"] as? [String: Any])
        }
        // The spool in the sandbox (0755), which the stream's user can pass.
        let spool = sandbox.path("spool/reg")
        let serve = ["binlog", "serve", "--source", "reg", "--mariadb", db.url(""), "--interval", "1s", "--spool-directory", spool]

        try db.sql("""
            CREATE DATABASE registry;
            USE registry;
            CREATE TABLE registry.births(id INT PRIMARY KEY, name VARCHAR(80));
            INSERT INTO registry.births SELECT seq, CONCAT('Nguyễn Văn ', seq) FROM seq_1_to_100;
            """)
        // The nightly dump: the replay starts at the position it recorded.
        let dumped = try sandbox.kho(["backup", "--mariadb", db.url("registry"), "--source-name", "reg"], env: env)
        try #require(dumped.exitCode == 0, "\(dumped)")
        var agent = try sandbox.start(serve, env: env)
        defer { agent.send(SIGKILL); agent.wait() }

        /// Waits until the archive holds the server's current file up to its current position.
        func waitArchived() throws {
            try ServerSupport.waitUntil("the archive holds the binary log up to the server's position", timeout: 30) {
                if !agent.isRunning { let ended = agent.wait(); throw ServerError("kho binlog serve ended: \(ended) \(ended.err)") }
                let status = try db.value("SHOW MASTER STATUS;").split(separator: "\t")
                let listed = try sandbox.kho(["binlog", "ls", "--source", "reg", "--json", "--no-times"], env: env)
                guard let summary = try? listed.json() as? [String: Any], let files = summary["files"] as? [[String: Any]] else { return false }
                return files.contains { $0["file"] as? String == String(status[0]) && ($0["bytes"] as? Int).map(String.init) == String(status[1]) }
            }
        }

        // The stream runs as nobody, not as root: mariadb-binlog writes where the server's rotate events say.
        try ServerSupport.waitUntil("mariadb-binlog streams into the sandbox", timeout: 20) { !(try streamUsers(naming: spool)).isEmpty }
        #expect(try streamUsers(naming: spool) == [65534])
        try db.sql("INSERT INTO registry.births SELECT seq, CONCAT('Trần Thị ', seq) FROM seq_101_to_110; FLUSH BINARY LOGS;", database: "registry")
        // Schema changes as an application makes them, in its own database (a replay for one
        // database takes the statements logged with it as the default database).
        try db.sql("CREATE TABLE notes(id INT PRIMARY KEY, note TEXT); INSERT INTO registry.notes VALUES (1, 'giấy khai sinh'), (2, 'bản sao');", database: "registry")
        try waitArchived()
        // Killed mid-stream: the server goes on writing and rotating while nothing archives.
        agent.send(SIGKILL)
        agent.wait()
        try db.sql("INSERT INTO registry.births SELECT seq, CONCAT('Lê Văn ', seq) FROM seq_111_to_130; FLUSH BINARY LOGS; INSERT INTO registry.notes VALUES (3, 'trích lục');", database: "registry")
        agent = try sandbox.start(serve, env: env)
        try waitArchived()

        // kho status: continuous, within the RPO, the serve caught up; the metrics say the same.
        let metrics = sandbox.path("kho.prom")
        let measured = try sandbox.kho(["status", "--metrics-file", metrics], env: env)
        #expect(measured.exitCode == 0 && measured.out.contains("binary log OK"), "\(measured)")
        let prom = String(decoding: try readFile(metrics), as: UTF8.self)
        #expect(prom.contains("kho_binlog_gap{policy=\"binlog-test\",source=\"reg\"} 0") && prom.contains("kho_binlog_archive_lag_seconds{"), "\(prom)")
        let watched = try binlogStatus()
        #expect(watched.exitCode == 0, "\(watched)")
        #expect(watched.status?["continuity"] as? String == "ok" && watched.status?["freshness"] as? String == "ok"
                && watched.status?["caughtUp"] != nil && watched.status?["serverId"] as? Int == 11, "\(watched)")
        // The compliance report: a binary log row for the source, within its wal-rpo, without a gap.
        let report = try sandbox.kho(["report", "--format", "md", "--lang", "en"], env: env)
        #expect(report.exitCode == 0 && report.out.contains("## Continuous protection (MariaDB binary log)")
                && report.out.contains("| binlog-test/reg | 11 | "), "\(report)")

        usleep(1_200_000)
        let target = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
        usleep(1_200_000)
        // The incident, and a write after it.
        try db.sql("DELETE FROM births WHERE id <= 50; DROP TABLE notes; INSERT INTO births VALUES (999, 'sau sự cố');", database: "registry")
        try waitArchived()

        let restored = try sandbox.kho(["restore", "--source", "reg", "--pitr", "--at", isoUTC(target), "--database", "registry",
                                        "--to-database", db.url("registry_restored"), "--yes", "--json"], env: env)
        try #require(restored.exitCode == 0, "\(restored)")
        let summary = try #require(try restored.json() as? [String: Any])
        #expect(summary["toDatabase"] as? String == "registry_restored" && summary["dumpEqual"] as? Bool == true, "\(summary)")
        #expect((summary["binlogFiles"] as? [String])?.count ?? 0 >= 3, "\(summary)")
        let applied = try #require((summary["lastEventApplied"] as? String).flatMap(parseISO), "\(summary)")
        #expect(applied <= target && summary["reachesTarget"] as? Bool == true, "\(summary)")
        #expect(try db.value("SELECT COUNT(*), MIN(id), MAX(id) FROM registry_restored.births;") == "130\t1\t130")
        #expect(try db.value("SELECT GROUP_CONCAT(note ORDER BY id SEPARATOR '|') FROM registry_restored.notes;") == "giấy khai sinh|bản sao|trích lục")
        #expect(try db.value("SELECT COUNT(*) FROM registry.births;") == "81")
        // A copy to a second site carries the binary log, under its own key: the same restore from it.
        let secondSite = sandbox.path("second-site")
        var copyEnv = env
        copyEnv["KHO_REPOSITORY"] = secondSite
        copyEnv["KHO_PASSWORD"] = "mat khau thu hai"
        copyEnv["KHO_FROM_PASSWORD"] = sandbox.password
        try #require(try sandbox.kho(["init"], env: copyEnv).exitCode == 0)
        let copied = try sandbox.kho(["copy", "--from-repo", sandbox.repo, "--json"], env: copyEnv)
        try #require(copied.exitCode == 0, "\(copied)")
        let carried = try #require((try copied.json() as? [String: Any])?["binlog"] as? [String: Any], "\(copied)")
        #expect(carried["records"] as? Int == 1 && carried["pieces"] as? Int ?? 0 > 0, "\(carried)")
        let fromCopy = try sandbox.kho(["restore", "--source", "reg", "--pitr", "--at", isoUTC(target), "--database", "registry",
                                        "--to-database", db.url("registry_copy"), "--yes", "--json"], env: copyEnv)
        #expect(fromCopy.exitCode == 0, "\(fromCopy)")
        #expect(try db.value("SELECT COUNT(*), MIN(id), MAX(id) FROM registry_copy.births;") == "130\t1\t130")
        // The replay got GTIDs of the server's own, in order behind its others: the source server's
        // binary log, where the copy was loaded, still reads in strict GTID order.
        let binlog = try #require(ServerSupport.find("mariadb-binlog", in: ServerSupport.standardDirectories))
        let firstFile = try #require(try db.rows("SHOW BINARY LOGS;").first?.split(separator: "\t").first.map(String.init))
        let strict = try ServerSupport.run(binlog, ["--no-defaults", "--read-from-remote-server", "--protocol=TCP", "--host=127.0.0.1", "--port=\(db.port)",
                                                    "--user=root", "--to-last-log", "--gtid-strict-mode", firstFile], scratch: sandbox.dir)
        #expect(strict.succeeded && !strict.stdout.isEmpty, "\(strict.stderr)")
        let left = try scratchLeft(tmp)
        #expect(left.isEmpty, "the fetched binary log was left in \(tmp): \(left)")

        // --at without --pitr keeps its meaning (the dump before the time) and names --pitr.
        let fromDump = try sandbox.kho(["restore", "--source", "reg", "--at", isoUTC(target), "--to-database", db.url("registry_dump"), "--yes"], env: env)
        #expect(fromDump.exitCode == 0 && fromDump.err.contains("add --pitr --database registry"), "\(fromDump)")
        #expect(try db.value("SELECT COUNT(*) FROM registry_dump.births;") == "100")

        let checked = try sandbox.kho(["check", "--read-data"], env: env)
        #expect(checked.exitCode == 0 && checked.out.contains("binary log archives of 1 sources"), "\(checked)")

        // Every file the server finished is archived whole, byte for byte as long as the server's.
        let listed = try sandbox.kho(["binlog", "ls", "--source", "reg", "--json"], env: env)
        #expect(listed.exitCode == 0, "\(listed)")
        let archived = try #require(try listed.json() as? [String: Any])
        #expect((archived["gaps"] as? [Any])?.isEmpty == true, "\(archived)")
        let stored = Dictionary(uniqueKeysWithValues: (archived["files"] as? [[String: Any]] ?? []).map { ($0["file"] as? String ?? "", $0) })
        let serverFiles = try db.rows("SHOW BINARY LOGS;").map { $0.split(separator: "\t").map(String.init) }
        #expect(serverFiles.count >= 3, "\(serverFiles)")
        for file in serverFiles.dropLast() {
            #expect(stored[file[0]]?["bytes"] as? Int == Int(file[1]) && stored[file[0]]?["whole"] as? Bool == true, "\(file): \(stored[file[0]] ?? [:])")
        }

        // A statement that names the database from elsewhere would act on the original, or be
        // left out, in a replay: refused before anything is written.
        try db.sql("CREATE TABLE registry.audit(id INT PRIMARY KEY);")
        try waitArchived()
        let qualified = try sandbox.kho(["restore", "--source", "reg", "--pitr", "--latest", "--database", "registry",
                                         "--to-database", db.url("registry_latest"), "--yes"], env: env)
        #expect(qualified.exitCode == 2 && qualified.err.contains("names database registry explicitly"), "\(qualified)")
        #expect(try db.value("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'registry_latest';") == "0")

        // A spool folder holding files of something else is refused, not emptied.
        let foreign = sandbox.path("not-a-spool")
        try makeDirectories(foreign)
        try writeFile(foreign + "/keep.conf", Array("x".utf8))
        let misplaced = try sandbox.kho(["binlog", "serve", "--source", "reg", "--mariadb", db.url(""), "--spool-directory", foreign], env: env)
        #expect(misplaced.exitCode == 2 && FileManager.default.fileExists(atPath: foreign + "/keep.conf"), "\(misplaced)")

        // Another server pushing into the same archive is refused: exit 12, nothing stored.
        let other = try ScratchMariaDB(label: "binlog-other", binaryLog: .init(serverId: 12))
        defer { other.stop() }
        let intruder = try sandbox.kho(["binlog", "serve", "--source", "reg", "--mariadb", other.url(""), "--interval", "1s"], env: env)
        #expect(intruder.exitCode == 12 && intruder.err.contains("server_id 11") && intruder.err.contains("server_id 12"), "\(intruder)")

        // A binary log file removed from the repository between the dump and the time: refused
        // before anything is written.
        agent.send(SIGTERM)
        #expect(agent.wait().exitCode == 0)
        let folder = sandbox.repo + "/binlog/reg"
        let second = try #require(serverFiles.dropFirst().first?[0])
        try FileManager.default.removeItem(atPath: folder + "/" + second)
        let refused = try sandbox.kho(["restore", "--source", "reg", "--pitr", "--at", isoUTC(target), "--database", "registry",
                                       "--to-database", db.url("registry_gap"), "--yes"], env: env)
        #expect(refused.exitCode == 12 && refused.err.contains("gap"), "\(refused)")
        #expect(try db.value("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'registry_gap';") == "0")
        #expect(try sandbox.kho(["binlog", "ls", "--source", "reg"], env: env).exitCode == 12)
        let damaged = try sandbox.kho(["check"], env: env)
        #expect(damaged.exitCode == 12 && damaged.out.contains("binary log of source reg"), "\(damaged)")
        let gapped = try binlogStatus()
        #expect(gapped.exitCode == 1 && gapped.status?["continuity"] as? String == "gap", "\(gapped)")

        // Retention: with a later dump kept and the first forgotten, prune removes the files before
        // the later dump's position, the hole with them; the later dump replays to the newest event.
        agent = try sandbox.start(serve, env: env)
        try db.sql("FLUSH BINARY LOGS;")
        // Pieces of the later dump's file before its position: the restore leaves them out (a hole
        // mariadb-binlog seeks over).
        for id in [2001, 2002] {
            try db.sql("INSERT INTO births VALUES (\(id), 'trước bản sao thứ hai');", database: "registry")
            try waitArchived()
        }
        let later = try sandbox.kho(["backup", "--mariadb", db.url("registry"), "--source-name", "reg", "--json"], env: env)
        let laterID = try #require((try later.json() as? [String: Any])?["snapshot"] as? String, "\(later)")
        try db.sql("INSERT INTO births VALUES (1000, 'sau bản sao thứ hai');", database: "registry")
        try waitArchived()
        let firstID = try #require(try sandbox.snapshots().compactMap { $0["id"] as? String }.first { $0 != laterID })
        #expect(try sandbox.kho(["forget", firstID], env: env).exitCode == 0)
        let pruned = try sandbox.kho(["prune"], env: env)
        #expect(pruned.exitCode == 0 && pruned.out.contains("archived binary log files"), "\(pruned)")
        let kept = try sandbox.kho(["binlog", "ls", "--source", "reg", "--json", "--no-times"], env: env)
        let keptFiles = ((try? kept.json() as? [String: Any])?["files"] as? [[String: Any]] ?? []).compactMap { $0["file"] as? String }
        let laterFile = try #require(try binlogPositions(sandbox).first?.position?["file"] as? String)
        #expect(kept.exitCode == 0 && keptFiles.first == laterFile, "\(kept) \(laterFile)")
        #expect(try sandbox.kho(["check"], env: env).exitCode == 0)
        let latest = try sandbox.kho(["restore", "--source", "reg", "--pitr", "--latest", "--database", "registry",
                                      "--to-database", db.url("registry_latest"), "--yes", "--json"], env: env)
        #expect(latest.exitCode == 0, "\(latest)")
        let laterBytes = ((try? kept.json() as? [String: Any])?["files"] as? [[String: Any]])?.first?["bytes"] as? Int ?? 0
        let fetchedBytes = (try? latest.json() as? [String: Any])?["binlogBytesFetched"] as? Int ?? 0
        #expect(fetchedBytes > 0 && fetchedBytes < laterBytes, "fetched \(fetchedBytes) of \(laterBytes)")
        #expect(try db.value("SELECT COUNT(*), MAX(id) FROM registry_latest.births;") == "84\t2002")
        #expect(try db.value("SELECT COUNT(*) FROM registry_latest.births WHERE id = 1000;") == "1")

        // A row change logged as a statement (binlog_format switched away from ROW) cannot be
        // replayed for one database: refused before anything is written.
        try db.sql("SET SESSION binlog_format = 'STATEMENT'; INSERT INTO births VALUES (3001, 'câu lệnh');", database: "registry")
        try waitArchived()
        let statements = try sandbox.kho(["restore", "--source", "reg", "--pitr", "--latest", "--database", "registry",
                                          "--to-database", db.url("registry_statements"), "--yes"], env: env)
        #expect(statements.exitCode == 2 && statements.err.contains("logged as a statement"), "\(statements)")
        #expect(try db.value("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'registry_statements';") == "0")
        #expect(try scratchLeft(tmp).isEmpty)
    }
}

/// 2026-12-07T16:50:01Z, as `--at` reads it.
private func isoUTC(_ date: Date) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.timeZone = TimeZone(identifier: "UTC")
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.string(from: date)
}

private func parseISO(_ text: String) -> Date? {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.date(from: text) ?? ISO8601DateFormatter().date(from: text)
}

private func scratchLeft(_ folder: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix("kho-") }
}

/// The user IDs of the mariadb-binlog processes whose command line names `folder`.
private func streamUsers(naming folder: String) throws -> [uid_t] {
    var users: [uid_t] = []
    for entry in try FileManager.default.contentsOfDirectory(atPath: "/proc") where entry.allSatisfy(\.isNumber) {
        guard let line = try? readFile("/proc/\(entry)/cmdline") else { continue }
        let words = line.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard words.first?.hasSuffix("mariadb-binlog") == true, words.contains(where: { $0.contains(folder) }) else { continue }
        var info = stat()
        if stat("/proc/\(entry)", &info) == 0 { users.append(info.st_uid) }
    }
    return users
}
