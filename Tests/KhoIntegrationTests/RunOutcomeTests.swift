import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoTestSupport
import Testing

// What `kho run` and `kho verify` make of failures that used to vanish or be decided by text: a
// catalog that refuses a write, a backup failure that running again cannot cure, a drill check
// the policy does not count. Each drives the real `kho` binary.

private struct RunResultJSON: Decodable {
    var kind: String
    var policy: String
    var source: String
    var outcome: String
    var planned: String
    var error: String?
}

/// A sandbox with an initialized repository, a policy folder and a state folder.
private final class RunBench: @unchecked Sendable {
    let box: Sandbox
    var policies: String { box.path("policies") }
    var state: String { box.path("state") }
    var passwordFile: String { box.path("repository.pass") }

    init(_ label: String) throws {
        box = try Sandbox(label)
        for folder in [policies, state, box.path("data"), box.path("tmp")] { try makeDirectories(folder) }
        try writeFile(passwordFile, Array("\(box.password)\n".utf8), mode: 0o600)
        try box.initRepository()
        try writeFile(box.path("data/letter.txt"), Array("Công văn số 1\n".utf8))
    }

    func env(_ extra: [String: String?] = [:]) -> [String: String?] {
        var env: [String: String?] = ["KHO_POLICIES": policies, "KHO_STATE_DIR": state, "TMPDIR": box.path("tmp")]
        for (key, value) in extra { env[key] = value }
        return env
    }

    func writePolicy(_ name: String, passwordFile: String? = nil, _ body: String) throws {
        let text = """
            name: \(name)
            agency: Sở Tư pháp (kiểm thử)
            system: Kiểm thử kết quả
            security-level: 2
            schedule: "0 1 * * *"
            repository:
              path: \(box.repo)
              password-file: \(passwordFile ?? self.passwordFile)
            objectives:
              rpo: 24h
              rto: 1h

            """ + body
        try writeFile(policies + "/\(name).yaml", Array(text.utf8))
    }

    var filesSource: String {
        """
        sources:
          - name: letters
            kind: files
            paths: [\(box.path("data"))]

        """
    }

    func run(_ arguments: [String], at time: String? = nil) throws -> (ProcessResult, [RunResultJSON]) {
        let result = try box.kho(["run", "--json"] + arguments, env: env(time.map { ["KHO_TEST_NOW": $0] } ?? [:]))
        return (result, (try? result.decode([RunResultJSON].self)) ?? [])
    }

    func catalogSQL(_ sql: String) throws -> String {
        try ScratchSQLite.sql(sql, path: state + "/catalog.sqlite", scratch: box.dir)
    }
}

@Suite("run outcomes", .serialized)
struct RunOutcomeTests {
    @Test("a catalog that refuses to record a backup's row: kho run exits 1 and says so, and does not back up unrecorded (it exited 0)")
    func catalogInsertRefused() throws {
        let bench = try RunBench("run-catalog-insert")
        try bench.writePolicy("letters", bench.filesSource)
        let (first, _) = try bench.run(["--all"])
        try #require(first.exitCode == 0, "\(first)")
        // The database refuses new rows as a full or damaged disk would, with SQLite's own error.
        _ = try bench.catalogSQL("CREATE TRIGGER refuse BEFORE INSERT ON runs BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;")
        let snapshotsBefore = try bench.box.snapshots().count
        let (second, results) = try bench.run(["--all"])
        #expect(second.exitCode == 1, "\(second)")
        #expect(results.first?.outcome == "failure", "\(second)")
        #expect(results.first?.error?.contains("cannot be recorded in the catalog") == true, "\(second)")
        #expect(try bench.box.snapshots().count == snapshotsBefore, "no backup the catalog does not know")
    }

