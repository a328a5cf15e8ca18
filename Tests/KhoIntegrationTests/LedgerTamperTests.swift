import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoTestSupport
import Testing

// Attacks on the evidence trail, driven through the `kho` binary: whoever can write the state
// folder (the audit ledger, its head, the catalog with drill evidence) but holds no repository
// password rewrites it, and `kho audit verify` must say so (exit 12). Also: a privileged command
// whose ledger entry cannot be written fails loudly instead of running unrecorded.

/// A repository (password in a file), a policy using it, a state folder and a folder of files.
private final class LedgerBench: @unchecked Sendable {
    let box: Sandbox
    var state: String { box.path("state") }
    var policies: String { box.path("policies") }
    var passwordFile: String { box.path("repository.pass") }
    var ledger: String { state + "/audit.log" }
    var data: String { box.path("data") }

    init(_ label: String) throws {
        box = try Sandbox(label)
        for folder in [state, policies, data] { try makeDirectories(folder) }
        try writeFile(passwordFile, Array("ledger bench password\n".utf8), mode: 0o600)
        try writeFile(data + "/ho-so.txt", dumpText(20_000, seed: 7))
        try writeFile(data + "/phieu.txt", Array("Phiếu\n".utf8))
        try ok(["init"])
        let policy = """
            name: evidence
            agency: Sở Thông tin và Truyền thông (kiểm thử)
            system: Sổ kiểm toán
            security-level: 3
            schedule: "0 2 * * *"
            repository:
              path: \(box.repo)
              password-file: \(passwordFile)
            sources:
              - name: files
                kind: files
                paths: [\(data)]
            objectives:
              rpo: 24h
              rto: 1h
            drills:
              every: 7d

            """
        try writeFile(policies + "/evidence.yaml", Array(policy.utf8))
    }

    func environment(_ extra: [String: String?] = [:]) -> [String: String?] {
        var env: [String: String?] = ["KHO_PASSWORD": nil, "KHO_PASSWORD_FILE": passwordFile, "KHO_STATE_DIR": state,
                                      "KHO_POLICIES": policies, "TMPDIR": box.dir]
        for (key, value) in extra { env[key] = value }
        return env
    }

    func run(_ arguments: [String], env extra: [String: String?] = [:]) throws -> ProcessResult {
        try box.kho(arguments, env: environment(extra))
    }

    @discardableResult
    func ok(_ arguments: [String], env extra: [String: String?] = [:], sourceLocation: SourceLocation = #_sourceLocation) throws -> ProcessResult {
        let result = try run(arguments, env: extra)
        try #require(result.exitCode == 0, "\(result)", sourceLocation: sourceLocation)
        return result
    }

    /// A backup, a restore, a second backup, forget of the first and prune: five entries or so.
    func privilegedHistory() throws {
        try ok(["run", "--all"])
        try ok(["restore", "latest", "--target", box.path("restored"), "--yes"])
        try writeFile(data + "/moi.txt", Array("mới\n".utf8))
        try ok(["backup", data])
        let listed = try ok(["snapshots", "--json"])
        let first = try #require((try listed.json() as? [[String: Any]])?.first?["id"] as? String, "\(listed)")
        try ok(["forget", first])
        try ok(["prune"])
    }

    var lines: [String] {
        get throws { String(decoding: try readFile(ledger), as: UTF8.self).split(separator: "\n").map(String.init) }
    }

    func verify() throws -> ProcessResult { try run(["audit", "verify"]) }
}

/// A ledger entry as JSON, each field as kho writes it (sorted keys), for rewriting.
private func entries(_ lines: [String]) throws -> [[String: Any]] {
    try lines.map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
}

private func encode(_ entry: [String: Any]) throws -> String {
    String(decoding: try JSONSerialization.data(withJSONObject: entry, options: [.sortedKeys, .withoutEscapingSlashes]), as: UTF8.self)
}

/// Rewrites entry `index` with `edit` and recomputes the chain from there with `rehash` (given the
/// entry's JSON with an empty hash), head file included: what someone who can write the state
/// folder does.
private func rewrite(_ bench: LedgerBench, at index: Int, dropKeys: Bool = false, _ edit: (inout [String: Any]) -> Void,
                     rehash: ([UInt8]) -> String) throws {
    let lines = try bench.lines
    var all = try entries(lines)
    // The attack is only fair when the JSON is re-encoded exactly as kho encodes it.
    try #require(try encode(all[0]) == lines[0], "re-encoding differs from kho's: \(lines[0])")
    edit(&all[index])
    var previous = dropKeys ? "" : (all[index - 1]["hash"] as? String ?? "")
    for i in (dropKeys ? 0 : index)..<all.count {
        if dropKeys { all[i].removeValue(forKey: "key") }
        all[i]["previous"] = previous
        all[i]["hash"] = ""
        let hash = rehash(Array(try encode(all[i]).utf8))
        all[i]["hash"] = hash
        previous = hash
    }
    try writeFile(bench.ledger, Array((try all.map(encode).joined(separator: "\n") + "\n").utf8), mode: 0o600)
    try writeFile(bench.ledger + ".head", Array("\(all.count) \(previous)\n".utf8), mode: 0o600)
}

