import Foundation
import Glibc
import KhoTestSupport
import Testing

// Point-in-time recovery drills (issue 20, design section 8): a real PostgreSQL archives its WAL
// with `kho wal push --direct`; a base backup, then a dump made while pgbench writes (its marker
// is a restore point beside the dump's snapshot); `kho verify --pitr` recovers the base backup to
// the marker in a private scratch cluster and compares the recovered database with the dump's
// manifest.

private struct PITREvidenceJSON: Decodable {
    struct Check: Decodable {
        var name: String
        var kind: String?
        var outcome: String
        var output: String
        var counted: Bool?
    }
    struct PITR: Decodable {
        var baseBackup: String
        var marker: String?
        var markerLSN: String?
        var markerDump: String?
        var target: String
        var reachedStop: String?
        var walFiles: Int
        var exactness: String
        var inFlight: Int?
        var committedInWindow: Int?
        var phases: [String: Double]
    }
    var drillID: String
    var snapshot: String
    var scratch: String
    var checks: [Check]
    var passed: Bool
    var failureReasons: [String]
    var rtoSeconds: Double?
    var pitr: PITR?

    func check(kind: String) -> Check? { checks.first { $0.kind == kind } }
    var description: String {
        ([(passed ? "PASS " : "FAIL ") + scratch] + checks.map { "  \($0.outcome) \($0.name) counted=\($0.counted.map(String.init) ?? "-"): \($0.output.prefix(300))" }
         + failureReasons.map { "  reason: \($0)" }).joined(separator: "\n")
    }
}

@Suite("PITR drills", .serialized,
       .enabled(if: ScratchPostgres.isAvailable, Comment(rawValue: ScratchPostgres.unavailableReason ?? "")))
struct PITRDrillTests {
    @Test("without a marker: a random WAL position, exactness none; a marker made under pgbench load: the PITR drill recovers the base backup to it, exactness proven, manifest equal; a marker with a commit in its window is approximate and not failed on the manifest; a segment missing after the base backup fails wal-continuity")
    func pitrDrill() throws {
        let archive = try Archive("pitr-drill")
        let sandbox = archive.sandbox
        let passwordFile = archive.passwordFile
        let pg = try archive.cluster("pitr-drill")
        // The scratch folders (TMPDIR) are below the sandbox: the server's user passes through.
        chmod(sandbox.dir, 0o711)
        let tmp = sandbox.path("tmp")
        let policies = sandbox.path("policies")
        let state = sandbox.path("state")
        for folder in [tmp, policies, state] {
            try makeDirectories(folder)
            chmod(folder, 0o755)
        }
        try writeFile(policies + "/db1-base.yaml", Array("""
            name: db1-base
            agency: Sở Thông tin và Truyền thông (kiểm thử)
            system: Diễn tập PITR
            security-level: 3
            schedule: "0 3 * * 0"
            repository:
              path: \(sandbox.repo)
              password-file: \(passwordFile)
            sources:
              - name: db1
                kind: postgres-base
                host: 127.0.0.1
                port: \(pg.port)
            objectives:
              rpo: 24h
              rto: 1h

            """.utf8))
        let env: [String: String?] = ["KHO_STATE_DIR": state, "KHO_POLICIES": policies, "TMPDIR": tmp]

        func switchAndWaitArchived() throws {
            let name = try pg.value("SELECT pg_walfile_name(pg_switch_wal());")
            try ServerSupport.waitUntil("\(name) is archived", timeout: 90) {
                try pg.value("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver;") >= name
            }
        }
        func verify(_ arguments: [String], knobs: [String: String?] = [:]) throws -> (ProcessResult, PITREvidenceJSON) {
            let result = try sandbox.kho(["verify", "--json", "--pitr", "--source", "db1"] + arguments, env: env.merging(knobs) { $1 })
            let evidence = try #require(try? result.decode([PITREvidenceJSON].self).first, "\(result)")
            return (result, evidence)
        }

        let pgbench = pg.program("pgbench")
        try ServerSupport.require(pgbench, ["-h", pg.dir, "-p", String(pg.port), "-U", pg.superuser, "-i", "-s", "1", "-q", "postgres"],
                                  scratch: pg.dir, timeout: 120)
        try pg.psql("""
            CREATE TABLE registry(id int PRIMARY KEY, holder text);
            INSERT INTO registry SELECT i, 'Trần Thị ' || i FROM generate_series(1, 500) i;
            CREATE UNLOGGED TABLE scratchpad(n int);
            INSERT INTO scratchpad SELECT generate_series(1, 50);
            """)
        // In the backup's postgresql.auto.conf (the running cluster is not restarted): a recovered
        // cluster started with the backup's configuration would not start at all.
        try pg.psql("ALTER SYSTEM SET shared_preload_libraries = 'kho_no_such_library';")
        try sandbox.ok("backup", "--postgres-base", "postgres://postgres@127.0.0.1:\(pg.port)", "--source-name", "db1", "--checkpoint", "fast")

        // No dump yet, so no marker: a random WAL position of the window, integrity checks only.
        try pg.psql("INSERT INTO registry VALUES (0, 'before any dump');")
        try switchAndWaitArchived()
        let (unmarked, none) = try verify([])
        #expect(unmarked.exitCode == 0, "\(unmarked)\n\(none.description)")
        #expect(none.pitr?.exactness == "none" && none.pitr?.marker == nil, "\(none.description)")
        #expect(none.check(kind: "manifest") == nil && none.check(kind: "pg_amcheck")?.outcome == "pass", "\(none.description)")

        // The nightly dump while pgbench writes (at a modest rate: the marker retries until no
        // transaction ended between the dump's snapshot and the restore point).
        let load = try Child.spawn(pgbench, ["-h", pg.dir, "-p", String(pg.port), "-U", pg.superuser, "-n", "-c", "2", "-j", "2", "-R", "40", "-T", "6", "postgres"],
                                   environment: ProcessInfo.processInfo.environment, scratch: pg.dir)
        usleep(1_000_000)
        let dumped = try sandbox.kho(["backup", "--postgres", "postgres://postgres@127.0.0.1:\(pg.port)/postgres", "--source-name", "db1", "--no-globals"])
        try #require(dumped.exitCode == 0, "\(dumped)")
        let loaded = load.wait(timeout: 60)
        #expect(loaded.exitCode == 0, "\(loaded)")
        try switchAndWaitArchived()

        // The drill: recovered to the marker, exactly the dump's state.
        let (passed, proven) = try verify([])
        #expect(passed.exitCode == 0, "\(passed)\n\(proven.description)")
        #expect(proven.passed, "\(proven.description)")
        let pitr = try #require(proven.pitr, "\(proven.description)")
        #expect(pitr.exactness == "proven", "\(proven.description)")
        #expect(pitr.committedInWindow == 0)
        #expect(pitr.walFiles > 0)
        #expect(proven.scratch.contains(tmp + "/kho-drill-pitr-"), "\(proven.scratch)")
        let marker = try #require(pitr.marker)
        #expect(pitr.reachedStop?.contains("recovery stopping at restore point \"\(marker)\"") == true, "\(pitr)")
        for kind in ["restore", "pitr-target", "wal-continuity", "manifest", "pg_amcheck", "rto"] {
            #expect(proven.check(kind: kind)?.outcome == "pass", "\(kind): \(proven.description)")
        }
        #expect(proven.check(kind: "manifest")?.output.contains("tables") == true)
        #expect(pitr.phases["files"] != nil && pitr.phases["recovery"] != nil)
        #expect(!((try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []).contains { $0.hasPrefix("kho-drill") })

        // What an operator reads of a drill that passed (the same marker again: --marker).
        let passedText = try sandbox.kho(["verify", "--pitr", "--source", "db1", "--marker", marker], env: env)
        #expect(passedText.exitCode == 0, "\(passedText)")
        #expect(passedText.out.contains("PASS db1-base/db1") && passedText.out.contains("exactness: proven")
                && passedText.out.contains("restore point \(marker)"), "\(passedText)")

