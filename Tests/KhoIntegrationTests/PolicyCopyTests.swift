import Foundation
import KhoTestSupport
import Glibc
import Testing

// Policies with `copies:`: `kho run` copies each good backup to the listed repositories, the
// catalog records a copy run, `kho status` shows each copy's lag and a failed copy; a destination
// that was down catches up on every snapshot it lacks (also on a night whose backup failed); each
// destination keeps its own retention (or the policy's), and an append-only one is left alone.
// Everything here is private and named `PolicyCopy…` so that it cannot clash with other tests.

private struct PolicyCopyJob: Decodable {
    var kind: String
    var outcome: String
    var snapshot: String?
    var copies: [String]?
    var copiesFailed: Int?
}

private struct PolicyCopyStatus: Decodable {
    struct Copy: Decodable {
        var destination: String
        var newestCopiedSnapshotTime: String?
        var lagSeconds: Double?
        var lastCopyOutcome: String?
        var lastCopyFailed: Bool
        var lastError: String?
    }
    var policy: String
    var source: String
    var lastSnapshot: String?
    var copies: [Copy]
}

/// Two local repositories (the policy's and a copy destination), both `kho init`-ed, passwords in
/// files; a policy folder, a state folder and a folder of data to back up.
private final class PolicyCopyBench: @unchecked Sendable {
    let box: Sandbox
    var primary: String { box.repo }
    var second: String { box.path("second-site") }
    var policies: String { box.path("policies") }
    var state: String { box.path("state") }
    var data: String { box.path("data") }
    var primaryPasswordFile: String { box.path("primary.pass") }
    var secondPasswordFile: String { box.path("second.pass") }
    let primaryPassword = "mat khau kho chinh"
    let secondPassword = "mat khau kho thu hai"

    init(_ label: String) throws {
        box = try Sandbox(label)
        for folder in [policies, state, data + "/ho-so"] {
            try makeDirectories(folder)
            chmod(folder, 0o755)
        }
        try writeFile(primaryPasswordFile, Array((primaryPassword + "\n").utf8), mode: 0o600)
        try writeFile(secondPasswordFile, Array((secondPassword + "\n").utf8), mode: 0o600)
        let madePrimary = try box.kho(["init"], env: ["KHO_REPOSITORY": primary, "KHO_PASSWORD": primaryPassword])
        try #require(madePrimary.exitCode == 0, "\(madePrimary)")
        let madeSecond = try box.kho(["init"], env: ["KHO_REPOSITORY": second, "KHO_PASSWORD": secondPassword])
        try #require(madeSecond.exitCode == 0, "\(madeSecond)")
        try writeFile(data + "/ho-so/a.pdf", randomBytes(700_000))
        try writeFile(data + "/dump.sql", dumpText(1 << 20, seed: 23))
    }

    func run(_ arguments: [String], now: String? = nil) throws -> ProcessResult {
        try box.kho(arguments, env: ["KHO_PASSWORD": nil, "KHO_STATE_DIR": state, "KHO_POLICIES": policies, "KHO_TEST_NOW": now])
    }

    /// Night `n` (0 = 2 March 2026) at 02:05 in Asia/Ho_Chi_Minh, just after the policy's schedule.
    static func night(_ n: Int) -> String {
        String(format: "2026-03-%02dT02:05:00+07:00", 2 + n)
    }

    /// `kho run --due --json` at night `n`, decoded.
    func night(_ n: Int) throws -> (ProcessResult, [PolicyCopyJob]) {
        let result = try run(["run", "--due", "--json"], now: PolicyCopyBench.night(n))
        return (result, try result.decode([PolicyCopyJob].self))
    }

    /// Snapshot times (as kho prints them) in a repository, oldest first.
    func snapshotTimes(_ repository: String, password: String) throws -> [String] {
        let list = try box.kho(["snapshots", "--json"], env: ["KHO_REPOSITORY": repository, "KHO_PASSWORD": password])
        let snapshots = try #require(try list.json() as? [[String: Any]], "\(list)")
        return snapshots.compactMap { $0["time"] as? String }.sorted()
    }

    /// The catalog's runs of `kind` as (outcome, snapshot, repository, details), oldest first.
    func catalogRuns(_ kind: String) throws -> [[String]] {
        try ScratchSQLite.sql("SELECT outcome, ifnull(snapshot, ''), repository, ifnull(details, '') FROM runs WHERE kind = '\(kind)' ORDER BY started, id;",
                              path: state + "/catalog.sqlite", scratch: box.dir)
            .split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
    }