@Suite("the evidence trail cannot be rewritten", .serialized)
struct LedgerTamperTests {
    @Test("a ledger entry rewritten with its chain recomputed (plain SHA-256, the legacy form, or another key) is detected")
    func rewrittenChain() throws {
        let bench = try LedgerBench("ledger-rewrite")
        try bench.privilegedHistory()
        let intact = try bench.verify()
        try #require(intact.exitCode == 0 && intact.out.contains("chain intact"), "\(intact)")
        let original = try readFile(bench.ledger)
        let originalHead = try readFile(bench.ledger + ".head")
        let restoreIndex = try #require(try bench.lines.firstIndex { $0.contains("\"command\":\"restore\"") })
        try #require(restoreIndex > 0)
        func restoreOriginal() throws {
            try writeFile(bench.ledger, original, mode: 0o600)
            try writeFile(bench.ledger + ".head", originalHead, mode: 0o600)
        }
        // The restore is made to look like a failure, and the chain recomputed as kho used to.
        let hide: (inout [String: Any]) -> Void = { $0["outcome"] = "exit 1: nothing restored" }
        try rewrite(bench, at: restoreIndex, hide) { try! SHA256.hash($0).hex }
        var result = try bench.verify()
        #expect(result.exitCode == 12 && result.out.contains("was changed after it was written"), "plain SHA-256 recomputed: \(result)")

        // The whole ledger in the old unkeyed form: the repository's anchor disagrees.
        try restoreOriginal()
        try rewrite(bench, at: restoreIndex, dropKeys: true, hide) { try! SHA256.hash($0).hex }
        result = try bench.verify()
        #expect(result.exitCode == 12 && result.out.contains("the ledger was rewritten"), "rewritten in the legacy form: \(result)")

        // Recomputed with a key of the attacker's own.
        try restoreOriginal()
        let wrong = try DerivedKey(master: try MasterKey.random(), repositoryID: "x", label: DerivedKey.ledgerLabel)
        try rewrite(bench, at: restoreIndex, hide) { try! wrong.mac($0) }
        result = try bench.verify()
        #expect(result.exitCode == 12 && result.out.contains("keyed hash does not match"), "recomputed with another key: \(result)")

        try restoreOriginal()
        result = try bench.verify()
        #expect(result.exitCode == 0, "the original ledger again: \(result)")
    }

    @Test("entries cut off the end, with the head beside the ledger rewritten to match, are detected through the repository's anchor")
    func truncatedWithHead() throws {
        let bench = try LedgerBench("ledger-truncate")
        try bench.privilegedHistory()
        let lines = try bench.lines
        try #require(lines.count >= 4)
        let kept = Array(lines.dropLast(2))
        let last = try #require(try entries(kept).last)
        try writeFile(bench.ledger, Array((kept.joined(separator: "\n") + "\n").utf8), mode: 0o600)
        try writeFile(bench.ledger + ".head", Array("\(kept.count) \(last["hash"] as? String ?? "")\n".utf8), mode: 0o600)
        let result = try bench.verify()
        #expect(result.exitCode == 12 && result.out.contains("the ledger ends at entry \(kept.count) but the repository at"), "\(result)")

        // A removed ledger (and head) likewise; the next privileged command records the cut.
        unlink(bench.ledger)
        unlink(bench.ledger + ".head")
        let removed = try bench.verify()
        #expect(removed.exitCode == 12 && removed.out.contains("the ledger ends at entry 0 but the repository at"), "\(removed)")
        try bench.ok(["restore", "latest", "--target", bench.box.path("restored-again"), "--yes"])
        let after = try bench.ok(["audit", "log", "--json"])
        #expect(after.out.contains("ledger-truncated") && after.out.contains("recorded entry \(lines.count)"), "\(after)")
    }

