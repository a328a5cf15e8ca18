import Foundation
import Glibc
import KhoTestSupport
import Testing

// Continuous archiving with `kho wal push --direct` as a real PostgreSQL's archive_command, and
// `kho wal fetch` giving the files back (docs/design/pitr.md sections 3 and 4). archive_command
// runs as the postgres user and reads the repository and its password file from a root-owned
// environment file it can read, as the README tells a DBA to set it up.

/// Every segment name on timeline 1 from the first to `last`, as the archive should hold them.
private func segments(upTo last: String, from first: String) -> [String] {
    let start = UInt64(first.suffix(16), radix: 16)!
    let end = UInt64(last.suffix(16), radix: 16)!
    // 16 MiB segments: the low 8 digits count to 0xFF, then the log (middle 8) goes up.
    func number(_ n: UInt64) -> UInt64 { (n >> 32) * 256 + (n & 0xFFFF_FFFF) }
    return (number(start)...number(end)).map { String(format: "00000001%08llX%08llX", $0 / 256, $0 % 256) }
}

private func archivedSegments(_ sandbox: Sandbox, cluster: String) throws -> [String: Int] {
    var names: [String: Int] = [:]
    for (path, size) in try sandbox.repositoryFiles("wal/" + cluster) {
        let leaf = String(path.split(separator: "/").last!)
        if leaf.count == 24 { names[leaf] = size }
    }
    return names
}

/// Fetches every segment from `first` to `last` with `kho wal fetch` and compares it with pg_wal's
/// copy where PostgreSQL still keeps one; returns how many were compared.
private func fetchAll(_ archive: Archive, _ pg: ScratchPostgres, first: String, last: String) throws -> Int {
    var compared = 0
    let target = archive.sandbox.path("fetched")
    for name in segments(upTo: last, from: first) {
        let result = try archive.sandbox.kho("wal", "fetch", "--source", archive.source, name, target)
        try #require(result.exitCode == 0, "\(name): \(result)")
        let fetched = try readFile(target)
        #expect(fetched.count == 16 << 20, "\(name)")
        #expect(access(target + ".kho-tmp", F_OK) != 0)
        let original = pg.dataDirectory + "/pg_wal/" + name
        if access(original, F_OK) == 0, let copy = try? readFile(original) {
            #expect(sha256(copy) == sha256(fetched), "\(name) differs from pg_wal's copy")
            compared += 1
        }
        unlink(target)
    }
    return compared
}

@Suite("WAL archiving: kho wal push --direct as archive_command, kho wal fetch as restore_command",
       .enabled(if: ScratchPostgres.isAvailable, Comment(rawValue: ScratchPostgres.unavailableReason ?? "")))
