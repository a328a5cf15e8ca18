import Foundation
import Glibc
import KhoCore
import KhoStorage
import KhoSupport
import KhoTestSupport
import Testing

// The WAL agent (`kho wal serve`) with a real PostgreSQL whose archive_command hands each file to
// it (`kho wal push`, run by the archiver as the postgres user): every segment archived
// under load, read-ahead answering the archiver, kill -9 and restart without a gap or a conflict,
// a stall reported while the storage fails, peers of another uid refused, a different file under
// an archived name refused by the archive.

/// A cluster archiving through an agent into a sandbox's repository.
private final class AgentCluster: @unchecked Sendable {
    let sandbox: Sandbox
    let postgres: ScratchPostgres
    let socket: String
    let state: String
    let source = "main"
    var agent: Child?

    /// `wrapper` goes before kho in archive_command (e.g. `timeout -s KILL …`), `tail` after it.
    init(_ label: String, archiveTimeout: Int = 1, wrapper: String = "", tail: String = "") throws {
        sandbox = try Sandbox(label)
        try sandbox.initRepository()
        socket = sandbox.path("agent.sock")
        state = sandbox.path("state")
        postgres = try ScratchPostgres(label: label, settings: [
            "archive_mode = on",
            "archive_command = '\(wrapper)\(Harness.binary) wal push --source main --socket \(socket) --timeout 20s %p\(tail)'",
            "archive_timeout = \(archiveTimeout)",
        ])
    }

    deinit {
        agent?.send(SIGKILL)
        postgres.stop()
    }

    var statusPath: String { state + "/main.status.json" }

    /// Starts `kho wal serve` and waits until it listens.
    @discardableResult
    func startAgent(extra: [String] = []) throws -> Child {
        let child = try sandbox.start(["wal", "serve", "--source", source, "--data-directory", postgres.dataDirectory,
                                       "--socket", socket, "--state-directory", state] + extra)
        agent = child
        try ServerSupport.waitUntil("the agent listens on \(socket)", timeout: 30) {
            if !child.isRunning { throw ServerError("kho wal serve ended: \(child.wait())") }
            var info = stat()
            return lstat(socket, &info) == 0 && access(statusPath, F_OK) == 0
        }
        return child
    }

    /// Stops the agent with SIGTERM and returns how it ended.
    func stopAgent() throws -> ProcessResult {
        let child = try #require(agent)
        child.send(SIGTERM)
        agent = nil
        return child.wait(timeout: 60)
    }

