import Foundation
import KhoTestSupport
import Testing

// S3 Object Lock against moto's S3 server: `kho init --object-lock-days`, forget and prune that
// leave locked files and say until when, deletes by an attacker holding kho's key refused by the
// server, and prune extending the lock of data still in use. scripts/lib/s3-object-lock.py makes
// buckets, plays the attacker and plays the passing of time (moto, unlike real S3, lets a lock be
// shortened).

@Suite(.serialized, .enabled(if: S3TestSupport.unavailableReason == nil, Comment(rawValue: S3TestSupport.unavailableReason ?? "")))
struct ObjectLockTests {
    static let script = Harness.packageRoot + "/scripts/lib/s3-object-lock.py"

    private func lockTool(_ server: S3Server, _ command: String, bucket: String, _ extra: [String] = []) throws -> String {
        let result = try ServerSupport.run("/usr/bin/env", ["python3", Self.script, command, "--port", String(server.port),
                                                            "--key-id", server.keyID, "--secret", server.secret, "--bucket", bucket] + extra,
                                           scratch: server.folder)
        guard result.succeeded else { throw HarnessError("s3-object-lock.py \(command) failed: \(result.stderr)") }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private struct Attack: Decodable {
        var versions: Int
        var deleted: [String]
        var refused: Int
        /// Deleted files other than the lock files of a command that refreshed its lock (an older
        /// version stays when a lock file is rewritten); locks are written unlocked on purpose.
        var deletedData: [String] { deleted.filter { !$0.contains("/locks/") } }
    }

    private func attack(_ server: S3Server, bucket: String, prefix: String) throws -> Attack {
        try JSONDecoder().decode(Attack.self, from: Data(try lockTool(server, "attack", bucket: bucket, ["--prefix", prefix]).utf8))
    }

    private func environment(_ server: S3Server, bucket: String, prefix: String) -> [String: String?] {
        var env = server.environment(prefix: prefix)
        env["KHO_REPOSITORY"] = "s3:http://127.0.0.1:\(server.port)/\(bucket)/\(prefix)"
        return env
    }

    /// The day a lock of `days` set now ends, as kho writes it (UTC), for now and a minute later.
    private func lockDays(_ days: Int) -> [String] {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd"
        let now = Date().addingTimeInterval(Double(days) * 86400)
        return [formatter.string(from: now), formatter.string(from: now.addingTimeInterval(60))]
    }

    @Test("--object-lock-days needs an S3 bucket made with object lock, and writes nothing when refused")
    func refusals() throws {
        let server = try S3Server()
        let sandbox = try Sandbox("lock-refuse")
        let env = server.environment(prefix: "agency/no-lock")

        let unlocked = try sandbox.kho(["init", "--object-lock-days", "30"], env: env)
        #expect(unlocked.exitCode == 2, "\(unlocked)")
        #expect(unlocked.err.contains("Bucket kho-it") && unlocked.err.contains("has no object lock")
                && unlocked.err.contains("--object-lock-enabled-for-bucket") && unlocked.err.contains("leave out --object-lock-days"), "\(unlocked)")
        // Nothing was written: a plain init in the same place works.
        let plain = try sandbox.kho(["init"], env: env)
        #expect(plain.exitCode == 0, "\(plain)")

        let folder = try sandbox.kho(["init", "--object-lock-days", "30"], env: ["KHO_REPOSITORY": sandbox.path("local")])
        #expect(folder.exitCode == 2 && folder.err.contains("cannot lock files") && folder.err.contains("leave out --object-lock-days"), "\(folder)")

        _ = try lockTool(server, "bucket", bucket: "kho-locked", ["--lock"])
        let tooLong = try sandbox.kho(["init", "--object-lock-days", "0"], env: environment(server, bucket: "kho-locked", prefix: "zero"))
        #expect(tooLong.exitCode == 2 && tooLong.err.contains("--object-lock-days 0 is out of range"), "\(tooLong)")
    }

