import Foundation
import Glibc
import KhoTestSupport
import Testing

// Continuity, status, metrics, report and WAL retention (docs/design/pitr.md section 7) against a
// real PostgreSQL archiving with `kho wal push` (direct, or through the agent).

/// An archive, its cluster, and a policy naming the source, with a state folder for status,
/// metrics and report.
private struct WALBench {
    let archive: Archive
    let pg: ScratchPostgres
    let cluster: String
    var sandbox: Sandbox { archive.sandbox }
    var policies: String { sandbox.path("policies") }
    var state: String { sandbox.path("state") }

    /// `settings` gives the cluster's archiving lines (default: `kho wal push --direct`).
    init(_ label: String, retention: String = "", settings: ((Archive) -> [String])? = nil) throws {
        archive = try Archive(label)
        pg = try ScratchPostgres(label: label, settings: settings?(archive) ?? ScratchPostgres.archiving(command: archive.command()))
        cluster = try pg.systemIdentifier
        for folder in [policies, state, state + "/wal"] { try makeDirectories(folder) }
        try pg.psql("CREATE TABLE marks (at timestamptz DEFAULT now());")
        try writeFile(policies + "/wal-test.yaml", Array("""
            name: wal-test
            agency: Sở Thông tin và Truyền thông (kiểm thử)
            system: Lưu trữ WAL
            security-level: 3
            schedule: "0 2 * * 0"
            repository:
              path: \(sandbox.repo)
              password-file: \(archive.passwordFile)
            sources:
              - name: db1
                kind: postgres-base
                port: \(pg.port)
                wal-rpo: 5m
            \(retention)objectives:
              rpo: 7d
              rto: 1h

            """.utf8))
    }

    var env: [String: String?] { ["KHO_POLICIES": policies, "KHO_STATE_DIR": state] }

    /// Writes something and ends the segment, once it is archived.
    @discardableResult
    func advance() throws -> String {
        try pg.psql("INSERT INTO marks DEFAULT VALUES;")
        return try pg.switchAndWaitArchived()
    }

    /// A base backup of the cluster; its snapshot ID.
    func baseBackup() throws -> String {
        let result = try sandbox.ok("backup", "--postgres-base", "postgres://postgres@127.0.0.1:\(pg.port)", "--source-name", archive.source,
                                    "--checkpoint", "fast", "--json")
        let made = try #require(try result.json() as? [String: Any], "\(result)")
        return try #require(made["snapshot"] as? String, "\(result)")
    }

    /// Archived file names (segments, backup history files, …) of the cluster.
    func archived() throws -> Set<String> {
        Set(try sandbox.repositoryFiles("wal/" + cluster).keys.map { String($0.split(separator: "/").last!) }.filter { $0 != "archive" && $0 != "retired" })
    }

    func path(of name: String) -> String {
        sandbox.repo + "/wal/\(cluster)/\(name.prefix(16))/\(name)"
    }

    func status(_ extra: String...) throws -> ProcessResult {
        try sandbox.kho(["status"] + extra, env: env)
    }
}

@Suite("WAL continuity, status, metrics, report and retention", .serialized,
       .enabled(if: ScratchPostgres.isAvailable, Comment(rawValue: ScratchPostgres.unavailableReason ?? "")))