    /// kho with the second repository as the repository.
    func onSecond(_ arguments: [String]) throws -> ProcessResult {
        try box.kho(arguments, env: ["KHO_REPOSITORY": second, "KHO_PASSWORD": secondPassword])
    }

    /// The policy: one files source (or `source` instead), copied to the second repository
    /// (`copyExtra` adds lines to that copies entry, `moreCopies` adds entries) and `policyExtra`
    /// added at the end (retention).
    func writePolicy(copyPasswordFile: String, copyExtra: String = "", moreCopies: String = "", source: String? = nil,
                     policyExtra: String = "") throws {
        let sources = source ?? """
              - name: scans
                kind: files
                paths: [\(data)]
            """
        let text = """
            name: ban-sao
            agency: Sở Tư pháp (kiểm thử)
            system: Bản sao thứ hai
            security-level: 3
            schedule: "0 2 * * *"
            repository:
              path: \(primary)
              password-file: \(primaryPasswordFile)
            copies:
              - path: \(second)
                password-file: \(copyPasswordFile)
            \(copyExtra)
            \(moreCopies)
            sources:
            \(sources)
            objectives:
              rpo: 24h
              rto: 1h
            \(policyExtra)

            """
        try writeFile(policies + "/ban-sao.yaml", Array(text.utf8))
    }

    func status(now: String? = nil) throws -> [PolicyCopyStatus] {
        let result = try run(["status", "--json"], now: now)
        try #require(result.exitCode == 0, "\(result)")
        return try result.decode([PolicyCopyStatus].self)
    }
}

@Suite struct PolicyCopyTests {
    @Test("policy copies: kho run copies the backup, the copy restores byte-identical, status shows lag 0")
    func runCopiesTheBackup() throws {
        let bench = try PolicyCopyBench("policy-copy")
        try bench.writePolicy(copyPasswordFile: bench.secondPasswordFile)
        let ran = try bench.run(["run", "--all", "--json"])
        try #require(ran.exitCode == 0, "\(ran)")
        let jobs = try ran.decode([PolicyCopyJob].self)
        let job = try #require(jobs.first { $0.kind == "backup" }, "\(ran)")
        #expect(job.outcome == "success" && job.copiesFailed == 0, "\(ran)")
        let snapshot = try #require(job.snapshot)

        // The snapshot is in both repositories, with the same time.
        let primaryList = try bench.box.kho(["snapshots", "--json"], env: ["KHO_REPOSITORY": bench.primary, "KHO_PASSWORD": bench.primaryPassword])
        let primarySnapshots = try #require(try primaryList.json() as? [[String: Any]], "\(primaryList)")
        let secondList = try bench.onSecond(["snapshots", "--json"])
        let secondSnapshots = try #require(try secondList.json() as? [[String: Any]], "\(secondList)")
        #expect(primarySnapshots.count == 1 && secondSnapshots.count == 1, "\(primaryList)\n\(secondList)")
        #expect(primarySnapshots.first?["id"] as? String == snapshot)
        #expect(primarySnapshots.first?["time"] as? String == secondSnapshots.first?["time"] as? String)

        // The copy stands on its own.
        let target = bench.box.path("restored")
        let restored = try bench.onSecond(["restore", "latest", "--target", target])
        try #require(restored.exitCode == 0, "\(restored)")
        #expect(try Manifest.of(target + bench.data).differences(from: Manifest.of(bench.data)).isEmpty)

        let statuses = try bench.status()
        let status = try #require(statuses.first { $0.source == "scans" }, "\(statuses)")
        #expect(status.lastSnapshot == snapshot)
        let copy = try #require(status.copies.first, "\(statuses)")
        #expect(status.copies.count == 1 && copy.destination == bench.second)
        #expect(copy.lagSeconds == 0 && !copy.lastCopyFailed && copy.lastCopyOutcome == "success", "\(statuses)")
        #expect(copy.newestCopiedSnapshotTime != nil)

        let text = try bench.run(["status"])
        #expect(text.exitCode == 0 && text.out.contains("copy to \(bench.second): lag 0 s"), "\(text)")
    }

