import Foundation
import Glibc
import KhoTestSupport
import Testing

// Physical base backups (issue 20, P4): `kho backup --postgres-base` streams pg_basebackup's tar
// into the repository member by member; `kho restore --target DIR` gives DIR/data, which
// pg_verifybackup accepts and which recovers and starts with the archived WAL. A second backup
// after writes stores the changed table again but not the untouched one; a cluster with a
// tablespace is refused before pg_basebackup starts; a pg_basebackup killed mid-stream leaves no
// snapshot and a repository that checks clean. Each test has a cluster of its own, archiving with
// `cp` into a folder of its own (the kho archive is another piece of issue 20).

/// A folder owned by `postgres` for the cluster's archived WAL, and the settings that fill it.
private func archivingCluster(_ label: String) throws -> (server: ScratchPostgres, archive: String) {
    let archive = try ServerSupport.makeTemporaryFolder(label + "-wal")
    try ServerSupport.chownTree(archive, to: "postgres")
    let server = try ScratchPostgres(label: label, settings: [
        "archive_mode = on",
        "archive_command = 'cp %p \(archive)/%f'",
        "autovacuum = off",
    ])
    return (server, archive)
}

private struct BaseBackupOutput: Decodable {
    struct Summary: Decodable {
        var bytesNewRaw: Int64
        var totalSize: Int64
    }
    var snapshot: String
    var summary: Summary
}

