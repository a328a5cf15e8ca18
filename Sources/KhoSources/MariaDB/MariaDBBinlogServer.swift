import Foundation
import Glibc
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

    /// The unprivileged user the stream runs as.
    public struct StreamUser: Sendable, Equatable {
        public var name: String
        public var uid: uid_t
        public var gid: gid_t

        /// The user `name` of this machine, or a usage error.
        public static func named(_ name: String) throws -> StreamUser {
            var entry = passwd()
            var found: UnsafeMutablePointer<passwd>?
            var buffer = [CChar](repeating: 0, count: 16384)
            guard getpwnam_r(name, &entry, &buffer, buffer.count, &found) == 0, found != nil else {
                throw KhoError(.usage, "There is no user \(name) on this machine: give --stream-user an unprivileged user that exists (e.g. nobody, or a kho-binlog system user).")
            }
            guard entry.pw_uid != 0 else {
                throw KhoError(.usage, "--stream-user \(name) is root: the stream runs as an unprivileged user; give another one.")
            }
            return StreamUser(name: name, uid: entry.pw_uid, gid: entry.pw_gid)
        }
    }

    /// Starts `mariadb-binlog --read-from-remote-server --raw --stop-never` from the start of
    /// `first`, writing each file whole under its own name into `spool`. The password, if any,
    /// reaches it as MYSQL_PWD, never in its arguments. mariadb-binlog names the files it writes
    /// after the server's rotate events without checking them (a server, or whoever sits between,
    /// can make it write `<spool>/../…`), so it runs as `user` (util-linux's setpriv), which may
    /// write only the spool; and it dies with the thread that started it (`--pdeathsig`), so a
    /// killed `kho binlog serve` leaves no stream behind.
    public func stream(from first: BinlogFileName, into spool: String, as user: StreamUser?) throws -> Subprocess {
        let tool = try MariaDBSource.tool(["mariadb-binlog", "mysqlbinlog"], source: source)
        let options = MariaDBSource.arguments(endpoint, ["--read-from-remote-server", "--raw", "--stop-never", "--result-file=" + spool + "/"])
        let arguments = options + [first.description]
        guard let setpriv = findProgram("setpriv") else {
            if user != nil {
                throw KhoError(.source, "Source \(source): setpriv is not installed: kho binlog serve runs mariadb-binlog as an unprivileged user with it; install util-linux.")
            }
            return try Subprocess(program: tool, arguments: arguments, environment: try MariaDBSource.environment(endpoint))
        }
        var drop: [String] = []
        if let user { drop = ["--reuid=\(user.uid)", "--regid=\(user.gid)", "--clear-groups"] }
        return try Subprocess(program: setpriv, arguments: drop + ["--pdeathsig", "KILL", "--", tool] + arguments,
                              environment: try MariaDBSource.environment(endpoint))
    }
}