    @Test("a catalog that refuses to update a backup's row: the snapshot is saved, kho run exits 1 and says the row is not updated")
    func catalogUpdateRefused() throws {
        let bench = try RunBench("run-catalog-update")
        try bench.writePolicy("letters", bench.filesSource)
        let (first, _) = try bench.run(["--all"])
        try #require(first.exitCode == 0, "\(first)")
        _ = try bench.catalogSQL("CREATE TRIGGER refuse BEFORE UPDATE ON runs BEGIN SELECT RAISE(ABORT, 'attempt to write a readonly database'); END;")
        let (second, results) = try bench.run(["--all"])
        #expect(second.exitCode == 1, "\(second)")
        let backup = try #require(results.first { $0.kind == "backup" }, "\(second)")
        #expect(backup.outcome == "failure" && backup.error?.contains("was saved, but") == true
                && backup.error?.contains("cannot be updated in the catalog") == true, "\(second)")
    }

    @Test("the runner retries a backup whose failure may pass (a database that refuses connections), not one that fails the same way again (a wrong repository password)")
    func retryOnlyRetryable() throws {
        let bench = try RunBench("run-retryable")
        let wrong = bench.box.path("wrong.pass")
        try writeFile(wrong, Array("not the password\n".utf8), mode: 0o600)
        try bench.writePolicy("locked-out", passwordFile: wrong, bench.filesSource)
        // Port 1: nothing listens, every connection is refused.
        try bench.writePolicy("db-down", """
            sources:
              - name: citizens
                kind: postgres
                host: 127.0.0.1
                port: 1
                databases: [ho_tich]
                globals: false

            """)
        let night = "2026-03-02T01:00:00+07:00"
        let (first, firstResults) = try bench.run(["--due"], at: "2026-03-02T01:00:05+07:00")
        #expect(first.exitCode == 1, "\(first)")
        #expect(Set(firstResults.map(\.policy)) == ["locked-out", "db-down"] && firstResults.allSatisfy { $0.outcome == "failure" }, "\(first)")
        for (time, attempt) in [("2026-03-02T01:16:00+07:00", "second"), ("2026-03-02T01:47:00+07:00", "third")] {
            let (again, results) = try bench.run(["--due"], at: time)
            #expect(results.map(\.policy) == ["db-down"], "\(attempt) attempt: only the retryable failure is tried again: \(again)")
            #expect(results.first.map { Timestamp.parse($0.planned) == Timestamp.parse(night) } == true, "\(again)")
        }
        let rows = try bench.catalogSQL("SELECT policy, outcome, retryable FROM runs WHERE kind = 'backup' ORDER BY id;")
        let lines = rows.split(separator: "\n").map(String.init)
        #expect(lines.filter { $0.hasPrefix("locked-out\t") } == ["locked-out\tfailure\t0"], "\(rows)")
        #expect(lines.filter { $0.hasPrefix("db-down\t") } == Array(repeating: "db-down\tfailure\t1", count: 3), "\(rows)")
    }

    @Test("kho daemon reports an error of a round (here: the metrics file cannot be written) on stderr instead of dropping it")
    func daemonRoundError() throws {
        let bench = try RunBench("run-daemon-error")
        try bench.writePolicy("letters", bench.filesSource)
        let metrics = bench.box.path("no-such-folder/kho.prom")
        let daemon = try bench.box.start(["daemon", "--metrics-file", metrics], env: bench.env(["KHO_TEST_NOW": "2026-03-02T14:00:00+07:00"]))
        try ServerSupport.waitUntil("the daemon's first backup is done", timeout: 120) {
            guard daemon.isRunning else { return true }
            guard access(bench.state + "/catalog.sqlite", F_OK) == 0,
                  let done = try? bench.catalogSQL("SELECT count(*) FROM runs WHERE kind = 'backup' AND outcome = 'success';") else { return false }
            return Int(done) ?? 0 > 0
        }
        // The round writes its metrics right after the backup; give it that moment.
        Thread.sleep(forTimeInterval: 2)
        try #require(daemon.isRunning, "the daemon ended by itself: \(daemon.wait(timeout: 5))")
        daemon.send(SIGTERM)
        let ended = daemon.wait(timeout: 120)
        #expect(ended.exitCode == 0, "\(ended)")
        #expect(ended.err.contains("ERROR: this round's runs could not all be planned or recorded") && ended.err.contains(metrics), "\(ended)")
    }

    @Test("a policy change whose ledger entry cannot be written fails kho run and is not marked as seen: the next run records it")
    func policyChangeUnrecorded() throws {
        let bench = try RunBench("run-policy-change")
        try bench.writePolicy("letters", bench.filesSource)
        let (first, _) = try bench.run(["--all"])
        try #require(first.exitCode == 0, "\(first)")
        let hashes = bench.state + "/policy-hashes.json"
        let seen = try readFile(hashes)
        // The policy is edited; the ledger cannot be opened for writing (a folder stands in its place).
        try bench.writePolicy("letters", bench.filesSource + "retention:\n  keep-daily: 7\n")
        let ledger = bench.state + "/audit.log"
        try #require(rename(ledger, ledger + ".aside") == 0)
        try makeDirectories(ledger)
        let (refused, _) = try bench.run(["--all"])
        #expect(refused.exitCode != 0, "\(refused)")
        #expect(refused.err.contains("policy change cannot be recorded in the audit ledger"), "\(refused)")
        #expect(try readFile(hashes) == seen, "the change is not marked as seen")
        // The ledger is back: the next run records the change.
        try removeTree(ledger)
        try #require(rename(ledger + ".aside", ledger) == 0)
        let (recorded, _) = try bench.run(["--all"])
        #expect(recorded.exitCode == 0, "\(recorded)")
        let log = try bench.box.kho(["audit", "log", "--json"], env: bench.env())
        let entries = try #require(try? log.json() as? [[String: Any]], "\(log)")
        let changes = entries.filter { $0["command"] as? String == "policy change" }
        #expect(changes.count == 2, "the first run's (new) and the edit's: \(changes)")
        #expect((changes.last?["arguments"] as? [String])?.contains { $0.hasPrefix("from ") } == true, "\(changes)")
    }
}