    @Test("locked files survive forget, prune and an attacker's deletes; after the lock ends prune frees them and re-locks what is used")
    func lifecycle() throws {
        let server = try S3Server()
        let sandbox = try Sandbox("lock")
        let bucket = "kho-worm"
        let prefix = "agency/locked"
        _ = try lockTool(server, "bucket", bucket: bucket, ["--lock"])
        let env = environment(server, bucket: bucket, prefix: prefix)

        let created = try sandbox.kho(["init", "--object-lock-days", "30"], env: env)
        try #require(created.exitCode == 0, "\(created)")
        #expect(created.out.contains("object lock: every file locked for 30 days, compliance mode"), "\(created)")

        let data = sandbox.path("data")
        try makeDirectories(data)
        try writeFile(data + "/old-scan.pdf", randomBytes(3 << 20))
        try writeFile(data + "/register.sql", dumpText(1 << 20, seed: 3))
        let first = try sandbox.kho(["backup", data, "--json"], env: env)
        try #require(first.exitCode == 0, "\(first)")
        let firstID = try #require((try first.json() as? [String: Any])?["snapshot"] as? String, "\(first)")
        try removeTree(data + "/old-scan.pdf")
        try writeFile(data + "/new-scan.pdf", randomBytes(2 << 20))
        let second = try sandbox.kho(["backup", data], env: env)
        try #require(second.exitCode == 0, "\(second)")

        // Named explicitly: refused, with the date, exit 1.
        let named = try sandbox.kho(["forget", String(firstID.prefix(8))], env: env)
        #expect(named.exitCode == 1, "\(named)")
        #expect(named.err.contains("Snapshot \(firstID.prefix(8)) is locked by S3 Object Lock until"), "\(named)")
        #expect(lockDays(30).contains { named.err.contains($0) }, "\(named)")
        #expect(named.err.contains("run forget again after"), "\(named)")
        // By rules: kept with a warning, not a failure.
        let ruled = try sandbox.kho(["forget", "--keep-last", "1", "--prune"], env: env)
        #expect(ruled.exitCode == 0 && ruled.err.contains("is locked by S3 Object Lock until"), "\(ruled)")
        let listed = try sandbox.kho(["snapshots", "--json"], env: env)
        #expect((try? listed.json() as? [[String: Any]])?.count == 2, "\(listed)")

        // A key file is locked too: adding one works, removing one is refused with its date.
        var withNewPassword = env
        withNewPassword["KHO_NEW_PASSWORD"] = "mật khẩu thứ hai"
        let added = try sandbox.kho(["key", "add", "--label", "second operator"], env: withNewPassword)
        try #require(added.exitCode == 0, "\(added)")
        let keys = try sandbox.kho(["key", "list", "--json"], env: env)
        let other = try #require(((try? keys.json() as? [[String: Any]]) ?? []).first { ($0["current"] as? Bool) == false }?["id"] as? String, "\(keys)")
        let removed = try sandbox.kho(["key", "remove", other], env: env)
        #expect(removed.exitCode == 1 && removed.err.contains("Key \(other.prefix(8)) is locked by S3 Object Lock until")
                && lockDays(30).contains { removed.err.contains($0) }, "\(removed)")

        // Ransomware with kho's own key: every version delete is refused by the server.
        let attacked = try attack(server, bucket: bucket, prefix: prefix)
        #expect(attacked.versions > 5 && attacked.deletedData.isEmpty && attacked.refused == attacked.versions - attacked.deleted.count, "\(attacked)")
        let checked = try sandbox.kho(["check", "--read-data"], env: env)
        #expect(checked.exitCode == 0 && checked.all.contains("no errors found"), "\(checked)")

        // Thirty days later (played by moto): forget and prune remove the first snapshot and its
        // data, and lock again for thirty days what the second snapshot still uses.
        let aged = try lockTool(server, "age", bucket: bucket, ["--prefix", prefix])
        #expect((Int(aged) ?? 0) == attacked.refused, "aged \(aged)")
        let pruned = try sandbox.kho(["forget", "--keep-last", "1", "--prune"], env: env)
        #expect(pruned.exitCode == 0 && pruned.out.contains("removed 1 snapshots"), "\(pruned)")
        #expect(pruned.out.contains("extended the object lock of"), "\(pruned)")
        let left = try sandbox.kho(["snapshots", "--json"], env: env)
        #expect((try? left.json() as? [[String: Any]])?.count == 1, "\(left)")

