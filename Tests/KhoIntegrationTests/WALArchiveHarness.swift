import Foundation
import Glibc
import KhoTestSupport
import Testing

// Shared by the WAL tests: a repository a real PostgreSQL archives into with
// `kho wal push --direct`, and the few cluster helpers they use.

/// A sandbox whose repository the postgres user can write, and the archive_command that pushes
/// into it for source `db1`.
struct Archive {
    let sandbox: Sandbox
    let env: String
    /// The key secret archive_command opens the repository with, readable by postgres only (as
    /// the README sets it up: `kho key add --secret-to … --owner postgres`).
    let passwordFile: String
    let source = "db1"

    init(_ label: String) throws {
        sandbox = try Sandbox(label)
        try sandbox.initRepository()
        // The repository of its own for this cluster's WAL: the cluster's user writes it.
        passwordFile = sandbox.path("wal.secret")
        try sandbox.ok("key", "add", "--label", "wal push", "--secret-to", passwordFile, "--owner", "postgres")
        try ServerSupport.chownTree(sandbox.repo, to: "postgres")
        let postgresGroup = try #require(getgrnam("postgres")).pointee.gr_gid
        env = sandbox.path("wal.env")
        let lines = ["KHO_REPOSITORY=\(sandbox.repo)", "KHO_PASSWORD_FILE=\(passwordFile)"]
        try writeFile(env, Array((lines.joined(separator: "\n") + "\n").utf8), mode: 0o640)
        chown(env, 0, postgresGroup)
    }

    /// archive_command: the environment file, then kho (`prefix` runs in front of it, e.g. timeout).
    func command(prefix: String = "") -> String {
        "set -a && . \(env) && exec \(prefix)\(Harness.binary) wal push --direct --source \(source) %p"
    }

    func cluster(_ label: String, command: String? = nil) throws -> ScratchPostgres {
        try ScratchPostgres(label: label, settings: ScratchPostgres.archiving(command: command ?? self.command()))
    }
}

extension ScratchPostgres {
    var systemIdentifier: String {
        get throws { String(format: "%016llx", UInt64(try value("SELECT system_identifier FROM pg_control_system();"))!) }
    }

    /// Ends the current segment and returns its name, once PostgreSQL says it is archived.
    func switchAndWaitArchived(timeout: Double = 60) throws -> String {
        let name = try value("SELECT pg_walfile_name(pg_switch_wal());")
        try ServerSupport.waitUntil("\(name) is archived", timeout: timeout) {
            try value("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver;") >= name
        }
        return name
    }

    var failedCount: Int { get throws { Int(try value("SELECT failed_count FROM pg_stat_archiver;")) ?? -1 } }

    func pgbench(_ arguments: [String]) throws {
        try ServerSupport.require(program("pgbench"), ["-h", dir, "-p", String(port), "-U", superuser] + arguments + ["postgres"], scratch: dir, timeout: 300)
    }

    /// pgbench's TPC-B load for `transactions` per client, with a segment switch about every
    /// thousandth transaction, so that many segments are archived while it runs. (Not `-T`:
    /// pgbench ends a timed run by SIGALRM, which the test process's children inherit blocked.)
    func load(transactions: Int) throws {
        let switcher = try ServerSupport.scriptFile("SELECT pg_switch_wal();", in: dir)
        defer { unlink(switcher) }
        try pgbench(["-n", "-c", "2", "-j", "2", "-t", String(transactions), "-b", "tpcb-like@999", "-f", switcher + "@1"])
    }
}

