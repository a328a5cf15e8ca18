import ArgumentParser
import Foundation
import Glibc
import KhoCore
import KhoSources
import KhoSupport

extension Wal {
    /// Checks a cluster, the repository and the environment file, and prints the postgresql.conf
    /// lines for archiving into kho. Changes nothing.
    struct Setup: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "setup",
            abstract: "Check a PostgreSQL cluster for archiving into kho and print the postgresql.conf lines.",
            discussion: """
            Run as root on the database host. With --direct, archive_command reads --env-file (root's,
            readable by the cluster's user) for KHO_REPOSITORY and KHO_PASSWORD_FILE: use a repository
            of its own, as every database superuser can reach that password.
            """
        )

        @OptionGroup var repository: RepositoryOptions

        @Option(help: "The policy source whose archive this cluster writes.")
        var source: String

        @Option(name: .customLong("data-directory"), help: "The cluster's data directory (SHOW data_directory).")
        var dataDirectory: String

        @Flag(help: "archive_command opens the repository itself (kho wal push --direct) instead of using the WAL agent.")
        var direct = false

        @Option(name: .customLong("env-file"), help: "With --direct: the root-owned file archive_command reads KHO_REPOSITORY and KHO_PASSWORD_FILE from.")
        var envFile: String?

        @Option(name: .customLong("archive-timeout"), help: "Seconds after which PostgreSQL archives a segment that is not full (default 60).")
        var archiveTimeout = 60

        func validate() throws {
            try Wal.checkSource(source)
            if direct && envFile == nil { throw ValidationError("--direct needs --env-file FILE: archive_command reads the repository and password file from it.") }
            if !direct && envFile != nil { throw ValidationError("--env-file is for --direct only.") }
            if !(1...3600).contains(archiveTimeout) { throw ValidationError("--archive-timeout must be 1 to 3600 seconds.") }
        }

        func run() throws {
            let given = repository.repo ?? ProcessInfo.processInfo.environment["KHO_REPOSITORY"]
            let opened = (given?.isEmpty == false) ? try repository.open() : nil
            let setup = WALSetup(source: source, dataDirectory: dataDirectory, kho: Setup.executable(), environmentFile: envFile, archiveTimeout: archiveTimeout)
            let report = try setup.check(repository: opened)
            for note in report.notes { Terminal.out("ok: \(note)") }
            for warning in report.warnings { Terminal.warning(warning) }
            Terminal.out("")
            Terminal.out("# postgresql.conf (then: SELECT pg_reload_conf(); or restart when archive_mode changes; check with `kho wal ls --source \(source)`)")
            for line in report.settings { Terminal.out(line) }
        }

        /// This binary's absolute path, as archive_command must name it.
        static func executable() -> String {
            var buffer = [CChar](repeating: 0, count: 4096)
            let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
            if n > 0 { return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) }
            return CommandLine.arguments[0]
        }
    }
}
