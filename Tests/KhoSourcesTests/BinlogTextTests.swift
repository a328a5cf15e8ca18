import Foundation
@testable import KhoSources
import Testing

/// mariadb-binlog's text on its way to the client: the source's GTID and server id lines dropped
/// (wherever the chunks are cut), statements naming the database explicitly found.
@Suite struct BinlogTextTests {
    static let text = """
        /*!50530 SET @@SESSION.PSEUDO_SLAVE_MODE=1*/;
        # at 803
        #251207 22:27:57 server id 3  end_log_pos 845 CRC32 0x1	GTID 0-3-9 trans
        /*M!100001 SET @@session.gtid_domain_id=0*//*!*/;
        /*M!100001 SET @@session.server_id=3*//*!*/;
        /*M!100001 SET @@session.gtid_seq_no=9*//*!*/;
        START TRANSACTION
        /*!*/;
        #251207 22:27:57 server id 3  end_log_pos 890	Table_map: `registry`.`births` mapped to number 33
        BINLOG '
        fDMXaxMLAAAAPwAAAOsCAAAAAO4AAAAAAAEAEXJlZ2lzdHJ5X3Jlc3RvcmVkAAVub3RlcwACA/wB
        '/*!*/;
        COMMIT/*!*/;

        """

    func filtered(_ text: String, cut: Int) throws -> String {
        var filter = BinlogSessionFilter()
        var out: [UInt8] = []
        let bytes = Array(text.utf8)
        var at = 0
        while at < bytes.count {
            let end = min(bytes.count, at + cut)
            try bytes[at..<end].withUnsafeBytes { try filter.process($0) { out += $0 } }
            at = end
        }
        try filter.flush { out += $0 }
        return String(decoding: out, as: UTF8.self)
    }

    @Test("the GTID and server id lines are dropped, every other byte passes, however the stream is cut")
    func sessionFilter() throws {
        let expected = BinlogTextTests.text.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.hasPrefix("/*M!100001 SET @@session.gtid") && !$0.hasPrefix("/*M!100001 SET @@session.server_id") }.joined(separator: "\n")
        for cut in [1, 2, 7, 33, 64, 4096] {
            #expect(try filtered(BinlogTextTests.text, cut: cut) == expected, "cut \(cut)")
        }
        #expect(try filtered("no newline at the end", cut: 3) == "no newline at the end")
    }

    func scan(_ text: String, database: String = "registry", renamed: Bool) -> String? {
        var scanner = BinlogStatementScanner(database: database, renamed: renamed)
        Array(text.utf8).withUnsafeBytes { scanner.feed($0) }
        scanner.finish()
        return scanner.found.map { String(decoding: $0, as: UTF8.self) }
    }

    @Test("statements naming the database: found when renamed or run from another database; comments, row events and other names are not")
    func statements() {
        #expect(scan(BinlogTextTests.text, renamed: true) == nil)
        let own = "use `registry`/*!*/;\nDROP TABLE `registry`.`notes`/*!*/;\n"
        #expect(scan(own, renamed: true) != nil)
        #expect(scan(own, renamed: false) == nil)
        #expect(scan("use `mysql`/*!*/;\nCREATE TABLE registry.audit(id INT)/*!*/;\n", renamed: false) != nil)
        #expect(scan("use `registry`/*!*/;\nCREATE TABLE my_registry.audit(id INT)/*!*/;\n", renamed: true) == nil)
        #expect(scan("use `registry`/*!*/;\nCREATE TABLE notes(id INT)/*!*/;\n", renamed: true) == nil)
    }

    @Test("row changes logged as statements in the database are found at a statement's start only; a trigger's body and other databases are not")
    func statementFormat() {
        var scanner = BinlogStatementScanner(database: "registry", renamed: false)
        let logged = "use `registry`/*!*/;\nSET TIMESTAMP=1733600000/*!*/;\ninsert into births values (1)\n/*!*/;\n"
        Array(logged.utf8).withUnsafeBytes { scanner.feed($0) }
        scanner.finish()
        #expect(scanner.finding == .statementChange)
        #expect(scan("use `registry`/*!*/;\nSET TIMESTAMP=1/*!*/;\nCREATE TRIGGER t AFTER INSERT ON births FOR EACH ROW\nINSERT INTO audit VALUES (NEW.id)\n/*!*/;\n", renamed: false) == nil)
        #expect(scan("use `other`/*!*/;\nSET TIMESTAMP=1/*!*/;\nINSERT INTO t VALUES (1)\n/*!*/;\n", renamed: false) == nil)
        #expect(scan(BinlogTextTests.text, renamed: false) == nil)
    }
}
