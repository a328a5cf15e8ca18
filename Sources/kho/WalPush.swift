import ArgumentParser
import Foundation
import Glibc
import KhoCore
import KhoPolicy
import KhoSupport

extension Wal {
    /// PostgreSQL's `archive_command`. Its exit codes follow PostgreSQL's rules (design section 3):
    /// 0 stored or already stored with the same bytes; 12 refused for good (another cluster, other
    /// content under the name, an invalid file); 1 storage failing, try again; 2 wrong usage. All
    /// are at most 125, so PostgreSQL retries the file instead of restarting its archiver.
    struct Push: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "push",
            abstract: "Archive one WAL file: PostgreSQL's archive_command (kho wal push --source NAME %p).",
            discussion: """
            Runs as the cluster's user in the data directory. By default it opens the file and hands
            the open descriptor to the WAL agent (`kho wal serve`), which holds the repository open;
            it needs no password and no repository access. With --direct it opens the repository
            itself (KHO_REPOSITORY, KHO_PASSWORD_FILE), which puts the repository password within
            reach of every database superuser: use a repository of its own (see the README).
            Takes no lock: a push only adds files, and never replaces one.
            """
        )

        @OptionGroup var repository: RepositoryOptions

        @Option(help: "The policy source whose archive this cluster writes.")
        var source: String

        @Flag(help: "Open the repository in this process instead of handing the file to the WAL agent.")
        var direct = false

        @Option(name: .customLong("data-directory"), help: "The cluster's data directory (default: the current folder, where PostgreSQL runs archive_command).")
        var dataDirectory = "."

        @Option(help: "How long to wait for the WAL agent, e.g. 60s (without --direct).")
        var timeout = "60s"

        @Option(help: "The WAL agent's socket (without --direct). Default: /run/kho/wal/<source>.sock.")
        var socket: String?

        @Argument(help: "The file to archive: PostgreSQL's %p (e.g. pg_wal/000000010000000000000003).")
        var path: String

        func validate() throws {
            try Wal.checkSource(source)
        }

        func run() throws {
            let leaf = path.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? path
            let name = try WALFileName(parsing: leaf)
            guard direct else {
                try Push.throughAgent(source: source, path: path, name: name, timeout: try DurationText.parse(timeout, option: "--timeout"),
                                      socket: socket)
                return
            }
            let file = try Syscall.readFile(path, limit: WALObject.largestSegmentSize)
            let identity = try WALClusterIdentity.read(dataDirectory: dataDirectory)
            let archive = try WALArchive(repository: try repository.open(), source: source)
            switch try archive.push(name: name, file: file, identity: identity) {
            case .stored:
                break
            case .repeated:
                // Into PostgreSQL's log: a repeat follows a crash or a lost answer, and is worth seeing.
                Terminal.warning("\(name) was already archived for cluster \(identity.cluster) with the same content: nothing was replaced.")
            }
        }

        /// Hands the file to the WAL agent: opened here, with the cluster user's own rights, so that
        /// the agent reads only this descriptor and never a path a client names.
        static func throughAgent(source: String, path: String, name: WALFileName, timeout: TimeInterval, socket: String?) throws {
            let fd = try Syscall.call("open", path) { open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK) }
            defer { close(fd) }
            let answer = try WALAgentClient.push(source: source, fileDescriptor: fd, name: name, timeout: timeout, socketPath: socket)
            if case .ok = answer { return }
            Terminal.error(answer.message)
            throw ExitStatus(answer.exitCode)
        }
    }
}
