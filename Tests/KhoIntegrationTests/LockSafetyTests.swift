import Foundation
import KhoTestSupport
import Glibc
import KhoCore
import KhoSupport
import Testing

// Locks that are not there: a lock file kho cannot read, a backup whose lock was removed or
// damaged while it ran, and locks judged stale by clocks. Prune must never remove what a running
// backup wrote, and a backup that lost its lock must not record a snapshot.

private func lockFiles(_ sandbox: Sandbox) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: sandbox.repo + "/locks")) ?? []).filter { !$0.hasPrefix(".") }.sorted()
}

private func packFiles(_ sandbox: Sandbox) throws -> Set<String> {
    Set(try sandbox.repositoryFiles("data").keys)
}

/// A backup reading its standard input, holding its lock, with packs of 1 MiB written and not yet
/// indexed; the test feeds and ends it.
private final class PausedBackup {
    let child: Child
    let data: [UInt8]
    let packsBefore: Set<String>
    private(set) var ownPacks: Set<String> = []
    let lock: String

    init(_ sandbox: Sandbox, env: [String: String?] = [:]) throws {
        packsBefore = try packFiles(sandbox)
        child = try sandbox.start(["backup", "--stdin", "--stdin-name", "archive.bin", "--json"], input: .pipe, env: env)
        data = randomBytes(12 << 20)
        try child.writeInput(Array(data[0..<(6 << 20)]))
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && child.isRunning {
            ownPacks = try packFiles(sandbox).subtracting(packsBefore)
            if ownPacks.count >= 3 && !lockFiles(sandbox).isEmpty { break }
            usleep(20_000)
        }
        try #require(ownPacks.count >= 3, "the backup wrote no packs while it ran")
        let locks = lockFiles(sandbox)
        try #require(locks.count == 1, "the backup holds one lock: \(locks)")
        lock = locks[0]
    }

    /// Feeds the rest and waits. A backup that stopped (its lock lost) no longer reads: the write
    /// then fails with EPIPE, which is what such a test expects, rather than killing the runner.
    func finish() throws -> ProcessResult {
        signal(SIGPIPE, SIG_IGN)
        do {
            try child.writeInput(Array(data[(6 << 20)...]))
        } catch {
            // The backup ended before reading everything; its result says why.
        }
        child.closeInput()
        return child.wait()
    }
}

@Suite("locks that are not there", .serialized)
struct LockSafetyTests {
    @Test("a lock file that cannot be read blocks prune and forget (exit 10, naming `kho unlock --remove-all`), not backups")
    func garbageLockBlocks() throws {
        let sandbox = try Sandbox("lock-garbage")
        try sandbox.initRepository()
        let file = sandbox.path("a.txt")
        try writeFile(file, Array("một\n".utf8))
        try sandbox.ok("backup", file)
        let garbage = String(repeating: "ab", count: 32)
        try makeDirectories(sandbox.repo + "/locks")
        try writeFile(sandbox.repo + "/locks/" + garbage, Array("{\"exclusive\": fal".utf8))

        let prune = try sandbox.kho("prune")
        #expect(prune.exitCode == 10 && prune.err.contains("cannot be read") && prune.err.contains("kho unlock --remove-all"), "\(prune)")
        let snapshot = try #require(try sandbox.snapshots().first?["id"] as? String)
        let forget = try sandbox.kho("forget", snapshot)
        #expect(forget.exitCode == 10, "\(forget)")
        #expect(try sandbox.snapshots().count == 1)
        // Backups share: they go on.
        try sandbox.ok("backup", file)
        // `kho unlock` keeps it and says why; --remove-all removes it.
        let unlock = try sandbox.kho(["unlock"], env: ["KHO_PASSWORD": nil])
        #expect(unlock.exitCode == 0 && unlock.out.contains("cannot be read") && lockFiles(sandbox) == [garbage], "\(unlock)")
        try sandbox.ok("unlock", "--remove-all")
        try sandbox.ok("prune")
    }