    func status() throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: statusPath))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func readyCount() throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: postgres.dataDirectory + "/pg_wal/archive_status").filter { $0.hasSuffix(".ready") }.count
    }

    /// Writes a little and switches to a new segment; returns the name of the segment closed.
    @discardableResult
    func switchSegment() throws -> String {
        try postgres.psql("CREATE TABLE IF NOT EXISTS switches (at timestamptz); INSERT INTO switches VALUES (now());")
        return try postgres.value("SELECT pg_walfile_name(pg_switch_wal());")
    }

    /// Switches once more and waits until PostgreSQL has archived everything up to that segment.
    func waitUntilArchived(timeout: Double = 90) throws -> String {
        let last = try switchSegment()
        try ServerSupport.waitUntil("PostgreSQL archived \(last)", timeout: timeout) {
            let archived = try postgres.value("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver;")
            let waiting = try readyCount()
            return archived >= last && waiting == 0
        }
        return last
    }

    /// The names of the segments stored in the repository for the cluster.
    func storedSegments() throws -> [String] {
        var names: [String] = []
        let root = sandbox.repo + "/wal"
        for cluster in try FileManager.default.contentsOfDirectory(atPath: root) {
            var isFolder: ObjCBool = false
            guard FileManager.default.fileExists(atPath: root + "/" + cluster, isDirectory: &isFolder), isFolder.boolValue else { continue }
            for folder in try FileManager.default.contentsOfDirectory(atPath: root + "/" + cluster) where folder.count == 16 {
                names += try FileManager.default.contentsOfDirectory(atPath: root + "/" + cluster + "/" + folder).filter { $0.count == 24 }
            }
        }
        return names.sorted()
    }

    /// Every segment from the first stored to `last` is stored, and each one opens and checks.
    func requireContinuousArchive(upTo last: String) throws -> Int {
        let stored = try storedSegments()
        let first = try #require(stored.first, "nothing archived")
        let number = { (name: String) -> UInt64 in UInt64(name.dropFirst(8).prefix(8), radix: 16)! << 8 | UInt64(name.suffix(8), radix: 16)! }
        let expected = (number(first)...number(last)).map { n in String(format: "00000001%08X%08X", UInt32(n >> 8), UInt32(n & 0xff)) }
        let missing = Set(expected).subtracting(stored)
        #expect(missing.isEmpty, "segments missing from the archive: \(missing.sorted())")
        let repository = try Repository.open(storage: LocalStorage(path: sandbox.repo), password: Array(sandbox.password.utf8))
        let record = try #require(try WALArchive.currentRecord(source: source, in: repository))
        let cluster = try SystemIdentifier(parsing: record.cluster)
        for name in expected where !missing.contains(name) {
            let file = try WALArchive.fetch(name: try WALFileName(parsing: name), cluster: cluster, record: record, from: repository)
            #expect(file?.count == 16 << 20, "\(name) does not fetch as a whole segment")
        }
        return expected.count
    }

    /// pgbench on two clients in the background: `transactions` per client of a script that
    /// writes 2 MiB of rows (stored uncompressed, so about as much WAL), after `pgbench -i`.
    /// Counted transactions, not `-T`: pgbench ends a timed run with SIGALRM, which the test
    /// process's threads may block (a spawned child inherits the mask).
    func startLoad(transactions: Int) throws -> Child {
        let connection = ["-h", postgres.dir, "-p", String(postgres.port), "-U", "postgres"]
        try ServerSupport.require(postgres.program("pgbench"), ["-i", "-q", "-s", "4"] + connection + ["postgres"], scratch: postgres.dir)
        try postgres.psql("CREATE TABLE filler (id int, pad text); ALTER TABLE filler ALTER pad SET STORAGE PLAIN;")
        let script = try ServerSupport.scriptFile("INSERT INTO filler SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 2000) g;\n", in: postgres.dir)
        return try Child.spawn(postgres.program("pgbench"), ["-n", "-c", "2", "-j", "2", "-t", String(transactions), "-f", script] + connection + ["postgres"],
                               environment: ServerSupport.environment(), scratch: postgres.dir)
    }
}

@Suite("WAL agent", .serialized, .enabled(if: ScratchPostgres.isAvailable, Comment(rawValue: ScratchPostgres.unavailableReason ?? "")))
struct WALAgentTests {
    @Test("under pgbench every segment is archived, and the archiver is answered from the read-ahead")
    func busyCluster() throws {
        let cluster = try AgentCluster("wal-busy")
        try cluster.startAgent()
        let started = Date()
        let load = try cluster.startLoad(transactions: 80)
        let bench = load.wait(timeout: 120)
        #expect(bench.exitCode == 0, "\(bench)")
        let last = try cluster.waitUntilArchived()
        let seconds = Date().timeIntervalSince(started)
        let count = try cluster.requireContinuousArchive(upTo: last)
        // The agent writes its status once a second: wait until it counts every push.
        var status = try cluster.status()
        let deadline = Date().addingTimeInterval(10)
        while (status["pushedAhead"] as? Int ?? 0) + (status["pushedOnRequest"] as? Int ?? 0) < count && Date() < deadline {
            usleep(100_000)
            status = try cluster.status()
        }
        let answered = status["answeredAhead"] as? Int ?? -1
        let onRequest = status["pushedOnRequest"] as? Int ?? -1
        let ahead = status["pushedAhead"] as? Int ?? -1
        print("WAL agent under pgbench: \(count) segments in \(String(format: "%.1f", seconds)) s; pushed ahead \(ahead), on request \(onRequest), requests answered from the read-ahead \(answered)")
        #expect(answered > 0, "no request was answered from the read-ahead: \(status)")
        #expect(ahead >= count / 2, "the read-ahead pushed \(ahead) of \(count) segments: \(status)")
        #expect(status["refused"] as? Int == 0)
        #expect(status["stalled"] as? Bool == false)
        let stopped = try cluster.stopAgent()
        #expect(stopped.exitCode == 0, "\(stopped)")
        #expect(!stopped.err.contains("REFUSED"), "\(stopped)")
        #expect(try cluster.status()["running"] as? Bool == false)
        #expect(access(cluster.socket, F_OK) != 0, "the socket is left behind")
    }