struct WALProtectionTests {
    @Test("a segment removed after a base backup: check exits 12 naming the base backup, status fails with the gap, metrics say kho_wal_gap 1, the report shows the cluster's RPO")
    func removedSegmentIsAGap() throws {
        let bench = try WALBench("wal-gap")
        defer { bench.pg.stop() }
        try bench.advance()
        let base = try bench.baseBackup()
        let after = try (0..<3).map { _ in try bench.advance() }
        let check = try bench.sandbox.kho("check")
        #expect(check.exitCode == 0, "\(check)")
        let fine = try bench.status()
        #expect(fine.exitCode == 0, "\(fine)")
        #expect(fine.out.contains("continuity: ok"), "\(fine)")
        #expect(fine.out.contains("recovery window:") && fine.out.contains("(1 base backups)"), "\(fine)")

        let removed = after[1]
        try #require(unlink(bench.path(of: removed)) == 0, "\(bench.path(of: removed))")
        let broken = try bench.sandbox.kho("check")
        #expect(broken.exitCode == 12, "\(broken)")
        #expect(broken.out.contains("has a gap that cuts base backups \(base.prefix(8))") && broken.out.contains("\(removed) is missing"), "\(broken)")
        #expect(broken.out.contains("recovery from them ends at \(after[0])"), "\(broken)")

        let metrics = bench.sandbox.path("kho.prom")
        let status = try bench.status("--metrics-file", metrics)
        #expect(status.exitCode == 1, "\(status)")
        #expect(status.out.contains("continuity: GAP at \(removed), cuts base backups \(base.prefix(8))"), "\(status)")
        let json = try bench.status("--json")
        let rows = try #require(try json.json() as? [[String: Any]], "\(json)")
        let wal = try #require(rows.first?["wal"] as? [String: Any], "\(json)")
        #expect(wal["continuity"] as? String == "gap")
        #expect(wal["newestSegment"] as? String == after[2])
        let text = String(decoding: try readFile(metrics), as: UTF8.self)
        #expect(text.contains("kho_wal_gap{policy=\"wal-test\",source=\"db1\"} 1"), "\(text)")
        #expect(text.contains("kho_wal_stalled{policy=\"wal-test\",source=\"db1\"} 0"), "\(text)")
        #expect(text.contains("kho_wal_last_archived_timestamp_seconds{policy=\"wal-test\",source=\"db1\"} "), "\(text)")

        // The report's period ends at the whole second before it runs: the newest segment must be
        // stored before that.
        usleep(1_100_000)
        let english = try bench.sandbox.kho(["report", "--format", "md", "--lang", "en"], env: bench.env)
        #expect(english.exitCode == 0, "\(english)")
        #expect(english.out.contains("## Continuous protection (PostgreSQL WAL)"), "\(english)")
        let row = try #require(english.out.split(separator: "\n").first { $0.hasPrefix("| wal-test/db1 | \(bench.cluster)") }, "\(english)")
        #expect(row.contains(after[2]) && row.contains(removed), "\(row)")
        let vietnamese = try bench.sandbox.kho(["report", "--format", "md", "--lang", "vi"], env: bench.env)
        #expect(vietnamese.out.contains("RPO đạt được"), "\(vietnamese)")
    }

