import Foundation
import KhoTestSupport
import Testing

// Times carry their zone. kho shows times, and reads a time typed without an offset (`restore
// --at`), in one zone: --time-zone, else KHO_TIME_ZONE, else the policies' time-zone, else
// Asia/Ho_Chi_Minh — never the machine's TZ, so that an operator on a server kept in UTC reads and
// types the times the agency lives by, and every time printed says its offset.

@Suite struct RestoreAtZoneTests {
    /// Two snapshots of one stream: 2026-11-01 02:00 and 2026-11-02 02:00 in Hanoi, that is
    /// 2026-10-31 19:00 and 2026-11-01 19:00 UTC.
    private func twoNights(_ label: String) throws -> Sandbox {
        let sandbox = try Sandbox(label)
        try sandbox.initRepository()
        let first = sandbox.path("first.txt")
        let second = sandbox.path("second.txt")
        try writeFile(first, Array("recorded on the 1st\n".utf8))
        try writeFile(second, Array("recorded on the 2nd\n".utf8))
        try sandbox.ok("backup", "--stdin", "--stdin-name", "notes.txt", "--time", "2026-11-01T02:00:00+07:00", input: .file(first))
        try sandbox.ok("backup", "--stdin", "--stdin-name", "notes.txt", "--time", "2026-11-02T02:00:00+07:00", input: .file(second))
        return sandbox
    }

    @Test("on a UTC machine the listing shows Asia/Ho_Chi_Minh times with +07; KHO_TIME_ZONE and --time-zone change it")
    func listingCarriesItsZone() throws {
        let sandbox = try twoNights("zone-list")
        func listing(_ arguments: [String] = [], env: [String: String?] = [:]) throws -> [String] {
            let result = try sandbox.kho(["snapshots"] + arguments, env: ["TZ": "UTC"].merging(env) { $1 })
            try #require(result.exitCode == 0, "\(result)")
            return result.out.split(separator: "\n").map(String.init)
        }
        let byDefault = try listing()
        #expect(byDefault.first?.contains("Time (Asia/Ho_Chi_Minh)") == true, "\(byDefault)")
        #expect(byDefault.count == 4 && byDefault[1].contains(" 2026-11-01 02:00:00 +07 ") && byDefault[2].contains(" 2026-11-02 02:00:00 +07 "), "\(byDefault)")

        let utc = try listing(env: ["KHO_TIME_ZONE": "UTC"])
        #expect(utc.first?.contains("Time (UTC)") == true, "\(utc)")
        #expect(utc[1].contains(" 2026-10-31 19:00:00 +00 ") && utc[2].contains(" 2026-11-01 19:00:00 +00 "), "\(utc)")

        // The option wins over the variable.
        let kolkata = try listing(["--time-zone", "Asia/Kolkata"], env: ["KHO_TIME_ZONE": "UTC"])
        #expect(kolkata[1].contains(" 2026-11-01 00:30:00 +05:30 "), "\(kolkata)")

        // JSON keeps RFC 3339 in UTC, whatever the zone.
        let json = try sandbox.kho(["snapshots", "--json", "--time-zone", "Asia/Kolkata"], env: ["TZ": "UTC"])
        #expect(json.out.contains("\"time\" : \"2026-10-31T19:00:00.000000000Z\""), "\(json)")

        // `ls` shows times with their offset too.
        let ls = try sandbox.kho(["ls", "latest", "--time-zone", "Asia/Ho_Chi_Minh"], env: ["TZ": "UTC"])
        #expect(ls.exitCode == 0 && ls.out.contains(" +07 /notes.txt"), "\(ls)")

        // A zone that does not exist is a usage error, named.
        let wrongOption = try sandbox.kho(["snapshots", "--time-zone", "Mars/Olympus"])
        #expect(wrongOption.exitCode == 2, "\(wrongOption)")
        #expect(wrongOption.err.contains("--time-zone Mars/Olympus is not a known time zone"), "\(wrongOption.err)")
        let wrongVariable = try sandbox.kho(["snapshots"], env: ["KHO_TIME_ZONE": "Hanoi"])
        #expect(wrongVariable.exitCode == 2, "\(wrongVariable)")
        #expect(wrongVariable.err.contains("KHO_TIME_ZONE Hanoi is not a known time zone"), "\(wrongVariable.err)")
    }

