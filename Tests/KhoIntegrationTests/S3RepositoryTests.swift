import Foundation
import KhoTestSupport
import Glibc
import Testing

// The kho binary against an S3 repository on moto's S3 server (started by
// scripts/lib/s3-test-server.py, with signature checks on), sometimes behind a TCP proxy that the
// test kills, restarts or slows down. moto keeps its objects in memory, so "the S3 server is
// killed" is played by the proxy in front of it: from kho's side the connections are cut and new
// ones refused, exactly as when the server dies; when the proxy comes back, the server is back
// with the objects it had, as a real S3 server with disks would be.

/// moto's S3 server with a bucket `kho-it` and a key allowed every S3 action.
final class S3Server: @unchecked Sendable {
    static let bucket = "kho-it"
    private let moto: MotoServer
    var folder: String { moto.folder }
    var port: Int { moto.port }
    var keyID: String { moto.keys["kho"]!.id }
    var secret: String { moto.keys["kho"]!.secret }

    init() throws {
        moto = try MotoServer(buckets: [S3Server.bucket])
    }

    deinit { moto.stop() }

    /// The environment that points kho at `prefix` in the bucket, through `port` (a proxy) or directly.
    func environment(prefix: String, port: Int? = nil, _ extra: [String: String?] = [:]) -> [String: String?] {
        var env: [String: String?] = [
            "KHO_REPOSITORY": "s3:http://127.0.0.1:\(port ?? self.port)/\(S3Server.bucket)/\(prefix)",
            "AWS_ACCESS_KEY_ID": keyID, "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_SESSION_TOKEN": nil, "AWS_PROFILE": nil, "AWS_DEFAULT_REGION": nil, "AWS_REGION": nil,
        ]
        for (key, value) in extra { env[key] = value }
        return env
    }

