import Foundation
import KhoTestSupport
import Glibc
import Testing

// A backup whose lock cannot be refreshed must stop by itself, while it runs: a prune elsewhere
// may already treat the repository as unlocked, and nothing the backup still reads could be
// recorded. It ends with exit 10 (the lock's kind: running it again is the fix) and leaves the
// repository checking clean.

@Suite("a lock refresh that fails", .serialized)
struct LockRefreshTests {
    @Test("a slow stream's backup whose lock file cannot be read back stops before its stream ends (exit 10, naming the lock and the reason); nothing recorded, check clean")
    func slowStreamStopsOnFailedRefresh() throws {
        let sandbox = try Sandbox("lock-refresh-slow")
        // The default pack size (16 MiB): the stream below never fills one, so only the lock
        // check on each chunk can stop the backup before the stream ends.
        try sandbox.initRepository("--chunk-average", "262144")
        signal(SIGPIPE, SIG_IGN)
        let child = try sandbox.start(["backup", "--stdin", "--stdin-name", "slow.bin"], input: .pipe,
                                      env: ["KHO_TEST_LOCK_REFRESH": "0.3"])
        defer { child.closeInput(); _ = child.wait() }
        try child.writeInput(randomBytes(1 << 20))
        let locks = sandbox.repo + "/locks"
        var lock: String?
        let deadline = Date().addingTimeInterval(30)
        while lock == nil && Date() < deadline && child.isRunning {
            lock = ((try? FileManager.default.contentsOfDirectory(atPath: locks)) ?? []).first { !$0.hasPrefix(".") }
            if lock == nil { usleep(20_000) }
        }
        let name = try #require(lock, "the backup took no lock")
        // A folder in the lock file's place: the refresher's read-back fails (EISDIR), as a
        // storage that stopped answering would make it fail.
        #expect(unlink(locks + "/" + name) == 0)
        try makeDirectories(locks + "/" + name)
        defer { rmdir(locks + "/" + name) }
        usleep(1_500_000)
        // The stream goes on slowly, 64 KiB at a time, to 4 MiB at most (a quarter of a pack).
        var fed = 1 << 20
        let end = Date().addingTimeInterval(30)
        while child.isRunning && Date() < end {
            if fed < 4 << 20 {
                do { try child.writeInput(randomBytes(64 << 10)) } catch { break }  // EPIPE: it stopped reading
                fed += 64 << 10
            }
            usleep(50_000)
        }
        let stoppedByItself = !child.isRunning
        child.closeInput()
        let result = child.wait()
        #expect(stoppedByItself, "the backup went on reading its stream after its lock could not be refreshed: \(result)")
        #expect(result.exitCode == 10, "\(result)")
        #expect(result.err.contains("could not be refreshed") && result.err.contains("Is a directory") && result.err.contains("Run it again"), "\(result)")
        #expect(try sandbox.snapshots().isEmpty, "a backup that lost its lock recorded a snapshot")
        rmdir(locks + "/" + name)
        let check = try sandbox.kho("check", "--read-data")
        #expect(check.exitCode == 0, "\(check)")
    }
}
