import ArgumentParser
import Foundation
import KhoCore
import KhoPolicy
import KhoSupport

/// `kho wal serve`: the WAL agent of one source in the foreground (systemd runs it as a service).
struct WalServe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Archive a cluster's WAL: open the repository once, push ready files ahead of PostgreSQL, answer `kho wal push`.",
        discussion: "Runs as root until SIGTERM or SIGINT. PostgreSQL's archive_command (`kho wal push %p`) hands each file to this agent over a Unix socket, so the cluster's user needs no password and no repository access. Only the data directory's owner and root may connect."
    )

    @OptionGroup var repository: RepositoryOptions
    @Option(help: "The policy source the cluster's archive belongs to.") var source: String
    @Option(name: .customLong("data-directory"), help: "The cluster's data directory on this host.") var dataDirectory: String
    @Option(help: "Listen here instead of /run/kho/wal/<source>.sock (a folder only root can write).") var socket: String?
    @Option(name: .customLong("state-directory"), help: "Folder of the pushed-files ledger and the status file. Default: $KHO_STATE_DIR/wal, else /var/lib/kho/wal.")
    var stateDirectory: String?
    @Option(help: "Files pushed ahead in parallel (1 to 64). Default: 2 on a folder, 4 on S3.") var connections: Int?
    @Option(name: .customLong("stall-after"), help: "Report the archive as stalled when a ready file waits longer than this, e.g. 5m.")
    var stallAfter = "5m"
    @Flag(help: "Log every file pushed, not only problems.") var verbose = false

    func validate() throws {
        try Flags.checkConnections(connections)
    }

    func run() throws {
        let stop = Locked(false)
        Signals.graceful { stop.withLock { $0 = true } }
        let log: @Sendable (String) -> Void = { line in Terminal.write(STDERR_FILENO, "\(Timestamp.format(Date())) \(line)\n") }
        let state = stateDirectory ?? ProcessInfo.processInfo.environment["KHO_STATE_DIR"].flatMap { $0.isEmpty ? nil : $0 + "/wal" } ?? WALAgentPaths.stateFolder
        var options = WALAgentOptions(source: source, dataDirectory: dataDirectory,
                                      socketPath: try socket ?? WALAgentPaths.socket(source: source), stateDirectory: state)
        // An S3 round trip leaves a core idle; a local fsync does not.
        options.uploaders = try connections ?? (repository.location().hasPrefix("s3:") ? 4 : 2)
        options.stallAfter = try DurationText.parse(stallAfter, option: "--stall-after")
        options.verbose = verbose
        // One key derivation for the agent's whole life: this is what keeps up with a busy server.
        // Its uploaders push side by side: each compresses on its own thread unless cores are
        // left over (zstd's workers beside them only added copies and switches).
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let archive = try WALArchive(repository: try repository.open(), source: source,
                                     compressionWorkers: cores > options.uploaders ? cores / options.uploaders : 0)
        let agent = try WALAgent(archive: archive, options: options, log: log)
        try agent.run(stop: { stop.current })
    }
}
