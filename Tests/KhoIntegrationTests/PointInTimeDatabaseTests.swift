import Foundation
import Glibc
import KhoTestSupport
import Testing

// One database as it was at a point in time, under a new name (issue 20, design section 6):
// `kho restore --pitr --at T --database D --to-database URL` recovers the source's cluster to T in
// a private scratch cluster and loads D into another server by the faithful-restore path, compared
// with what the recovered cluster held.

/// 2026-12-07T16:50:01Z, as `--at` reads it.
private func isoUTC(_ date: Date) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.timeZone = TimeZone(identifier: "UTC")
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.string(from: date)
}

@Suite("one database restored as it was at a point, under a new name", .serialized,
       .enabled(if: ScratchPostgres.isAvailable, Comment(rawValue: ScratchPostgres.unavailableReason ?? "")))
struct PointInTimeDatabaseTests {
    @Test("--pitr --at T-1s --database: the copy on another server has the rows of T and none of the later commits, compares equal, its owner mapped by --map-role; --at without --pitr restores the older dump and names --pitr; an interrupted restore, an unknown database (usage error) and a WAL gap (exit 12) leave no scratch folder and nothing on the target")
    func databaseAsItWasUnderNewName() throws {
        let archive = try Archive("pitr-db")
        let sandbox = archive.sandbox
        let pg = try archive.cluster("pitr-db")
        // The scratch cluster lives below TMPDIR, in the sandbox: the server's user passes through.
        chmod(sandbox.dir, 0o711)
        let tmp = sandbox.path("tmp")
        try makeDirectories(tmp)
        chmod(tmp, 0o755)
        let state = sandbox.path("state")
        try makeDirectories(state)
        let env: [String: String?] = ["TMPDIR": tmp, "KHO_STATE_DIR": state]
        func scratchFolders() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? ["kho-(tmp unlistable)"]).filter { $0.hasPrefix("kho-") } }

        // Options that do not go together are refused before the repository is opened.
        for (arguments, says) in [(["--pitr", "--at", "2026-11-28 14:02:59", "--to-database", "postgres://postgres@127.0.0.1/x"], "--database"),
                                  (["--pitr", "--latest", "--database", "d", "--to-database", "postgres://postgres@127.0.0.1/x", "--start"], "--to-data-directory"),
                                  (["--pitr", "--latest", "--database", "d", "--to-file", sandbox.path("x.sql")], "--to-database"),
                                  (["--pitr", "--database", "d", "--to-database", "postgres://postgres@127.0.0.1/x"], "exactly one recovery target")] {
            let refused = try sandbox.kho(["restore", "--source", archive.source] + arguments, env: env)
            #expect(refused.exitCode == 2 && refused.err.contains(says), "\(refused)")
        }

        try pg.psql("CREATE ROLE ho_tich_owner NOLOGIN; CREATE DATABASE ho_tich OWNER ho_tich_owner; CREATE DATABASE other;")
        try pg.psql("""
            SET ROLE ho_tich_owner;
            CREATE TABLE registry(id int PRIMARY KEY, holder text);
            INSERT INTO registry SELECT i, 'Nguyễn Văn ' || i FROM generate_series(1, 1000) i;
            CREATE TABLE ticks(n int PRIMARY KEY);
            """, database: "ho_tich")
        try sandbox.ok("backup", "--postgres-base", "postgres://postgres@127.0.0.1:\(pg.port)", "--source-name", archive.source, "--checkpoint", "fast")
        // A nightly dump of the same source, older than the target.
        try sandbox.ok("backup", "--postgres", pg.url("ho_tich"), "--source-name", archive.source)
        for n in 1...10 { try pg.psql("INSERT INTO ticks VALUES (\(n));", database: "ho_tich") }
        // A segment of its own between the base backup and the target (the gap below removes it).
        let beforeTarget = try pg.switchAndWaitArchived(timeout: 90)
        usleep(1_200_000)
        let target = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
        usleep(1_200_000)
        try pg.psql("DELETE FROM registry WHERE id <= 100;", database: "ho_tich")
        for n in 11...15 { try pg.psql("INSERT INTO ticks VALUES (\(n));", database: "ho_tich") }
        _ = try pg.switchAndWaitArchived(timeout: 90)
        #expect(try pg.value("SELECT count(*) FROM registry;", database: "ho_tich") == "900")

        let copies = try ScratchPostgres(label: "pitr-db-target")
        defer { copies.stop() }
        func restore(database: String, into name: String, _ extra: [String] = []) throws -> ProcessResult {
            try sandbox.kho(["restore", "--source", archive.source, "--pitr", "--at", isoUTC(target), "--database", database,
                             "--to-database", copies.url(name), "--yes"] + extra, env: env)
        }

        let result = try restore(database: "ho_tich", into: "ho_tich_1403", ["--map-role", "ho_tich_owner=ho_tich_owner_1403", "--json"])
        try #require(result.exitCode == 0, "\(result)")
        let summary = try #require(try result.json() as? [String: Any])
        #expect(summary["equal"] as? Bool == true, "\(result.out)")
        #expect(summary["toDatabase"] as? String == "ho_tich_1403")
        #expect((summary["walFilesServed"] as? Int ?? 0) > 0)
        let reached = try #require(summary["reached"] as? [String: Any])
        #expect((reached["stoppedAt"] as? String)?.contains("recovery stopping before commit") == true, "\(reached)")
        let restored = try #require(summary["restore"] as? [String: Any])
        let comparison = try #require(restored["comparison"] as? [String: Any], "\(restored)")
        #expect((comparison["rows"] as? [Any])?.count == 2, "\(comparison)")
        #expect((restored["schema"] as? [String: Any]) != nil, "\(restored)")

        #expect(try copies.value("SELECT count(*), min(id) FROM registry;", database: "ho_tich_1403") == "1000\t1")
        #expect(try copies.value("SELECT count(*), max(n) FROM ticks;", database: "ho_tich_1403") == "10\t10")
        #expect(try copies.value("SELECT tableowner FROM pg_tables WHERE tablename = 'registry';", database: "ho_tich_1403") == "ho_tich_owner_1403")
        #expect(try copies.value("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'ho_tich_1403';") == "ho_tich_owner_1403")
        #expect(try copies.value("SELECT count(*) FROM pg_roles WHERE rolname = 'ho_tich_owner';") == "0")
        #expect(scratchFolders().isEmpty, "the scratch cluster was left behind: \(scratchFolders())")

        // --at without --pitr keeps its meaning, the newest dump before the time, and its plan says
        // that --pitr reaches the time itself.
        let fromDump = try sandbox.kho(["restore", "--source", archive.source, "--at", isoUTC(target), "--to-database", copies.url("from_dump"), "--yes"], env: env)
        #expect(fromDump.exitCode == 0 && fromDump.err.contains("add --pitr --database ho_tich"), "\(fromDump)")
        #expect(try copies.value("SELECT count(*) FROM ticks;", database: "from_dump") == "0")

        // Interrupted while the scratch cluster is being made: it goes, with everything in it.
        let interrupted = try sandbox.start(["restore", "--source", archive.source, "--pitr", "--at", isoUTC(target), "--database", "ho_tich",
                                             "--to-database", copies.url("interrupted_copy"), "--yes"], env: env)
        try ServerSupport.waitUntil("the restore has a scratch folder", timeout: 60) {
            if !interrupted.isRunning { throw ServerError("kho ended before it made a scratch folder: \(interrupted.wait())") }
            return !scratchFolders().isEmpty
        }
        let made = scratchFolders()
        interrupted.send(SIGTERM)
        let ended = interrupted.wait()
        #expect(ended.exitCode == 128 + SIGTERM && ended.err.contains("interrupted"), "\(ended)")
        #expect(scratchFolders().isEmpty, "the interrupted restore left \(scratchFolders()) (it had \(made))")

        // A database the recovered cluster does not hold: a usage error naming those it does.
        let unknown = try restore(database: "ho_tich_typo", into: "typo_copy")
        #expect(unknown.exitCode == 2, "\(unknown)")
        #expect(unknown.err.contains("ho_tich") && unknown.err.contains("other"), "\(unknown)")
        #expect(try copies.value("SELECT count(*) FROM pg_database WHERE datname = 'typo_copy';") == "0")
        #expect(scratchFolders().isEmpty, "the scratch cluster was left behind: \(scratchFolders())")

        // The segment between the base backup and the target removed: refused before anything is restored.
        let walFolder = sandbox.repo + "/wal"
        let clusterFolder = try #require(try FileManager.default.contentsOfDirectory(atPath: walFolder).first)
        try FileManager.default.removeItem(atPath: walFolder + "/\(clusterFolder)/\(beforeTarget.prefix(16))/\(beforeTarget)")
        let refused = try restore(database: "ho_tich", into: "gap_copy")
        #expect(refused.exitCode == 12, "\(refused)")
        #expect(refused.err.contains("gap"), "\(refused)")
        #expect(try copies.value("SELECT count(*) FROM pg_database WHERE datname = 'gap_copy';") == "0")
        #expect(scratchFolders().isEmpty, "the scratch cluster was left behind: \(scratchFolders())")

        // Each is a restore in the audit ledger, with its outcome.
        let log = try sandbox.kho(["audit", "log", "--json"], env: env)
        let entries = try #require(try? log.json() as? [[String: Any]], "\(log)")
        let outcomes = entries.filter { $0["command"] as? String == "restore" && ($0["arguments"] as? [String])?.contains("--pitr") == true }
            .compactMap { $0["outcome"] as? String }
        #expect(outcomes.contains("success") && outcomes.contains { $0.hasPrefix("exit 2") } && outcomes.contains { $0.hasPrefix("exit 12") }, "\(outcomes)")
    }
}
