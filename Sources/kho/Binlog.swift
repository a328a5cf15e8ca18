import ArgumentParser
import Foundation

/// `kho binlog …`: MariaDB's binary log archived continuously (docs/design/pitr.md section 9,
/// FORMAT section 22). Each subcommand is in its own file.
struct Binlog: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Archive a MariaDB server's binary log continuously, for restores to a point in time.",
        discussion: """
        `kho binlog serve` streams the binary log with mariadb-binlog and stores it as it grows;
        `kho binlog ls` shows what is stored. `kho restore --source NAME --pitr --at T --database D
        --to-database URL` loads the newest dump before T and replays the archived log up to T.
        """,
        subcommands: [BinlogServe.self, BinlogLs.self]
    )
}
