import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoTestSupport
import KhoPolicy
import Testing

// The audit ledger is hash-chained: editing an entry, removing one from the middle, swapping two
// or cutting the last one off is detected, and the first bad entry is named (line and sequence).

/// A repository as the ledger sees it: a ledger key and the heads it recorded, in memory.
final class TestWitness: LedgerWitness, @unchecked Sendable {
    let ledgerKey: DerivedKey
    var anchors: [(name: String, anchor: LedgerAnchor)] = []
    var witnessName: String { "test repository \(ledgerKey.repositoryID.prefix(8))" }

    init(id: String = Hex.encode(try! Random.bytes(32))) {
        ledgerKey = try! DerivedKey(master: try! MasterKey.random(), repositoryID: id, label: DerivedKey.ledgerLabel)
    }

    func ledgerAnchors() throws -> [(name: String, anchor: LedgerAnchor)] { anchors }
    func saveLedgerAnchor(_ anchor: LedgerAnchor) throws {
        anchors = anchors.filter { $0.anchor.ledger != anchor.ledger } + [(Hex.encode(try Random.bytes(8)), anchor)]
    }
}

/// A ledger of five entries in a new state folder, keyed with one repository.
private final class LedgerFixture {
    let folder: TemporaryFolder
    let ledger: AuditLedger
    let witness = TestWitness()

    init() throws {
        folder = try TemporaryFolder("ledger")
        ledger = try AuditLedger(stateDirectory: folder.path)
        let actions: [(String, [String])] = [
            ("restore", ["restore", "latest", "--target", "/srv/restore"]),
            ("forget", ["forget", "--keep-daily", "7"]),
            ("prune", ["prune"]),
            ("key add", ["key", "add", "--new-password-file", "/etc/kho/op.pass"]),
            ("verify", ["verify", "--policy", "ho-tich"]),
        ]
        for (i, (command, arguments)) in actions.enumerated() {
            try ledger.append(command: command, arguments: arguments, outcome: "success",
                              time: at("2026-03-02T0\(i):00:00+07:00"), witnesses: [witness])
        }
    }

    /// The first problem, checked with the repository's key and anchors.
    func verify() throws -> (line: Int, reason: String)? {
        try ledger.check(witnesses: [witness]).problem
    }

    func append(_ command: String, _ arguments: [String], _ outcome: String = "success", time: String) throws -> LedgerEntry {
        try ledger.append(command: command, arguments: arguments, outcome: outcome, time: at(time), witnesses: [witness])
    }

    var lines: [String] {
        get throws {
            try String(contentsOfFile: ledger.path, encoding: .utf8).split(separator: "\n").map(String.init)
        }
    }

    func write(_ lines: [String]) throws {
        try (lines.joined(separator: "\n") + "\n").write(toFile: ledger.path, atomically: false, encoding: .utf8)
    }
}

extension KhoPolicyUnitTests {
@Suite("audit ledger")
struct LedgerTests {
    @Test("an untouched ledger verifies; entries are chained in order")
    func intact() throws {
        let f = try LedgerFixture()
        #expect(try f.verify() == nil)
        let entries = try f.ledger.entries()
        #expect(entries.map(\.sequence) == [1, 2, 3, 4, 5])
        #expect(entries.map(\.command) == ["restore", "forget", "prune", "key add", "verify"])
        #expect(entries[0].previous == "")
        for i in 1..<entries.count { #expect(entries[i].previous == entries[i - 1].hash) }
        // Appending more keeps it valid.
        _ = try f.append("prune", ["prune"], "failure", time: "2026-03-02T09:00:00+07:00")
        #expect(try f.verify() == nil)
        #expect(try f.ledger.entries().last?.sequence == 6)
    }

    @Test("an edited entry is named")
    func edited() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        #expect(lines[2].contains("\"prune\""))
        lines[2] = lines[2].replacingOccurrences(of: "\"outcome\":\"success\"", with: "\"outcome\":\"failure\"")
        try f.write(lines)
        let problem = try #require(try f.verify())
        #expect(problem.line == 3)
        #expect(problem.reason.hasPrefix("entry 3 (line 3) was changed after it was written: its keyed hash does not match its content"), "\(problem)")
    }