    @Test("the agent killed with SIGKILL under load and restarted: no gap, no conflict")
    func killedAgent() throws {
        let cluster = try AgentCluster("wal-kill")
        try cluster.startAgent()
        let load = try cluster.startLoad(transactions: 120)
        // Killed mid-load, once the read-ahead is under way.
        try ServerSupport.waitUntil("the agent has pushed a few segments", timeout: 60) {
            (try cluster.status()["pushedAhead"] as? Int ?? 0) >= 4
        }
        let first = try #require(cluster.agent)
        first.send(SIGKILL)
        _ = first.wait(timeout: 30)
        cluster.agent = nil
        usleep(1_500_000)
        try cluster.startAgent()
        let bench = load.wait(timeout: 120)
        #expect(bench.exitCode == 0, "\(bench)")
        let last = try cluster.waitUntilArchived()
        let count = try cluster.requireContinuousArchive(upTo: last)
        let failed = try cluster.postgres.value("SELECT failed_count FROM pg_stat_archiver;")
        let status = try cluster.status()
        print("WAL agent killed and restarted: \(count) segments archived, PostgreSQL's failed_count \(failed), after restart: \(status["pushedAhead"] ?? "?") ahead, \(status["pushedOnRequest"] ?? "?") on request")
        #expect(status["refused"] as? Int == 0, "\(status)")
        let stopped = try cluster.stopAgent()
        #expect(!stopped.err.contains("REFUSED") && !stopped.err.contains("different content"), "\(stopped)")
    }

    @Test("the archiver's kho killed at random moments and the agent killed once: every segment archived, nothing refused")
    func randomKills() throws {
        // PostgreSQL runs archive_command with sh: each try gets a kill after 0 to 0.99 s
        // (0.0 means none), so some clients die before sending, some while the agent pushes.
        // A killed try exits 1: an exit above 125 would make PostgreSQL restart its archiver,
        // which it does at most every 10 s (that path is the direct push's test).
        let cluster = try AgentCluster("wal-rkill", wrapper: "timeout -s KILL 0.$(od -An -N1 -tu1 /dev/urandom | tr -dc 0-9) ", tail: " || exit 1")
        try cluster.startAgent()
        let load = try cluster.startLoad(transactions: 60)
        try ServerSupport.waitUntil("the agent has pushed a few segments", timeout: 60) {
            (try cluster.status()["pushedAhead"] as? Int ?? 0) >= 3
        }
        let first = try #require(cluster.agent)
        first.send(SIGKILL)
        _ = first.wait(timeout: 30)
        cluster.agent = nil
        try cluster.startAgent()
        let bench = load.wait(timeout: 120)
        #expect(bench.exitCode == 0, "\(bench)")
        let last = try cluster.waitUntilArchived(timeout: 120)
        let count = try cluster.requireContinuousArchive(upTo: last)
        let failed = try cluster.postgres.value("SELECT failed_count FROM pg_stat_archiver;")
        print("WAL agent with random kills: \(count) segments archived, PostgreSQL's failed_count \(failed)")
        let stopped = try cluster.stopAgent()
        #expect(!stopped.err.contains("REFUSED"), "\(stopped)")
        #expect(try cluster.status()["refused"] as? Int == 0)
    }

