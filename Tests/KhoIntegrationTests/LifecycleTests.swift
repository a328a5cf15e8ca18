import Foundation
import KhoTestSupport
import Glibc
import KhoCore
import KhoSupport
import Testing

// Repository lifecycle driven through the `kho` binary: concurrent backups, locks against prune,
// prune killed at every step, forget + prune on 30 days of snapshots, check subsets, keys, unlock.
// Uses the shared harness (Sandbox, Manifest, file helpers); what it adds is private and named
// `Lifecycle…` so that it cannot clash with the other integration tests.

// MARK: - JSON shapes read here

private struct LifecycleBackupOutput: Decodable {
    var snapshot: String
    var partial: Bool
}

private struct LifecyclePruneReport: Decodable {
    var snapshots: Int
    var packs: Int
    var blobsUsed: Int
    var blobsUnused: Int
    var bytesTotal: Int64
    var bytesUnused: Int64
    var packsRemoved: Int
    var packsRepacked: Int
    var packsWritten: Int
    var orphanPacks: Int
    var indexFilesReplaced: Int
    var bytesFreed: Int64
    var dryRun: Bool
}

private struct LifecycleCheckReport: Decodable {
    var errors: [String]
    var warnings: [String]
    var damagedPacks: [String]
    var snapshots: Int
    var packs: Int
    var packsRead: Int
    var blobsRead: Int
}

private struct LifecycleKeyEntry: Decodable {
    var id: String
    var current: Bool
    var label: String
}

private struct LifecycleForgetOutput: Decodable {
    struct Decision: Decodable {
        var snapshotID: String
        var keep: Bool
        var reasons: [String]
    }
    struct Group: Decodable {
        var host: String
        var source: String
        var decisions: [Decision]
    }
    var dryRun: Bool
    var groups: [Group]
    var removed: [String]
    var prune: LifecyclePruneReport?
}

private struct LifecycleSnapshotEntry: Decodable {
    var id: String
    var time: String
}

// MARK: - helpers

/// A kho process whose stderr can be read while it runs (to see "paused at …"), and that can be
/// killed at any moment.
private final class LifecycleProcess {
    let pid: pid_t
    let arguments: [String]
    private let stdoutPath: String
    private let stderrPath: String
    private(set) var exitCode: Int32?
    private(set) var signal: Int32?
    private var reaped = false

    init(_ sandbox: Sandbox, _ arguments: [String], env extra: [String: String?] = [:]) throws {
        self.arguments = arguments
        let tag = Hex.encode(try Random.bytes(6))
        stdoutPath = sandbox.path(".lifecycle-out-\(tag)")
        stderrPath = sandbox.path(".lifecycle-err-\(tag)")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let argv = ([Harness.binary] + arguments).map { strdup($0) }
        let envp = sandbox.environment(extra).map { strdup("\($0.key)=\($0.value)") }
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var child: pid_t = 0
        let code = (argv + [nil]).withUnsafeBufferPointer { a in
            (envp + [nil]).withUnsafeBufferPointer { e in
                posix_spawn(&child, Harness.binary, &actions, nil, a.baseAddress!, e.baseAddress!)
            }
        }
        guard code == 0 else { throw HarnessError.posix("posix_spawn", Harness.binary, code) }
        pid = child
    }

    var stdout: String { (try? readFile(stdoutPath)).map { String(decoding: $0, as: UTF8.self) } ?? "" }
    var stderr: String { (try? readFile(stderrPath)).map { String(decoding: $0, as: UTF8.self) } ?? "" }

    var description: String {
        let how = exitCode.map { "exit \($0)" } ?? signal.map { "signal \($0)" } ?? "running"
        return "`kho \(arguments.joined(separator: " "))` → \(how)\n--- stdout:\n\(stdout.prefix(3000))\n--- stderr:\n\(stderr.prefix(3000))"
    }

    /// Reaps the process if it has ended; true once it has.
    @discardableResult
    func poll() -> Bool {
        if reaped { return true }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        guard r == pid else { return false }
        reaped = true
        if status & 0x7f == 0 { exitCode = (status >> 8) & 0xff } else { signal = status & 0x7f }
        return true
    }

    /// Waits until stderr contains `text`; false if the process ended or `timeout` passed first.
    func waitForStderr(_ text: String, timeout: Double = 120) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if stderr.contains(text) { return true }
            if poll() { return stderr.contains(text) }
            usleep(5000)
        }
        return false
    }

    func kill9() {
        if !poll() { kill(pid, SIGKILL) }
    }

    /// Waits for the end (killing the process after `timeout` seconds and recording an issue).
    func wait(timeout: Double = Harness.processTimeout) {
        let deadline = Date().addingTimeInterval(timeout)
        while !poll() {
            if Date() > deadline {
                Issue.record("\(arguments.joined(separator: " ")) did not end within \(Int(timeout)) s")
                kill(pid, SIGKILL)
            }
            usleep(2000)
        }
    }

    deinit {
        if !reaped {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        unlink(stdoutPath)
        unlink(stderrPath)
    }
}

