import Foundation
import KhoCore
import KhoSupport

/// Reads where the binary log stands, on a connection that holds `FLUSH TABLES WITH READ LOCK`:
/// no transaction commits while it is held, so the position is exactly the dump's snapshot.
enum MariaDBBinlogPosition {
    /// The position, or why there is none. Never throws for a server without binary logging or a
    /// login that may not read it: the dump is worth as much as before, only not a start for a
    /// binary log replay, and the manifest says why.
    static func read(_ connection: MariaDBConnection) throws -> (DumpManifest.BinlogPosition?, absent: String?) {
        let settings = try connection.query("SELECT @@GLOBAL.log_bin, @@GLOBAL.gtid_binlog_pos, @@GLOBAL.server_id, @@GLOBAL.gtid_domain_id, UNIX_TIMESTAMP(NOW(6)), @@GLOBAL.binlog_format").first ?? []
        func column(_ i: Int) -> String { (i < settings.count ? settings[i] : nil) ?? "" }
        guard column(0) == "1" else { return (nil, "binary logging is off on the server (log_bin)") }
        let status: [[String?]]
        do {
            status = try connection.query("SHOW MASTER STATUS")
        } catch let error as KhoError where error.kind == .source {
            return (nil, "the server refused SHOW MASTER STATUS (\(error.message)); GRANT BINLOG MONITOR to the backup user")
        }
        guard let row = status.first, row.count >= 2, let file = row[0] ?? nil, let position = UInt64((row[1] ?? nil) ?? "") else {
            return (nil, "SHOW MASTER STATUS returned no binary log file although log_bin is on")
        }
        guard let serverId = UInt32(column(2)), let domain = UInt32(column(3)), let seconds = Double(column(4)) else {
            throw KhoError(.source, "Source \(connection.source): the server's server_id, gtid_domain_id or clock did not read as numbers: report this as a bug.")
        }
        return (DumpManifest.BinlogPosition(file: file, position: position, gtid: column(1), serverId: serverId, gtidDomainId: domain,
                                            time: Timestamp.format(Date(timeIntervalSince1970: seconds)), format: column(5)), nil)
    }
}