    @Test("restore --at reads a wall-clock time in Asia/Ho_Chi_Minh on a UTC machine, else in KHO_TIME_ZONE or --time-zone; an offset is taken as written; the plan says how")
    func atFollowsTheDisplayZone() throws {
        let sandbox = try twoNights("zone-at")
        let cases: [(env: [String: String?], options: [String], at: String, expected: String, plan: [String])] = [
            // 23:00 on the 1st is before the second backup in Hanoi, after it in UTC.
            (["TZ": "UTC"], [], "2026-11-01 23:00", "recorded on the 1st\n",
             ["taken 2026-11-01 02:00:00 +07 (Asia/Ho_Chi_Minh)", "--at \"2026-11-01 23:00\", read in Asia/Ho_Chi_Minh: 2026-11-01 23:00:00 +07"]),
            (["TZ": "UTC", "KHO_TIME_ZONE": "UTC"], [], "2026-11-01 23:00", "recorded on the 2nd\n",
             ["taken 2026-11-01 19:00:00 +00 (UTC)", "read in UTC: 2026-11-01 23:00:00 +00"]),
            (["TZ": "Asia/Ho_Chi_Minh"], ["--time-zone", "UTC"], "2026-11-01 18:59:59", "recorded on the 1st\n",
             ["taken 2026-10-31 19:00:00 +00 (UTC)", "read in UTC: 2026-11-01 18:59:59 +00"]),
            // --time-zone wins over KHO_TIME_ZONE.
            (["TZ": "UTC", "KHO_TIME_ZONE": "UTC"], ["--time-zone", "Asia/Ho_Chi_Minh"], "2026-11-01 23:00", "recorded on the 1st\n",
             ["read in Asia/Ho_Chi_Minh: 2026-11-01 23:00:00 +07"]),
            // An offset means that instant, whatever the zone; the form kho prints is read back.
            (["TZ": "UTC", "KHO_TIME_ZONE": "UTC"], [], "2026-11-01T23:00:00+07:00", "recorded on the 1st\n",
             ["with its own offset: 2026-11-01 16:00:00 +00"]),
            (["TZ": "UTC"], [], "2026-11-01T23:00:00Z", "recorded on the 2nd\n",
             ["taken 2026-11-02 02:00:00 +07 (Asia/Ho_Chi_Minh)", "with its own offset: 2026-11-02 06:00:00 +07"]),
            (["TZ": "UTC", "KHO_TIME_ZONE": "UTC"], [], "2026-11-02 02:00:00 +07", "recorded on the 2nd\n", []),
            (["TZ": "UTC", "KHO_TIME_ZONE": "UTC"], [], "2026-11-02 01:59 +07:00", "recorded on the 1st\n", []),
        ]
        for (i, item) in cases.enumerated() {
            let target = sandbox.path("restored-\(i).txt")
            let result = try sandbox.kho(["restore", "--source", "notes.txt", "--at", item.at, "--to-file", target, "--yes"] + item.options, env: item.env)
            try #require(result.exitCode == 0, "\(item): \(result)")
            let restored = String(decoding: try Data(contentsOf: URL(fileURLWithPath: target)), as: UTF8.self)
            #expect(restored == item.expected, "\(item.env) \(item.options) --at \(item.at)")
            for text in item.plan { #expect(result.err.contains(text), "plan of \(item.at) lacks \(text): \(result.err)") }
        }

        let wrong = try sandbox.kho(["restore", "--source", "notes.txt", "--at", "1/11/2026", "--stdout"], env: ["TZ": "UTC"])
        #expect(wrong.exitCode == 2, "\(wrong)")
        #expect(wrong.err.contains("--at 1/11/2026 is not a time: write e.g."), "\(wrong.err)")
        #expect(wrong.err.contains("2026-11-28T23:00:00+07:00"), "the message shows the accepted forms: \(wrong.err)")
        let wrongZone = try sandbox.kho(["restore", "--source", "notes.txt", "--at", "2026-11-01 23:00", "--stdout", "--time-zone", "Hanoi"])
        #expect(wrongZone.exitCode == 2 && wrongZone.err.contains("--time-zone Hanoi is not a known time zone"), "\(wrongZone)")
    }

    @Test("forget counts days in KHO_TIME_ZONE when --time-zone is not given (else Asia/Ho_Chi_Minh), and shows its times in it")
    func forgetFollowsTheZone() throws {
        let sandbox = try twoNights("zone-forget")
        // A third snapshot at 23:30 on the 1st in Hanoi (16:30 UTC): in Hanoi it shares the 1st
        // with the 02:00 one; in UTC it shares the 1st with the one of 02:00 on the 2nd in Hanoi.
        let third = sandbox.path("third.txt")
        try writeFile(third, Array("late on the 1st\n".utf8))
        try sandbox.ok("backup", "--stdin", "--stdin-name", "notes.txt", "--time", "2026-11-01T23:30:00+07:00", input: .file(third))
        func removed(_ result: ProcessResult) -> [String] {
            result.out.split(separator: "\n").filter { $0.hasPrefix("  remove") }.map(String.init)
        }
        let hanoi = try sandbox.kho(["forget", "--keep-daily", "5", "--dry-run"], env: ["TZ": "UTC"])
        try #require(hanoi.exitCode == 0, "\(hanoi)")
        #expect(removed(hanoi).count == 1 && removed(hanoi)[0].contains("2026-11-01 02:00:00 +07"), "\(hanoi)")
        let utc = try sandbox.kho(["forget", "--keep-daily", "5", "--dry-run"], env: ["TZ": "Asia/Ho_Chi_Minh", "KHO_TIME_ZONE": "UTC"])
        try #require(utc.exitCode == 0, "\(utc)")
        #expect(removed(utc).count == 1 && removed(utc)[0].contains("2026-11-01 16:30:00 +00"), "\(utc)")
        // --time-zone wins over the variable.
        let option = try sandbox.kho(["forget", "--keep-daily", "5", "--dry-run", "--time-zone", "Asia/Ho_Chi_Minh"], env: ["KHO_TIME_ZONE": "UTC"])
        #expect(removed(option).count == 1 && removed(option)[0].contains("2026-11-01 02:00:00 +07"), "\(option)")
        let wrong = try sandbox.kho(["forget", "--keep-daily", "1", "--dry-run"], env: ["KHO_TIME_ZONE": "Nowhere"])
        #expect(wrong.exitCode == 2 && wrong.err.contains("KHO_TIME_ZONE Nowhere is not a known time zone"), "\(wrong)")
    }
}