@Suite("PostgreSQL base backups", .enabled(if: ScratchPostgres.isAvailable, Comment(rawValue: ScratchPostgres.unavailableReason ?? "")))
struct PostgresBaseBackupTests {
    @Test("base backup, restore, pg_verifybackup, recovery; a second backup stores the changed table, not the untouched one")
    func backupRestoreAndDedup() throws {
        let (pg, archive) = try archivingCluster("pg-base")
        defer { pg.stop(); try? removeTree(archive) }
        let sandbox = try Sandbox("pg-base")
        try sandbox.initRepository()
        try pg.createDatabase("app")
        // Frozen and checkpointed, so that no later read rewrites a page of the first backup
        // (hint bits) and what changes is only what the test writes. Commits wait for their WAL
        // here (the scratch server's default is off): hint bits, and so freezing, are set on a
        // page only once the commit that they name is flushed.
        try pg.psql("""
            SET synchronous_commit = on;
            CREATE TABLE untouched AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS body FROM generate_series(1, 150000) g;
            CREATE TABLE journal AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 60000) g;
            CREATE TABLE hot AS SELECT g AS id, 0 AS counter, md5(g::text) AS body FROM generate_series(1, 30000) g;
            VACUUM (FREEZE, ANALYZE);
            CHECKPOINT;
            """, database: "app")
        let size = { (table: String) in try Int64(pg.value("SELECT pg_relation_size('\(table)');", database: "app"))! }
        let untouchedSize = try size("untouched")
        let journalBefore = try size("journal")
        let hotSize = try size("hot")

        let first = try sandbox.ok("backup", "--postgres-base", "postgres://postgres@127.0.0.1:\(pg.port)", "--source-name", "cluster",
                                   "--checkpoint", "fast", "--json").decode(BaseBackupOutput.self)
        #expect(first.summary.bytesNewRaw > untouchedSize)

        try pg.psql("""
            SET synchronous_commit = on;
            INSERT INTO journal SELECT g, md5(g::text) FROM generate_series(60001, 64000) g;
            UPDATE hot SET counter = counter + 1 WHERE id % 10 = 3;
            VACUUM (FREEZE);
            CHECKPOINT;
            """, database: "app")
        let journalGrowth = try size("journal") - journalBefore
        // A nightly dump under the same source name, older than the next base backup: a restore
        // into a file by source still means the dump.
        try sandbox.ok("backup", "--postgres", "postgres://postgres@127.0.0.1:\(pg.port)/app", "--source-name", "cluster")
        let second = try sandbox.ok("backup", "--postgres-base", "postgres://postgres@127.0.0.1:\(pg.port)", "--source-name", "cluster",
                                    "--checkpoint", "fast", "--json").decode(BaseBackupOutput.self)
        // What may be new: the updated table (every page: 10 % of rows touched), the journal's new
        // pages and the block they start in, the catalogs and control files a vacuum and two
        // checkpoints rewrite. Storing the untouched table again would pass that by far.
        let block: Int64 = 128 << 10
        let allowance: Int64 = 3 << 20
        let bound = hotSize * 2 + journalGrowth + 2 * block + allowance
        #expect(second.summary.bytesNewRaw < bound, "new \(second.summary.bytesNewRaw) bytes, bound \(bound) (untouched table \(untouchedSize))")
        #expect(second.summary.bytesNewRaw < untouchedSize)

        let dumped = sandbox.path("app.sql")
        try sandbox.ok("restore", "--source", "cluster", "--to-file", dumped, "--yes")
        #expect(String(decoding: try readFile(dumped), as: UTF8.self).contains("CREATE TABLE public.journal"))

        let snapshots = try sandbox.snapshots()
        let made = try #require(snapshots.first { ($0["id"] as? String) == second.snapshot })
        #expect((made["tags"] as? [String]) == ["base"])
        let source = try #require(made["source"] as? [String: Any])
        #expect(source["kind"] as? String == "postgres-base")
        let manifest = try #require(made["manifest"] as? [String: Any])
        #expect(manifest["kind"] as? String == "physical")
        #expect(manifest["cluster"] as? String == String(format: "%016llx", UInt64(try pg.value("SELECT system_identifier FROM pg_control_system();"))!))
        #expect(manifest["blockSize"] as? Int == 131072)
        #expect(manifest["superuser"] as? String == "postgres")
        let startSegment = try #require(manifest["startSegment"] as? String)
        #expect(access(archive + "/" + startSegment, F_OK) == 0, "the start segment \(startSegment) was archived")

        // Restored below root's folders (kho refuses to write as root below another user's), which
        // the postgres user may then enter.
        let target = sandbox.path("restored")
        try sandbox.ok("restore", second.snapshot, "--target", target)
        try check("chmod", sandbox.dir) { chmod(sandbox.dir, 0o711) }
        let data = target + "/data"
        try ServerSupport.require(pg.program("pg_verifybackup"), ["-n", data], scratch: sandbox.dir)
        let control = try ServerSupport.require(pg.program("pg_controldata"), [data], scratch: sandbox.dir)
        #expect(control.contains("Database system identifier"))

        // Recovers from the archive and opens with the rows the backup saw.
        let conf = data + "/postgresql.auto.conf"
        try writeFile(conf, try readFile(conf) + Array("""

            restore_command = 'cp \(archive)/%f %p'
            archive_mode = off

            """.utf8), mode: 0o600)
        try writeFile(data + "/recovery.signal", [], mode: 0o600)
        try ServerSupport.chownTree(target, to: "postgres")
        let port = try ServerSupport.freeLoopbackPort()
        let ctl = { (arguments: [String]) in
            try ServerSupport.require(ScratchPostgres.runuser!, ["-u", "postgres", "--", pg.program("pg_ctl"), "-D", data] + arguments, scratch: pg.dir)
        }
        _ = try ctl(["-l", pg.dir + "/restored.log", "-w", "-t", "60", "-o", "-p \(port) -k \(pg.dir) -c listen_addresses=''", "start"])
        defer { _ = try? ctl(["-m", "immediate", "-w", "stop"]) }
        let count = { (table: String) in
            try ServerSupport.require(pg.program("psql"), ["-X", "-A", "-t", "-h", pg.dir, "-p", String(port), "-U", "postgres", "-d", "app",
                                                            "-c", "SELECT count(*) FROM \(table);"], scratch: sandbox.dir)
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        try ServerSupport.waitUntil("the restored cluster accepts queries") { (try? count("journal")) != nil }
        #expect(try count("journal") == "64000")
        #expect(try count("untouched") == "150000")
    }

    @Test("a cluster with a tablespace is refused before pg_basebackup starts")
    func tablespaceRefused() throws {
        let (pg, archive) = try archivingCluster("pg-base-ts")
        defer { pg.stop(); try? removeTree(archive) }
        let location = pg.dir + "/tablespace"
        try check("mkdir", location) { mkdir(location, 0o700) }
        try ServerSupport.chownTree(location, to: "postgres")
        try pg.psql("CREATE TABLESPACE elsewhere LOCATION '\(location)';")
        let sandbox = try Sandbox("pg-base-ts")
        try sandbox.initRepository()
        let result = try sandbox.kho("backup", "--postgres-base", "postgres://postgres@127.0.0.1:\(pg.port)", "--source-name", "cluster")
        #expect(result.exitCode == 2, "\(result)")
        #expect(result.err.contains("tablespace"), "\(result)")
        #expect(try sandbox.snapshots().isEmpty)
        // No backup ran: the server never archived a backup history file.
        let archived = try FileManager.default.contentsOfDirectory(atPath: archive)
        #expect(!archived.contains { $0.hasSuffix(".backup") }, "\(archived)")
    }

    @Test("pg_basebackup killed mid-stream: no snapshot, kho check clean")
    func killedMidStream() throws {
        let (pg, archive) = try archivingCluster("pg-base-kill")
        defer { pg.stop(); try? removeTree(archive) }
        let sandbox = try Sandbox("pg-base-kill")
        try sandbox.initRepository()
        // A pg_basebackup first on PATH that passes the real one's first 3 MB on, then dies by
        // SIGKILL, as one killed by the OOM killer or an operator would.
        let tools = sandbox.path("tools")
        try check("mkdir", tools) { mkdir(tools, 0o755) }
        try writeFile(tools + "/pg_basebackup", Array("""
            #!/bin/sh
            "\(pg.program("pg_basebackup"))" "$@" | head -c 3000000
            kill -KILL $$

            """.utf8), mode: 0o755)
        let path = tools + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let result = try sandbox.kho(["backup", "--postgres-base", "postgres://postgres@127.0.0.1:\(pg.port)", "--source-name", "cluster",
                                      "--checkpoint", "fast"], env: ["PATH": path])
        #expect(result.exitCode == 1, "\(result)")
        #expect(result.err.contains("pg_basebackup"), "\(result)")
        #expect(try sandbox.snapshots().isEmpty)
        try sandbox.ok("check")
    }
}