    @Test("a backup whose lock file was damaged while prune was asked to run: prune refuses, the backup's packs survive, it completes and checks clean")
    func damagedLockDuringPrune() throws {
        let sandbox = try Sandbox("lock-damaged")
        try sandbox.initRepository("--pack-size", "1", "--chunk-average", "262144")
        // The default refresh (minutes): the damage stays while prune looks.
        let backup = try PausedBackup(sandbox)
        try writeFile(sandbox.repo + "/locks/" + backup.lock, Array("\u{0}\u{1}not a lock".utf8))
        let prune = try sandbox.kho("prune")
        #expect(prune.exitCode == 10 && prune.err.contains("cannot be read"), "\(prune)")
        let left = try packFiles(sandbox)
        #expect(backup.ownPacks.isSubset(of: left), "prune removed packs of the running backup")
        let finished = try backup.finish()
        #expect(finished.exitCode == 0, "\(finished)")
        let check = try sandbox.kho("check", "--read-data")
        #expect(check.exitCode == 0, "\(check)")
        let snapshot = try #require(try finished.json() as? [String: Any])
        let dump = try sandbox.kho("dump", try #require(snapshot["snapshot"] as? String), "archive.bin")
        #expect(dump.exitCode == 0 && sha256(dump.stdout) == sha256(backup.data), "\(dump.exitCode.map(String.init) ?? "?")")
    }

    @Test("a backup whose lock file was removed while it ran: prune keeps its unindexed packs, the backup stops with a clear error and records nothing")
    func removedLockDuringBackup() throws {
        let sandbox = try Sandbox("lock-removed")
        try sandbox.initRepository("--pack-size", "1", "--chunk-average", "262144")
        let backup = try PausedBackup(sandbox, env: ["KHO_TEST_LOCK_REFRESH": "0.5"])
        // Someone ran `kho unlock --remove-all` while it ran.
        unlink(sandbox.repo + "/locks/" + backup.lock)
        let prune = try sandbox.kho("prune", "--json")
        #expect(prune.exitCode == 0, "\(prune)")
        let left = try packFiles(sandbox)
        #expect(backup.ownPacks.isSubset(of: left), "prune removed \(backup.ownPacks.subtracting(left).count) packs of the running backup: \(prune)")
        let finished = try backup.finish()
        #expect(finished.exitCode != 0 && finished.err.contains("could not be refreshed") && finished.err.contains("removed"), "\(finished)")
        #expect(try sandbox.snapshots().isEmpty, "a backup that lost its lock recorded a snapshot")
        let check = try sandbox.kho("check", "--read-data")
        #expect(check.exitCode == 0, "\(check)")
    }

    @Test("a backup whose lock file was taken over by another process's lock stops at its next refresh and records nothing")
    func replacedLock() throws {
        let sandbox = try Sandbox("lock-replaced")
        try sandbox.initRepository("--pack-size", "1", "--chunk-average", "262144")
        let backup = try PausedBackup(sandbox, env: ["KHO_TEST_LOCK_REFRESH": "0.3"])
        let now = Timestamp.format(Date())
        let other = #"{"command":"prune","exclusive":true,"hostname":"other-host.example","pid":77,"refreshed":"\#(now)","time":"\#(now)","user":"x"}"#
        try writeFile(sandbox.repo + "/locks/" + backup.lock, Array(other.utf8))
        usleep(1_500_000)
        let finished = try backup.finish()
        #expect(finished.exitCode != 0 && finished.err.contains("could not be refreshed") && finished.err.contains("other-host.example"), "\(finished)")
        #expect(try sandbox.snapshots().isEmpty, "a backup that lost its lock recorded a snapshot")
    }

    @Test("packs a killed backup left unindexed stay through the grace period (they could be a running backup's) and go after it")
    func unindexedPacksGrace() throws {
        let sandbox = try Sandbox("lock-grace")
        try sandbox.initRepository("--pack-size", "1", "--chunk-average", "262144")
        let backup = try PausedBackup(sandbox)
        backup.child.send(SIGKILL)
        _ = backup.child.wait()
        // What it left, counted after the kill (it may have written more since it was looked at).
        let left = try packFiles(sandbox).subtracting(backup.packsBefore)
        let kept = try sandbox.kho("prune", "--json")
        #expect(kept.exitCode == 0 && kept.out.contains("\"unindexedKept\" : \(left.count)"), "\(kept)")
        #expect(left.isSubset(of: try packFiles(sandbox)))
        let removed = try sandbox.kho(["prune", "--json"], env: ["KHO_TEST_PRUNE_GRACE": "0"])
        #expect(removed.exitCode == 0 && removed.out.contains("\"orphanPacks\" : \(left.count)"), "\(removed)")
        #expect(try packFiles(sandbox).isDisjoint(with: left))
        let check = try sandbox.kho("check", "--read-data")
        #expect(check.exitCode == 0, "\(check)")
    }

    @Test("a lock of this host is stale only when its process is gone, whatever its time says; another host's only when its file, too, was not written for 30 minutes")
    func stalenessWithoutClocks() throws {
        let sandbox = try Sandbox("lock-stale")
        try sandbox.initRepository()
        let locks = sandbox.repo + "/locks"
        try makeDirectories(locks)
        let old = Date().addingTimeInterval(-3 * 3600)
        func lock(host: String, pid: Int32, start: UInt64? = nil) -> [UInt8] {
            let time = Timestamp.format(old)
            let boot = host == Host.name ? ProcessIdentity.bootID.map { ",\"bootID\":\"\($0)\"" } ?? "" : ""
            let started = start.map { ",\"processStart\":\($0)" } ?? ""
            return Array(#"{"command":"backup","exclusive":false,"hostname":"\#(host)","pid":\#(pid),"refreshed":"\#(time)","time":"\#(time)","user":"tester"\#(boot)\#(started)}"#.utf8)
        }
        let name = String(repeating: "c1", count: 32)
        // This host, a running process (this test), refreshed three hours ago by its clock.
        try writeFile(locks + "/" + name, lock(host: Host.name, pid: getpid(), start: ProcessIdentity.startTime(of: getpid())))
        var prune = try sandbox.kho("prune")
        #expect(prune.exitCode == 10, "a live process's lock was taken for stale by its time: \(prune)")
        // The same PID with another start time is another process: stale.
        try writeFile(locks + "/" + name, lock(host: Host.name, pid: getpid(), start: (ProcessIdentity.startTime(of: getpid()) ?? 0) + 1))
        prune = try sandbox.kho("prune")
        #expect(prune.exitCode == 0, "\(prune)")
        // Another host whose clock says three hours ago, but whose file was just written.
        try writeFile(locks + "/" + name, lock(host: "other-host.example", pid: 4242))
        prune = try sandbox.kho("prune")
        #expect(prune.exitCode == 10, "another host's lock was taken for stale by its time alone: \(prune)")
        // Its file, too, untouched for an hour: stale.
        var times = [timespec(tv_sec: Int(old.timeIntervalSince1970), tv_nsec: 0), timespec(tv_sec: Int(old.timeIntervalSince1970), tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, locks + "/" + name, &times, 0) == 0)
        prune = try sandbox.kho("prune")
        #expect(prune.exitCode == 0, "\(prune)")
    }
}
