import Foundation
import Glibc
import Testing

// Policies with `copies:`: `kho run` copies each good backup to the listed repositories, the
// catalog records a copy run, `kho status` shows each copy's lag and a failed copy.
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

    func run(_ arguments: [String]) throws -> ProcessResult {
        try box.kho(arguments, env: ["KHO_PASSWORD": nil, "KHO_STATE_DIR": state, "KHO_POLICIES": policies])
    }

    /// kho with the second repository as the repository.
    func onSecond(_ arguments: [String]) throws -> ProcessResult {
        try box.kho(arguments, env: ["KHO_REPOSITORY": second, "KHO_PASSWORD": secondPassword])
    }

    func writePolicy(copyPasswordFile: String) throws {
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
            sources:
              - name: scans
                kind: files
                paths: [\(data)]
            objectives:
              rpo: 24h
              rto: 1h

            """
        try writeFile(policies + "/ban-sao.yaml", Array(text.utf8))
    }

    func status() throws -> [PolicyCopyStatus] {
        let result = try run(["status", "--json"])
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
}