    @Test("a failing storage makes the status stalled; the agent catches up when it comes back; a stopped agent leaves the queue growing")
    func stall() throws {
        let cluster = try AgentCluster("wal-stall", archiveTimeout: 0)
        try cluster.startAgent(extra: ["--stall-after", "2s"])
        _ = try cluster.waitUntilArchived()
        // The storage fails: the repository's wal folder becomes a file.
        let wal = cluster.sandbox.repo + "/wal"
        try #require(rename(wal, wal + ".away") == 0)
        try writeFile(wal, Array("not a folder".utf8), mode: 0o600)
        for _ in 0..<3 { try cluster.switchSegment() }
        try ServerSupport.waitUntil("the status says stalled", timeout: 30) {
            try cluster.status()["stalled"] as? Bool == true
        }
        let stalled = try cluster.status()
        #expect((stalled["readyFiles"] as? Int ?? 0) >= 2, "\(stalled)")
        #expect(stalled["lastError"] as? String != nil, "\(stalled)")
        // The storage is back: everything waiting is archived and the stall clears.
        try #require(unlink(wal) == 0 && rename(wal + ".away", wal) == 0)
        let last = try cluster.waitUntilArchived()
        try ServerSupport.waitUntil("the stall clears", timeout: 30) {
            try cluster.status()["stalled"] as? Bool == false
        }
        _ = try cluster.requireContinuousArchive(upTo: last)
        // The agent stopped: PostgreSQL's queue grows, its failures count, the status says so.
        let stopped = try cluster.stopAgent()
        #expect(stopped.exitCode == 0, "\(stopped)")
        let failedBefore = Int(try cluster.postgres.value("SELECT failed_count FROM pg_stat_archiver;")) ?? 0
        for _ in 0..<3 { try cluster.switchSegment() }
        try ServerSupport.waitUntil("ready files accumulate", timeout: 30) { try cluster.readyCount() >= 3 }
        try ServerSupport.waitUntil("PostgreSQL counts failed archive_command runs", timeout: 30) {
            (Int(try cluster.postgres.value("SELECT failed_count FROM pg_stat_archiver;")) ?? 0) > failedBefore
        }
        #expect(try cluster.status()["running"] as? Bool == false)
        // Started again, it archives the backlog.
        try cluster.startAgent(extra: ["--stall-after", "2s"])
        let after = try cluster.waitUntilArchived()
        _ = try cluster.requireContinuousArchive(upTo: after)
    }

    @Test("a peer of another uid is refused; a different file under an archived name is refused by the archive (12)")
    func refusals() throws {
        let cluster = try AgentCluster("wal-refuse", archiveTimeout: 0)
        try cluster.startAgent()
        let last = try cluster.waitUntilArchived()
        // The same segment with one byte changed far past its header.
        let repository = try Repository.open(storage: LocalStorage(path: cluster.sandbox.repo), password: Array(cluster.sandbox.password.utf8))
        let record = try #require(try WALArchive.currentRecord(source: "main", in: repository))
        let name = try WALFileName(parsing: last)
        var bytes = try #require(try WALArchive.fetch(name: name, cluster: try SystemIdentifier(parsing: record.cluster), record: record, from: repository))
        let folder = cluster.sandbox.path("client")
        try #require(mkdir(folder, 0o755) == 0 && chmod(folder, 0o755) == 0)
        let same = folder + "/" + last
        try writeFile(same, bytes, mode: 0o644)
        // The owner of the data directory (here root) pushing the same bytes again: success.
        let repeated = try cluster.sandbox.kho(["wal", "push", "--source", "main", "--socket", cluster.socket, same])
        #expect(repeated.exitCode == 0, "\(repeated)")

        // Another uid, even in the socket's group, is refused before anything is read.
        let runuser = try #require(ScratchPostgres.runuser)
        let denied = try ServerSupport.run(runuser, ["-u", "nobody", "-g", "postgres", "--", Harness.binary, "wal", "push", "--source", "main",
                                                     "--socket", cluster.socket, same], scratch: folder)
        #expect(denied.status == 1, "\(denied)")
        #expect(denied.stderr.contains("may not push"), "\(denied)")
        try ServerSupport.waitUntil("the status counts the denied request", timeout: 10) { try cluster.status()["denied"] as? Int == 1 }

        bytes[1 << 20] ^= 0xff
        let changedFolder = folder + "/changed"
        try #require(mkdir(changedFolder, 0o755) == 0)
        let changed = changedFolder + "/" + last
        try writeFile(changed, bytes, mode: 0o644)
        let refused = try cluster.sandbox.kho(["wal", "push", "--source", "main", "--socket", cluster.socket, changed])
        #expect(refused.exitCode == 12, "\(refused)")
        #expect(refused.err.contains("different content"), "\(refused)")
        // Nothing was replaced.
        let stored = try WALArchive.fetch(name: name, cluster: try SystemIdentifier(parsing: record.cluster), record: record, from: repository)
        bytes[1 << 20] ^= 0xff
        #expect(stored == bytes)
        try ServerSupport.waitUntil("the status counts the refusal", timeout: 10) { try cluster.status()["refused"] as? Int == 1 }

        // Something that is not a regular file, under a WAL file's name: refused, nothing read.
        let fifo = folder + "/000000010000000000000099"
        try #require(mkfifo(fifo, 0o644) == 0)
        let notAFile = try cluster.sandbox.kho(["wal", "push", "--source", "main", "--socket", cluster.socket, fifo])
        #expect(notAFile.exitCode == 12, "\(notAFile)")
        #expect(notAFile.err.contains("not a regular file"), "\(notAFile)")
    }
}

