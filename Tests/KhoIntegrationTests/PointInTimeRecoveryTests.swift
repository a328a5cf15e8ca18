import Foundation
import Glibc
import KhoTestSupport
import Testing

// Restore to a point in time (issue 20, design section 6): a real PostgreSQL archives its WAL with
// `kho wal push --direct`, a base backup is taken in the middle of a write load, an "incident"
// (a table dropped, rows deleted) happens at a known time, and `kho restore --to-data-directory
// --at` one second before it starts a recovered cluster that has the table and the rows back and
// nothing written after the target.

/// A cluster archiving into a sandbox's repository as source `db1` (the shared `Archive`).
private final class ArchivingCluster {
    let sandbox: Sandbox
    let pg: ScratchPostgres
    let source: String

    init(_ label: String) throws {
        let archive = try Archive(label)
        sandbox = archive.sandbox
        source = archive.source
        pg = try archive.cluster(label)
        // The server's user must reach a data directory restored below the sandbox.
        chmod(sandbox.dir, 0o711)
    }

    func baseBackup() throws -> String {
        let result = try sandbox.ok("backup", "--postgres-base", "postgres://postgres@127.0.0.1:\(pg.port)", "--source-name", source,
                                    "--checkpoint", "fast", "--json")
        let json = try #require(try result.json() as? [String: Any])
        return try #require(json["snapshot"] as? String)
    }
}

/// A cluster `kho restore --start` left running: queried over TCP, stopped and removed at the end.
private struct RecoveredCluster {
    let directory: String
    let port: Int
    let bin: String

    func value(_ sql: String) throws -> String {
        try ServerSupport.require(bin + "/psql", ["-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "postgres", "-c", sql],
                                  scratch: directory).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func stop() {
        _ = try? ServerSupport.run(ScratchPostgres.runuser!, ["-u", "postgres", "--", bin + "/pg_ctl", "-D", directory, "-m", "immediate", "-w", "stop"],
                                   scratch: "/tmp", timeout: 60)
    }
}

/// 2026-12-07T16:50:01+00:00, as `--at` reads it.
private func isoUTC(_ date: Date) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.timeZone = TimeZone(identifier: "UTC")
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.string(from: date)
}

@Suite("restore to a point in time", .serialized,
       .enabled(if: ScratchPostgres.isAvailable, Comment(rawValue: ScratchPostgres.unavailableReason ?? "")))
struct PointInTimeRecoveryTests {
    init() throws {
        // The recovered cluster keeps the configuration it was backed up with: its socket goes to
        // PostgreSQL's default folder.
        if access("/run/postgresql", F_OK) != 0 {
            mkdir("/run/postgresql", 0o2775)
            try ServerSupport.chownTree("/run/postgresql", to: "postgres")
        }
    }

