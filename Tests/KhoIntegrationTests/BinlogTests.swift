import Foundation
import Glibc
import KhoTestSupport
import Testing

// MariaDB's binary log and kho (issue 20, docs/design/pitr.md section 9): every dump records the
// binary log position its snapshot is at; `kho binlog serve` archives the log as it grows;
// `kho restore --pitr --at T --database D` loads the newest dump before T and replays the archived
// log from the dump's position up to T.

/// `binlogPosition` of one database in `kho snapshots --json`.
private func binlogPositions(_ sandbox: Sandbox) throws -> [(database: String, position: [String: Any]?, absent: String?)] {
    var found: [(String, [String: Any]?, String?)] = []
    for snapshot in try sandbox.snapshots() {
        let manifest = snapshot["manifest"] as? [String: Any]
        for database in manifest?["databases"] as? [[String: Any]] ?? [] {
            found.append((database["name"] as? String ?? "", database["binlogPosition"] as? [String: Any], database["binlogPositionAbsent"] as? String))
        }
    }
    return found
}

@Suite("MariaDB binary logs: positions in dumps, archiving, restore to a time", .serialized,
       .enabled(if: ScratchMariaDB.isAvailable, Comment(rawValue: ScratchMariaDB.unavailableReason ?? "")))
struct BinlogTests {
    @Test("a dump of a server with log_bin records the binary log position of its snapshot (mariadb-binlog starts from it); without log_bin it records none and why")
    func dumpsRecordTheirPosition() throws {
        let logged = try ScratchMariaDB(label: "binlog-position", binaryLog: .init(serverId: 7))
        defer { logged.stop() }
        let plain = try ScratchMariaDB(label: "binlog-none")
        defer { plain.stop() }
        let sandbox = try Sandbox("binlog-position")
        try sandbox.initRepository()
        for db in [logged, plain] {
            try db.sql("CREATE DATABASE registry; CREATE TABLE registry.births(id INT PRIMARY KEY, name VARCHAR(80)); INSERT INTO registry.births VALUES (1, 'Trần Thị Mai');")
        }
        try sandbox.ok("backup", "--mariadb", logged.url("registry"), "--source-name", "logged")
        try logged.sql("INSERT INTO registry.births VALUES (2, 'Lê Văn Nam');")
        let recorded = try binlogPositions(sandbox)
        let position = try #require(recorded.first?.position, "\(recorded)")
        let file = try #require(position["file"] as? String)
        let offset = try #require(position["position"] as? Int)
        #expect(file.hasPrefix("kho-bin.") && offset > 4, "\(position)")
        #expect(position["serverId"] as? Int == 7)
        #expect((position["gtid"] as? String)?.hasPrefix("0-7-") == true, "\(position)")
        #expect(try logged.value("SHOW MASTER STATUS;").hasPrefix(file))
        // The position is a place mariadb-binlog starts from: what follows it is the later insert, alone.
        let binlog = try #require(ServerSupport.find("mariadb-binlog", in: ServerSupport.standardDirectories))
        let replay = try ServerSupport.require(binlog, ["--no-defaults", "--read-from-remote-server", "--protocol=TCP", "--host=127.0.0.1", "--port=\(logged.port)",
                                                        "--user=root", "--start-position=\(offset)", "--verbose", file], scratch: sandbox.dir)
        #expect(replay.contains("INSERT INTO `registry`.`births`") && replay.contains("Lê Văn Nam") && !replay.contains("Trần Thị Mai"), "\(replay)")

        try sandbox.ok("backup", "--mariadb", plain.url("registry"), "--source-name", "plain")
        let none = try #require(try binlogPositions(sandbox).first { $0.position == nil })
        #expect(none.absent?.contains("log_bin") == true, "\(none)")
    }
}
