import ArgumentParser

/// TEMPORARY (branch h-p3): a minimal `kho wal` group so that `wal serve` and the hidden
/// `wal push-agent` can be tested before the `kho wal` group of push/fetch/setup/adopt/ls is
/// merged; at the merge, add `WalServe.self` to that group and drop this file.
struct Wal: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal",
        abstract: "PostgreSQL WAL archiving.",
        subcommands: [WalServe.self, WalPushAgent.self]
    )
}