    /// The entries with `edit` applied to entry 2 and every hash from there on recomputed with
    /// `rehash` (as someone who can write the file but has no repository key would).
    private func rewritten(_ f: LedgerFixture, legacyForm: Bool, rehash: (LedgerEntry) -> String) throws -> [String] {
        var entries = try f.ledger.entries()
        entries[1].arguments = ["forget", "--keep-daily", "1"]
        // The legacy form is rewritten whole; otherwise entry 1 is left as it was.
        var previous = legacyForm ? "" : entries[0].hash
        for i in entries.indices where legacyForm || i > 0 {
            if legacyForm { entries[i].key = nil }
            entries[i].previous = previous
            entries[i].hash = ""
            entries[i].hash = rehash(entries[i])
            previous = entries[i].hash
        }
        // The head beside the ledger is the attacker's to rewrite too.
        try "\(entries.count) \(previous)\n".write(toFile: f.ledger.path + ".head", atomically: false, encoding: .utf8)
        return try entries.map { String(decoding: try JSON.encoder.encode($0), as: UTF8.self) }
    }

    private func plainSHA256(_ entry: LedgerEntry) -> String {
        try! SHA256.hash(Array(try! JSON.encoder.encode(entry))).hex
    }

    @Test("an edited entry whose whole chain was recomputed with plain SHA-256 is detected at the entry")
    func rehashedWithSHA256() throws {
        let f = try LedgerFixture()
        try f.write(try rewritten(f, legacyForm: false, rehash: plainSHA256))
        let problem = try #require(try f.verify())
        #expect(problem.line == 2)
        #expect(problem.reason.hasPrefix("entry 2 (line 2) was changed after it was written: its keyed hash does not match its content"), "\(problem)")
    }

    @Test("a ledger rewritten whole in the legacy (unkeyed) form disagrees with the head the repository recorded")
    func rewrittenAsLegacy() throws {
        let f = try LedgerFixture()
        try f.write(try rewritten(f, legacyForm: true, rehash: plainSHA256))
        // Without keys the chain looks whole; the repository's anchor does not.
        #expect(try f.ledger.verify() == nil)
        let problem = try #require(try f.verify())
        #expect(problem.reason.hasPrefix("entry 5 is not the entry the repository at \(f.witness.witnessName) recorded"), "\(problem)")
        #expect(problem.reason.hasSuffix("the ledger was rewritten"))
    }

    @Test("an edited entry whose chain was recomputed with another key is detected")
    func rehashedWithWrongKey() throws {
        let f = try LedgerFixture()
        let wrong = try DerivedKey(master: try MasterKey.random(), repositoryID: f.witness.ledgerKey.repositoryID, label: DerivedKey.ledgerLabel)
        try f.write(try rewritten(f, legacyForm: false) { entry in
            var copy = entry
            copy.hash = ""
            return try! wrong.mac(Array(try! JSON.encoder.encode(copy)))
        })
        let problem = try #require(try f.verify())
        #expect(problem.line == 2 && problem.reason.contains("keyed hash does not match"), "\(problem)")
        // Naming a repository that was not given does not help either.
        var lines = try f.lines
        lines[0] = lines[0].replacingOccurrences(of: f.witness.ledgerKey.repositoryID, with: String(repeating: "0", count: 64))
        try f.write(lines)
        let unknown = try #require(try f.verify())
        #expect(unknown.line == 1 && unknown.reason.contains("which was not opened"), "\(unknown)")
    }