    @Test("policy copies: a wrong password for the copy fails the copy, not the backup; status shows it")
    func failedCopy() throws {
        let bench = try PolicyCopyBench("policy-copy-fail")
        let wrong = bench.box.path("wrong.pass")
        try writeFile(wrong, Array("not the password\n".utf8), mode: 0o600)
        try bench.writePolicy(copyPasswordFile: wrong)
        let ran = try bench.run(["run", "--all", "--json"])
        #expect(ran.exitCode == 1, "a failed copy fails the run: \(ran)")
        let jobs = try ran.decode([PolicyCopyJob].self)
        let job = try #require(jobs.first { $0.kind == "backup" }, "\(ran)")
        #expect(job.outcome == "success" && job.snapshot != nil && job.copiesFailed == 1, "\(ran)")
        #expect(job.copies?.first?.contains("failed") == true, "\(ran)")

        let secondList = try bench.onSecond(["snapshots", "--json"])
        #expect((try secondList.json() as? [[String: Any]])?.isEmpty == true, "\(secondList)")

        let statuses = try bench.status()
        let status = try #require(statuses.first { $0.source == "scans" }, "\(statuses)")
        #expect(status.lastSnapshot == job.snapshot, "the backup counts: \(statuses)")
        let copy = try #require(status.copies.first, "\(statuses)")
        #expect(copy.lastCopyFailed && copy.lastCopyOutcome == "failure" && copy.lastError != nil, "\(statuses)")
        #expect(copy.lagSeconds == nil && copy.newestCopiedSnapshotTime == nil, "\(statuses)")
        let text = try bench.run(["status"])
        #expect(text.out.contains("copy to \(bench.second): lag unknown, nothing copied yet; last copy FAILED"), "\(text)")

        // With the right password the next run copies, and the lag is 0 again.
        try bench.writePolicy(copyPasswordFile: bench.secondPasswordFile)
        let again = try bench.run(["run", "--all", "--json"])
        try #require(again.exitCode == 0, "\(again)")
        let fixed = try #require(try bench.status().first { $0.source == "scans" }?.copies.first)
        #expect(fixed.lagSeconds == 0 && !fixed.lastCopyFailed, "\(fixed)")
    }

    @Test("policy copies: a destination down for two nights gets all three snapshots on the third, oldest first; catalog and status agree")
    func catchUp() throws {
        let bench = try PolicyCopyBench("policy-copy-catch-up")
        try bench.writePolicy(copyPasswordFile: bench.secondPasswordFile, policyExtra: """
            retention:
              keep-daily: 7
            """)
        // The second site is down: its folder is gone.
        let away = bench.box.path("second-site.away")
        try #require(rename(bench.second, away) == 0)
        for n in 0..<2 {
            try writeFile(bench.data + "/night-\(n).txt", Array("đêm \(n)\n".utf8))
            let (ran, jobs) = try bench.night(n)
            #expect(ran.exitCode == 1, "the copy fails, so the run does: \(ran)")
            let job = try #require(jobs.first { $0.kind == "backup" }, "\(ran)")
            #expect(job.outcome == "success" && job.snapshot != nil && job.copiesFailed == 1, "\(ran)")
            #expect(access(bench.second, F_OK) != 0, "a failed copy creates nothing where the destination was")
            let copy = try #require(try bench.status(now: PolicyCopyBench.night(n)).first?.copies.first)
            #expect(copy.lastCopyFailed && copy.lagSeconds == nil, "\(copy)")
        }

        // Back up: the third night copies all three snapshots.
        try #require(rename(away, bench.second) == 0)
        try writeFile(bench.data + "/night-2.txt", Array("đêm 2\n".utf8))
        let (ran, jobs) = try bench.night(2)
        try #require(ran.exitCode == 0, "\(ran)")
        let job = try #require(jobs.first { $0.kind == "backup" }, "\(ran)")
        #expect(job.copiesFailed == 0, "\(ran)")
        #expect(job.copies?.first?.contains("copy to \(bench.second): 3 snapshots (2 caught up from earlier runs)") == true, "\(ran)")
        let primaryTimes = try bench.snapshotTimes(bench.primary, password: bench.primaryPassword)
        #expect(primaryTimes.count == 3)
        #expect(try bench.snapshotTimes(bench.second, password: bench.secondPassword) == primaryTimes)

        // One copy run per snapshot, oldest first, after the two failed nights.
        if ScratchSQLite.isAvailable {
            let copies = try bench.catalogRuns("copy")
            #expect(copies.map { $0[0] } == ["failure", "failure", "success", "success", "success"], "\(copies)")
            let backups = try bench.catalogRuns("backup").map { $0[1] }
            #expect(copies.suffix(3).map { $0[1] } == backups, "\(copies)\n\(backups)")
            let caughtUp = copies.suffix(3).map { row in
                ((try? JSONSerialization.jsonObject(with: Data(row[3].utf8))) as? [String: Any])?["caughtUp"] as? Bool ?? false
            }
            #expect(caughtUp == [true, true, false], "\(copies)")
        }
        let copy = try #require(try bench.status(now: PolicyCopyBench.night(2)).first?.copies.first)
        #expect(copy.lagSeconds == 0 && !copy.lastCopyFailed && copy.lastCopyOutcome == "success", "\(copy)")

        // The next night copies that night's snapshot only.
        try writeFile(bench.data + "/night-3.txt", Array("đêm 3\n".utf8))
        let (next, nextJobs) = try bench.night(3)
        try #require(next.exitCode == 0, "\(next)")
        let line = try #require(nextJobs.first { $0.kind == "backup" }?.copies?.first, "\(next)")
        #expect(line.hasPrefix("copy to \(bench.second): snapshot ") && !line.contains("caught up"), "\(line)")
        #expect(try bench.snapshotTimes(bench.second, password: bench.secondPassword).count == 4)

        // What was caught up restores on its own.
        let target = bench.box.path("restored")
        let restored = try bench.onSecond(["restore", "latest", "--target", target])
        try #require(restored.exitCode == 0, "\(restored)")
        #expect(try Manifest.of(target + bench.data).differences(from: Manifest.of(bench.data)).isEmpty)
    }