    @Test("retention over three base backups keeps every file a kept base backup needs and removes the rest; kill -9 amid removal leaves check clean",
          .enabled(if: !Harness.releaseLane, "the removal-slowing knob is a debug-build setting"))
    func retentionKeepsWhatBaseBackupsNeed() throws {
        let bench = try WALBench("wal-retain")
        defer { bench.pg.stop() }
        try bench.advance()
        let a = try bench.baseBackup()
        for _ in 0..<3 { try bench.advance() }
        let b = try bench.baseBackup()
        for _ in 0..<2 { try bench.advance() }
        let c = try bench.baseBackup()
        let newest = try bench.advance()
        let original = try bench.archived()
        // Each base backup's start segment, from its backup history file (oldest first).
        let starts = original.filter { $0.hasSuffix(".backup") }.map { String($0.prefix(24)) }.sorted()
        try #require(starts.count == 3, "\(original.sorted())")
        func below(_ start: String) -> Set<String> { original.filter { !$0.hasSuffix(".history") && String($0.prefix(24)) < start } }

        // With every base backup kept, only what precedes the oldest one goes.
        let first = try bench.sandbox.ok("prune")
        #expect(first.out.contains("removed \(below(starts[0]).count) archived WAL files"), "\(first)")
        let before = try bench.archived()
        #expect(before == original.subtracting(below(starts[0])), "\(before.symmetricDifference(original.subtracting(below(starts[0]))).sorted())")

        try bench.sandbox.ok("forget", a)
        let due = below(starts[1]).subtracting(below(starts[0]))
        try #require(!due.isEmpty)
        let dry = try bench.sandbox.ok("prune", "--dry-run")
        #expect(dry.out.contains("would remove \(due.count) archived WAL files"), "\(dry)")
        #expect(try bench.archived() == before)

        // Killed amid the removal, at a random point: what is left is a suffix, and check passes.
        let slow = try bench.sandbox.start(["prune"], env: ["KHO_TEST_WAL_REMOVE_DELAY": "250"])
        usleep(UInt32.random(in: 300_000...900_000))
        slow.send(SIGKILL)
        _ = slow.wait()
        let interrupted = try bench.archived()
        #expect(before.subtracting(due).isSubset(of: interrupted), "a file a kept base backup needs went: \(before.subtracting(due).subtracting(interrupted).sorted())")
        print("WAL retention killed after removing \(before.count - interrupted.count) of \(due.count) files")
        // The killed prune's lock is stale (its process is gone).
        try bench.sandbox.ok("unlock")
        let check = try bench.sandbox.kho("check")
        #expect(check.exitCode == 0, "\(check)")

        let pruned = try bench.sandbox.ok("prune")
        #expect(pruned.out.contains("archived WAL files") || interrupted == before.subtracting(due), "\(pruned)")
        let afterPrune = try bench.archived()
        #expect(afterPrune == before.subtracting(due), "\(afterPrune.symmetricDifference(before.subtracting(due)).sorted())")
        #expect(try bench.sandbox.kho("check").exitCode == 0)

        // Then the second base backup goes too: only what the third needs is left, and it fetches.
        try bench.sandbox.ok("forget", b)
        try bench.sandbox.ok("prune")
        let left = try bench.archived()
        #expect(left == original.subtracting(below(starts[2])), "\(left.symmetricDifference(original.subtracting(below(starts[2]))).sorted())")
        #expect(left.contains(starts[2]) && left.contains(newest))
        for name in left.filter({ $0.count == 24 }).sorted() {
            let fetched = try bench.sandbox.kho("wal", "fetch", "--source", bench.archive.source, name, bench.sandbox.path("fetched"))
            #expect(fetched.exitCode == 0, "\(name): \(fetched)")
            unlink(bench.sandbox.path("fetched"))
        }
        #expect(try bench.sandbox.kho("check").exitCode == 0)

        // The kept base backup still restores to the end of the archive.
        let rows = try bench.pg.value("SELECT count(*) FROM marks;")
        let parent = try ServerSupport.makeTemporaryFolder("wal-retain-restore")
        let target = parent + "/data"
        let port = try ServerSupport.freeLoopbackPort()
        defer {
            _ = try? ServerSupport.run(ScratchPostgres.runuser!, ["-u", "postgres", "--", bench.pg.program("pg_ctl"), "-D", target, "-m", "immediate", "-w", "stop"],
                                       scratch: parent, timeout: 60)
            try? removeTree(parent)
        }
        // Prepared by kho, started here with the archive's environment (restore_command is
        // `kho wal fetch`), as README's standalone recovery does. (`--start` returns as soon as
        // pg_control says "in production", which a base backup's copy already says: a P5 matter.)
        let restored = try bench.sandbox.kho("restore", "--source", bench.archive.source, "--to-data-directory", target, "--latest")
        #expect(restored.exitCode == 0, "\(restored)")
        #expect(restored.out.contains("restored base backup \(c.prefix(8))"), "\(restored)")
        if restored.exitCode == 0 {
            let start = try ServerSupport.run("/bin/sh", ["-c", "set -a && . \(bench.archive.env) && exec \(ScratchPostgres.runuser!) -u postgres -- \(bench.pg.program("pg_ctl")) -D \(target) -l \(target)/start.log -o '-p \(port)' -W start"],
                                              scratch: parent, timeout: 60)
            #expect(start.succeeded, "\(start.stderr)")
            var answer = ""
            defer {
                if answer != rows { print("recovery log:\n" + String(decoding: (try? readFile(target + "/start.log")) ?? [], as: UTF8.self).suffix(3000)) }
            }
            // Without --start kho leaves the cluster as a standby at the end of the archive (read-only);
            // every row written before the newest archived segment must be there.
            try ServerSupport.waitUntil("the restored cluster has replayed every archived row", timeout: 60) {
                let psql = try ServerSupport.run(bench.pg.program("psql"), ["-h", "127.0.0.1", "-p", String(port), "-U", bench.pg.superuser, "-At", "-c",
                                                                             "SELECT count(*) FROM marks;", "postgres"],
                                                 scratch: parent, timeout: 60)
                answer = psql.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                return psql.succeeded && answer == rows
            }
        }
    }