        let afterPrune = try sandbox.kho(["check", "--read-data"], env: env)
        #expect(afterPrune.exitCode == 0 && afterPrune.all.contains("no errors found"), "\(afterPrune)")
        let target = sandbox.path("restored")
        let restored = try sandbox.kho(["restore", "latest", "--target", target, "--yes"], env: env)
        try #require(restored.exitCode == 0, "\(restored)")
        #expect(try Manifest.of(target + data).differences(from: Manifest.of(data)).isEmpty)

        // What is left is all locked again: the attacker still removes nothing, and the removed
        // snapshot's data is really gone (no old version kept behind a delete marker).
        let again = try attack(server, bucket: bucket, prefix: prefix)
        #expect(again.deletedData.isEmpty && again.refused == again.versions - again.deleted.count && again.refused < attacked.refused,
                "\(again) after \(attacked)")
    }

    @Test("kho run's retention on an object-locked repository: locked snapshots stay and are reported; once the lock ends they go and prune re-locks what is used")
    func policyRetention() throws {
        let server = try S3Server()
        let sandbox = try Sandbox("lock-policy")
        let bucket = "kho-worm-policy"
        let prefix = "registry"
        _ = try lockTool(server, "bucket", bucket: bucket, ["--lock"])
        let env = environment(server, bucket: bucket, prefix: prefix)
        try #require(try sandbox.kho(["init", "--object-lock-days", "10"], env: env).exitCode == 0)
        let passwordFile = sandbox.path("repository.pass")
        try writeFile(passwordFile, Array((sandbox.password + "\n").utf8), mode: 0o600)
        let data = sandbox.path("ho-tich")
        try makeDirectories(data)
        let policies = sandbox.path("policies")
        try makeDirectories(policies)
        try writeFile(policies + "/ho-tich.yaml", Array("""
            name: ho-tich-worm
            agency: Sở Tư pháp
            system: Hộ tịch (kiểm thử object lock)
            security-level: 3
            schedule: "0 1 * * *"
            repository:
              path: \(env["KHO_REPOSITORY"]!!)
              password-file: \(passwordFile)
            sources:
              - name: ho-tich
                kind: files
                paths: [\(data)]
            retention:
              keep-last: 1
              prune: true
            objectives:
              rpo: 24h
              rto: 2h

            """.utf8))
        func run(_ night: Int) throws -> [String: Any] {
            try writeFile(data + "/so-\(night).pdf", randomBytes(500_000))
            let result = try sandbox.kho(["run", "--all", "--json", "--policies", policies, "--state-dir", sandbox.path("state")], env: env)
            try #require(result.exitCode == 0, "\(result)")
            let jobs = try #require((try result.json() as? [String: Any])?["jobs"] as? [[String: Any]] ?? (try result.json() as? [[String: Any]]), "\(result)")
            return try #require(jobs.first { ($0["kind"] as? String ?? "backup") == "backup" }, "\(result)")
        }
        _ = try run(1)
        let second = try run(2)
        let kept = second["retention"] as? String ?? ""
        #expect(kept.contains("removed 0") && kept.contains("1 left under object lock until") && lockDays(10).contains { kept.contains($0) }, "\(second)")
        let listed = try sandbox.kho(["snapshots", "--json"], env: env)
        #expect((try? listed.json() as? [[String: Any]])?.count == 2, "\(listed)")

        _ = try lockTool(server, "age", bucket: bucket, ["--prefix", prefix])
        let third = try run(3)
        let freed = third["retention"] as? String ?? ""
        #expect(freed.contains("removed 2") && freed.contains("extended") && freed.contains("object locks"), "\(third)")
        let left = try sandbox.kho(["snapshots", "--json"], env: env)
        #expect((try? left.json() as? [[String: Any]])?.count == 1, "\(left)")
        let checked = try sandbox.kho(["check", "--read-data"], env: env)
        #expect(checked.exitCode == 0 && checked.all.contains("no errors found"), "\(checked)")
        let attacked = try attack(server, bucket: bucket, prefix: prefix)
        #expect(attacked.deletedData.isEmpty && attacked.refused > 0, "\(attacked)")
    }
}