    @Test("entries cut off the end with the head file rewritten are detected through the repository's anchor")
    func truncatedWithHeadRewritten() throws {
        let f = try LedgerFixture()
        let entries = try f.ledger.entries()
        try f.write(Array(try f.lines.prefix(3)))
        try "3 \(entries[2].hash)\n".write(toFile: f.ledger.path + ".head", atomically: false, encoding: .utf8)
        #expect(try f.ledger.verify() == nil)
        let problem = try #require(try f.verify())
        #expect(problem.reason.hasPrefix("the ledger ends at entry 3 but the repository at \(f.witness.witnessName) recorded entry 5"), "\(problem)")
        // A removed ledger likewise.
        unlink(f.ledger.path)
        unlink(f.ledger.path + ".head")
        #expect(try f.verify()?.reason.hasPrefix("the ledger ends at entry 0 but the repository") == true)
        // The next privileged command records the cut.
        _ = try f.append("restore", ["restore", "latest"], time: "2026-03-02T09:00:00+07:00")
        let first = try #require(try f.ledger.entries().first)
        #expect(first.command == AuditLedger.truncationCommand && first.outcome.contains("recorded entry 5"), "\(first)")
    }

    @Test("a legacy ledger is read as legacy up to its last entry and keyed after the entry that records the switch; a legacy entry after that is refused")
    func legacyThenKeyed() throws {
        let folder = try TemporaryFolder("ledger-legacy")
        let ledger = try AuditLedger(stateDirectory: folder.path)
        // Two entries as an earlier kho wrote them: no key field, plain SHA-256.
        var lines: [String] = []
        var previous = ""
        for sequence in 1...2 {
            var entry = LedgerEntry(sequence: sequence, time: at("2026-03-01T0\(sequence):00:00+07:00"), user: "root", host: "kho-test",
                                    command: "prune", arguments: ["prune"], outcome: "success", previous: previous, key: nil, hash: "")
            entry.hash = plainSHA256(entry)
            previous = entry.hash
            lines.append(String(decoding: try JSON.encoder.encode(entry), as: UTF8.self))
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: ledger.path, atomically: false, encoding: .utf8)
        let witness = TestWitness()
        try ledger.append(command: "restore", arguments: ["restore", "latest"], outcome: "success", witnesses: [witness])
        let entries = try ledger.entries()
        #expect(entries.map(\.command) == ["prune", "prune", AuditLedger.keyedCommand, "restore"])
        #expect(entries[2].isKeyed && entries[3].isKeyed)
        let check = try ledger.check(witnesses: [witness])
        #expect(check.problem == nil && check.legacyThrough == 2 && check.entries == 4, "\(check)")
        // A legacy-form entry appended after the switch.
        var forged = LedgerEntry(sequence: 5, time: at("2026-03-03T01:00:00+07:00"), user: "root", host: "kho-test", command: "restore",
                                 arguments: ["restore", "latest"], outcome: "success", previous: entries[3].hash, key: nil, hash: "")
        forged.hash = plainSHA256(forged)
        let handle = try #require(FileHandle(forWritingAtPath: ledger.path))
        handle.seekToEndOfFile()
        handle.write(Data((String(decoding: try JSON.encoder.encode(forged), as: UTF8.self) + "\n").utf8))
        try handle.close()
        try "5 \(forged.hash)\n".write(toFile: ledger.path + ".head", atomically: false, encoding: .utf8)
        let problem = try #require(try ledger.check(witnesses: [witness]).problem)
        #expect(problem.line == 5 && problem.reason.contains("old unkeyed form although the ledger is keyed from entry 3"), "\(problem)")
    }

    @Test("a deleted middle entry is named")
    func deletedMiddle() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        lines.remove(at: 2)
        try f.write(lines)
        let problem = try #require(try f.verify())
        #expect(problem.line == 3)
        #expect(problem.reason == "entry 4 (line 3) does not follow the entry before it: an entry was removed, inserted or reordered")
    }