/// Segments per second through the agent against one repository opening per file (what
/// `kho wal push --direct` costs at least: a key derivation with the standard scrypt, a config
/// read, the push). Slow with the standard scrypt, so only when KHO_TEST_WAL_BENCH is set; the
/// figures are printed.
@Suite("WAL agent throughput", .serialized,
       .enabled(if: ScratchPostgres.isAvailable && ProcessInfo.processInfo.environment["KHO_TEST_WAL_BENCH"] != nil,
                "set KHO_TEST_WAL_BENCH=1 (and have PostgreSQL) to measure"))
struct WALAgentThroughput {
    @Test("agent vs one repository opening per file")
    func throughput() throws {
        // Real segments: a cluster archiving with cp into a spool while pgbench writes.
        let cluster = try AgentCluster("wal-bench")
        let spool = cluster.sandbox.path("spool")
        try #require(mkdir(spool, 0o755) == 0)
        try ServerSupport.chownTree(spool, to: "postgres")
        try cluster.postgres.psql("ALTER SYSTEM SET archive_command = 'cp %p \(spool)/%f'; SELECT pg_reload_conf();")
        let load = try cluster.startLoad(transactions: 60)
        #expect(load.wait(timeout: 120).exitCode == 0)
        _ = try cluster.waitUntilArchived()
        let segments = try FileManager.default.contentsOfDirectory(atPath: spool).filter { $0.count == 24 }.sorted()
        let identity = try WALClusterIdentity.read(dataDirectory: cluster.postgres.dataDirectory)
        // Both repositories with the standard scrypt, as in production.
        let direct = cluster.sandbox.path("direct")
        try #require(cluster.sandbox.kho(["init", "--repo", direct], env: ["KHO_TEST_SCRYPT_N": nil]).exitCode == 0)
        let agentRepository = cluster.sandbox.path("agent-repo")
        try #require(cluster.sandbox.kho(["init", "--repo", agentRepository], env: ["KHO_TEST_SCRYPT_N": nil]).exitCode == 0)

        var started = Date()
        for _ in 0..<5 { _ = try Repository.open(storage: LocalStorage(path: direct), password: Array(cluster.sandbox.password.utf8)) }
        let openMilliseconds = Date().timeIntervalSince(started) * 1000 / 5
        // One file each way in turn, so that other load on the machine weighs on both alike.
        cluster.sandbox.repo = agentRepository
        try cluster.startAgent(extra: ["--verbose"])
        var directSeconds = 0.0
        var agentSeconds = 0.0
        for name in segments {
            started = Date()
            let repository = try Repository.open(storage: LocalStorage(path: direct), password: Array(cluster.sandbox.password.utf8))
            let archive = try WALArchive(repository: repository, source: "main")
            _ = try archive.push(name: try WALFileName(parsing: name), file: try readFile(spool + "/" + name), identity: identity)
            directSeconds += Date().timeIntervalSince(started)
            started = Date()
            let pushed = try cluster.sandbox.kho(["wal", "push", "--source", "main", "--socket", cluster.socket, spool + "/" + name])
            try #require(pushed.exitCode == 0, "\(pushed)")
            agentSeconds += Date().timeIntervalSince(started)
        }
        let agentLog = try cluster.stopAgent()
        print(agentLog.err.split(separator: "\n").filter { $0.contains(" ms") }.suffix(5).joined(separator: "\n"))

        // With read-ahead: a data directory whose archive_status lists every segment as ready,
        // drained by one client at a time as PostgreSQL's archiver does (renaming .ready to
        // .done after each answer), while the agent pushes ahead.
        let fake = cluster.sandbox.path("fake")
        for folder in [fake, fake + "/global", fake + "/pg_wal", fake + "/pg_wal/archive_status"] { try #require(mkdir(folder, 0o700) == 0) }
        try writeFile(fake + "/global/pg_control", try readFile(cluster.postgres.dataDirectory + "/global/pg_control"), mode: 0o600)
        try writeFile(fake + "/PG_VERSION", try readFile(cluster.postgres.dataDirectory + "/PG_VERSION"), mode: 0o600)
        for name in segments {
            try #require(link(spool + "/" + name, fake + "/pg_wal/" + name) == 0)
        }
        let aheadRepository = cluster.sandbox.path("ahead-repo")
        try #require(cluster.sandbox.kho(["init", "--repo", aheadRepository], env: ["KHO_TEST_SCRYPT_N": nil]).exitCode == 0)
        cluster.sandbox.repo = aheadRepository
        let aheadSocket = cluster.sandbox.path("ahead.sock")
        let agent = try cluster.sandbox.start(["wal", "serve", "--source", "main", "--data-directory", fake, "--socket", aheadSocket,
                                               "--state-directory", cluster.sandbox.path("ahead-state")])
        try ServerSupport.waitUntil("the agent listens", timeout: 30) { access(aheadSocket, F_OK) == 0 }
        started = Date()
        for name in segments {
            try writeFile(fake + "/pg_wal/archive_status/" + name + ".ready", [], mode: 0o600)
        }
        for name in segments {
            let pushed = try cluster.sandbox.kho(["wal", "push", "--source", "main", "--socket", aheadSocket, fake + "/pg_wal/" + name])
            try #require(pushed.exitCode == 0, "\(pushed)")
            try #require(rename(fake + "/pg_wal/archive_status/" + name + ".ready", fake + "/pg_wal/archive_status/" + name + ".done") == 0)
        }
        let aheadSeconds = Date().timeIntervalSince(started)
        agent.send(SIGTERM)
        _ = agent.wait(timeout: 60)
        started = Date()
        for _ in segments { try #require(cluster.sandbox.kho(["--version"]).exitCode == 0) }
        let spawnSeconds = Date().timeIntervalSince(started)
        let spawnMilliseconds = spawnSeconds * 1000 / Double(segments.count)
        print(String(format: "WAL throughput with read-ahead (2 uploaders): %.2f segments/s (%.0f ms each); starting kho alone takes %.0f ms (so one kho process per file opening the repository: about %.0f ms each), opening the repository %.0f ms",
                     Double(segments.count) / aheadSeconds, aheadSeconds * 1000 / Double(segments.count), spawnMilliseconds,
                     directSeconds * 1000 / Double(segments.count) + spawnMilliseconds, openMilliseconds))
        print(String(format: "WAL throughput, %d segments of 16 MiB: opening the repository per file %.2f segments/s (%.0f ms each); agent, one kho process per file as PostgreSQL runs it %.2f segments/s (%.0f ms each)",
                     segments.count, Double(segments.count) / directSeconds, directSeconds * 1000 / Double(segments.count),
                     Double(segments.count) / agentSeconds, agentSeconds * 1000 / Double(segments.count)))
    }
}