    @Test("policy copies: a damaged older snapshot does not hold back the newer ones")
    func damagedSnapshotDoesNotBlock() throws {
        let bench = try PolicyCopyBench("policy-copy-damaged")
        try bench.writePolicy(copyPasswordFile: bench.secondPasswordFile)
        let away = bench.box.path("second-site.away")
        try #require(rename(bench.second, away) == 0)
        let (first, _) = try bench.night(0)
        #expect(first.exitCode == 1, "\(first)")
        try #require(rename(away, bench.second) == 0)
        // Every pack of the main repository gets one byte flipped: night 0's snapshot cannot be
        // read any more. Night 1 backs up data that shares nothing with it.
        let packs = try FileManager.default.subpathsOfDirectory(atPath: bench.primary + "/data")
            .map { bench.primary + "/data/" + $0 }.filter { path in
                var isDirectory: ObjCBool = false
                return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
            }
        try #require(!packs.isEmpty)
        for pack in packs {
            var bytes = try #require(FileManager.default.contents(atPath: pack))
            bytes[40] ^= 0xff
            chmod(pack, 0o600)
            try writeFile(pack, Array(bytes), mode: 0o600)
        }
        try removeTree(bench.data)
        try makeDirectories(bench.data)
        try writeFile(bench.data + "/moi.bin", randomBytes(200_000))
        let (second, jobs) = try bench.night(1)
        #expect(second.exitCode == 1, "the damaged snapshot's copy failed: \(second)")
        let job = try #require(jobs.first { $0.kind == "backup" }, "\(second)")
        #expect(job.outcome == "success" && job.copiesFailed == 1, "\(second)")
        let line = try #require(job.copies?.first, "\(second)")
        #expect(line.contains("could not be copied") && line.contains("(also copied: snapshot "), "\(line)")
        let primaryTimes = try bench.snapshotTimes(bench.primary, password: bench.primaryPassword)
        #expect(try bench.snapshotTimes(bench.second, password: bench.secondPassword) == Array(primaryTimes.suffix(1)), "night 1's snapshot is there")
        let copy = try #require(try bench.status(now: PolicyCopyBench.night(1)).first?.copies.first)
        #expect(copy.lagSeconds == 0, "\(copy)")
    }