    @Test("drill evidence edited in the catalog with its SHA-256 recomputed is detected")
    func drillEvidence() throws {
        try #require(ScratchSQLite.isAvailable, "\(ScratchSQLite.unavailableReason)")
        let bench = try LedgerBench("ledger-evidence")
        try bench.ok(["run", "--all"])
        try bench.ok(["verify", "--policy", "evidence"])
        let catalog = bench.state + "/catalog.sqlite"
        let stored = try ScratchSQLite.value("SELECT details FROM runs WHERE kind = 'drill' AND details IS NOT NULL ORDER BY id DESC LIMIT 1;",
                                             path: catalog, scratch: bench.box.dir)
        try #require(stored.contains("\"evidenceMAC\":"), "the evidence carries a keyed seal: \(stored)")
        let clean = try bench.verify()
        try #require(clean.exitCode == 0, "\(clean)")
        // The drill is made to look slower; the SHA-256 recomputed as a report checks it.
        let seal = try #require(stored.range(of: #""evidenceSHA256":"[0-9a-f]{64}""#, options: .regularExpression))
        var edited = stored.replacingCharacters(in: seal, with: "\"evidenceSHA256\":\"\"")
        let rto = try #require(edited.range(of: #""rtoObjectiveSeconds":[0-9.]+"#, options: .regularExpression))
        edited = edited.replacingCharacters(in: rto, with: "\"rtoObjectiveSeconds\":1")
        let hash = try SHA256.hash(Array(edited.utf8)).hex
        edited = edited.replacingOccurrences(of: "\"evidenceSHA256\":\"\"", with: "\"evidenceSHA256\":\"\(hash)\"")
        let quoted = edited.replacingOccurrences(of: "'", with: "''")
        try ScratchSQLite.sql("UPDATE runs SET details = '\(quoted)' WHERE details = '\(stored.replacingOccurrences(of: "'", with: "''"))';",
                              path: catalog, scratch: bench.box.dir)
        var result = try bench.verify()
        #expect(result.exitCode == 12 && result.out.contains("does not match its keyed seal"), "\(result)")

        // The keyed seal removed altogether, the SHA-256 recomputed: newer than the keyed ledger.
        var stripped = edited.replacingOccurrences(of: "\"evidenceSHA256\":\"\(hash)\"", with: "\"evidenceSHA256\":\"\"")
        let mac = try #require(stripped.range(of: #","evidenceMAC":"[0-9a-f]{64}""#, options: .regularExpression))
        stripped.removeSubrange(mac)
        let owner = try #require(stripped.range(of: #""sealRepository":"[0-9a-f]+","#, options: .regularExpression))
        stripped.removeSubrange(owner)
        let strippedHash = try SHA256.hash(Array(stripped.utf8)).hex
        stripped = stripped.replacingOccurrences(of: "\"evidenceSHA256\":\"\"", with: "\"evidenceSHA256\":\"\(strippedHash)\"")
        try ScratchSQLite.sql("UPDATE runs SET details = '\(stripped.replacingOccurrences(of: "'", with: "''"))' WHERE details = '\(quoted)';",
                              path: catalog, scratch: bench.box.dir)
        result = try bench.verify()
        #expect(result.exitCode == 12 && result.out.contains("carries no keyed seal"), "\(result)")
    }

    @Test("a privileged command run with another state folder is noticed by the ledger of the usual one")
    func otherStateFolder() throws {
        let bench = try LedgerBench("ledger-elsewhere")
        try bench.privilegedHistory()
        let elsewhere = bench.box.path("elsewhere")
        try bench.ok(["restore", "latest", "--target", bench.box.path("quiet"), "--yes"], env: ["KHO_STATE_DIR": elsewhere])
        let result = try bench.verify()
        #expect(result.exitCode == 12 && result.out.contains("another audit ledger") && result.out.contains(elsewhere), "\(result)")
    }

    @Test("a privileged command whose ledger head cannot be replaced fails loudly and does not run")
    func headNotWritable() throws {
        let bench = try LedgerBench("ledger-head")
        try bench.ok(["backup", bench.data])
        // A folder where the head goes: the rename over it fails (also for root).
        try makeDirectories(bench.ledger + ".head")
        let target = bench.box.path("restored")
        let result = try bench.run(["restore", "latest", "--target", target, "--yes"])
        #expect(result.exitCode == 1 && result.err.contains("audit ledger") && result.err.contains("audit.log.head"), "\(result)")
        #expect(access(target, F_OK) != 0, "the restore ran although it could not be recorded")
    }

    @Test("a privileged command whose state folder is read-only fails loudly")
    func readOnlyState() throws {
        let bench = try LedgerBench("ledger-readonly")
        try bench.ok(["backup", bench.data])
        let mountPoint = bench.box.path("ro-state")
        try makeDirectories(mountPoint)
        if mount("tmpfs", mountPoint, "tmpfs", UInt(MS_RDONLY), "size=1m,mode=0755") != 0 {
            try Test.cancel("cannot mount a read-only tmpfs here (\(String(cString: strerror(errno)))): the test needs root")
        }
        bench.box.mounts.append(mountPoint)
        let target = bench.box.path("restored")
        let result = try bench.run(["restore", "latest", "--target", target, "--yes"], env: ["KHO_STATE_DIR": mountPoint])
        #expect(result.exitCode == 1 && result.err.contains("audit ledger") && result.err.contains("Read-only"), "\(result)")
        #expect(access(target, F_OK) != 0, "the restore ran although it could not be recorded")
        let prune = try bench.run(["prune"], env: ["KHO_STATE_DIR": mountPoint])
        #expect(prune.exitCode == 1 && prune.err.contains("audit ledger"), "\(prune)")
    }
}