/// What a tree holds, for comparing a restore with its source: relative path → kind, and for
/// files size and SHA-256 of the content.
private func lifecycleContent(_ root: String) throws -> [String: String] {
    var out: [String: String] = [:]
    for (path, entry) in try Manifest.of(root).entries {
        let key = Manifest.show(path)
        switch entry.kind {
        case "file": out[key] = "file \(entry.size) \(entry.sha256 ?? "?")"
        case "symlink": out[key] = "symlink -> \(entry.linkTarget.map(Manifest.show) ?? "")"
        default: out[key] = entry.kind
        }
    }
    return out
}

/// Differences between two content maps, one line each.
private func lifecycleDiff(_ got: [String: String], _ want: [String: String]) -> [String] {
    Set(got.keys).union(want.keys).sorted().compactMap { key in
        got[key] == want[key] ? nil : "\(key): expected \(want[key] ?? "nothing"), got \(got[key] ?? "nothing")"
    }
}

/// Restores `snapshot` into a new folder and compares what was below `source` with `expected`;
/// returns the problems (empty when the restore is byte-identical).
private func lifecycleRestoreProblems(_ sandbox: Sandbox, _ snapshot: String, source: String,
                                      expected: [String: String]) throws -> [String] {
    let target = sandbox.path("restore-" + Hex.encode(try Random.bytes(6)))
    defer { try? removeTree(target) }
    let result = try sandbox.kho("restore", snapshot, "--target", target)
    guard result.exitCode == 0 else { return ["restore of \(snapshot.prefix(8)) failed: \(result)"] }
    return lifecycleDiff(try lifecycleContent(target + source), expected).map { "snapshot \(snapshot.prefix(8)): \($0)" }
}

/// Total size of the packs in the repository.
private func lifecycleDataBytes(_ sandbox: Sandbox) throws -> Int64 {
    try sandbox.repositoryFiles("data").values.reduce(Int64(0)) { $0 + Int64($1) }
}

/// Names of the lock files.
private func lifecycleLocks(_ sandbox: Sandbox) -> Set<String> {
    Set(((try? FileManager.default.contentsOfDirectory(atPath: sandbox.repo + "/locks")) ?? []).filter { !$0.hasPrefix(".") })
}

/// SHA-256 of every file below the given repository folders (relative path → hash).
private func lifecycleFileHashes(_ sandbox: Sandbox, _ folders: [String]) throws -> [String: String] {
    var out: [String: String] = [:]
    for folder in folders {
        for path in try sandbox.repositoryFiles(folder).keys {
            out[String(path.dropFirst(sandbox.repo.count))] = sha256(try readFile(path))
        }
    }
    if access(sandbox.repo + "/config", F_OK) == 0 { out["/config"] = sha256(try readFile(sandbox.repo + "/config")) }
    return out
}

/// Overwrites `count` bytes at `offset` of a file with random bytes.
private func lifecycleScribble(_ path: String, offset: Int, count: Int) throws {
    var bytes = try readFile(path)
    bytes.replaceSubrange(offset..<(offset + count), with: randomBytes(count))
    try writeFile(path, bytes)
}

private func lifecycleBackup(_ sandbox: Sandbox, _ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
    let result = try sandbox.kho(["backup"] + arguments + ["--json"])
    try #require(result.exitCode == 0, "\(result)", sourceLocation: sourceLocation)
    let output = try result.decode(LifecycleBackupOutput.self)
    #expect(!output.partial, sourceLocation: sourceLocation)
    return output.snapshot
}

private func lifecycleCheckReadsAll(_ sandbox: Sandbox, _ label: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let check = try sandbox.kho("check", "--read-data")
    #expect(check.exitCode == 0, "\(label): \(check)", sourceLocation: sourceLocation)
}

// MARK: - tests

