import Foundation
import KhoTestSupport
import Glibc
import Testing

@Suite("streams and commands")
struct StreamTests {
    @Test("--stdin round trip with `kho dump`, and an edited stream stores only the changed chunks")
    func stdinRoundTripAndDeduplication() throws {
        let sandbox = try Sandbox("stdin")
        try sandbox.initRepository()
        let original = dumpText(32 << 20 + 4321, seed: 7)
        let first = sandbox.path("dump-1.sql")
        try writeFile(first, original)

        let backup1 = try sandbox.kho("backup", "--stdin", "--stdin-name", "db.sql", "--json", input: .file(first))
        try #require(backup1.exitCode == 0, "\(backup1)")
        let one = try backup1.decode(BackupOutput.self).summary
        #expect(one.bytesRead == Int64(original.count))
        #expect(one.bytesAdded < Int64(original.count) / 2, "a text dump should compress: \(one.bytesAdded) bytes added")

        let dump1 = try sandbox.kho("dump", "latest", "db.sql")
        try #require(dump1.exitCode == 0, "\(dump1)")
        #expect(dump1.stdout.count == original.count)
        #expect(sha256(dump1.stdout) == sha256(original), "kho dump must give back the stream byte for byte")

        // The same dump with a few lines inserted near the start.
        var edited = Array(original[0..<5000])
        edited += Array("INSERT INTO cong_dan VALUES (0, 'Trần Thị Mới', 1);\n-- edited by hand\n".utf8)
        edited += original[5000...]
        let second = sandbox.path("dump-2.sql")
        try writeFile(second, edited)
        let backup2 = try sandbox.kho("backup", "--stdin", "--stdin-name", "db.sql", "--json", input: .file(second))
        try #require(backup2.exitCode == 0, "\(backup2)")
        let two = try backup2.decode(BackupOutput.self).summary
        #expect(two.bytesRead == Int64(edited.count))
        #expect(two.bytesAdded < Int64(edited.count) / 16,
                "inserting bytes near the start added \(two.bytesAdded) bytes for a \(edited.count)-byte stream")
        #expect(two.bytesAdded * 8 < one.bytesAdded,
                "the edited stream added \(two.bytesAdded) bytes; the first one \(one.bytesAdded)")

        let dump2 = try sandbox.kho("dump", "latest", "db.sql")
        try #require(dump2.exitCode == 0, "\(dump2)")
        #expect(sha256(dump2.stdout) == sha256(edited))
        // The older snapshot still gives the older stream.
        let snapshots = try sandbox.snapshots()
        try #require(snapshots.count == 2)
        let older = try #require(snapshots.first?["id"] as? String)
        let dumpOld = try sandbox.kho("dump", String(older.prefix(10)), "db.sql")
        #expect(dumpOld.exitCode == 0 && sha256(dumpOld.stdout) == sha256(original), "\(dumpOld.exitCode.map(String.init) ?? "signal")")
    }

    @Test("--command stores the command's stdout")
    func commandSuccess() throws {
        let sandbox = try Sandbox("command-ok")
        try sandbox.initRepository()
        let payload = dumpText(3 << 20, seed: 11) + randomBytes(1 << 20)
        let file = sandbox.path("payload")
        try writeFile(file, payload)
        let backup = try sandbox.kho("backup", "--command", "cat '\(file)'", "--stdin-name", "x", "--json")
        try #require(backup.exitCode == 0, "\(backup)")
        #expect(try backup.decode(BackupOutput.self).summary.bytesRead == Int64(payload.count))
        let dump = try sandbox.kho("dump", "latest", "x")
        try #require(dump.exitCode == 0, "\(dump)")
        #expect(sha256(dump.stdout) == sha256(payload))
        let snapshots = try sandbox.snapshots()
        #expect(snapshots.count == 1)
        #expect((snapshots.first?["source"] as? [String: Any])?["kind"] as? String == "command")
    }

    @Test("a command that fails half way: exit 1, its error output shown, no snapshot",
          arguments: [
              "exit 3",
              "kill -9 $$",
          ])
    func commandFailure(ending: String) throws {
        let sandbox = try Sandbox("command-fail")
        try sandbox.initRepository()
        let file = sandbox.path("payload")
        try writeFile(file, dumpText(2 << 20, seed: 3))
        // One good snapshot first, so that "no snapshot added" is a change of count.
        try sandbox.ok("backup", "--command", "cat '\(file)'", "--stdin-name", "x")
        let before = try sandbox.snapshots().count

        let command = "cat '\(file)'; echo 'pg_dump: error: connection to server lost' >&2; \(ending)"
        let backup = try sandbox.kho("backup", "--command", command, "--stdin-name", "x")
        #expect(backup.exitCode == 1, "\(backup)")
        #expect(backup.err.contains("pg_dump: error: connection to server lost"), "the command's stderr must be shown: \(backup)")
        #expect(try sandbox.snapshots().count == before, "a failed command must not leave a snapshot")
        // The repository stays clean.
        let check = try sandbox.kho("check", "--read-data")
        #expect(check.exitCode == 0, "\(check)")
    }
}
