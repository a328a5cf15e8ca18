import Foundation
import KhoTestSupport
import Glibc
import Testing

/// `kho copy` between repositories with different keys, and append-only repositories.
@Suite struct CopyTests {
    /// The JSON summary of `kho copy --json`.
    struct Summary: Decodable {
        struct Item: Decodable { var source: String; var target: String }
        var copied: [Item]
        var alreadyThere: [String]
        var blobsRead: Int
        var blobsNew: Int
        var bytesAdded: Int64
        var blobsVerified: Int
    }

    @Test("copy: only the snapshots the target lacks, only the data it lacks, re-encrypted, read back, restorable")
    func copyBetweenRepositories() throws {
        let sandbox = try Sandbox("copy")
        let source = sandbox.repo
        let target = sandbox.path("second-site")
        try sandbox.initRepository()
        let data = sandbox.path("data")
        try makeDirectories(data + "/ho-so")
        try writeFile(data + "/ho-so/a.pdf", randomBytes(2 << 20))
        try writeFile(data + "/dump.sql", dumpText(3 << 20, seed: 11))
        symlink("ho-so/a.pdf", data + "/link")
        try sandbox.ok("backup", data, "--tag", "dem-1")
        try writeFile(data + "/ho-so/b.pdf", randomBytes(500_000))
        try sandbox.ok("backup", data, "--tag", "dem-2")

        // The second site has a password of its own and cuts data like the first.
        let targetEnv: [String: String?] = ["KHO_REPOSITORY": target, "KHO_PASSWORD": "mat khau thu hai", "KHO_FROM_PASSWORD": sandbox.password]
        let created = try sandbox.kho(["init", "--copy-chunker-params-from", source], env: targetEnv)
        try #require(created.exitCode == 0, "\(created)")

        let first = try sandbox.kho(["copy", "--from-repo", source, "--json"], env: targetEnv)
        try #require(first.exitCode == 0, "\(first)")
        let summary = try first.decode(Summary.self)
        #expect(summary.copied.count == 2)
        #expect(summary.blobsVerified >= summary.blobsNew && summary.blobsNew > 0, "\(first)")
        // Nothing of the source's is stored as it was: other keys, other names.
        let sourcePacks = Set(try sandbox.repositoryFiles("data").keys.map { URL(fileURLWithPath: $0).lastPathComponent })
        let targetSandboxPacks = try FileManager.default.subpathsOfDirectory(atPath: target + "/data").map { URL(fileURLWithPath: $0).lastPathComponent }
        #expect(sourcePacks.isDisjoint(with: targetSandboxPacks))

        let again = try sandbox.kho(["copy", "--from-repo", source], env: targetEnv)
        #expect(again.exitCode == 0 && again.out.contains("nothing to copy"), "\(again)")

        // One more backup: the next copy takes only it, and only its new data is added.
        try writeFile(data + "/ho-so/c.pdf", randomBytes(300_000))
        try sandbox.ok("backup", data, "--tag", "dem-3")
        let third = try sandbox.kho(["copy", "--from-repo", source, "--json"], env: targetEnv)
        try #require(third.exitCode == 0, "\(third)")
        let incremental = try third.decode(Summary.self)
        #expect(incremental.copied.count == 1 && incremental.alreadyThere.count == 2, "\(third)")
        #expect(incremental.bytesAdded < 600_000, "only c.pdf and the trees are new: \(third)")

        // The target stands on its own: check reads every pack, a restore is byte-identical.
        let checked = try sandbox.kho(["check", "--read-data"], env: targetEnv)
        #expect(checked.exitCode == 0 && checked.all.contains("no errors found"), "\(checked)")
        let restoreTarget = sandbox.path("restored")
        let restored = try sandbox.kho(["restore", "latest", "--target", restoreTarget], env: targetEnv)
        try #require(restored.exitCode == 0, "\(restored)")
        #expect(try Manifest.of(restoreTarget + data).differences(from: Manifest.of(data)).isEmpty)
        let listed = try sandbox.kho(["snapshots", "--json"], env: targetEnv)
        let tags = ((try? listed.json() as? [[String: Any]]) ?? []).compactMap { ($0["tags"] as? [String])?.first }
        #expect(tags == ["dem-1", "dem-2", "dem-3"], "\(listed)")

        // Same chunker: a backup of the same folder straight into the target adds almost nothing.
        let direct = try sandbox.kho(["backup", data, "--json"], env: targetEnv)
        try #require(direct.exitCode == 0, "\(direct)")
        let added = (((try? direct.json()) as? [String: Any])?["summary"] as? [String: Any])?["bytesAdded"] as? Int
        #expect((added ?? .max) < 50_000, "\(direct)")
    }