    @Test("policy copies: a night whose backup fails still catches the destination up")
    func catchUpAfterFailedBackup() throws {
        let bench = try PolicyCopyBench("policy-copy-failed-backup")
        let dump = bench.data + "/dump.sql"
        try bench.writePolicy(copyPasswordFile: bench.secondPasswordFile, source: """
              - name: so-lieu
                kind: command
                command: cat \(dump)
            """)
        let away = bench.box.path("second-site.away")
        try #require(rename(bench.second, away) == 0)
        let (first, firstJobs) = try bench.night(0)
        #expect(first.exitCode == 1, "\(first)")
        let made = try #require(firstJobs.first { $0.kind == "backup" }, "\(first)")
        #expect(made.outcome == "success" && made.copiesFailed == 1, "\(first)")

        // The next night the second site is back but the dump fails.
        try #require(rename(away, bench.second) == 0)
        try #require(unlink(dump) == 0)
        let (second, secondJobs) = try bench.night(1)
        #expect(second.exitCode == 1, "the backup failed: \(second)")
        let failed = try #require(secondJobs.first { $0.kind == "backup" }, "\(second)")
        #expect(failed.outcome == "failure" && failed.snapshot == nil, "\(second)")
        #expect(failed.copiesFailed == 0, "\(second)")
        #expect(failed.copies?.first?.contains("(caught up from an earlier run)") == true, "\(second)")
        let primaryTimes = try bench.snapshotTimes(bench.primary, password: bench.primaryPassword)
        #expect(primaryTimes.count == 1)
        #expect(try bench.snapshotTimes(bench.second, password: bench.secondPassword) == primaryTimes)
        let status = try #require(try bench.status(now: PolicyCopyBench.night(1)).first, "status")
        #expect(status.lastSnapshot == made.snapshot)
        let copy = try #require(status.copies.first)
        #expect(copy.lagSeconds == 0 && !copy.lastCopyFailed, "\(copy)")
    }

    @Test("policy copies: each destination keeps its own retention (or the policy's) and prunes there; an append-only one is left alone")
    func destinationRetention() throws {
        let bench = try PolicyCopyBench("policy-copy-retention")
        let third = bench.box.path("third-site")
        let madeThird = try bench.box.kho(["init", "--append-only"], env: ["KHO_REPOSITORY": third, "KHO_PASSWORD": bench.secondPassword])
        try #require(madeThird.exitCode == 0, "\(madeThird)")
        try bench.writePolicy(copyPasswordFile: bench.secondPasswordFile, copyExtra: """
                retention:
                  keep-last: 2
                  prune: true
            """, moreCopies: """
              - path: \(third)
                password-file: \(bench.secondPasswordFile)
            """, policyExtra: """
            retention:
              keep-last: 3
            """)
        for n in 0..<4 {
            // Each night's data replaces the last one's, so forgetting old snapshots frees space.
            if n > 0 { try #require(unlink(bench.data + "/night-\(n - 1).bin") == 0) }
            try writeFile(bench.data + "/night-\(n).bin", randomBytes(300_000))
            let (ran, jobs) = try bench.night(n)
            try #require(ran.exitCode == 0, "an append-only destination does not fail the run: \(ran)")
            let job = try #require(jobs.first { $0.kind == "backup" }, "\(ran)")
            let lines = job.copies ?? []
            #expect(job.copiesFailed == 0 && lines.count == 2, "\(ran)")
            // Only that night's snapshot goes to the second site: what its retention forgot is not sent again.
            #expect(lines.first?.hasPrefix("copy to \(bench.second): snapshot ") == true, "\(lines)")
            if n >= 2 {
                #expect(lines.first?.contains("retention kept 2, removed 1, pruned") == true, "\(lines)")
            }
            #expect(lines.last?.hasPrefix("copy to \(third): snapshot ") == true, "\(lines)")
            #expect(lines.last?.contains("retention skipped (append-only)") == true, "\(lines)")
        }
        let primaryTimes = try bench.snapshotTimes(bench.primary, password: bench.primaryPassword)
        #expect(primaryTimes.count == 3, "the policy keeps 3")
        #expect(try bench.snapshotTimes(bench.second, password: bench.secondPassword) == Array(primaryTimes.suffix(2)), "the second site keeps 2")
        #expect(try bench.snapshotTimes(third, password: bench.secondPassword).count == 4, "the append-only site keeps everything")
        let checked = try bench.onSecond(["check", "--read-data"])
        #expect(checked.exitCode == 0, "\(checked)")

        if ScratchSQLite.isAvailable {
            let retention = try bench.catalogRuns("retention")
            #expect(retention.filter { $0[2] == bench.second }.map { $0[0] } == Array(repeating: "success", count: 4), "\(retention)")
            #expect(retention.filter { $0[2] == bench.primary }.count == 4, "\(retention)")
            #expect(!retention.contains { $0[2] == third }, "\(retention)")
            let copies = try bench.catalogRuns("copy")
            #expect(copies.filter { $0[3].contains(bench.second) }.count == 4, "one copy a night to the second site: \(copies)")
        }
        let copies = try #require(try bench.status(now: PolicyCopyBench.night(3)).first?.copies)
        #expect(copies.map(\.destination) == [bench.second, third])
        #expect(copies.allSatisfy { $0.lagSeconds == 0 && !$0.lastCopyFailed }, "\(copies)")
    }
}