struct WALArchivingTests {
    @Test("under pgbench every segment up to the last archived one is in the archive and fetches back byte for byte; a repush is 0, other bytes under the name 12 and nothing replaced; fetch past the end is 1, a gap or damage 126, and no file is left")
    func archiveUnderLoadAndFetchBack() throws {
        let archive = try Archive("wal-load")
        let sandbox = archive.sandbox
        let pg = try archive.cluster("wal-load")
        defer { pg.stop() }
        let cluster = try pg.systemIdentifier
        try pg.pgbench(["-i", "-q", "-s", "2"])
        try pg.load(transactions: 10_000)
        let last = try pg.switchAndWaitArchived()
        let stored = try archivedSegments(sandbox, cluster: cluster)
        let first = try #require(stored.keys.min())
        let expected = segments(upTo: last, from: first)
        #expect(expected.count >= 8, "pgbench and archive_timeout made \(expected.count) segments")
        #expect(expected.filter { stored[$0] == nil }.isEmpty, "missing from the archive: \(expected.filter { stored[$0] == nil })")
        #expect(try pg.failedCount == 0)
        let compared = try fetchAll(archive, pg, first: first, last: last)
        #expect(compared >= 1, "at least the last segments are still in pg_wal")

        // Read-ahead: the call that opens the repository fills the folder with the next segments;
        // the next call answers from it without opening the repository (a wrong password shows it).
        let prefetch = sandbox.path("prefetch")
        let early = sandbox.path("early")
        try sandbox.ok("wal", "fetch", "--source", archive.source, "--cluster", cluster, "--prefetch", prefetch, "--read-ahead", "3", expected[0], early)
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: prefetch + "/" + cluster)) == Set(expected[1...3]))
        let served = try sandbox.kho(["wal", "fetch", "--source", archive.source, "--cluster", cluster, "--prefetch", prefetch, expected[1], early], env: ["KHO_PASSWORD": "wrong"])
        #expect(served.exitCode == 0, "\(served)")
        try sandbox.ok("wal", "fetch", "--source", archive.source, expected[1], early + ".direct")
        #expect(try readFile(early) == (try readFile(early + ".direct")))
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: prefetch + "/" + cluster)) == Set(expected[2...3]), "served and older files leave the folder")

        let ls = try sandbox.ok("wal", "ls", "--source", archive.source)
        #expect(ls.out.contains(cluster) && ls.out.contains("no gaps"), "\(ls)")
        try sandbox.ok("check")

        // A repush of the stored file, as after a crash: success, nothing written.
        let fetched = sandbox.path("copy/pg_wal")
        try makeDirectories(fetched)
        try sandbox.ok("wal", "fetch", "--source", archive.source, last, fetched + "/" + last)
        let before = try readFile(sandbox.repo + "/wal/\(cluster)/\(last.prefix(16))/\(last)")
        let repush = try sandbox.kho(["wal", "push", "--direct", "--source", archive.source, "--data-directory", pg.dataDirectory, fetched + "/" + last])
        #expect(repush.exitCode == 0, "\(repush)")
        // Other bytes under the name: refused with 12, the stored object unchanged.
        var other = try readFile(fetched + "/" + last)
        other[other.count - 1] ^= 0x55
        try writeFile(fetched + "/" + last, other)
        let conflict = try sandbox.kho(["wal", "push", "--direct", "--source", archive.source, "--data-directory", pg.dataDirectory, fetched + "/" + last])
        #expect(conflict.exitCode == 12, "\(conflict)")
        #expect(try readFile(sandbox.repo + "/wal/\(cluster)/\(last.prefix(16))/\(last)") == before)

        // Fetch: past the end is 1 and writes nothing.
        let target = sandbox.path("RECOVERYXLOG")
        let beyond = segments(upTo: "00000001000000010000000F", from: last)[3]
        let end = try sandbox.kho("wal", "fetch", "--source", archive.source, beyond, target)
        #expect(end.exitCode == 1, "\(end)")
        #expect(try sandbox.kho("wal", "fetch", "--source", archive.source, "00000002.history", target).exitCode == 1)
        #expect(access(target, F_OK) != 0)
        // A gap: a segment removed while later ones exist stops recovery (126), no file.
        let middle = expected[expected.count / 2]
        try #require(unlink(sandbox.repo + "/wal/\(cluster)/\(middle.prefix(16))/\(middle)") == 0)
        let gap = try sandbox.kho("wal", "fetch", "--source", archive.source, middle, target)
        #expect(gap.exitCode == 126, "\(gap)")
        #expect(gap.err.contains("gap"), "\(gap)")
        #expect(access(target, F_OK) != 0 && access(target + ".kho-tmp", F_OK) != 0)
        // Damage: one flipped byte in a stored object stops recovery too.
        let damagedName = expected[expected.count / 2 + 1]
        let damagedPath = sandbox.repo + "/wal/\(cluster)/\(damagedName.prefix(16))/\(damagedName)"
        var damaged = try readFile(damagedPath)
        damaged[damaged.count / 2] ^= 1
        try writeFile(damagedPath, damaged, mode: 0o600)
        let bad = try sandbox.kho("wal", "fetch", "--source", archive.source, damagedName, target)
        #expect(bad.exitCode == 126, "\(bad)")
        #expect(access(target, F_OK) != 0)
        // A command line that does not even parse stops recovery as well.
        #expect(try sandbox.kho("wal", "fetch", "--sauce", archive.source, damagedName, target).exitCode == 126)
        // ls names the gap.
        let gaps = try sandbox.kho("wal", "ls", "--source", archive.source)
        #expect(gaps.exitCode == 12 && gaps.out.contains("gap: \(middle)"), "\(gaps)")
    }

    @Test("a second cluster archiving into the same source is refused and nothing of it is stored, until `kho wal adopt` retires the first, whose pushes are refused from then on")
    func secondClusterRefusedUntilAdopted() throws {
        let archive = try Archive("wal-two")
        let sandbox = archive.sandbox
        let first = try archive.cluster("wal-first")
        defer { first.stop() }
        let firstID = try first.systemIdentifier
        _ = try first.switchAndWaitArchived()

        let second = try archive.cluster("wal-second")
        defer { second.stop() }
        let secondID = try second.systemIdentifier
        #expect(firstID != secondID)
        let pending = try second.value("SELECT pg_walfile_name(pg_switch_wal());")
        try ServerSupport.waitUntil("the second cluster's archiver fails", timeout: 60) { try second.failedCount >= 2 }
        #expect(try second.value("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver;") == "")
        #expect(try sandbox.repositoryFiles("wal/" + secondID).isEmpty, "nothing of the second cluster is stored")
        let log = try String(contentsOfFile: second.logFile, encoding: .utf8)
        #expect(log.contains("is not the cluster archived for source db1"), "the refusal is in PostgreSQL's log")

        let adopt = try sandbox.ok("wal", "adopt", "--source", archive.source, "--cluster", firstID)
        #expect(adopt.out.contains("retired cluster \(firstID)"), "\(adopt)")
        // A new .ready file wakes the archiver, which otherwise sleeps a minute after 3 failures.
        try second.psql("CREATE TABLE nudge AS SELECT 1 AS x; SELECT pg_switch_wal();")
        // PostgreSQL retries: the second cluster's segments now go in, under its own record.
        try ServerSupport.waitUntil("the second cluster archives after adopt", timeout: 60) {
            try second.value("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver;") >= pending
        }
        #expect(try archivedSegments(sandbox, cluster: secondID)[pending] != nil)
        // The first cluster is refused from now on.
        let failedBefore = try first.failedCount
        try first.psql("CREATE TABLE nudge AS SELECT 1 AS x;")
        let refused = try first.value("SELECT pg_walfile_name(pg_switch_wal());")
        try ServerSupport.waitUntil("the retired cluster's archiver fails", timeout: 60) { try first.failedCount > failedBefore }
        #expect(try archivedSegments(sandbox, cluster: firstID)[refused] == nil)

        let ls = try sandbox.ok("wal", "ls", "--source", archive.source, "--json")
        let clusters = try #require(try ls.json() as? [[String: Any]])
        #expect(clusters.count == 2)
        let newest = try #require(clusters.first { ($0["record"] as? [String: Any])?["cluster"] as? String == secondID })
        #expect((newest["record"] as? [String: Any])?["previous"] as? String == firstID)
        #expect(clusters.first { ($0["record"] as? [String: Any])?["cluster"] as? String == firstID }?["retired"] != nil)
        try sandbox.ok("check")
        // Fetch without --cluster reads the source's current (second) cluster; with it, the retired one.
        let target = sandbox.path("fetched")
        try sandbox.ok("wal", "fetch", "--source", archive.source, pending, target)
        let firstSegment = try #require(try archivedSegments(sandbox, cluster: firstID).keys.min())
        unlink(target)
        try sandbox.ok("wal", "fetch", "--source", archive.source, "--cluster", firstID, firstSegment, target)
    }

    @Test("kho wal setup checks the cluster, the repository and the environment file, and the archive_command it prints archives; an environment file others can write is refused")
    func setupPrintsWorkingLines() throws {
        let archive = try Archive("wal-setup")
        let sandbox = archive.sandbox
        let pg = try archive.cluster("wal-setup", command: "/bin/false")
        defer { pg.stop() }
        let setup = try sandbox.ok("wal", "setup", "--source", archive.source, "--data-directory", pg.dataDirectory, "--direct", "--env-file", archive.env)
        let cluster = try pg.systemIdentifier
        #expect(setup.out.contains("cluster \(cluster), PostgreSQL 15") || setup.out.contains("cluster \(cluster), PostgreSQL"), "\(setup)")
        #expect(setup.out.contains("archive_mode = on") && setup.out.contains("archive_timeout = 60"), "\(setup)")
        #expect(setup.err.contains("repository of its own"), "the --direct warning: \(setup)")
        let line = try #require(setup.out.split(separator: "\n").first { $0.hasPrefix("archive_command = '") })
        // The value as postgresql.conf reads it: between the outer quotes, '' is one quote.
        let value = String(line.dropFirst("archive_command = '".count).dropLast()).replacingOccurrences(of: "''", with: "'")
        #expect(value.contains("wal push --direct --source db1 %p"), "\(value)")
        try pg.psql("ALTER SYSTEM SET archive_command = \(sqlLiteral(value)); SELECT pg_reload_conf();")
        let name = try pg.switchAndWaitArchived()
        #expect(try archivedSegments(sandbox, cluster: cluster)[name] != nil)

        // Another cluster's source name is refused; so is an environment file others can write.
        let taken = try sandbox.kho("wal", "setup", "--source", "other", "--data-directory", pg.dataDirectory, "--direct", "--env-file", archive.env)
        #expect(taken.exitCode == 2 && taken.err.contains("already archived for source db1"), "\(taken)")
        chmod(archive.env, 0o666)
        let writable = try sandbox.kho("wal", "setup", "--source", archive.source, "--data-directory", pg.dataDirectory, "--direct", "--env-file", archive.env)
        #expect(writable.exitCode == 2 && writable.err.contains("writable by nobody else"), "\(writable)")
    }

    @Test("a base backup taken without WAL recovers through kho wal fetch as restore_command to the last archived write, is promoted, and archives its timeline history and new timeline into the same archive")
    func recoveryThroughFetchThenNewTimeline() throws {
        let archive = try Archive("wal-pitr")
        let sandbox = archive.sandbox
        let pg = try archive.cluster("wal-pitr")
        defer { pg.stop() }
        let cluster = try pg.systemIdentifier
        try pg.psql("CREATE TABLE registry (id int PRIMARY KEY, note text); INSERT INTO registry SELECT g, 'before' FROM generate_series(1, 1000) g;")
        // -X none: the backup's WAL comes from the archive only (pg_basebackup waits until it is archived).
        let copy = try ServerSupport.makeTemporaryFolder("wal-pitr-copy")
        defer { try? removeTree(copy) }
        try ServerSupport.chownTree(copy, to: "postgres")
        let runuser = try #require(ScratchPostgres.runuser)
        try ServerSupport.require(runuser, ["-u", "postgres", "--", pg.program("pg_basebackup"), "-h", pg.dir, "-p", String(pg.port), "-U", "postgres",
                                            "-D", copy + "/data", "-X", "none", "-c", "fast"], scratch: copy)
        try pg.psql("INSERT INTO registry SELECT g, 'after' FROM generate_series(1001, 1500) g;")
        _ = try pg.switchAndWaitArchived()

        let restore = "set -a && . \(archive.env) && exec \(Harness.binary) wal fetch --source \(archive.source) %f %p"
        let conf = copy + "/data/postgresql.conf"
        try writeFile(conf, try readFile(conf) + Array("\nrestore_command = '\(restore)'\n".utf8))
        try writeFile(copy + "/data/recovery.signal", [])
        try ServerSupport.chownTree(copy, to: "postgres")
        let port = try ServerSupport.freeLoopbackPort()
        try ServerSupport.require(runuser, ["-u", "postgres", "--", pg.program("pg_ctl"), "-D", copy + "/data", "-l", copy + "/server.log", "-w", "-t", "60",
                                            "-o", "-p \(port) -k \(copy) -c listen_addresses=''", "start"], scratch: copy)
        defer { _ = try? ServerSupport.run(runuser, ["-u", "postgres", "--", pg.program("pg_ctl"), "-D", copy + "/data", "-m", "immediate", "-w", "stop"], scratch: copy) }
        func sql(_ text: String) throws -> String {
            try ServerSupport.require(pg.program("psql"), ["-X", "-A", "-t", "-h", copy, "-p", String(port), "-U", "postgres", "-d", "postgres", "-c", text],
                                      scratch: copy).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        try ServerSupport.waitUntil("the recovered copy is promoted", timeout: 90) { (try? sql("SELECT pg_is_in_recovery();")) == "f" }
        #expect(try sql("SELECT count(*) FROM registry;") == "1500", "every archived write is replayed")
        #expect(try sql("SELECT pg_walfile_name(pg_current_wal_lsn());").hasPrefix("00000002"), "a new timeline")
        let log = try String(contentsOfFile: copy + "/server.log", encoding: .utf8)
        #expect(log.contains("restored log file"), "segments came through kho wal fetch")

        // The promoted copy archives its history file and its timeline 2 into the same archive.
        _ = try sql("CREATE TABLE after_promotion AS SELECT 1 AS x;")
        let name = try sql("SELECT pg_walfile_name(pg_switch_wal());")
        try ServerSupport.waitUntil("the copy archives \(name)", timeout: 60) {
            (try sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver;")) >= name
        }
        #expect(try sql("SELECT failed_count FROM pg_stat_archiver;") == "0")
        let files = try sandbox.repositoryFiles("wal/" + cluster).keys.map { String($0.split(separator: "/").last!) }
        #expect(files.contains("00000002.history"), "\(files.sorted())")
        #expect(files.contains(name))
        let ls = try sandbox.ok("wal", "ls", "--source", archive.source)
        #expect(ls.out.contains("timeline 2:") && ls.out.contains("history file"), "\(ls)")
    }

    @Test("archive_command killed at random points under load: PostgreSQL retries, every segment then fetches and verifies, and check passes")
    func killedPushesAreRetried() throws {
        let archive = try Archive("wal-kill")
        let sandbox = archive.sandbox
        // bash for $RANDOM: each push gets 0 to 0.99 s before SIGKILL.
        let script = sandbox.path("push-or-die")
        try writeFile(script, Array("""
            #!/bin/bash
            set -a; . \(archive.env); set +a
            exec timeout -s KILL 0.$((RANDOM % 100)) \(Harness.binary) wal push --direct --source \(archive.source) "$1"

            """.utf8), mode: 0o755)
        let pg = try archive.cluster("wal-kill", command: script + " %p")
        defer { pg.stop() }
        let cluster = try pg.systemIdentifier
        try pg.pgbench(["-i", "-q", "-s", "1"])
        try pg.load(transactions: 10_000)
        // A killed push is a death by signal to PostgreSQL: the archiver exits and is restarted.
        // On a loaded machine the archiver may have tried only a few files by now: it keeps trying
        // (and being killed) until one is seen, before archiving without the killer catches up.
        func killed() throws -> Bool {
            let log = try String(contentsOfFile: pg.logFile, encoding: .utf8)
            return log.contains("archive command failed with exit code 137") || log.contains("archive command was terminated by signal")
        }
        try ServerSupport.waitUntil("a push killed by timeout", timeout: 120) {
            if try killed() { return true }
            // More segments, more pushes that may be killed (a quick push outlives most timeouts).
            try pg.psql("INSERT INTO pgbench_history(tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 1, now()); SELECT pg_switch_wal();")
            return false
        }
        try pg.psql("ALTER SYSTEM SET archive_command = \(sqlLiteral(archive.command())); SELECT pg_reload_conf();")
        let last = try pg.switchAndWaitArchived(timeout: 120)
        #expect(try killed(), "some pushes were killed")
        let stored = try archivedSegments(sandbox, cluster: cluster)
        let first = try #require(stored.keys.min())
        let expected = segments(upTo: last, from: first)
        #expect(expected.filter { stored[$0] == nil }.isEmpty, "missing: \(expected.filter { stored[$0] == nil })")
        _ = try fetchAll(archive, pg, first: first, last: last)
        let check = try sandbox.ok("check")
        #expect(!check.all.contains("damaged"), "\(check)")
        // Temporary files a killed push left are prune's to remove once they are an hour old.
        let leftovers = try temporaryFiles(below: sandbox.repo + "/wal")
        for path in leftovers {
            var times = [timespec(tv_sec: time(nil) - 7200, tv_nsec: 0), timespec(tv_sec: time(nil) - 7200, tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW) == 0)
        }
        try sandbox.ok("prune")
        #expect(try temporaryFiles(below: sandbox.repo + "/wal").isEmpty, "left by killed pushes: \(leftovers.count)")
        try sandbox.ok("check")
    }
}

/// `.tmp-` files anywhere below `folder` (contentsOfDirectory lists names starting with a dot).
private func temporaryFiles(below folder: String) throws -> [String] {
    var found: [String] = []
    for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] {
        let path = folder + "/" + name
        var info = stat()
        guard lstat(path, &info) == 0 else { continue }
        if info.st_mode & S_IFMT == S_IFDIR { found += try temporaryFiles(below: path) } else if name.hasPrefix(".tmp-") { found.append(path) }
    }
    return found
}

private func sqlLiteral(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "''") + "'" }
