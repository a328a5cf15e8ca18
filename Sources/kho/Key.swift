import ArgumentParser
import Foundation
import KhoCore
import KhoSupport

struct Key: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage the repository's keys (one per operator or job). No key command rewrites data.",
        subcommands: [List.self, Add.self, Remove.self, Passwd.self]
    )

    static func newPassword() throws -> [UInt8] {
        try Password.read(purpose: "new password", prefix: "KHO_NEW_PASSWORD", confirm: true)
    }

    /// The standard cost, but in a debug build under test (KHO_TEST_SCRYPT_N, which a release
    /// build refuses rather than make weak keys).
    static func scrypt() throws -> Scrypt.Parameters {
        try Scrypt.testParameters() ?? .standard
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the keys; * marks the one that opened the repository.")
        @OptionGroup var repository: RepositoryOptions
        @OptionGroup var zone: TimeZoneOption
        @Flag(help: "Print as JSON.") var json = false

        struct Entry: Encodable {
            var id: String
            var current: Bool
            var label: String
            var user: String
            var host: String
            var created: Date
        }

        func run() throws {
            let zone = try self.zone.zone()
            let repo = try repository.open()
            let entries = try repo.listKeys().map {
                Entry(id: $0.id, current: $0.id == repo.keyID, label: $0.file.label, user: $0.file.user, host: $0.file.host, created: $0.file.created)
            }.sorted { $0.created < $1.created }
            if json { try Terminal.json(entries); return }
            for e in entries {
                Terminal.out("\(e.current ? "*" : " ") \(e.id.prefix(8))  \(Format.time(e.created, zone))  \(e.user)@\(e.host)  \(e.label)")
            }
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a key with a new password (from KHO_NEW_PASSWORD_FILE, _COMMAND or KHO_NEW_PASSWORD).")
        @OptionGroup var repository: RepositoryOptions
        @Option(help: "Who or what the key is for.") var label: String

        func run() throws {
            let repo = try repository.open()
            let id = try repo.addKey(password: try Key.newPassword(), label: label, parameters: Key.scrypt())
            Terminal.out("added key \(id.prefix(8)) (\(label))")
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a key; the last key cannot be removed.")
        @OptionGroup var repository: RepositoryOptions
        @Argument(help: "Key ID or unique prefix, as shown by `kho key list`.") var id: String

        func run() throws {
            let repo = try repository.open()
            try repo.removeKey(id: id)
            Terminal.out("removed key \(id)")
        }
    }

    struct Passwd: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change the password of the key in use (adds a new key, then removes the old one).")
        @OptionGroup var repository: RepositoryOptions

        func run() throws {
            let repo = try repository.open()
            let old = try repo.listKeys().first { $0.id == repo.keyID }
            let id = try repo.addKey(password: try Key.newPassword(), label: old?.file.label ?? "key", parameters: Key.scrypt())
            try repo.removeKey(id: repo.keyID)
            Terminal.out("password changed: key \(repo.keyID.prefix(8)) replaced by \(id.prefix(8))")
        }
    }
}