    @Test("copy: chosen snapshots only; refusals for the same repository and a wrong source password")
    func copyChoicesAndRefusals() throws {
        let sandbox = try Sandbox("copy-choice")
        try sandbox.initRepository()
        let data = sandbox.path("data")
        try makeDirectories(data)
        try writeFile(data + "/a", randomBytes(100_000))
        let first = try sandbox.ok("backup", data, "--json")
        let firstID = try #require(((try? first.json()) as? [String: Any])?["snapshot"] as? String)
        try writeFile(data + "/b", randomBytes(100_000))
        try sandbox.ok("backup", data)
        let target = sandbox.path("b")
        let env: [String: String?] = ["KHO_REPOSITORY": target, "KHO_FROM_PASSWORD": sandbox.password]
        try #require(try sandbox.kho(["init"], env: env).exitCode == 0)
        let one = try sandbox.kho(["copy", "--from-repo", sandbox.repo, String(firstID.prefix(8)), "--json"], env: env)
        try #require(one.exitCode == 0, "\(one)")
        #expect(try one.decode(Summary.self).copied.map(\.source) == [firstID])

        let same = try sandbox.kho(["copy", "--from-repo", target], env: env)
        #expect(same.exitCode == 2, "\(same)")
        let wrong = try sandbox.kho(["copy", "--from-repo", sandbox.repo], env: env.merging(["KHO_FROM_PASSWORD": "wrong"]) { $1 })
        #expect(wrong.exitCode == 11, "\(wrong)")
        let noLocks = try FileManager.default.contentsOfDirectory(atPath: target + "/locks").filter { !$0.hasPrefix(".") }
        #expect(noLocks.isEmpty, "copy leaves no lock behind: \(noLocks)")
    }

    @Test("append-only: backups go in, forget and prune refuse with exit 1, dry runs still show the plan")
    func appendOnly() throws {
        let sandbox = try Sandbox("append-only")
        let created = try sandbox.kho("init", "--append-only")
        try #require(created.exitCode == 0, "\(created)")
        #expect(created.out.contains("append-only"))
        let data = sandbox.path("data")
        try makeDirectories(data)
        try writeFile(data + "/a", randomBytes(100_000))
        try sandbox.ok("backup", data)
        try writeFile(data + "/a", randomBytes(100_000))
        try sandbox.ok("backup", data)

        let forget = try sandbox.kho("forget", "--keep-last", "1")
        #expect(forget.exitCode == 1 && forget.err.contains("append-only"), "\(forget)")
        let forgetPrune = try sandbox.kho("forget", "--keep-last", "1", "--prune")
        #expect(forgetPrune.exitCode == 1, "\(forgetPrune)")
        let prune = try sandbox.kho("prune")
        #expect(prune.exitCode == 1 && prune.err.contains("append-only") && prune.err.contains("prune"), "\(prune)")
        #expect(try sandbox.snapshots().count == 2)
        #expect(try sandbox.kho("forget", "--keep-last", "1", "--dry-run").exitCode == 0)
        #expect(try sandbox.kho("prune", "--dry-run").exitCode == 0)
        let checked = try sandbox.kho("check")
        #expect(checked.exitCode == 0, "\(checked)")
        // The flag is in the config for everyone to see.
        let config = try String(contentsOfFile: sandbox.repo + "/config", encoding: .utf8)
        #expect(config.contains("\"appendOnly\" : true"), "\(config)")
    }
}
