import Foundation
import KhoTestSupport
import Testing

// `restore --at` reads a wall-clock time on the machine's clock (TZ, else /etc/localtime). It used
// to read it in Asia/Ho_Chi_Minh whatever the machine said, so an operator on a server kept in UTC
// who typed the time shown by `date` got the snapshot of seven hours earlier.

@Suite struct RestoreAtZoneTests {
    @Test("restore --at reads a local time in the machine's zone (TZ); an offset is taken as written")
    func atFollowsTheMachinesZone() throws {
        let sandbox = try Sandbox("at-zone")
        try sandbox.initRepository()
        let first = sandbox.path("first.txt")
        let second = sandbox.path("second.txt")
        try writeFile(first, Array("recorded on the 1st\n".utf8))
        try writeFile(second, Array("recorded on the 2nd\n".utf8))
        // 2026-11-01 02:00 and 2026-11-02 02:00 in Hanoi: 2026-10-31 19:00 and 2026-11-01 19:00 UTC.
        try sandbox.ok("backup", "--stdin", "--stdin-name", "notes.txt", "--time", "2026-11-01T02:00:00+07:00", input: .file(first))
        try sandbox.ok("backup", "--stdin", "--stdin-name", "notes.txt", "--time", "2026-11-02T02:00:00+07:00", input: .file(second))

        let cases: [(zone: String, at: String, expected: String)] = [
            // 23:00 on the 1st is before the second backup in Hanoi, after it in UTC.
            ("Asia/Ho_Chi_Minh", "2026-11-01 23:00", "recorded on the 1st\n"),
            ("UTC", "2026-11-01 23:00", "recorded on the 2nd\n"),
            ("UTC", "2026-11-01 18:59:59", "recorded on the 1st\n"),
            // An offset means that instant, whatever the machine's zone.
            ("UTC", "2026-11-01T23:00:00+07:00", "recorded on the 1st\n"),
            ("Asia/Ho_Chi_Minh", "2026-11-01T23:00:00Z", "recorded on the 2nd\n"),
        ]
        for (i, item) in cases.enumerated() {
            let target = sandbox.path("restored-\(i).txt")
            let result = try sandbox.kho(["restore", "--source", "notes.txt", "--at", item.at, "--to-file", target, "--yes"], env: ["TZ": item.zone])
            try #require(result.exitCode == 0, "\(item): \(result)")
            let restored = String(decoding: try Data(contentsOf: URL(fileURLWithPath: target)), as: UTF8.self)
            #expect(restored == item.expected, "TZ=\(item.zone) --at \(item.at)")
        }

        let wrong = try sandbox.kho(["restore", "--source", "notes.txt", "--at", "1/11/2026", "--stdout"], env: ["TZ": "UTC"])
        #expect(wrong.exitCode == 2, "\(wrong)")
        #expect(wrong.err.contains("--at 1/11/2026 is not a time: write e.g."), "\(wrong.err)")
        #expect(wrong.err.contains("2026-11-28T23:00:00+07:00"), "the message shows the accepted forms: \(wrong.err)")
    }
}