    @Test("policy retention of a base-backup source removes the WAL only the forgotten base backups needed")
    func policyRetentionRemovesWAL() throws {
        let bench = try WALBench("wal-policy", retention: "retention:\n  keep-last: 1\n")
        defer { bench.pg.stop() }
        try bench.advance()
        _ = try bench.baseBackup()
        for _ in 0..<2 { try bench.advance() }
        let run = try bench.sandbox.kho(["run", "--all"], env: bench.env)
        #expect(run.exitCode == 0, "\(run)")
        #expect((run.out + run.err).contains("archived WAL files"), "\(run)")
        try bench.advance()
        let left = try bench.archived()
        let starts = left.filter { $0.hasSuffix(".backup") }.map { String($0.prefix(24)) }
        try #require(starts.count == 1, "\(left.sorted())")
        #expect(left.allSatisfy { $0.hasSuffix(".history") || String($0.prefix(24)) >= starts[0] }, "\(left.sorted())")
        #expect(try bench.sandbox.kho("check").exitCode == 0)
    }

    @Test("archiving that fails (the agent gone, its socket missing) is a failure in status and kho_wal_stalled 1 in metrics")
    func stalledArchivingFailsStatus() throws {
        let bench = try WALBench("wal-stall") { archive in [
            "archive_mode = on",
            "archive_command = '\(Harness.binary) wal push --source db1 --socket \(archive.sandbox.path("agent.sock")) --timeout 20s %p'",
            "archive_timeout = 1",
        ] }
        let socket = bench.sandbox.path("agent.sock")
        defer { bench.pg.stop() }
        let agentState = bench.state + "/wal"
        let agent = try bench.sandbox.start(["wal", "serve", "--source", "db1", "--data-directory", bench.pg.dataDirectory,
                                             "--socket", socket, "--state-directory", agentState, "--stall-after", "2s"])
        defer { agent.send(SIGKILL) }
        try ServerSupport.waitUntil("the agent listens", timeout: 30) {
            var info = stat()
            return lstat(socket, &info) == 0 && access(agentState + "/db1.status.json", F_OK) == 0
        }
        try bench.advance()
        let fine = try bench.status()
        #expect(fine.exitCode == 0, "\(fine)")
        #expect(fine.out.contains("agent: running"), "\(fine)")

        agent.send(SIGTERM)
        _ = agent.wait(timeout: 60)
        try bench.pg.psql("INSERT INTO marks DEFAULT VALUES;")
        _ = try bench.pg.value("SELECT pg_switch_wal();")
        try ServerSupport.waitUntil("a file waits in archive_status", timeout: 30) {
            try FileManager.default.contentsOfDirectory(atPath: bench.pg.dataDirectory + "/pg_wal/archive_status").contains { $0.hasSuffix(".ready") }
        }
        let metrics = bench.sandbox.path("kho.prom")
        let stalled = try bench.status("--metrics-file", metrics)
        #expect(stalled.exitCode == 1, "\(stalled)")
        #expect(stalled.out.contains("agent: NOT RUNNING") && stalled.out.contains("STALLED"), "\(stalled)")
        #expect(stalled.err.contains("stalled"), "\(stalled)")
        let text = String(decoding: try readFile(metrics), as: UTF8.self)
        #expect(text.contains("kho_wal_stalled{policy=\"wal-test\",source=\"db1\"} 1"), "\(text)")
        #expect(text.contains("kho_wal_ready_files{policy=\"wal-test\",source=\"db1\"} "), "\(text)")
    }
}