    @Test("the incident: a base backup under load, a table dropped and rows deleted at T; --at T-1s --start gives them back, with nothing written after T; --latest has the incident; a time after the last archived commit is a usage error; a removed segment refuses the restore")
    func incidentIsUndone() throws {
        let cluster = try ArchivingCluster("pitr")
        let pg = cluster.pg
        let sandbox = cluster.sandbox
        try ServerSupport.require(pg.program("pgbench"), ["-h", pg.dir, "-p", String(pg.port), "-U", pg.superuser, "-i", "-s", "2", "-q", "postgres"],
                                  scratch: pg.dir, timeout: 300)
        try pg.psql("""
            CREATE TABLE registry(id int PRIMARY KEY, holder text);
            INSERT INTO registry SELECT i, 'Nguyễn Văn ' || i FROM generate_series(1, 2000) i;
            CREATE TABLE ticks(n int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());
            """)
        // What a hostile database superuser can leave in the configuration a base backup carries:
        // a command the recovered server would run on the restore host.
        let planted = sandbox.path("planted-by-alter-system")
        try pg.psql("ALTER SYSTEM SET recovery_end_command = 'touch \(planted)'; ALTER SYSTEM SET archive_cleanup_command = 'touch \(planted)';")
        try pg.load(transactions: 1500)
        let base = try cluster.baseBackup()
        try pg.load(transactions: 1500)
        // Commits before the target, each its own transaction.
        for n in 1...20 { try pg.psql("INSERT INTO ticks(n) VALUES (\(n));") }
        usleep(1_200_000)
        let target = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
        usleep(1_200_000)
        // The incident, and work after it.
        try pg.psql("DROP TABLE registry; DELETE FROM pgbench_accounts WHERE aid <= 100;")
        for n in 21...40 { try pg.psql("INSERT INTO ticks(n) VALUES (\(n));") }
        _ = try pg.switchAndWaitArchived(timeout: 90)
        #expect(try pg.value("SELECT count(*) FROM pgbench_accounts WHERE aid <= 100;") == "0")

        let bin = (pg.program("psql") as NSString).deletingLastPathComponent
        let port = try ServerSupport.freeLoopbackPort()
        let directory = sandbox.path("restored")
        let result = try sandbox.kho(["restore", "--source", cluster.source, "--to-data-directory", directory, "--at", isoUTC(target),
                                      "--start", "--port", String(port), "--yes", "--json"])
        let recovered = RecoveredCluster(directory: directory, port: port, bin: bin)
        defer { recovered.stop() }
        try #require(result.exitCode == 0, "\(result)")
        let summary = try #require(try result.json() as? [String: Any])
        #expect((summary["baseBackup"] as? String)?.hasPrefix(String(base.prefix(8))) == true)
        #expect((summary["rtoSeconds"] as? Double ?? 0) > 0)
        #expect((summary["walFilesServed"] as? Int ?? 0) > 0)
        let reached = try #require(summary["reached"] as? [String: Any])
        #expect((reached["stoppedAt"] as? String)?.contains("recovery stopping before commit") == true, "\(reached)")
        #expect(reached["lastCommit"] != nil)

        #expect(try recovered.value("SELECT pg_is_in_recovery();") == "f")
        #expect(try recovered.value("SELECT count(*) FROM registry;") == "2000")
        #expect(try recovered.value("SELECT count(*) FROM pgbench_accounts WHERE aid <= 100;") == "100")
        #expect(try recovered.value("SELECT count(*), max(n) FROM ticks;") == "20|20")
        // The copy does not archive into its original's archive, and ran none of the planted commands.
        #expect(try recovered.value("SHOW archive_mode;") == "off")
        #expect(access(planted, F_OK) != 0, "the recovered server ran a command from the restored configuration")
        recovered.stop()
        // Restored as the server's user from the start (no chown pass after the sync), with no
        // setuid or setgid bit; the served WAL left no temporary file behind.
        let postgres = try #require(getpwnam("postgres"))
        var foreign: [String] = []
        let walker = try #require(FileManager.default.enumerator(atPath: directory))
        for case let relative as String in walker {
            var info = stat()
            guard lstat(directory + "/" + relative, &info) == 0 else { continue }
            if info.st_uid != postgres.pointee.pw_uid || (info.st_mode & 0o6000) != 0 || relative.hasSuffix(".kho-tmp") { foreign.append(relative) }
        }
        #expect(foreign.isEmpty, "\(foreign.prefix(10))")

        // --latest replays everything archived: the incident is in it.
        let latestPort = try ServerSupport.freeLoopbackPort()
        let latestDirectory = sandbox.path("latest")
        let latest = try sandbox.kho(["restore", "--source", cluster.source, "--to-data-directory", latestDirectory, "--latest",
                                      "--start", "--port", String(latestPort), "--yes", "--json"])
        let latestCluster = RecoveredCluster(directory: latestDirectory, port: latestPort, bin: bin)
        defer { latestCluster.stop() }
        try #require(latest.exitCode == 0, "\(latest)")
        #expect(try latestCluster.value("SELECT count(*) FROM ticks;") == "40")
        #expect(try latestCluster.value("SELECT count(*) FROM pg_tables WHERE tablename = 'registry';") == "0")
        latestCluster.stop()

        // A time after the last archived commit: PostgreSQL cannot confirm it; kho says so (exit 2)
        // instead of passing on the server's FATAL line.
        let futureDirectory = sandbox.path("future")
        let future = try sandbox.kho(["restore", "--source", cluster.source, "--to-data-directory", futureDirectory,
                                      "--at", isoUTC(Date().addingTimeInterval(3600)), "--start", "--port", String(latestPort), "--yes"])
        RecoveredCluster(directory: futureDirectory, port: latestPort, bin: bin).stop()
        #expect(future.exitCode == 2, "\(future)")
        #expect(future.err.contains("without reaching") && future.err.contains("--latest"), "\(future)")

        // A segment the recovery needs removed from the repository: refused before anything is written.
        let walFolder = sandbox.repo + "/wal"
        let clusterFolder = try #require(try FileManager.default.contentsOfDirectory(atPath: walFolder).first)
        let logFolder = try FileManager.default.contentsOfDirectory(atPath: walFolder + "/" + clusterFolder).filter { $0.count == 16 }.sorted().last!
        let segments = try FileManager.default.contentsOfDirectory(atPath: walFolder + "/\(clusterFolder)/\(logFolder)").filter { $0.count == 24 }.sorted()
        try #require(segments.count > 4)
        try FileManager.default.removeItem(atPath: walFolder + "/\(clusterFolder)/\(logFolder)/" + segments[segments.count - 3])
        let gapDirectory = sandbox.path("gap")
        let refused = try sandbox.kho(["restore", "--source", cluster.source, "--to-data-directory", gapDirectory, "--latest", "--yes"])
        #expect(refused.exitCode == 12, "\(refused)")
        #expect(refused.err.contains("gap"), "\(refused)")
        #expect(access(gapDirectory, F_OK) != 0)
        _ = base
    }
}
