import Foundation
import KhoTestSupport
import Testing

// `kho forget` counts a source's snapshots together as a policy's retention does: by host and source
// name. It used to key them by kind and name, so a stream that moved from `--stdin` to `--command`
// under the same name became two groups and `--keep-last 1` kept one of each.

@Suite struct ForgetGroupsTests {
    private struct Plan: Decodable {
        struct Decision: Decodable {
            var snapshotID: String
            var keep: Bool
        }
        struct Group: Decodable {
            var host: String
            var source: String
            var decisions: [Decision]
        }
        var groups: [Group]
    }

    @Test("one source name is one retention group, however it was backed up; other names and unnamed paths stay apart")
    func groupsBySourceName() throws {
        let sandbox = try Sandbox("forget-groups")
        try sandbox.initRepository()
        let dump = sandbox.path("ledger.sql")
        try writeFile(dump, Array("INSERT INTO ledger VALUES (1);\n".utf8))
        let data = sandbox.path("data")
        try makeDirectories(data)
        try writeFile(data + "/a", Array("a".utf8))

        try sandbox.ok("backup", "--stdin", "--stdin-name", "ledger.sql", "--time", "2026-11-01T02:00:00+07:00", input: .file(dump))
        try sandbox.ok("backup", "--command", "cat '\(dump)'", "--stdin-name", "ledger.sql", "--time", "2026-11-02T02:00:00+07:00")
        try sandbox.ok("backup", "--stdin", "--stdin-name", "other.sql", "--time", "2026-11-02T03:00:00+07:00", input: .file(dump))
        try sandbox.ok("backup", data, "--time", "2026-11-02T04:00:00+07:00")

        let result = try sandbox.kho("forget", "--keep-last", "1", "--dry-run", "--json")
        try #require(result.exitCode == 0, "\(result)")
        let plan = try result.decode(Plan.self)
        #expect(plan.groups.map(\.source) == ["command:ledger.sql", "stdin:other.sql", data], "\(plan.groups.map(\.source))")
        let ledger = try #require(plan.groups.first)
        #expect(ledger.decisions.count == 2 && ledger.decisions.filter(\.keep).count == 1,
                "keep-last 1 keeps one snapshot of ledger.sql, not one per way it was taken: \(ledger.decisions)")
    }
}
