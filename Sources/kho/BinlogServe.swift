import ArgumentParser
import Foundation
import Glibc
import KhoCore
import KhoPolicy
import KhoSources
import KhoSupport

/// `kho binlog serve`: one MariaDB server's binary log archived in the foreground (systemd runs it
/// as a service), until SIGTERM or SIGINT.
struct BinlogServe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Archive a MariaDB server's binary log as it grows: mariadb-binlog --raw --stop-never into the repository.",
        discussion: "The login needs REPLICATION SLAVE and BINLOG MONITOR. Every file the server has moved past is stored whole; the file being written is stored every --interval, so the archive is at most that far behind. Restarting continues where the archive ends."
    )

    @OptionGroup var repository: RepositoryOptions
    @Option(help: "The policy source whose binary log this is (the name its dumps are backed up under).") var source: String
    @Option(help: "The server: mariadb://USER@HOST:PORT (a database in the path is ignored).") var mariadb: String
    @Option(name: .customLong("password-file"), help: "File holding the login's password.") var passwordFile: String?
    @Option(name: .customLong("password-env"), help: "Environment variable holding the login's password.") var passwordEnv: String?
    @Option(help: "How often the file being written is stored, e.g. 60s, 5m (the RPO while the server writes one file).")
    var interval = "60s"
    @Option(name: .customLong("spool-directory"), help: "Where mariadb-binlog writes (a folder of its own, emptied at start, below folders --stream-user may pass). Default: /var/spool/kho/binlog/<archive>.")
    var spoolDirectory: String?
    @Option(name: .customLong("stream-user"), help: "The unprivileged user mariadb-binlog runs as (it writes only the spool). Default: nobody.")
    var streamUser = "nobody"
    @Flag(help: "Log every piece stored, not only problems.") var verbose = false

    func validate() throws {
        try Wal.checkSource(source)
    }

    func run() throws {
        let stop = Locked(false)
        Signals.graceful { stop.withLock { $0 = true } }
        let log: @Sendable (String) -> Void = { line in Terminal.write(STDERR_FILENO, "\(Timestamp.format(Date())) \(line)\n") }
        var url = mariadb
        if let components = URLComponents(string: url), components.path.drop(while: { $0 == "/" }).isEmpty {
            url = url.hasSuffix("/") ? url + "mysql" : url + "/mysql"
        }
        let spec = try SourceSpec.database(url: url, name: source, passwordFile: passwordFile, passwordEnv: passwordEnv)
        guard spec.kind == .mariadb, let endpoint = spec.endpoint else {
            throw KhoError(.usage, "--mariadb takes the server as mariadb://USER@HOST:PORT.")
        }
        let archive = try BinlogArchive(repository: try repository.open(), source: source)
        let base = BinlogArchiverStatus.stateFolder
        // Not below the state folder, which kho keeps 0700: the stream's user must pass to its spool.
        let spools = "/var/spool/kho/binlog"
        var options = BinlogArchiverOptions(spool: spoolDirectory ?? spools + "/" + archive.id.description)
        // As root, mariadb-binlog (which writes where the server's rotate events name) runs as
        // another user; otherwise it runs as kho's own.
        options.streamUser = geteuid() == 0 ? try MariaDBBinlogServer.StreamUser.named(streamUser) : nil
        if spoolDirectory == nil && options.streamUser != nil {
            // kho's own folder of spools: the stream's user passes through it (kho's umask would make it 0700).
            try FileSystem.makeFolders(spools, mode: 0o711)
            try Syscall.call("chmod", spools) { chmod(spools, 0o711) }
        }
        try FileSystem.makeFolders(base, mode: 0o700)
        options.statusFile = BinlogArchiverStatus.path(folder: base, archive: archive.id)
        options.interval = try DurationText.parse(interval, option: "--interval")
        options.verbose = verbose
        let archiver = BinlogArchiver(archive: archive, server: MariaDBBinlogServer(endpoint: endpoint, source: source), options: options, log: log)
        try archiver.run(stop: { stop.current })
    }
}