@Suite("repository lifecycle: locks, retention, prune, keys")
struct LifecycleTests {
    @Test("two backups of different sources at the same time both succeed and both restore")
    func concurrentBackups() throws {
        let sandbox = try Sandbox("lc-concurrent")
        try sandbox.initRepository("--pack-size", "1", "--chunk-average", "65536")
        let sourceA = sandbox.path("agency-a")
        let sourceB = sandbox.path("agency-b")
        for (source, seed) in [(sourceA, 1), (sourceB, 2)] {
            try makeDirectories(source + "/sub")
            for i in 0..<3 { try writeFile(source + "/file-\(i).bin", randomBytes((1 << 20) + 4099 * i + seed)) }
            try writeFile(source + "/sub/dump.sql", dumpText(600_000, seed: UInt64(seed)))
        }
        let expectedA = try lifecycleContent(sourceA)
        let expectedB = try lifecycleContent(sourceB)

        // Two file backups started together.
        let a = try sandbox.start(["backup", sourceA, "--json"])
        let b = try sandbox.start(["backup", sourceB, "--json"])
        let resultA = a.wait()
        let resultB = b.wait()
        try #require(resultA.exitCode == 0, "\(resultA)")
        try #require(resultB.exitCode == 0, "\(resultB)")
        let snapshotA = try resultA.decode(LifecycleBackupOutput.self).snapshot
        let snapshotB = try resultB.decode(LifecycleBackupOutput.self).snapshot
        #expect(snapshotA != snapshotB)

        // Two stream backups that certainly overlap: both read half their input before either
        // sees the end of it.
        let streamX = randomBytes(3 << 20)
        let streamY = dumpText(3 << 20, seed: 9)
        let x = try sandbox.start(["backup", "--stdin", "--stdin-name", "x.sql", "--json"], input: .pipe)
        let y = try sandbox.start(["backup", "--stdin", "--stdin-name", "y.sql", "--json"], input: .pipe)
        try x.writeInput(Array(streamX[0..<(streamX.count / 2)]))
        try y.writeInput(Array(streamY[0..<(streamY.count / 2)]))
        #expect(x.isRunning && y.isRunning, "both stream backups wait for the rest of their input")
        try x.writeInput(Array(streamX[(streamX.count / 2)...]))
        try y.writeInput(Array(streamY[(streamY.count / 2)...]))
        x.closeInput()
        y.closeInput()
        let resultX = x.wait()
        let resultY = y.wait()
        try #require(resultX.exitCode == 0, "\(resultX)")
        try #require(resultY.exitCode == 0, "\(resultY)")
        let snapshotX = try resultX.decode(LifecycleBackupOutput.self).snapshot
        let snapshotY = try resultY.decode(LifecycleBackupOutput.self).snapshot

        #expect(try sandbox.snapshots().count == 4)
        let problems = try lifecycleRestoreProblems(sandbox, snapshotA, source: sourceA, expected: expectedA)
            + lifecycleRestoreProblems(sandbox, snapshotB, source: sourceB, expected: expectedB)
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        let dumpX = try sandbox.kho("dump", snapshotX, "x.sql")
        #expect(dumpX.exitCode == 0 && sha256(dumpX.stdout) == sha256(streamX), "stream x: \(dumpX.exitCode.map(String.init) ?? "signal"), \(dumpX.stdout.count) bytes")
        let dumpY = try sandbox.kho("dump", snapshotY, "y.sql")
        #expect(dumpY.exitCode == 0 && sha256(dumpY.stdout) == sha256(streamY), "stream y: \(dumpY.exitCode.map(String.init) ?? "signal"), \(dumpY.stdout.count) bytes")
        // Four sources, four retention groups: keep-last 1 keeps every one of them.
        let groups = try sandbox.kho("forget", "--keep-last", "1", "--dry-run", "--json")
        try #require(groups.exitCode == 0, "\(groups)")
        let plan = try groups.decode(LifecycleForgetOutput.self)
        #expect(plan.groups.count == 4 && plan.groups.allSatisfy { $0.decisions.count == 1 && $0.decisions[0].keep }, "\(groups)")
        try lifecycleCheckReadsAll(sandbox, "after concurrent backups")
        #expect(lifecycleLocks(sandbox).isEmpty, "every backup released its lock")
    }

