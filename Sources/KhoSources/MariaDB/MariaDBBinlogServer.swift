import Foundation
import KhoCore
import KhoSupport

/// The MariaDB server whose binary log `kho binlog serve` archives: who it is, which binary log
/// files it still has, and MariaDB's own `mariadb-binlog` streaming them into a spool folder. The
/// login needs `REPLICATION SLAVE` (to stream) and `BINLOG MONITOR` (`SHOW BINARY LOGS`).
public struct MariaDBBinlogServer: Sendable {
    public let endpoint: DatabaseEndpoint
    public let source: String

    public init(endpoint: DatabaseEndpoint, source: String) {
        self.endpoint = endpoint
        self.source = source
    }

    public struct State: Sendable {
        public var identity: BinlogServerIdentity
        /// `SHOW BINARY LOGS`: the files the server still has, oldest first, and their sizes.
        public var files: [(name: BinlogFileName, size: UInt64)]
        /// `@@binlog_format`: a restore replays only ROW.
        public var format: String
    }

    public func state() throws -> State {
        let connection = try MariaDBConnection(endpoint: endpoint, database: nil, source: source)
        let row = try connection.query("SELECT @@GLOBAL.log_bin, @@GLOBAL.server_id, @@GLOBAL.gtid_domain_id, @@GLOBAL.log_bin_basename, VERSION(), @@GLOBAL.binlog_format").first ?? []
        func column(_ i: Int) -> String { (i < row.count ? row[i] : nil) ?? "" }
        guard column(0) == "1" else {
            throw KhoError(.source, "Source \(source): binary logging is off on the server: set log_bin (and binlog_format = ROW, server_id) in its configuration and restart it.")
        }
        guard let serverId = UInt32(column(1)), let domain = UInt32(column(2)) else {
            throw KhoError(.source, "Source \(source): the server's server_id or gtid_domain_id did not read as numbers: report this as a bug.")
        }
        let basename = String(column(3).split(separator: "/").last ?? "")
        let listed: [[String?]]
        do {
            listed = try connection.query("SHOW BINARY LOGS")
        } catch let error as KhoError where error.kind == .source {
            throw KhoError(.source, "Source \(source): the server refused SHOW BINARY LOGS (\(error.message)): GRANT BINLOG MONITOR, REPLICATION SLAVE ON *.* TO the user kho binlog serve logs in as.")
        }
        var files: [(BinlogFileName, UInt64)] = []
        for entry in listed {
            guard let name = entry.first ?? nil else { continue }
            files.append((try BinlogFileName(name), UInt64((entry.count > 1 ? entry[1] : nil) ?? "") ?? 0))
        }
        files.sort { $0.0 < $1.0 }
        return State(identity: BinlogServerIdentity(serverId: serverId, gtidDomainId: domain, basename: basename, version: column(4)),
                     files: files, format: column(5))
    }

    /// Starts `mariadb-binlog --read-from-remote-server --raw --stop-never` from the start of
    /// `first`, writing each file whole under its own name into `spool` (a folder only root can
    /// write). The password, if any, reaches it as MYSQL_PWD, never in its arguments. Where
    /// util-linux's setpriv is installed the stream dies with the thread that started it, so a
    /// killed `kho binlog serve` leaves no stream behind.
    public func stream(from first: BinlogFileName, into spool: String) throws -> Subprocess {
        let tool = try MariaDBSource.tool(["mariadb-binlog", "mysqlbinlog"], source: source)
        let options = MariaDBSource.arguments(endpoint, ["--read-from-remote-server", "--raw", "--stop-never", "--result-file=" + spool + "/"])
        let arguments = options + [first.description]
        if let setpriv = findProgram("setpriv") {
            return try Subprocess(program: setpriv, arguments: ["--pdeathsig", "KILL", "--", tool] + arguments,
                                  environment: try MariaDBSource.environment(endpoint))
        }
        return try Subprocess(program: tool, arguments: arguments, environment: try MariaDBSource.environment(endpoint))
    }
}
