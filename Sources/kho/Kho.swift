import ArgumentParser
import Foundation
import Glibc
import KhoCore
import KhoSources
import KhoSupport

struct Kho: ParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "kho",
        abstract: "Backups that prove they can be restored: encrypted, deduplicated repositories for agency data.",
        discussion: """
        The repository comes from --repo or KHO_REPOSITORY; the password from KHO_PASSWORD_FILE,
        KHO_PASSWORD_COMMAND or KHO_PASSWORD.

        Exit codes: 0 ok, 1 failure, 2 usage, 3 partial (some files unreadable), 10 repository
        locked, 11 wrong password, 12 integrity error; `kho wal fetch` follows PostgreSQL's
        restore_command rules instead (1 not archived, 126 recovery must stop).
        """,
        version: version,
        subcommands: [
            Init.self, Backup.self, Snapshots.self, Ls.self, Restore.self, Dump.self, Check.self, Stats.self,
            Forget.self, Prune.self, Unlock.self, Key.self, Copy.self, Rekey.self, Upgrade.self,
            PolicyCommand.self, Run.self, Daemon.self, ScheduleCommand.self, StatusCommand.self, CatalogCommand.self,
            Verify.self, Audit.self, Report.self, Wal.self, Binlog.self,
        ]
    )
}

@main
enum Main {
    static func main() {
        // Before anything is created: kho runs as root and writes catalogs, ledgers, evidence,
        // repositories and temporary copies of databases; none of it is for other users. Files
        // meant for others (restored files, the metrics file) get their modes set explicitly.
        umask(0o077)
        ClientPasswords.withhold()
        MemoryTuning.apply()
        DescriptorLimit.raise()
        Signals.install()
        do {
            if let refusal = TestKnobs.refusal() { throw refusal }
            var command = try Kho.parseAsRoot()
            // A privileged command whose entry could not be written does not run.
            try AuditTrail.prepare(command)
            var failure: Error?
            var outcome = "success"
            do {
                try command.run()
            } catch {
                failure = error
                if let status = error as? ExitStatus { outcome = "exit \(status.code.rawValue)" }
                else if let error = error as? KhoError { outcome = "exit \(KhoExitCode(error.kind).rawValue): \(error.message)" }
                else { outcome = "failure" }
            }
            do {
                try AuditTrail.record(command, outcome: outcome)
            } catch {
                let message = (error as? KhoError)?.message ?? "\(error)"
                Terminal.error("\(AuditTrail.name(of: command) ?? "the command") \(failure == nil ? "finished" : "failed") but could not be recorded in the audit ledger in \(AuditTrail.ledgerDirectory(of: command)): \(message)")
                if failure == nil { exit(KhoExitCode.failure.rawValue) }
            }
            if let failure { throw failure }
        } catch let error as KhoError {
            Terminal.error(error.message)
            leave(KhoExitCode(error.kind).rawValue)
        } catch let status as ExitStatus {
            leave(status.code.rawValue)
        } catch {
            let code = Kho.exitCode(for: error)
            let message = Kho.fullMessage(for: error)
            if code == .success {
                print(message)
                exit(0)
            }
            if !message.isEmpty { Terminal.write(STDERR_FILENO, message + "\n") }
            if code == .validationFailure {
                leave(KhoExitCode.usage.rawValue)
            }
            leave(code.rawValue == 0 ? 0 : KhoExitCode.failure.rawValue)
        }
        exit(0)
    }

    /// The one exit of a failed command; `kho wal fetch` has PostgreSQL's codes (see Wal.Fetch).
    static func leave(_ code: Int32) -> Never {
        exit(Wal.Fetch.exitCode(code))
    }
}
