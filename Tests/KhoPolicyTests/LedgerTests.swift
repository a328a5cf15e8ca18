import Foundation
import KhoCore
import KhoPolicy
import Testing

// The audit ledger is hash-chained: editing an entry, removing one from the middle, swapping two
// or cutting the last one off is detected, and the first bad entry is named (line and sequence).

/// A ledger of five entries in a new state folder.
private final class LedgerFixture {
    let folder: TemporaryFolder
    let ledger: AuditLedger

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
                              time: at("2026-03-02T0\(i):00:00+07:00"))
        }
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
        #expect(try f.ledger.verify() == nil)
        let entries = try f.ledger.entries()
        #expect(entries.map(\.sequence) == [1, 2, 3, 4, 5])
        #expect(entries.map(\.command) == ["restore", "forget", "prune", "key add", "verify"])
        #expect(entries[0].previous == "")
        for i in 1..<entries.count { #expect(entries[i].previous == entries[i - 1].hash) }
        // Appending more keeps it valid.
        try f.ledger.append(command: "prune", arguments: ["prune"], outcome: "failure", time: at("2026-03-02T09:00:00+07:00"))
        #expect(try f.ledger.verify() == nil)
        #expect(try f.ledger.entries().last?.sequence == 6)
    }

    @Test("an edited entry is named")
    func edited() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        #expect(lines[2].contains("\"prune\""))
        lines[2] = lines[2].replacingOccurrences(of: "\"outcome\":\"success\"", with: "\"outcome\":\"failure\"")
        try f.write(lines)
        let problem = try #require(try f.ledger.verify())
        #expect(problem.line == 3)
        #expect(problem.reason == "entry 3 (line 3) was changed after it was written: its hash does not match its content")
    }

    @Test("an edited entry whose hash was recomputed breaks the link to the next entry")
    func editedAndRehashed() throws {
        let f = try LedgerFixture()
        var entries = try f.ledger.entries()
        entries[1].arguments = ["forget", "--keep-daily", "1"]
        // Recompute the hash the way the ledger does (SHA-256 of the JSON with the hash empty).
        var blank = entries[1]
        blank.hash = ""
        entries[1].hash = try SHA256.hash(Array(try JSON.encoder.encode(blank))).hex
        var lines = try f.lines
        lines[1] = String(decoding: try JSON.encoder.encode(entries[1]), as: UTF8.self)
        try f.write(lines)
        let problem = try #require(try f.ledger.verify())
        #expect(problem.line == 3)
        #expect(problem.reason == "entry 3 (line 3) does not follow the entry before it: an entry was removed, inserted or reordered")
    }

    @Test("a deleted middle entry is named")
    func deletedMiddle() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        lines.remove(at: 2)
        try f.write(lines)
        let problem = try #require(try f.ledger.verify())
        #expect(problem.line == 3)
        #expect(problem.reason == "entry 4 (line 3) does not follow the entry before it: an entry was removed, inserted or reordered")
    }

    @Test("two swapped entries are named")
    func swapped() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        lines.swapAt(1, 2)
        try f.write(lines)
        let problem = try #require(try f.ledger.verify())
        #expect(problem.line == 2)
        #expect(problem.reason == "entry 3 (line 2) does not follow the entry before it: an entry was removed, inserted or reordered")
    }

    @Test("a deleted last entry is noticed through the head kept beside the ledger")
    func deletedLast() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        lines.removeLast()
        try f.write(lines)
        let problem = try #require(try f.ledger.verify())
        #expect(problem.reason == "the ledger ends at entry 4 but entry 5 was written: entries were removed from its end")
        #expect(problem.line == 5)
    }

    @Test("entries cut off the end and then appended to are still noticed: an entry records the cut")
    func truncatedThenAppended() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        lines.removeLast(2)
        try f.write(lines)
        try f.ledger.append(command: "restore", arguments: ["restore", "latest"], outcome: "success", time: at("2026-03-02T09:00:00+07:00"))
        let entries = try f.ledger.entries()
        #expect(entries.map(\.command) == ["restore", "forget", "prune", AuditLedger.truncationCommand, "restore"])
        #expect(entries.map(\.sequence) == [1, 2, 3, 4, 5])
        let problem = try #require(try f.ledger.verify())
        #expect(problem.line == 4)
        #expect(problem.reason == "entry 4 (line 4) records that the ledger ended at entry 3 but entry 5 had been written: entries were removed from its end")
        // Later appends do not repeat it.
        try f.ledger.append(command: "prune", arguments: ["prune"], outcome: "success", time: at("2026-03-02T10:00:00+07:00"))
        #expect(try f.ledger.entries().filter { $0.command == AuditLedger.truncationCommand }.count == 1)
    }

    @Test("appending reads only the end: a damaged early line does not restart the chain")
    func appendReadsTheEnd() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        let fifth = try f.ledger.entries()[4]
        lines[1] = String(lines[1].prefix(20))
        try f.write(lines)
        let entry = try f.ledger.append(command: "prune", arguments: ["prune"], outcome: "success", time: at("2026-03-02T09:00:00+07:00"))
        #expect(entry.sequence == 6 && entry.previous == fifth.hash)
        #expect(try f.ledger.verify()?.line == 2)
    }

    @Test("an append cut short by a crash: the next entry is a line of its own, chained to the last good entry")
    func crashInTheMiddleOfAnAppend() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        let fourth = try f.ledger.entries()[3]
        lines[4] = String(lines[4].prefix(30))
        try (lines.joined(separator: "\n")).write(toFile: f.ledger.path, atomically: false, encoding: .utf8)
        let entry = try f.ledger.append(command: "prune", arguments: ["prune"], outcome: "success", time: at("2026-03-02T09:00:00+07:00"))
        #expect(entry.sequence == 5 && entry.previous == fourth.hash)
        let after = try f.lines
        #expect(after.count == 6 && after[4] == lines[4])
        let problem = try #require(try f.ledger.verify())
        #expect(problem.line == 5 && problem.reason == "line 5 is not a ledger entry (edited or damaged)")
    }

    @Test("a deleted first entry and a damaged line are named")
    func deletedFirstAndDamaged() throws {
        let f = try LedgerFixture()
        var lines = try f.lines
        lines.removeFirst()
        try f.write(lines)
        var problem = try #require(try f.ledger.verify())
        #expect(problem.line == 1)
        #expect(problem.reason == "entry 2 (line 1) does not follow the entry before it: an entry was removed, inserted or reordered")

        let g = try LedgerFixture()
        lines = try g.lines
        lines[3] = String(lines[3].prefix(20))
        try g.write(lines)
        problem = try #require(try g.ledger.verify())
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
