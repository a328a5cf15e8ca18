import ArgumentParser
import Foundation
import KhoCore
import KhoSupport
import Glibc

struct Key: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
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
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List the keys; * marks the one that opened the repository.")
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
        static let configuration = CommandConfiguration(
            commandName: "add",
            abstract: "Add a key with a new password (from KHO_NEW_PASSWORD_FILE, _COMMAND or KHO_NEW_PASSWORD), or with a generated secret (--secret-to).",
            discussion: """
            --secret-to FILE makes a key for a job rather than a person: kho generates a 256-bit random
            secret, writes it to FILE (a new file, mode 0400, owned by --owner) and adds a key that the
            secret opens with one HMAC instead of scrypt, since there is nothing to guess. Give the file
            to the job as KHO_PASSWORD_FILE (for example `kho wal push --direct`, which then opens the
            repository without a key derivation per WAL file). Revoke it with `kho key remove`.
            """
        )
        @OptionGroup var repository: RepositoryOptions
        @Option(help: "Who or what the key is for.") var label: String
        @Option(name: .customLong("secret-to"), help: "Generate a random secret instead of asking for a password, and write it to this new file.")
        var secretTo: String?
        @Option(help: "With --secret-to: the user who may read the secret file (default: the user running kho).")
        var owner: String?

        func validate() throws {
            if owner != nil && secretTo == nil { throw ValidationError("--owner is for --secret-to only.") }
        }

        func run() throws {
            let repo = try repository.open()
            guard let secretTo else {
                let id = try repo.addKey(password: try Key.newPassword(), label: label, parameters: Key.scrypt())
                Terminal.out("added key \(id.prefix(8)) (\(label))")
                return
            }
            var secret = try KeySecret.generate()
            defer { Wipe.bytes(&secret) }
            let (uid, gid) = try Add.account(owner)
            // The file first: a key whose secret was never saved would open nothing and only clutter.
            try SecretFile.create(secretTo, contents: secret + [UInt8(ascii: "\n")], owner: uid, group: gid)
            let id: String
            do {
                id = try repo.addKey(password: secret, label: label, derivation: .secret)
            } catch {
                unlink(secretTo)
                throw error
            }
            Terminal.out("added key \(id.prefix(8)) (\(label)); its secret is in \(secretTo), readable by \(owner ?? "this user") only: give it to the job as KHO_PASSWORD_FILE")
        }

        static func account(_ name: String?) throws -> (uid_t, gid_t) {
            guard let name else { return (geteuid(), getegid()) }
            guard let entry = getpwnam(name) else {
                throw KhoError(.usage, "There is no user \(name) on this machine: give --owner the user the job runs as (for a WAL push, the cluster's owner, usually postgres).")
            }
            return (entry.pointee.pw_uid, entry.pointee.pw_gid)
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove a key; the last key cannot be removed.")
        @OptionGroup var repository: RepositoryOptions
        @Argument(help: "Key ID or unique prefix, as shown by `kho key list`.") var id: String

        func run() throws {
            let repo = try repository.open()
            try repo.removeKey(id: id)
            Terminal.out("removed key \(id)")
        }
    }

    struct Passwd: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "passwd", abstract: "Change the password of the key in use (adds a new key, then removes the old one).")
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