    @Test("two swapped entries are named")
    func swapped() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        lines.swapAt(1, 2)
        try f.write(lines)
        let problem = try #require(try f.verify())
        #expect(problem.line == 2)
        #expect(problem.reason == "entry 3 (line 2) does not follow the entry before it: an entry was removed, inserted or reordered")
    }

    @Test("a deleted last entry is noticed through the head kept beside the ledger")
    func deletedLast() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        lines.removeLast()
        try f.write(lines)
        let problem = try #require(try f.verify())
        #expect(problem.reason == "the ledger ends at entry 4 but entry 5 was written: entries were removed from its end")
        #expect(problem.line == 5)
    }

    @Test("entries cut off the end and then appended to are still noticed: an entry records the cut")
    func truncatedThenAppended() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        lines.removeLast(2)
        try f.write(lines)
        _ = try f.append("restore", ["restore", "latest"], time: "2026-03-02T09:00:00+07:00")
        let entries = try f.ledger.entries()
        #expect(entries.map(\.command) == ["restore", "forget", "prune", AuditLedger.truncationCommand, "restore"])
        #expect(entries.map(\.sequence) == [1, 2, 3, 4, 5])
        let problem = try #require(try f.verify())
        #expect(problem.line == 4)
        #expect(problem.reason.hasPrefix("entry 4 (line 4) records that the ledger ended at entry 3 but entry 5 had been written"), "\(problem)")
        #expect(problem.reason.contains("recorded entry 5") && problem.reason.hasSuffix("entries were removed from its end or the ledger was replaced"), "\(problem)")
        // Later appends do not repeat it.
        _ = try f.append("prune", ["prune"], time: "2026-03-02T10:00:00+07:00")
        #expect(try f.ledger.entries().filter { $0.command == AuditLedger.truncationCommand }.count == 1)
    }

    @Test("appending reads only the end: a damaged early line does not restart the chain")
    func appendReadsTheEnd() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        let fifth = try f.ledger.entries()[4]
        lines[1] = String(lines[1].prefix(20))
        try f.write(lines)
        let entry = try f.append("prune", ["prune"], time: "2026-03-02T09:00:00+07:00")
        #expect(entry.sequence == 6 && entry.previous == fifth.hash)
        #expect(try f.verify()?.line == 2)
    }

    @Test("an append cut short by a crash: the next entry is a line of its own, chained to the last good entry")
    func crashInTheMiddleOfAnAppend() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        let fourth = try f.ledger.entries()[3]
        lines[4] = String(lines[4].prefix(30))
        try (lines.joined(separator: "\n")).write(toFile: f.ledger.path, atomically: false, encoding: .utf8)
        let entry = try f.append("prune", ["prune"], time: "2026-03-02T09:00:00+07:00")
        #expect(entry.sequence == 5 && entry.previous == fourth.hash)
        let after = try f.lines
        #expect(after.count == 6 && after[4] == lines[4])
        let problem = try #require(try f.verify())
        #expect(problem.line == 5 && problem.reason == "line 5 is not a ledger entry (edited or damaged)")
    }

    @Test("a deleted first entry and a damaged line are named")
    func deletedFirstAndDamaged() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        lines.removeFirst()
        try f.write(lines)
        var problem = try #require(try f.verify())
        #expect(problem.line == 1)
        #expect(problem.reason == "entry 2 (line 1) does not follow the entry before it: an entry was removed, inserted or reordered")

        let g = try LedgerFixture()
        lines = try g.lines
        lines[3] = String(lines[3].prefix(20))
        try g.write(lines)
        problem = try #require(try g.verify())
        #expect(problem.line == 4)
        #expect(problem.reason == "line 4 is not a ledger entry (edited or damaged)")
    }

    @Test("secrets in arguments are not written to the ledger")
    func redaction() {
        #expect(AuditLedger.redact(["restore", "--password", "hunter2", "--to-database", "postgres://app:s3cret@db:5432/ho_tich"])
                == ["restore", "--password", "[removed]", "--to-database", "postgres://app:[removed]@db:5432/ho_tich"])
        #expect(AuditLedger.redact(["--token=abc", "--password-file", "/etc/kho/p"]) == ["--token=[removed]", "--password-file", "/etc/kho/p"])
    }
}
}