        // A commit between the dump's snapshot and the restore point (the test knob): approximate,
        // the manifest recorded and not counted. The drill chooses the marker not drilled yet.
        let inFlight = try sandbox.kho(["backup", "--postgres", "postgres://postgres@127.0.0.1:\(pg.port)/postgres", "--source-name", "db1", "--no-globals"],
                                      env: ["KHO_TEST_MARKER_INFLIGHT": "1"])
        try #require(inFlight.exitCode == 0, "\(inFlight)")
        try pg.psql("INSERT INTO registry VALUES (501, 'after the marker');")
        try switchAndWaitArchived()
        let (_, approximate) = try verify([])
        let approximatePITR = try #require(approximate.pitr, "\(approximate.description)")
        #expect(approximatePITR.marker != marker)
        #expect(approximatePITR.exactness == "approximate", "\(approximate.description)")
        #expect((approximatePITR.committedInWindow ?? 0) >= 1)
        #expect(approximate.check(kind: "manifest")?.counted == false, "\(approximate.description)")
        #expect(approximate.passed, "\(approximate.description)")

        // The segment holding the first marker removed from the repository: wal-continuity fails.
        let segment = try pg.value("SELECT pg_walfile_name('\(try #require(pitr.markerLSN))');")
        let removed = try #require(FileManager.default.enumerator(atPath: sandbox.repo + "/wal")?.compactMap { $0 as? String }
            .first { ($0 as NSString).lastPathComponent == segment })
        try FileManager.default.removeItem(atPath: sandbox.repo + "/wal/" + removed)
        let (failed, gap) = try verify(["--marker", marker])
        #expect(failed.exitCode == 12, "\(failed)")
        #expect(!gap.passed)
        #expect(gap.check(kind: "wal-continuity")?.outcome == "fail", "\(gap.description)")
        #expect(gap.pitr?.exactness == "unmeasured")
        // What an operator reads.
        let text = try sandbox.kho(["verify", "--pitr", "--source", "db1", "--marker", marker], env: env)
        #expect(text.exitCode == 12, "\(text)")
        #expect(text.out.contains("FAIL db1-base/db1") && text.out.contains("wal-continuity") && text.out.contains("exactness: unmeasured"), "\(text)")
        // The promoted copies (timeline 2) archived nothing: archive_command was kho's ''.
        let archived = FileManager.default.enumerator(atPath: sandbox.repo + "/wal")?.compactMap { $0 as? String } ?? []
        #expect(!archived.contains { ($0 as NSString).lastPathComponent.hasPrefix("00000002") }, "\(archived)")
        // The catalog keeps the six drills.
        let catalog = try ScratchSQLite.sql("SELECT count(*) FROM runs WHERE kind = 'drill';", path: state + "/catalog.sqlite", scratch: sandbox.dir)
        #expect(catalog.trimmingCharacters(in: .whitespacesAndNewlines) == "6")
    }
}
