import Foundation
import Glibc
import KhoTestSupport
import Testing

/// `kho key add --secret-to`: a key for a job, opened by a generated secret with one HMAC.
@Suite struct KeySecretCommandTests {
    private struct KeyEntry: Decodable {
        var id: String
        var current: Bool
        var label: String
    }

    @Test func aSecretKeyOpensTheRepositoryUntilRemoved() throws {
        let sandbox = try Sandbox("key-secret")
        try sandbox.initRepository()
        let source = sandbox.path("src")
        try makeDirectories(source)
        try writeFile(source + "/a.txt", Array("registry\n".utf8))
        try sandbox.ok("backup", source)
        let secretFile = sandbox.path("wal.secret")

        let add = try sandbox.kho(["key", "add", "--label", "wal push", "--secret-to", secretFile, "--owner", "postgres"])
        try #require(add.exitCode == 0, "\(add)")
        #expect(add.out.contains(secretFile) && !add.all.contains("kho-secret-v1:"), "the secret is in the file, not on the terminal: \(add)")
        var info = stat()
        try #require(lstat(secretFile, &info) == 0)
        let postgres = try #require(getpwnam("postgres")).pointee.pw_uid
        #expect(info.st_mode & 0o777 == 0o400 && info.st_uid == postgres, "mode \(String(info.st_mode & 0o777, radix: 8)), uid \(info.st_uid)")
        let text = String(decoding: try readFile(secretFile), as: UTF8.self)
        #expect(text.hasPrefix("kho-secret-v1:") && text.count == 14 + 64 + 1)

        // The secret opens the repository as any password does, and its key is listed as current.
        let bySecret: [String: String?] = ["KHO_PASSWORD": nil, "KHO_PASSWORD_FILE": secretFile]
        let list = try sandbox.kho(["key", "list", "--json"], env: bySecret)
        try #require(list.exitCode == 0, "\(list)")
        let keys = try list.decode([KeyEntry].self)
        #expect(keys.count == 2)
        let secretKey = try #require(keys.first { $0.current })
        #expect(secretKey.label == "wal push")
        #expect(try sandbox.kho(["snapshots"], env: bySecret).exitCode == 0)
        // The key file says how it derives, and holds no scrypt parameters.
        let keyFile = String(decoding: try readFile(sandbox.repo + "/keys/" + secretKey.id), as: UTF8.self)
        #expect(keyFile.contains("\"kdf\":\"secret\"") && !keyFile.contains("scrypt"), "\(keyFile)")

        // A new secret never replaces a file: refused, no key added.
        let again = try sandbox.kho(["key", "add", "--label", "again", "--secret-to", secretFile])
        #expect(again.exitCode == 2 && again.err.contains("exists"), "\(again)")
        #expect(try sandbox.kho(["key", "list", "--json"]).decode([KeyEntry].self).count == 2)
        // Text shaped like a secret but not this one opens nothing.
        let forged = "kho-secret-v1:" + String(repeating: "0", count: 64)
        #expect(try sandbox.kho(["snapshots"], env: ["KHO_PASSWORD": forged]).exitCode == 11)
        let noOwner = try sandbox.kho(["key", "add", "--label", "x", "--secret-to", sandbox.path("other.secret"), "--owner", "no-such-user-kho"])
        #expect(noOwner.exitCode == 2 && noOwner.err.contains("no-such-user-kho"), "\(noOwner)")
        #expect(!FileManager.default.fileExists(atPath: sandbox.path("other.secret")), "nothing is written for a refused owner")

        // Revoked like any key.
        try sandbox.ok("key", "remove", String(secretKey.id.prefix(12)))
        #expect(try sandbox.kho(["snapshots"], env: bySecret).exitCode == 11, "a removed secret key opens nothing")
        #expect(try sandbox.kho("check").exitCode == 0)
    }
}
