import ArgumentParser
import Foundation
import KhoCore
import KhoSupport

extension Wal {
    /// PostgreSQL's `restore_command` in standalone mode (design section 4). Its exit codes are
    /// PostgreSQL's, not kho's usual ones: 0 the file was written; 1 it is not archived and nothing
    /// later on its timeline is (the normal end of WAL); 126 for everything else, a gap, a damaged
    /// object, a storage or password failure, even a mistyped command line, because PostgreSQL
    /// reads any other code as "no such file" and would end recovery early at the wrong point.
    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "fetch",
            abstract: "Fetch one archived WAL file: PostgreSQL's restore_command (kho wal fetch --source NAME %f %p).",
            discussion: """
            Exit codes: 0 written; 1 not archived (the end of the WAL, or a timeline that does not
            exist); 126 recovery must stop (a gap in the archive, damage, the repository cannot be
            read). The file is written to %p.kho-tmp, fsynced and renamed: never empty or partial.
            With --prefetch DIR --cluster SYSID, one call in --read-ahead opens the repository.
            With --server SOCKET (written by `kho restore --to-data-directory --start`) it opens no
            repository: the restore process serves the checked file, reading ahead; the file is
            written to %p.kho-tmp and renamed without an fsync (PostgreSQL asks again after a crash).
            """
        )

        @OptionGroup var repository: RepositoryOptions

        @Option(help: "The policy source whose archive to read.")
        var source: String?

        @Option(help: "Ask the `kho restore` process listening on this socket (served mode); no repository is opened here.")
        var server: String?

        @Option(help: "The cluster's system identifier (16 hex digits, see `kho wal ls`); default: the source's current cluster.")
        var cluster: String?

        @Option(help: "Read ahead into this folder (needs --cluster): a call that opens the repository also fetches the next segments, and the next calls answer from the folder without opening it.")
        var prefetch: String?

        @Option(name: .customLong("read-ahead"), help: "With --prefetch: how many segments to fetch ahead (default 8).")
        var readAhead = 8

        @Option(help: "With --prefetch: downloads at once (default 4).")
        var connections = 4

        @Argument(help: "The file PostgreSQL asks for: %f.")
        var name: String

        @Argument(help: "Where PostgreSQL wants it: %p.")
        var destination: String

        func validate() throws {
            if server != nil {
                if source != nil || cluster != nil || prefetch != nil { throw ValidationError("--server takes no --source, --cluster or --prefetch: the restore process knows them.") }
                return
            }
            guard let source else { throw ValidationError("Give --source NAME, or --server SOCKET.") }
            try Wal.checkSource(source)
            if prefetch != nil && cluster == nil { throw ValidationError("--prefetch needs --cluster SYSID (see `kho wal ls`): the folder is answered from without opening the repository.") }
            if !(1...64).contains(readAhead) { throw ValidationError("--read-ahead must be 1 to 64.") }
            try Flags.checkConnections(connections)
        }

        func run() throws {
            if let server {
                let outcome = WALFetchClient.fetch(socket: server, name: name, destination: destination)
                switch outcome {
                case .written: return
                case .missing: throw ExitStatus(.failure)
                case .fatal(let message):
                    Terminal.error(message + " (recovery stops here: kho wal fetch exits 126)")
                    throw ExitStatus(.recoveryMustStop)
                }
            }
            let source = self.source ?? ""
            do {
                let name = try WALFileName(parsing: self.name)
                let cluster = try self.cluster.map { try SystemIdentifier(parsing: $0) }
                let prefetch = try cluster.flatMap { cluster in try self.prefetch.map { try WALPrefetch(root: $0, cluster: cluster) } }
                if let prefetch, try prefetch.serve(name: name, to: destination) { return }
                let repository = try self.repository.open()
                let record = try WALRecoveryFetch.record(source: source, cluster: cluster, in: repository)
                switch try WALRecoveryFetch.run(name: name, destination: destination, record: record, repository: repository) {
                case .written:
                    prefetch?.fill(after: name, count: readAhead, record: record, repository: repository, connections: connections)
                    return
                case .notArchived:
                    Terminal.error("\(name) is not in the WAL archive of cluster \(record.cluster) (source \(source)): the end of the archived WAL.")
                    throw ExitStatus(.failure)
                }
            } catch let status as ExitStatus {
                throw status
            } catch {
                Terminal.error(((error as? KhoError)?.message ?? "\(error)") + " (recovery stops here: kho wal fetch exits 126)")
                throw ExitStatus(.recoveryMustStop)
            }
        }

        /// Whether this process is `kho wal fetch`: a command line that does not even parse must
        /// stop recovery too, not read as "no such file".
        static var isThisCommand: Bool {
            let arguments = CommandLine.arguments.dropFirst()
            return arguments.count >= 2 && Array(arguments.prefix(2)) == ["wal", "fetch"]
        }

        /// The code the process leaves with: any failure but "not archived" becomes 126.
        static func exitCode(_ code: Int32) -> Int32 {
            guard isThisCommand, code != KhoExitCode.success.rawValue, code != KhoExitCode.failure.rawValue else { return code }
            return KhoExitCode.recoveryMustStop.rawValue
        }
    }
}
