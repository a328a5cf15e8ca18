import Foundation
import KhoTestSupport
import Glibc
import Testing

@Suite("opening repositories, and keys")
struct RepositoryAccessTests {
    @Test("a wrong password: exit 11 and one line on stderr", arguments: [
        ["snapshots"], ["backup", "--stdin", "--stdin-name", "x"], ["check"], ["key", "list"],
    ])
    func wrongPassword(arguments: [String]) throws {
        let sandbox = try Sandbox("password")
        try sandbox.initRepository()
        let result = try sandbox.kho(arguments, env: ["KHO_PASSWORD": "not the password"])
        #expect(result.exitCode == 11, "\(result)")
        let lines = result.err.split(separator: "\n", omittingEmptySubsequences: true)
        #expect(lines.count == 1, "expected one line on stderr: \(result)")
        #expect(result.err.lowercased().contains("password"), "\(result)")
        #expect(result.out.isEmpty, "\(result)")
    }

    @Test("not a repository: an empty folder, a folder of other files, a missing folder → exit 1, says so")
    func notARepository() throws {
        let sandbox = try Sandbox("not-a-repo")
        let empty = sandbox.path("empty")
        try makeDirectories(empty)
        let other = sandbox.path("other")
        try makeDirectories(other + "/data")
        try writeFile(other + "/notes.txt", Array("hello\n".utf8))
        try writeFile(other + "/config", Array("{\"not\": \"kho\"}".utf8))
        let missing = sandbox.path("missing")
        for folder in [empty, other, missing] {
            for arguments in [["snapshots"], ["check", "--read-data"], ["backup", other]] {
                let result = try sandbox.kho(arguments, env: ["KHO_REPOSITORY": folder])
                #expect(result.exitCode == 1, "\(result)")
                #expect(result.err.contains("is not a kho repository") || result.err.contains("not a kho repository"),
                        "\(result)")
            }
        }
        // Nothing was created in the folders that are not repositories.
        #expect(try FileManager.default.contentsOfDirectory(atPath: empty).isEmpty)
        #expect(access(missing, F_OK) != 0)
    }

    @Test("`kho init` refuses a folder that is not empty, and touches nothing in it")
    func initRefusesNonEmptyFolder() throws {
        let sandbox = try Sandbox("init")
        let folder = sandbox.path("busy")
        try makeDirectories(folder)
        try writeFile(folder + "/important.doc", Array("do not lose me\n".utf8))
        let result = try sandbox.kho("init", env: ["KHO_REPOSITORY": folder])
        #expect(result.exitCode != 0, "\(result)")
        #expect(result.exitCode != nil, "\(result)")
        #expect(result.err.contains("not empty"), "\(result)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder) == ["important.doc"])

        // Twice on the same repository: the second one is refused too.
        try sandbox.initRepository()
        let again = try sandbox.kho("init")
        #expect(again.exitCode != 0 && again.err.contains("not empty"), "\(again)")
        #expect(try sandbox.kho("snapshots").exitCode == 0)
    }

    struct KeyEntry: Decodable {
        var id: String
        var current: Bool
        var label: String
    }

    @Test("key add, open with the new password, remove, the last key is refused, passwd")
    func keys() throws {
        let sandbox = try Sandbox("keys")
        try sandbox.initRepository()
        let file = sandbox.path("f")
        try writeFile(file, Array("key test\n".utf8))
        try sandbox.ok("backup", file)

        let add = try sandbox.kho("key", "add", "--label", "ops", env: ["KHO_NEW_PASSWORD": "ops password"])
        try #require(add.exitCode == 0, "\(add)")
        let list = try sandbox.kho("key", "list", "--json", env: ["KHO_PASSWORD": "ops password"])
        try #require(list.exitCode == 0, "opening with the added key's password must work: \(list)")
        let keys = try list.decode([KeyEntry].self)
        #expect(keys.count == 2)
        let ops = try #require(keys.first { $0.label == "ops" }, "\(list)")
        #expect(ops.current, "the ops key opened the repository")
        let first = try #require(keys.first { $0.label != "ops" })
        #expect(try sandbox.kho("snapshots", env: ["KHO_PASSWORD": "ops password"]).exitCode == 0)
        // Both passwords work.
        #expect(try sandbox.kho("snapshots").exitCode == 0)

        // Remove the first key with the ops password; then the ops key is the last and stays.
        let remove = try sandbox.kho("key", "remove", String(first.id.prefix(12)), env: ["KHO_PASSWORD": "ops password"])
        #expect(remove.exitCode == 0, "\(remove)")
        #expect(try sandbox.kho("snapshots").exitCode == 11, "the removed key's password must no longer open the repository")
        let last = try sandbox.kho("key", "remove", String(ops.id.prefix(12)), env: ["KHO_PASSWORD": "ops password"])
        #expect(last.exitCode != 0 && last.exitCode != nil, "\(last)")
        #expect(last.err.contains("last key"), "\(last)")
        #expect(try sandbox.kho("snapshots", env: ["KHO_PASSWORD": "ops password"]).exitCode == 0)

        // passwd replaces the key in use.
        let passwd = try sandbox.kho("key", "passwd", env: ["KHO_PASSWORD": "ops password", "KHO_NEW_PASSWORD": "new ops password"])
        #expect(passwd.exitCode == 0, "\(passwd)")
        #expect(try sandbox.kho("snapshots", env: ["KHO_PASSWORD": "ops password"]).exitCode == 11)
        let after = try sandbox.kho("key", "list", "--json", env: ["KHO_PASSWORD": "new ops password"])
        try #require(after.exitCode == 0, "\(after)")
        let remaining = try after.decode([KeyEntry].self)
        #expect(remaining.count == 1 && remaining.first?.label == "ops", "\(after)")
        // The data is still readable with the new password.
        let dump = try sandbox.kho("dump", "latest", file, env: ["KHO_PASSWORD": "new ops password"])
        #expect(dump.exitCode == 0 && dump.out == "key test\n", "\(dump)")
    }
}