    /// Deletes the first object under `prefix` with another S3 client; returns its key.
    func deleteFirstObject(under prefix: String) throws -> String {
        let result = try ServerSupport.run("/usr/bin/env", ["python3", S3TestSupport.helper, "delete", "--port", String(port), "--key-id", keyID,
                                                            "--secret", secret, "--bucket", S3Server.bucket, "--prefix", prefix],
                                           scratch: folder)
        guard result.succeeded else { throw HarnessError("deleting under \(prefix) failed: \(result.stderr)") }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

@Suite(.serialized, .enabled(if: S3TestSupport.unavailableReason == nil, Comment(rawValue: S3TestSupport.unavailableReason ?? "")))
struct S3RepositoryTests {
    @Test("an S3 repository: init, backup, restore byte-identical, check --read-data, forget --prune")
    func roundTrip() throws {
        let server = try S3Server()
        let sandbox = try Sandbox("s3")
        let env = server.environment(prefix: "agency/round-trip")
        let data = sandbox.path("data")
        try makeDirectories(data + "/scans/2026")
        try writeFile(data + "/scans/2026/ho-so-001.pdf", randomBytes(3 << 20))
        try writeFile(data + "/scans/2026/ho-so-002.pdf", randomBytes(700_000))
        try writeFile(data + "/dump.sql", dumpText(5 << 20, seed: 7))
        try writeFile(data + "/empty", [])
        symlink("scans/2026/ho-so-001.pdf", data + "/link")

        let created = try sandbox.kho(["init"], env: env)
        try #require(created.exitCode == 0, "\(created)")
        #expect(created.out.contains("s3:http://127.0.0.1:\(server.port)/kho-it/agency/round-trip"))
        let again = try sandbox.kho(["init"], env: env)
        #expect(again.exitCode == 2 && again.err.contains("is not empty"), "\(again)")

        let first = try sandbox.kho(["backup", data, "--json"], env: env)
        try #require(first.exitCode == 0, "\(first)")
        try writeFile(data + "/scans/2026/ho-so-003.pdf", randomBytes(400_000))
        let second = try sandbox.kho(["backup", data, "--connections", "2"], env: env)
        try #require(second.exitCode == 0, "\(second)")

        let target = sandbox.path("restored")
        let restored = try sandbox.kho(["restore", "latest", "--target", target, "--yes"], env: env)
        try #require(restored.exitCode == 0, "\(restored)")
        let differences = try Manifest.of(target + data).differences(from: Manifest.of(data))
        #expect(differences.isEmpty, "\(differences)")

        let checked = try sandbox.kho(["check", "--read-data"], env: env)
        #expect(checked.exitCode == 0 && checked.all.contains("no errors found"), "\(checked)")

        let forgot = try sandbox.kho(["forget", "--keep-last", "1", "--prune"], env: env)
        #expect(forgot.exitCode == 0, "\(forgot)")
        let snapshots = try sandbox.kho(["snapshots", "--json"], env: env)
        #expect((try? snapshots.json() as? [[String: Any]])?.count == 1, "\(snapshots)")
        let checkedAgain = try sandbox.kho(["check", "--read-data"], env: env)
        #expect(checkedAgain.exitCode == 0, "\(checkedAgain)")
    }

    @Test("wrong credentials and a missing bucket are reported at once, in one sentence")
    func refusedAndMissing() throws {
        let server = try S3Server()
        let sandbox = try Sandbox("s3-refused")
        let started = Date()
        let wrong = try sandbox.kho(["init"], env: server.environment(prefix: "x", ["AWS_SECRET_ACCESS_KEY": "wrong"]))
        #expect(wrong.exitCode == 1, "\(wrong)")
        #expect(wrong.err.contains("refused the credentials") && wrong.err.contains("AWS_SECRET_ACCESS_KEY"), "\(wrong)")
        let unknown = try sandbox.kho(["snapshots"], env: server.environment(prefix: "x", ["AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000"]))
        #expect(unknown.exitCode == 1 && unknown.err.contains("does not know the access key AKIAUNKNOWNKEY000000"), "\(unknown)")
        var missingBucket = server.environment(prefix: "x")
        missingBucket["KHO_REPOSITORY"] = "s3:http://127.0.0.1:\(server.port)/kho-no-bucket/x"
        let missing = try sandbox.kho(["init"], env: missingBucket)
        #expect(missing.exitCode == 1 && missing.err.contains("bucket kho-no-bucket does not exist"), "\(missing)")
        let noCredentials = try sandbox.kho(["snapshots"], env: server.environment(prefix: "x", ["AWS_ACCESS_KEY_ID": nil, "AWS_SECRET_ACCESS_KEY": nil,
                                                                                                   "HOME": sandbox.dir]))
        #expect(noCredentials.exitCode == 2 && noCredentials.err.contains("No S3 credentials"), "\(noCredentials)")
        #expect(Date().timeIntervalSince(started) < 20, "nothing here is worth trying again")
        // The credentials file works as well as the variables.
        try makeDirectories(sandbox.path(".aws"))
        try writeFile(sandbox.path(".aws/credentials"), Array("[default]\naws_access_key_id = \(server.keyID)\naws_secret_access_key = \(server.secret)\n".utf8))
        let fromFile = try sandbox.kho(["init"], env: server.environment(prefix: "from-file", ["AWS_ACCESS_KEY_ID": nil, "AWS_SECRET_ACCESS_KEY": nil,
                                                                                                "HOME": sandbox.dir]))
        #expect(fromFile.exitCode == 0, "\(fromFile)")
    }

    @Test("the S3 server dies in the middle of a backup: the backup fails cleanly, the next one succeeds, check --read-data passes")
    func serverKilledDuringBackup() throws {
        let server = try S3Server()
        let sandbox = try Sandbox("s3-killed")
        let proxy = try TCPProxy(target: server.port)
        let env = server.environment(prefix: "killed", port: proxy.port, ["KHO_S3_RETRIES": "2", "KHO_S3_TIMEOUT": "5"])
        try #require(try sandbox.kho(["init"], env: env).exitCode == 0)
        let data = sandbox.path("data")
        try makeDirectories(data)
        for i in 0..<6 { try writeFile(data + "/part-\(i).bin", randomBytes(8 << 20)) }

        // The proxy dies after about 20 MB went through: packs are being uploaded.
        proxy.kill()
        try proxy.start(exitAfterBytes: 20 << 20)
        let failed = try sandbox.kho(["backup", data], env: env)
        #expect(!proxy.isRunning, "the server died during the backup")
        #expect(failed.exitCode == 1, "\(failed)")
        #expect(failed.err.contains("did not answer") && failed.err.contains("127.0.0.1:\(proxy.port)"), "\(failed)")
        #expect(failed.err.split(separator: "\n").count <= 3, "one clear message, not a flood: \(failed)")

        // Back with what it had; no snapshot was recorded, and the next backup works.
        try proxy.start()
        let none = try sandbox.kho(["snapshots", "--json"], env: env)
        #expect(none.exitCode == 0 && (try? none.json() as? [Any])?.count == 0, "\(none)")
        let retried = try sandbox.kho(["backup", data], env: env)
        #expect(retried.exitCode == 0, "\(retried)")
        let checked = try sandbox.kho(["check", "--read-data"], env: env)
        #expect(checked.exitCode == 0 && checked.all.contains("no errors found"), "\(checked)")
        let target = sandbox.path("restored")
        let restored = try sandbox.kho(["restore", "latest", "--target", target, "--yes"], env: env)
        #expect(restored.exitCode == 0, "\(restored)")
        #expect(try Manifest.of(target + data).differences(from: Manifest.of(data)).isEmpty)
    }

    @Test("a slow S3 server: requests time out, are tried again and the backup succeeds")
    func slowServer() throws {
        let server = try S3Server()
        let sandbox = try Sandbox("s3-slow")
        let direct = server.environment(prefix: "slow")
        try #require(try sandbox.kho(["init"], env: direct).exitCode == 0)
        let data = sandbox.path("data")
        try makeDirectories(data)
        try writeFile(data + "/a.bin", randomBytes(2 << 20))
        // The first three connections get no answer for a minute; a request gives up after 2 s.
        let proxy = try TCPProxy(target: server.port, stallFirst: 3, stallSeconds: 60)
        let env = server.environment(prefix: "slow", port: proxy.port, ["KHO_S3_TIMEOUT": "2", "KHO_S3_RETRIES": "5"])
        let started = Date()
        let backup = try sandbox.kho(["backup", data], env: env)
        let elapsed = Date().timeIntervalSince(started)
        #expect(backup.exitCode == 0, "\(backup)")
        #expect(elapsed >= 2, "at least one request timed out first (took \(elapsed) s)")
        #expect(elapsed < 60, "took \(elapsed) s")
        // Too slow for every attempt: a clear failure naming the timeout, not a hang.
        let stuck = try TCPProxy(target: server.port, stallFirst: 1000, stallSeconds: 120)
        let failed = try sandbox.kho(["snapshots"], env: server.environment(prefix: "slow", port: stuck.port, ["KHO_S3_TIMEOUT": "1", "KHO_S3_RETRIES": "1"]))
        #expect(failed.exitCode == 1 && failed.err.contains("timed out"), "\(failed)")
    }

    @Test("a pack deleted behind kho's back: check names it and the snapshot it affects")
    func packDeletedBehindOurBack() throws {
        let server = try S3Server()
        let sandbox = try Sandbox("s3-deleted")
        let env = server.environment(prefix: "deleted")
        try #require(try sandbox.kho(["init"], env: env).exitCode == 0)
        let data = sandbox.path("data")
        try makeDirectories(data)
        try writeFile(data + "/a.bin", randomBytes(1 << 20))
        let backup = try sandbox.kho(["backup", data, "--json"], env: env)
        try #require(backup.exitCode == 0, "\(backup)")
        let snapshotID = try #require(((try? backup.json()) as? [String: Any])?["snapshot"] as? String, "\(backup)")
        let key = try server.deleteFirstObject(under: "deleted/data/")
        let pack = String(key.split(separator: "/").last!)
        let checked = try sandbox.kho(["check"], env: env)
        #expect(checked.exitCode == 12, "\(checked)")
        #expect(checked.all.contains(String(pack.prefix(8))), "check names the pack \(pack): \(checked)")
        #expect(checked.all.contains(String(snapshotID.prefix(8))), "check names the snapshot \(snapshotID): \(checked)")
    }

    @Test("kho copy from a local repository to an S3 repository (the offsite copy), restorable from there")
    func copyToS3() throws {
        let server = try S3Server()
        let sandbox = try Sandbox("s3-copy")
        try sandbox.initRepository()
        let data = sandbox.path("data")
        try makeDirectories(data)
        try writeFile(data + "/a.bin", randomBytes(3 << 20))
        try writeFile(data + "/dump.sql", dumpText(2 << 20, seed: 3))
        try sandbox.ok("backup", data)
        var env = server.environment(prefix: "offsite")
        env["KHO_FROM_PASSWORD"] = sandbox.password
        let created = try sandbox.kho(["init", "--copy-chunker-params-from", sandbox.repo], env: env)
        try #require(created.exitCode == 0, "\(created)")
        let copied = try sandbox.kho(["copy", "--from-repo", sandbox.repo], env: env)
        try #require(copied.exitCode == 0, "\(copied)")
        #expect(copied.out.contains("1 snapshots copied"), "\(copied)")
        let target = sandbox.path("restored")
        let restored = try sandbox.kho(["restore", "latest", "--target", target], env: env)
        #expect(restored.exitCode == 0, "\(restored)")
        #expect(try Manifest.of(target + data).differences(from: Manifest.of(data)).isEmpty)
        let checked = try sandbox.kho(["check", "--read-data"], env: env)
        #expect(checked.exitCode == 0, "\(checked)")
    }

    @Test("kho run backs a policy up into an S3 repository")
    func policyRun() throws {
        let server = try S3Server()
        let sandbox = try Sandbox("s3-policy")
        let env = server.environment(prefix: "policy")
        try #require(try sandbox.kho(["init"], env: env).exitCode == 0)
        let passwordFile = sandbox.path("repository.pass")
        try writeFile(passwordFile, Array((sandbox.password + "\n").utf8), mode: 0o600)
        let data = sandbox.path("ho-so")
        try makeDirectories(data)
        try writeFile(data + "/a.pdf", randomBytes(300_000))
        let policies = sandbox.path("policies")
        try makeDirectories(policies)
        let repository = env["KHO_REPOSITORY"]!!
        try writeFile(policies + "/ho-so.yaml", Array("""
            name: ho-so-s3
            agency: Trung tâm Phục vụ hành chính công
            system: Hồ sơ (kiểm thử S3)
            security-level: 3
            schedule: "0 1 * * *"
            repository:
              path: \(repository)
              password-file: \(passwordFile)
            sources:
              - name: ho-so
                kind: files
                paths: [\(data)]
            retention:
              keep-daily: 7
            objectives:
              rpo: 24h
              rto: 2h

            """.utf8))
        let run = try sandbox.kho(["run", "--json", "--policies", policies, "--state-dir", sandbox.path("state")], env: env)
        #expect(run.exitCode == 0, "\(run)")
        let snapshots = try sandbox.kho(["snapshots", "--json"], env: env)
        #expect((try? snapshots.json() as? [[String: Any]])?.count == 1, "\(snapshots)")
        let rebuilt = try sandbox.kho(["catalog", "rebuild", "--policies", policies, "--state-dir", sandbox.path("state2")], env: env)
        #expect(rebuilt.exitCode == 0 && rebuilt.out.contains("1 backups recovered"), "\(rebuilt)")
    }
}
