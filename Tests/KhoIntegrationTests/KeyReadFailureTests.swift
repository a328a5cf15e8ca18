import Foundation
import KhoTestSupport
import Glibc
import Testing

// A storage that fails while kho looks for the key is a storage problem: reporting it as a wrong
// password (exit 11) sends the operator to check a password that is right. Tests run as root, for
// whom permissions do not fail reads: a folder in a key file's place makes the read fail (EISDIR).

private func keyNames(_ sandbox: Sandbox) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: sandbox.repo + "/keys").filter { !$0.hasPrefix(".") }.sorted()
}

/// Puts a folder where the key file `name` was; returns the file's bytes to put back.
private func breakKey(_ sandbox: Sandbox, _ name: String) throws -> [UInt8] {
    let path = sandbox.repo + "/keys/" + name
    let bytes = try readFile(path)
    #expect(unlink(path) == 0)
    try makeDirectories(path)
    return bytes
}

private func repairKey(_ sandbox: Sandbox, _ name: String, _ bytes: [UInt8]) throws {
    let path = sandbox.repo + "/keys/" + name
    #expect(rmdir(path) == 0)
    try writeFile(path, bytes)
}

@Suite("key files the storage cannot read")
struct KeyReadFailureTests {
    @Test("the only key file cannot be read: exit 1 with the storage's reason, not 11 (wrong password); repaired, it opens",
          arguments: [["snapshots"], ["check"], ["key", "list"]])
    func onlyKeyUnreadable(arguments: [String]) throws {
        let sandbox = try Sandbox("key-unreadable")
        try sandbox.initRepository()
        let names = try keyNames(sandbox)
        try #require(names.count == 1)
        let bytes = try breakKey(sandbox, names[0])
        let result = try sandbox.kho(arguments)
        #expect(result.exitCode == 1, "\(result)")
        #expect(result.err.contains("could not be read") && result.err.contains("Is a directory") && result.err.contains("keys/"), "\(result)")
        #expect(!result.err.contains("opens with this password"), "\(result)")
        try repairKey(sandbox, names[0], bytes)
        let healthy = try sandbox.kho(arguments)
        #expect(healthy.exitCode == 0, "\(healthy)")
    }

    @Test("another key file cannot be read: the right password still opens; a wrong one is told the storage failed, since the unread key may be its")
    func otherKeyUnreadable() throws {
        let sandbox = try Sandbox("key-other-unreadable")
        try sandbox.initRepository()
        let before = try keyNames(sandbox)
        try sandbox.ok("key", "add", "--label", "ops", env: ["KHO_NEW_PASSWORD": "ops password"])
        let added = try #require(try keyNames(sandbox).first { !before.contains($0) })
        _ = try breakKey(sandbox, added)
        let right = try sandbox.kho("snapshots")
        #expect(right.exitCode == 0, "\(right)")
        let ops = try sandbox.kho(["snapshots"], env: ["KHO_PASSWORD": "ops password"])
        #expect(ops.exitCode == 1 && ops.err.contains("could not be read"), "\(ops)")
    }

    @Test("the keys folder cannot be listed (a file in its place): exit 1 naming the listing, not 11")
    func keysFolderUnlistable() throws {
        let sandbox = try Sandbox("keys-unlistable")
        try sandbox.initRepository()
        let keys = sandbox.repo + "/keys"
        let moved = sandbox.path("keys-moved")
        #expect(rename(keys, moved) == 0)
        try writeFile(keys, Array("not a folder\n".utf8))
        let result = try sandbox.kho("snapshots")
        #expect(result.exitCode == 1 && result.err.contains("could not be listed"), "\(result)")
        #expect(unlink(keys) == 0 && rename(moved, keys) == 0)
        #expect(try sandbox.kho("snapshots").exitCode == 0)
    }
}