    @Test("prune while a backup holds its lock exits 10 naming the holder, deletes nothing, and runs fine afterwards")
    func pruneWaitsForBackup() throws {
        let sandbox = try Sandbox("lc-prune-lock")
        try sandbox.initRepository("--pack-size", "1", "--chunk-average", "65536")
        // Some data nobody will need, so that a prune has something to delete.
        let old = sandbox.path("old")
        try makeDirectories(old)
        try writeFile(old + "/old.bin", randomBytes(2 << 20))
        let oldSnapshot = try lifecycleBackup(sandbox, [old])
        try sandbox.ok("forget", oldSnapshot)

        let packsBefore = Set(try sandbox.repositoryFiles("data").keys)
        let live = try sandbox.start(["backup", "--stdin", "--stdin-name", "x", "--json"], input: .pipe)
        let stream = randomBytes(4 << 20)
        // 3 MiB with 1 MiB packs: the backup stores packs that no index or snapshot names yet.
        try live.writeInput(Array(stream[0..<(3 << 20)]))
        let deadline = Date().addingTimeInterval(60)
        func newPacks() throws -> Set<String> { Set(try sandbox.repositoryFiles("data").keys).subtracting(packsBefore) }
        while try lifecycleLocks(sandbox).isEmpty || newPacks().isEmpty, live.isRunning, Date() < deadline {
            usleep(10_000)
        }
        try #require(live.isRunning, "the backup must still wait for input")
        try #require(!lifecycleLocks(sandbox).isEmpty, "the backup took no lock")
        let backupPacks = try newPacks()
        try #require(!backupPacks.isEmpty, "the running backup should have stored packs by now")

        let prune = try sandbox.kho("prune")
        #expect(prune.exitCode == 10, "\(prune)")
        #expect(prune.all.contains("PID \(live.pid)"), "the message names the holder: \(prune)")
        let waited = try sandbox.kho("prune", "--lock-wait", "2s")
        #expect(waited.exitCode == 10, "\(waited)")
        #expect(waited.all.contains("PID \(live.pid)"), "\(waited)")
        let forget = try sandbox.kho("forget", "--keep-last", "1", "--prune")
        #expect(forget.exitCode == 10, "forget --prune needs the exclusive lock too: \(forget)")
        let packsNow = Set(try sandbox.repositoryFiles("data").keys)
        #expect(packsBefore.union(backupPacks).isSubset(of: packsNow), "nothing was deleted while the backup held its lock")

        try live.writeInput(Array(stream[(3 << 20)...]))
        live.closeInput()
        let finished = live.wait()
        try #require(finished.exitCode == 0, "\(finished)")
        let snapshot = try finished.decode(LifecycleBackupOutput.self).snapshot
        let dump = try sandbox.kho("dump", snapshot, "x")
        #expect(dump.exitCode == 0 && sha256(dump.stdout) == sha256(stream), "the backup's stream restores intact")

        // Temporary files of interrupted saves: prune removes those older than an hour, not newer ones.
        let fanout = try #require(try sandbox.repositoryFiles("data").keys.first.map { ($0 as NSString).deletingLastPathComponent })
        let leftovers = [fanout + "/.tmp-lifecycle-old", sandbox.repo + "/index/.tmp-lifecycle-old"]
        let fresh = fanout + "/.tmp-lifecycle-fresh"
        for path in leftovers + [fresh] { try writeFile(path, randomBytes(1000)) }
        for path in leftovers {
            try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-2 * 3600)], ofItemAtPath: path)
        }

        let later = try sandbox.kho("prune", "--json")
        try #require(later.exitCode == 0, "\(later)")
        let report = try later.decode(LifecyclePruneReport.self)
        #expect(report.packsRemoved >= 1, "the forgotten snapshot's packs go: \(later)")
        #expect(leftovers.allSatisfy { access($0, F_OK) != 0 }, "prune removes temporary files older than an hour")
        #expect(access(fresh, F_OK) == 0, "prune keeps a temporary file that may still be written")
        let again = try sandbox.kho("dump", snapshot, "x")
        #expect(again.exitCode == 0 && sha256(again.stdout) == sha256(stream), "prune kept the backup's data")
        try lifecycleCheckReadsAll(sandbox, "after prune")
    }

    @Test("prune killed with SIGKILL at every step and at random moments loses nothing; a later prune finishes the job")
    func pruneKilled() throws {
        let sandbox = try Sandbox("lc-prune-kill")
        try sandbox.initRepository("--pack-size", "1", "--chunk-average", "65536")
        let source = sandbox.path("src")
        try makeDirectories(source + "/deep")
        try writeFile(source + "/f0.bin", randomBytes(3 << 19))
        try writeFile(source + "/f1.bin", randomBytes(3 << 19))
        for i in 2..<6 { try writeFile(source + "/f\(i).bin", randomBytes((1 << 19) + 777 * i)) }
        try writeFile(source + "/deep/notes.txt", Array("first\n".utf8))
        var expected: [String: [String: String]] = [:]
        let first = try lifecycleBackup(sandbox, [source])
        expected[first] = try lifecycleContent(source)
        // Day 2: two files replaced (whole packs become unused once `first` goes), one changed inside.
        try writeFile(source + "/f0.bin", randomBytes(3 << 19))
        try writeFile(source + "/f1.bin", randomBytes(3 << 19))
        try lifecycleScribble(source + "/f2.bin", offset: 200_000, count: 150_000)
        try writeFile(source + "/f6.bin", randomBytes(300_000))
        try writeFile(source + "/deep/notes.txt", Array("second\n".utf8))
        let second = try lifecycleBackup(sandbox, [source])
        expected[second] = try lifecycleContent(source)
        // Day 3: another file replaced, one changed, one deleted.
        try writeFile(source + "/f3.bin", randomBytes((1 << 19) + 5))
        try lifecycleScribble(source + "/f4.bin", offset: 100_000, count: 100_000)
        unlink(source + "/f5.bin")
        try writeFile(source + "/deep/notes.txt", Array("third\n".utf8))
        let third = try lifecycleBackup(sandbox, [source])
        expected[third] = try lifecycleContent(source)
        // Named twice (ID and prefix): removed and reported once.
        let forgotten = try sandbox.kho("forget", first, String(first.prefix(10)), "--json")
        try #require(forgotten.exitCode == 0, "\(forgotten)")
        #expect(try forgotten.decode(LifecycleForgetOutput.self).removed == [first], "\(forgotten)")
        expected[first] = nil

        let plan = try sandbox.kho("prune", "--dry-run", "--json", "--max-unused", "0%")
        try #require(plan.exitCode == 0, "\(plan)")
        let planned = try plan.decode(LifecyclePruneReport.self)
        try #require(planned.packsRemoved >= 1 && planned.packsRepacked >= 1 && planned.blobsUnused > 0,
                     "prune must have real work (whole packs to delete and packs to repack): \(plan)")

        let pristine = sandbox.repo
        var scenarios: [(name: String, pause: String?, delay: UInt32)] = ["repack", "index", "remove-index", "remove-packs", "done"].map { ($0, $0, 0) }
        // Random moments: within the time a whole prune takes here (process start included), so
        // that the kills land while it works; measured on a copy, not asserted.
        let measureCopy = sandbox.path("repo-measure")
        try FileManager.default.copyItem(atPath: pristine, toPath: measureCopy)
        sandbox.repo = measureCopy
        let began = Date()
        let measured = try LifecycleProcess(sandbox, ["prune", "--max-unused", "0%"])
        measured.wait()
        let whole = max(0.02, Date().timeIntervalSince(began))
        sandbox.repo = pristine
        try? removeTree(measureCopy)
        try #require(measured.exitCode == 0, "\(measured.description)")
        for n in 1...6 { scenarios.append(("random-\(n)", nil, UInt32.random(in: 2_000...UInt32(whole * 1_000_000)))) }

        for scenario in scenarios {
            let label = scenario.pause.map { "killed at \($0)" } ?? "killed after \(scenario.delay / 1000) ms of \(Int(whole * 1000)) ms"
            let copy = sandbox.path("repo-\(scenario.name)")
            try FileManager.default.copyItem(atPath: pristine, toPath: copy)
            sandbox.repo = copy
            defer {
                sandbox.repo = pristine
                try? removeTree(copy)
            }

            let prune = try LifecycleProcess(sandbox, ["prune", "--max-unused", "0%"],
                                             env: ["KHO_TEST_PRUNE_PAUSE": scenario.pause])
            if let step = scenario.pause {
                let paused = prune.waitForStderr("paused at \(step)")
                try #require(paused, "\(label): prune never reached the step: \(prune.description)")
            } else {
                usleep(scenario.delay)
            }
            prune.kill9()
            prune.wait()
            if scenario.pause != nil {
                #expect(prune.signal == SIGKILL, "\(label): \(prune.description)")
            }

            // Right after the kill: the repository checks clean and every snapshot restores.
            try lifecycleCheckReadsAll(sandbox, label)
            let listed = Set(try sandbox.snapshots().compactMap { $0["id"] as? String })
            #expect(listed == Set(expected.keys), "\(label): snapshots are \(listed)")
            var problems: [String] = []
            for (id, content) in expected {
                problems += try lifecycleRestoreProblems(sandbox, id, source: source, expected: content)
            }
            #expect(problems.isEmpty, "\(label):\n\(problems.joined(separator: "\n"))")

            // A later prune finishes the job: nothing left to free, one index for everything.
            let finish = try sandbox.kho("prune", "--max-unused", "0%")
            try #require(finish.exitCode == 0, "\(label): \(finish)")
            let rest = try sandbox.kho("prune", "--dry-run", "--json", "--max-unused", "0%")
            try #require(rest.exitCode == 0, "\(label): \(rest)")
            let left = try rest.decode(LifecyclePruneReport.self)
            #expect(left.packsRemoved == 0 && left.packsRepacked == 0 && left.orphanPacks == 0 && left.bytesFreed == 0 && left.blobsUnused == 0,
                    "\(label): after the finishing prune: \(rest)")
            let indexFiles = try sandbox.repositoryFiles("index").count
            #expect(indexFiles == 1, "\(label): the finished prune leaves one index file, found \(indexFiles)")
            try lifecycleCheckReadsAll(sandbox, "\(label), finished")

            // And the repository keeps working: another backup, forget, prune.
            try writeFile(source + "/deep/notes.txt", Array("fourth \(scenario.name)\n".utf8))
            let fourth = try lifecycleBackup(sandbox, [source])
            let fourthContent = try lifecycleContent(source)
            try sandbox.ok("forget", second)
            let next = try sandbox.kho("prune", "--max-unused", "0%")
            #expect(next.exitCode == 0, "\(label): \(next)")
            try lifecycleCheckReadsAll(sandbox, "\(label), next round")
            problems = try lifecycleRestoreProblems(sandbox, third, source: source, expected: expected[third]!)
                + lifecycleRestoreProblems(sandbox, fourth, source: source, expected: fourthContent)
            #expect(problems.isEmpty, "\(label), next round:\n\(problems.joined(separator: "\n"))")
            try writeFile(source + "/deep/notes.txt", Array("third\n".utf8))
        }
    }

    @Test("forget --keep-daily 7 --keep-weekly 4 --prune on 30 daily snapshots keeps what the rules say and frees what the others alone used")
    func thirtyDays() throws {
        let sandbox = try Sandbox("lc-30-days")
        try sandbox.initRepository("--pack-size", "1")
        let source = sandbox.path("src")
        try makeDirectories(source + "/notes")
        try writeFile(source + "/base.bin", randomBytes(256 << 10))

        var vietnam = Calendar(identifier: .iso8601)
        vietnam.timeZone = TimeZone(identifier: "Asia/Ho_Chi_Minh")!
        let format = DateFormatter()
        format.locale = Locale(identifier: "en_US_POSIX")
        format.timeZone = vietnam.timeZone
        format.dateFormat = "yyyy-MM-dd'T'HH:mm:ssxxx"
        // 06:30 in Vietnam is 23:30 UTC of the day before: the days and weeks differ between zones.
        let start = try #require(Timestamp.parse("2026-10-03T06:30:00+07:00"))

        struct Day {
            var id: String
            var time: Date
            var uniqueBytes: Int64
            var content: [String: String]
        }
        var days: [Day] = []
        for day in 0..<30 {
            if day > 0 { unlink(source + "/day-\(day - 1).bin") }
            let size = (96 << 10) + 1024 * day
            try writeFile(source + "/day-\(day).bin", randomBytes(size))
            let note = Array("day \(day)\n".utf8)
            try writeFile(source + "/notes/today.txt", note)
            let time = start.addingTimeInterval(Double(day) * 86400)
            let text = format.string(from: time)
            #expect(text.hasSuffix("+07:00"), "\(text)")
            let id = try lifecycleBackup(sandbox, [source, "--time", text])
            days.append(Day(id: id, time: time, uniqueBytes: Int64(size + note.count), content: try lifecycleContent(source)))
        }
        // The snapshots carry the times given with --time.
        let listed = try sandbox.kho("snapshots", "--json")
        try #require(listed.exitCode == 0, "\(listed)")
        let entries = try JSONDecoder().decode([LifecycleSnapshotEntry].self, from: Data(listed.stdout))
        try #require(entries.count == 30)
        for day in days {
            let recorded = entries.first { $0.id == day.id }.flatMap { Timestamp.parse($0.time) }
            #expect(recorded.map { abs($0.timeIntervalSince(day.time)) < 0.001 } == true, "snapshot \(day.id.prefix(8)): \(String(describing: recorded)) instead of \(day.time)")
        }
        #expect(try sandbox.kho("backup", source, "--time", "yesterday").exitCode == 2, "a --time that is not RFC 3339 is a usage error")

        // What the rules keep, worked out here: the newest snapshot of each of the 7 newest days
        // and of each of the 4 newest ISO weeks, in Vietnam time.
        func newestPerPeriod(_ count: Int, _ key: (Date) -> String) -> Set<String> {
            var seen: [String] = []
            var kept: Set<String> = []
            for day in days.sorted(by: { $0.time > $1.time }) {
                let k = key(day.time)
                if seen.contains(k) { continue }
                guard seen.count < count else { break }
                seen.append(k)
                kept.insert(day.id)
            }
            return kept
        }
        let daily = newestPerPeriod(7) { d in
            let c = vietnam.dateComponents([.year, .month, .day], from: d)
            return "\(c.year!)-\(c.month!)-\(c.day!)"
        }
        let weekly = newestPerPeriod(4) { d in
            let c = vietnam.dateComponents([.yearForWeekOfYear, .weekOfYear], from: d)
            return "\(c.yearForWeekOfYear!)-W\(c.weekOfYear!)"
        }
        let keep = daily.union(weekly)
        let remove = Set(days.map(\.id)).subtracting(keep)
        try #require(keep.count == 10, "7 days Oct 26 – Nov 1 plus the Sundays Oct 25, 18, 11: \(keep.count)")

        // A dry run shows the same decisions and changes nothing.
        let dry = try sandbox.kho("forget", "--keep-daily", "7", "--keep-weekly", "4", "--dry-run", "--json")
        try #require(dry.exitCode == 0, "\(dry)")
        let plan = try dry.decode(LifecycleForgetOutput.self)
        #expect(plan.dryRun && plan.removed.isEmpty)
        #expect(plan.groups.count == 1)
        let decisions = plan.groups.flatMap(\.decisions)
        #expect(decisions.count == 30)
        #expect(Set(decisions.filter(\.keep).map(\.snapshotID)) == keep, "dry run keeps \(decisions.filter(\.keep).map { ($0.snapshotID.prefix(8), $0.reasons) })")
        for d in decisions {
            if d.keep {
                #expect(d.reasons.contains { $0.hasPrefix("daily") || $0.hasPrefix("weekly") }, "\(d.reasons)")
            } else {
                #expect(d.reasons == ["no rule keeps it"], "\(d.reasons)")
            }
        }
        #expect(try sandbox.snapshots().count == 30, "a dry run removes nothing")
        // IDs and rules together are refused, --keep-within included.
        let mixed = try sandbox.kho("forget", days[0].id, "--keep-within", "3d")
        #expect(mixed.exitCode == 2, "snapshot IDs with --keep-within is a usage error: \(mixed)")
        #expect(try sandbox.snapshots().count == 30)

        let before = try lifecycleDataBytes(sandbox)
        let forget = try sandbox.kho("forget", "--keep-daily", "7", "--keep-weekly", "4", "--prune", "--max-unused", "0%", "--json")
        try #require(forget.exitCode == 0, "\(forget)")
        let done = try forget.decode(LifecycleForgetOutput.self)
        #expect(Set(done.removed) == remove)
        #expect(done.prune != nil)
        let after = try lifecycleDataBytes(sandbox)

        let left = Set(try sandbox.snapshots().compactMap { $0["id"] as? String })
        #expect(left == keep, "kept \(left.count) snapshots, the rules say \(keep.count)")
        // The removed snapshots alone held their day file and note (random, so stored at least
        // as large); trees, headers and sealing add a little per snapshot.
        let alone = days.filter { remove.contains($0.id) }.reduce(Int64(0)) { $0 + $1.uniqueBytes }
        let freed = before - after
        #expect(freed >= alone && freed <= alone + Int64(remove.count) * 8192,
                "the repository shrank by \(freed) bytes; the removed snapshots alone referenced \(alone) bytes of content")

        var problems: [String] = []
        for day in days where keep.contains(day.id) {
            problems += try lifecycleRestoreProblems(sandbox, day.id, source: source, expected: day.content)
        }
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        try lifecycleCheckReadsAll(sandbox, "after forget --prune")
    }

    @Test("check --read-data-subset K/T for K = 1…T reads every pack exactly once (T = 3 and 5)")
    func checkSubsetsCoverEveryPackOnce() throws {
        let sandbox = try Sandbox("lc-subsets")
        try sandbox.initRepository("--pack-size", "1", "--chunk-average", "65536")
        let source = sandbox.path("src")
        try makeDirectories(source)
        for i in 0..<8 { try writeFile(source + "/f\(i)", randomBytes((1 << 20) + 313 * i)) }
        _ = try lifecycleBackup(sandbox, [source])
        let packFiles = try sandbox.repositoryFiles("data")
        let packNames = Set(packFiles.keys.map { String($0.split(separator: "/").last!) })
        try #require(packNames.count >= 8, "expected about eight 1 MiB packs, found \(packNames.count)")

        /// Runs check; `exit` nil expects 12 when the part read any (damaged) pack, else 0.
        func check(_ arguments: [String], exit: Int32?) throws -> LifecycleCheckReport {
            let result = try sandbox.kho(["check"] + arguments + ["--json"])
            let report = try result.decode(LifecycleCheckReport.self)
            #expect(result.exitCode == exit ?? (report.packsRead > 0 ? 12 : 0), "\(result)")
            return report
        }
        for total in [3, 5] {
            var read = 0
            for part in 1...total {
                let report = try check(["--read-data-subset", "\(part)/\(total)"], exit: 0)
                #expect(report.errors.isEmpty && report.packs == packNames.count)
                read += report.packsRead
            }
            #expect(read == packNames.count, "parts 1…\(total) read \(read) packs of \(packNames.count)")
        }

        // Which packs each part reads: damage every data pack, and each part reports as damaged
        // exactly the data packs it read. kho keeps trees in a small pack of their own; it stays
        // intact so that the structure check (which reads every tree) passes in every part.
        let dataPacks = packFiles.filter { $0.value > 256 << 10 }
        try #require(dataPacks.count >= 7 && dataPacks.count < packFiles.count, "expected full data packs and a small tree pack: \(packFiles)")
        for path in dataPacks.keys {
            chmod(path, 0o644)
            var bytes = try readFile(path)
            bytes[100] ^= 0xff
            try writeFile(path, bytes)
        }
        let damagedNames = Set(dataPacks.keys.map { String($0.split(separator: "/").last!) })
        for total in [3, 5] {
            var seen: [String: Int] = [:]
            var read = 0
            for part in 1...total {
                let result = try sandbox.kho(["check", "--read-data-subset", "\(part)/\(total)", "--json"])
                let report = try result.decode(LifecycleCheckReport.self)
                #expect(result.exitCode == (report.damagedPacks.isEmpty ? 0 : 12), "\(result)")
                #expect(Set(report.damagedPacks).isSubset(of: damagedNames))
                #expect(report.packsRead >= report.damagedPacks.count, "part \(part)/\(total) read \(report.packsRead) packs, reported \(report.damagedPacks.count) damaged")
                for name in report.damagedPacks { seen[name, default: 0] += 1 }
                read += report.packsRead
            }
            #expect(read == packNames.count, "parts 1…\(total) read \(read) packs of \(packNames.count)")
            #expect(Set(seen.keys) == damagedNames, "parts 1…\(total) together found \(seen.count) of \(damagedNames.count) damaged packs")
            #expect(seen.values.allSatisfy { $0 == 1 }, "packs read more than once with T = \(total): \(seen.filter { $0.value > 1 })")
        }
    }

    @Test("keys: add, list, open with either, last key kept, passwd; no data file changes")
    func keys() throws {
        let sandbox = try Sandbox("lc-keys")
        try sandbox.initRepository()
        let source = sandbox.path("src")
        try makeDirectories(source)
        try writeFile(source + "/a.txt", dumpText(200_000, seed: 3))
        let snapshot = try lifecycleBackup(sandbox, [source])
        let content = try lifecycleContent(source)
        let dataFolders = ["data", "index", "snapshots"]
        let data = try lifecycleFileHashes(sandbox, dataFolders)
        try #require(!data.isEmpty)
        func dataUnchanged(_ after: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let now = try lifecycleFileHashes(sandbox, dataFolders)
            #expect(now == data, "\(after) changed data files: \(lifecycleDiff(now, data))", sourceLocation: sourceLocation)
        }
        func keyList(_ password: String) throws -> [LifecycleKeyEntry] {
            let result = try sandbox.kho(["key", "list", "--json"], env: ["KHO_PASSWORD": password])
            try #require(result.exitCode == 0, "\(result)")
            return try result.decode([LifecycleKeyEntry].self)
        }
        let first = sandbox.password
        let second = "hai mật khẩu"
        let third = "ba mật khẩu"

        let add = try sandbox.kho(["key", "add", "--label", "night jobs"], env: ["KHO_NEW_PASSWORD": second])
        try #require(add.exitCode == 0, "\(add)")
        try dataUnchanged("key add")
        let listFirst = try keyList(first)
        #expect(listFirst.count == 2)
        #expect(listFirst.filter(\.current).count == 1)
        #expect(listFirst.contains { $0.label == "night jobs" && !$0.current })
        let listSecond = try keyList(second)
        #expect(Set(listSecond.map(\.id)) == Set(listFirst.map(\.id)))
        let firstID = try #require(listFirst.first(where: \.current)?.id)
        let secondID = try #require(listSecond.first(where: \.current)?.id)
        #expect(firstID != secondID, "each password opens its own key")
        #expect(listSecond.first(where: \.current)?.label == "night jobs")
        // Either password opens the repository and reads the data.
        for password in [first, second] {
            let target = sandbox.path("restore-" + Hex.encode(try Random.bytes(4)))
            let restore = try sandbox.kho(["restore", snapshot, "--target", target], env: ["KHO_PASSWORD": password])
            #expect(restore.exitCode == 0, "\(restore)")
            #expect(lifecycleDiff(try lifecycleContent(target + source), content).isEmpty)
        }
        #expect(try sandbox.kho(["snapshots"], env: ["KHO_PASSWORD": "sai"]).exitCode == 11, "a wrong password exits 11")
        try dataUnchanged("key list and restores")

        // Remove the second key with the first; the last key then cannot be removed.
        let remove = try sandbox.kho("key", "remove", String(secondID.prefix(12)))
        #expect(remove.exitCode == 0, "\(remove)")
        #expect(try keyList(first).count == 1)
        #expect(try sandbox.kho(["snapshots"], env: ["KHO_PASSWORD": second]).exitCode == 11, "the removed key no longer opens the repository")
        let last = try sandbox.kho("key", "remove", firstID)
        #expect(last.exitCode != 0, "\(last)")
        #expect(last.all.contains("last key"), "the refusal says why: \(last)")
        #expect(try keyList(first).map(\.id) == [firstID], "the last key is still there")
        try dataUnchanged("key remove")

        // passwd changes the password of the key in use.
        let passwd = try sandbox.kho(["key", "passwd"], env: ["KHO_NEW_PASSWORD": third])
        #expect(passwd.exitCode == 0, "\(passwd)")
        #expect(try sandbox.kho(["snapshots"], env: ["KHO_PASSWORD": first]).exitCode == 11, "the old password no longer opens the repository")
        let listThird = try keyList(third)
        #expect(listThird.count == 1 && listThird[0].current)
        let target = sandbox.path("restore-third")
        let restore = try sandbox.kho(["restore", snapshot, "--target", target], env: ["KHO_PASSWORD": third])
        #expect(restore.exitCode == 0, "\(restore)")
        #expect(lifecycleDiff(try lifecycleContent(target + source), content).isEmpty)
        try dataUnchanged("key passwd")
    }

    @Test("unlock removes stale locks (dead process, or not refreshed for 30 minutes) and keeps live ones; --remove-all removes all")
    func unlockStaleAndLive() throws {
        let sandbox = try Sandbox("lc-unlock")
        try sandbox.initRepository()
        let locks = sandbox.repo + "/locks"
        try makeDirectories(locks)

        var deadPID: Int32 = 2_000_000_000
        while kill(deadPID, 0) == 0 || errno != ESRCH { deadPID -= 1 }
        let now = Date()
        func lock(exclusive: Bool, host: String, pid: Int32, refreshed: Date) -> [UInt8] {
            let time = Timestamp.format(refreshed.addingTimeInterval(-60))
            let text = #"{"command":"backup","exclusive":\#(exclusive),"hostname":"\#(host)","pid":\#(pid),"refreshed":"\#(Timestamp.format(refreshed))","time":"\#(time)","user":"tester"}"#
            return Array(text.utf8)
        }
        let name: (UInt8) -> String = { String(repeating: String(format: "%02x", $0), count: 32) }
        let dead = name(0xd1)
        let live = name(0xa1)
        let remoteLive = name(0xa2)
        let remoteOld = name(0xd2)
        try writeFile(locks + "/" + dead, lock(exclusive: true, host: Host.name, pid: deadPID, refreshed: now))
        try writeFile(locks + "/" + live, lock(exclusive: false, host: Host.name, pid: getpid(), refreshed: now))
        try writeFile(locks + "/" + remoteLive, lock(exclusive: false, host: "other-host.example", pid: deadPID, refreshed: now))
        try writeFile(locks + "/" + remoteOld, lock(exclusive: true, host: "other-host.example", pid: 4242, refreshed: now.addingTimeInterval(-31 * 60)))
        // Another host's lock is stale only when its file, too, was not written for 30 minutes
        // (its content's time alone may come from a wrong clock).
        let silent = Int(now.addingTimeInterval(-31 * 60).timeIntervalSince1970)
        var times = [timespec(tv_sec: silent, tv_nsec: 0), timespec(tv_sec: silent, tv_nsec: 0)]
        try #require(utimensat(AT_FDCWD, locks + "/" + remoteOld, &times, 0) == 0)

        // Stale exclusive locks block nobody; live shared ones let backups in but keep prune out.
        let source = sandbox.path("f.txt")
        try writeFile(source, Array("hello\n".utf8))
        let backup = try sandbox.kho("backup", source)
        #expect(backup.exitCode == 0, "\(backup)")
        let prune = try sandbox.kho("prune")
        #expect(prune.exitCode == 10, "\(prune)")
        #expect(prune.all.contains("PID \(getpid())") || prune.all.contains("PID \(deadPID) on other-host.example"), "\(prune)")

        // unlock needs no password.
        let unlock = try sandbox.kho(["unlock"], env: ["KHO_PASSWORD": nil])
        #expect(unlock.exitCode == 0, "\(unlock)")
        #expect(lifecycleLocks(sandbox) == [live, remoteLive], "left \(lifecycleLocks(sandbox).map { $0.prefix(4) })")
        #expect(unlock.out.contains("removed lock \(dead.prefix(8))") && unlock.out.contains("removed lock \(remoteOld.prefix(8))"), "\(unlock)")
        #expect(unlock.out.contains("kept lock"), "\(unlock)")

        let all = try sandbox.kho(["unlock", "--remove-all"], env: ["KHO_PASSWORD": nil])
        #expect(all.exitCode == 0, "\(all)")
        #expect(lifecycleLocks(sandbox).isEmpty, "left \(lifecycleLocks(sandbox))")
        let after = try sandbox.kho("prune")
        #expect(after.exitCode == 0, "\(after)")
    }
}
