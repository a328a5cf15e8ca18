import Foundation
import KhoTestSupport
import Glibc
import Testing

/// The files a process has open, from /proc (symlink targets of /proc/PID/fd/*).
func openFiles(of pid: pid_t) -> [String] {
    let folder = "/proc/\(pid)/fd"
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return [] }
    return names.compactMap { name in
        var buffer = [CChar](repeating: 0, count: 8192)
        let n = readlink(folder + "/" + name, &buffer, buffer.count - 1)
        return n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
    }
}

/// The state letter of a process (R, S, T, Z…).
func processState(_ pid: pid_t) -> Character? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = text.lastIndex(of: ")") else { return nil }
    return text[text.index(close, offsetBy: 2)...].first
}

/// Whether the main thread of `pid` is blocked in read(0, …) (from /proc/PID/syscall).
func isReadingStandardInput(_ pid: pid_t) -> Bool {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/syscall", encoding: .utf8) else { return false }
    return text.hasPrefix("0 0x0 ")
}

@Suite("faults during backup")
struct FaultTests {
    @Test("a file that cannot be read: warning, exit 3, snapshot marked partial, the rest saved")
    func unreadableFile() throws {
        let sandbox = try Sandbox("unreadable")
        try sandbox.initRepository()
        let source = sandbox.path("src")
        try makeDirectories(source)
        try writeFile(source + "/good.txt", Array("readable\n".utf8))
        // Root can open any file, but reading this process's memory at offset 0 fails with EIO.
        let unreadable = "/proc/\(getpid())/mem"
        let probe = open(unreadable, O_RDONLY | O_CLOEXEC)
        try #require(probe >= 0, "cannot open \(unreadable) for the probe")
        var byte: UInt8 = 0
        let got = read(probe, &byte, 1)
        close(probe)
        try #require(got < 0, "reading \(unreadable) must fail on this machine for this test to mean anything")

        let backup = try sandbox.kho("backup", source, unreadable, "--json")
        #expect(backup.exitCode == 3, "\(backup)")
        #expect(backup.err.contains("warning") && backup.err.contains(unreadable), "the warning must name the file: \(backup)")
        let output = try backup.decode(BackupOutput.self)
        #expect(output.partial)
        #expect(output.summary.warnings == 1)
        let snapshots = try sandbox.snapshots()
        #expect(snapshots.count == 1)
        #expect(snapshots.last?["partial"] as? Bool == true, "snapshots --json must show partial: \(snapshots)")

        let dump = try sandbox.kho("dump", "latest", source + "/good.txt")
        #expect(dump.exitCode == 0 && dump.out == "readable\n", "\(dump)")
        let ls = try sandbox.kho("ls", "latest", "--json")
        try #require(ls.exitCode == 0, "\(ls)")
        #expect(!(try ls.decode(LsOutput.self)).entries.contains { $0.path == unreadable && $0.kind == "file" },
                "the unreadable file must not be listed as if it had been saved")
        let check = try sandbox.kho("check", "--read-data")
        #expect(check.exitCode == 0, "\(check)")
    }

    @Test("a file that vanishes during the backup: warning, exit 3, snapshot marked partial")
    func vanishingFile() throws {
        let sandbox = try Sandbox("vanish")
        try sandbox.initRepository()
        let source = sandbox.path("src")
        try makeDirectories(source)
        // kho lists the folder, then saves entries in name order: while it reads a_big (seen in
        // /proc/PID/fd and frozen there with SIGSTOP), z_vanish.txt is removed.
        let big = source + "/a_big"
        try writeFile(big, randomBytes(24 << 20))
        try writeFile(source + "/z_vanish.txt", Array("here at the start\n".utf8))
        try writeFile(source + "/b_stays.txt", Array("stays\n".utf8))

        // Catching kho inside a_big is a race it nearly always loses; --force makes every
        // attempt read a_big again, and a few attempts make a miss practically impossible.
        var removed = false
        var backup: ProcessResult
        var attempts = 0
        repeat {
            attempts += 1
            let child = try sandbox.start(["backup", source, "--json", "--force"])
            let deadline = Date().addingTimeInterval(120)
            while child.isRunning && Date() < deadline && !removed {
                guard openFiles(of: child.pid).contains(big) else { usleep(200); continue }
                child.send(SIGSTOP)
                var stopped = false
                for _ in 0..<5000 where !stopped {
                    if processState(child.pid) == "T" { stopped = true } else { usleep(200) }
                }
                // Still inside a_big while frozen: the later entry has not been looked at yet.
                if stopped && openFiles(of: child.pid).contains(big) {
                    try check("unlink", "z_vanish.txt") { unlink(source + "/z_vanish.txt") }
                    removed = true
                }
                child.send(SIGCONT)
                if !removed { break }
            }
            backup = child.wait()
        } while !removed && attempts < 4
        try #require(removed, "could not catch kho while it read a_big (it ran too fast?): \(backup)")
        #expect(backup.exitCode == 3, "\(backup)")
        #expect(backup.err.contains("z_vanish.txt"), "the warning must name the file: \(backup)")
        #expect(try backup.decode(BackupOutput.self).partial)
        #expect(try sandbox.snapshots().last?["partial"] as? Bool == true)
        let ls = try sandbox.kho("ls", "latest", "--json")
        let paths = try ls.decode(LsOutput.self).entries.map(\.path)
        #expect(paths.contains(big) && paths.contains(source + "/b_stays.txt"), "\(ls)")
        #expect(!paths.contains(source + "/z_vanish.txt"))
    }

    @Test("backup killed with SIGKILL at random moments: check passes, the next backup works without unlock and reuses data")
    func killedBackups() throws {
        let sandbox = try Sandbox("sigkill")
        // Small packs, so that index files (every 8 packs) are written while the backup runs.
        try sandbox.initRepository("--pack-size", "1")
        let source = sandbox.path("src")
        try makeDirectories(source)
        for i in 0..<32 { try writeFile(source + "/part-\(i).bin", randomBytes(8 << 20)) }
        let total: Int64 = 32 * 8 << 20

        var rng = SystemRandomNumberGenerator()
        var killed = 0
        for _ in 0..<4 {
            let child = try sandbox.start(["backup", source])
            // Early enough to land inside a 256 MiB backup even as kho gets faster.
            let delay = UInt32.random(in: 30_000...400_000, using: &rng)
            usleep(delay)
            child.send(SIGKILL)
            let result = child.wait()
            if result.signal == SIGKILL { killed += 1 } else { #expect(result.exitCode == 0, "\(result)") }
        }
        #expect(killed > 0, "no backup was killed: the input is too small for the delays")
        let snapshotsAfterKills = try sandbox.snapshots().count

        let check = try sandbox.kho("check", "--read-data")
        #expect(check.exitCode == 0, "after killed backups the repository must check clean: \(check)")
        let indexedBefore = try sandbox.repositoryFiles("index").count

        // No `kho unlock`: locks of dead processes are ignored.
        let backup = try sandbox.kho("backup", source, "--json")
        try #require(backup.exitCode == 0, "\(backup)")
        let summary = try backup.decode(BackupOutput.self).summary
        if indexedBefore > 0 {
            #expect(summary.bytesNewRaw < total, "data indexed by the killed backups must be reused: \(summary)")
        }
        #expect(try sandbox.snapshots().count == snapshotsAfterKills + 1)

        let target = sandbox.path("restored")
        let restore = try sandbox.kho("restore", "latest", "--target", target)
        #expect(restore.exitCode == 0, "\(restore)")
        let differences = try Manifest.of(target + source).differences(from: try Manifest.of(source))
        #expect(differences.isEmpty, "\(differences.joined(separator: "\n"))")

        // Everything is stored now: reading it all again adds (almost) nothing.
        let again = try sandbox.kho("backup", source, "--force", "--json")
        try #require(again.exitCode == 0, "\(again)")
        let second = try again.decode(BackupOutput.self).summary
        #expect(second.bytesRead == total)
        #expect(second.bytesNewRaw == 0 || second.bytesAdded < 256 << 10, "\(second)")
        let final = try sandbox.kho("check", "--read-data")
        #expect(final.exitCode == 0, "\(final)")
    }

    @Test("a backup that runs out of space fails clearly and leaves a repository that checks clean")
    func fullDisk() throws {
        let sandbox = try Sandbox("full")
        let mountPoint = sandbox.path("small")
        try makeDirectories(mountPoint)
        if mount("tmpfs", mountPoint, "tmpfs", 0, "size=20m,mode=0755") != 0 {
            try Test.cancel("cannot mount a tmpfs here (\(String(cString: strerror(errno)))): the full-disk test needs root and mount permission")
        }
        sandbox.mounts.append(mountPoint)
        sandbox.repo = mountPoint + "/repo"
        try sandbox.initRepository()
        let source = sandbox.path("src")
        try makeDirectories(source)
        for i in 0..<4 { try writeFile(source + "/part-\(i).bin", randomBytes(15 << 20)) }

        let backup = try sandbox.kho("backup", source)
        #expect(backup.exitCode == 1, "\(backup)")
        #expect(backup.err.lowercased().contains("no space left"), "the message must say the disk is full: \(backup)")
        #expect(backup.err.split(separator: "\n").count <= 3, "a clear message, not a flood: \(backup)")
        #expect(try sandbox.snapshots().isEmpty)

        for arguments in [["check"], ["check", "--read-data"]] {
            let check = try sandbox.kho(arguments)
            #expect(check.exitCode == 0, "\(check)")
        }
        // No temporary files are left behind to fill the disk further.
        let leftovers = try FileManager.default.subpathsOfDirectory(atPath: sandbox.repo).filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }

    @Test("a restore into a full filesystem fails with one clear message")
    func restoreIntoFullDisk() throws {
        let sandbox = try Sandbox("restore-full")
        try sandbox.initRepository()
        let source = sandbox.path("src")
        try makeDirectories(source)
        try writeFile(source + "/small.txt", Array("small\n".utf8))
        try writeFile(source + "/big.bin", randomBytes(24 << 20))
        try sandbox.ok("backup", source)

        let mountPoint = sandbox.path("small")
        try makeDirectories(mountPoint)
        if mount("tmpfs", mountPoint, "tmpfs", 0, "size=6m,mode=0755") != 0 {
            try Test.cancel("cannot mount a tmpfs here (\(String(cString: strerror(errno)))): the test needs root and mount permission")
        }
        sandbox.mounts.append(mountPoint)
        let restore = try sandbox.kho("restore", "latest", "--target", mountPoint + "/target")
        #expect(restore.exitCode == 1, "\(restore)")
        #expect(restore.err.lowercased().contains("no space left"), "\(restore)")
        #expect(restore.err.split(separator: "\n").count <= 3, "a clear message, not a flood: \(restore)")
    }

    @Test("unlock keeps the lock of a running backup and removes the lock of a killed one")
    func locks() throws {
        let sandbox = try Sandbox("locks")
        try sandbox.initRepository()
        let locks = sandbox.repo + "/locks"
        func lockFiles() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: locks)) ?? []).filter { !$0.hasPrefix(".") }
        }
        func waitForLock(_ child: Child) throws {
            let deadline = Date().addingTimeInterval(60)
            while lockFiles().isEmpty && child.isRunning && Date() < deadline { usleep(5000) }
            try #require(!lockFiles().isEmpty, "the backup took no lock")
        }

        // A live backup, waiting for more input on its stdin.
        let live = try sandbox.start(["backup", "--stdin", "--stdin-name", "db.sql", "--json"], input: .pipe)
        let data = dumpText(1 << 20, seed: 5)
        try live.writeInput(Array(data[0..<1000]))
        try waitForLock(live)
        let held = lockFiles()
        let unlock = try sandbox.kho("unlock")
        #expect(unlock.exitCode == 0, "\(unlock)")
        #expect(unlock.out.contains("kept lock"), "\(unlock)")
        #expect(lockFiles() == held, "unlock must not remove the lock of a running process")
        // Another backup shares the lock and works meanwhile.
        let file = sandbox.path("f")
        try writeFile(file, Array("x\n".utf8))
        #expect(try sandbox.kho("backup", file).exitCode == 0)
        try live.writeInput(Array(data[1000...]))
        live.closeInput()
        let finished = live.wait()
        #expect(finished.exitCode == 0, "\(finished)")
        #expect(lockFiles().isEmpty, "a finished backup releases its lock")
        // Its snapshot is not the latest (the other backup finished later but started later).
        let snapshot = try finished.decode(BackupOutput.self).snapshot
        let dump = try sandbox.kho("dump", snapshot, "db.sql")
        #expect(sha256(dump.stdout) == sha256(data))

        // A backup killed while it holds its lock leaves a stale lock.
        let doomed = try sandbox.start(["backup", "--stdin", "--stdin-name", "doomed.sql"], input: .pipe)
        try doomed.writeInput(Array(data[0..<1000]))
        try waitForLock(doomed)
        doomed.send(SIGKILL)
        #expect(doomed.wait().signal == SIGKILL)
        #expect(lockFiles().count == 1, "the killed backup's lock stays behind")
        // Stale locks of dead processes do not block anyone.
        #expect(try sandbox.kho("backup", file).exitCode == 0)
        #expect(try sandbox.kho("check").exitCode == 0)
        let removal = try sandbox.kho("unlock")
        #expect(removal.exitCode == 0 && removal.out.contains("removed lock"), "\(removal)")
        #expect(lockFiles().isEmpty)

        // Ctrl-C (SIGINT) releases the lock on the way out and writes no snapshot.
        let snapshots = try sandbox.snapshots().count
        let interrupted = try sandbox.start(["backup", "--stdin", "--stdin-name", "interrupted.sql"], input: .pipe)
        try interrupted.writeInput(Array(data[0..<1000]))
        try waitForLock(interrupted)
        // Wait until kho's main thread blocks reading stdin: it is then inside the locked section
        // (between writing the lock file and registering it for signals there is a short window,
        // reported separately).
        let deadline = Date().addingTimeInterval(60)
        while !isReadingStandardInput(interrupted.pid) && interrupted.isRunning && Date() < deadline { usleep(2000) }
        try #require(isReadingStandardInput(interrupted.pid), "kho never blocked on its stdin")
        interrupted.send(SIGINT)
        let ended = interrupted.wait()
        #expect(ended.exitCode == 130, "\(ended)")
        #expect(lockFiles().isEmpty, "an interrupted backup must release its lock")
        #expect(try sandbox.snapshots().count == snapshots)
    }
}
