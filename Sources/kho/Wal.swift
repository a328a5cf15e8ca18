import ArgumentParser
import Foundation
import KhoCore
import KhoSupport

/// `kho wal …`: continuous archiving of PostgreSQL's write-ahead log (docs/design/pitr.md,
/// FORMAT section 20). Each subcommand is in its own file.
struct Wal: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal",
        abstract: "Archive PostgreSQL's write-ahead log continuously, and fetch it back for recovery.",
        discussion: """
        Set up with `kho wal setup`, which prints the postgresql.conf lines: archive_command runs
        `kho wal push`, restore_command runs `kho wal fetch`. `kho wal ls` shows what is archived.
        """,
        subcommands: [Push.self, Fetch.self, Setup.self, Adopt.self, Ls.self, WalServe.self]
    )

    /// `--source NAME`, checked as `WALArchive` checks it.
    static func checkSource(_ source: String) throws {
        guard !source.isEmpty, source.utf8.count <= 200, !source.utf8.contains(where: { $0 < 0x20 || $0 == 0x7f }) else {
            throw ValidationError("--source must be the policy source's name, 1 to 200 printable characters.")
        }
    }
}
