import Foundation
@testable import KhoSources
import KhoSupport
import Testing

// DatabaseNameFilter on the line forms mariadb-dump 10.11 writes, fed in every chunk size, so that
// a line split anywhere is read the same.

private func filtered(_ dump: String, from: String? = "orig", to: String = "copy", disableEvents: Bool? = false,
                      chunk: Int) throws -> (text: String, disabled: [String]) {
    let filter = DatabaseNameFilter(from: from, to: to, disableEvents: disableEvents)
    var out: [UInt8] = []
    let bytes = Array(dump.utf8)
    var i = 0
    while i < bytes.count {
        let end = min(bytes.count, i + chunk)
        try Array(bytes[i..<end]).withUnsafeBytes { try filter.process($0) { out.append(contentsOf: $0) } }
        i = end
    }
    try filter.flush { out.append(contentsOf: $0) }
    return (String(decoding: out, as: UTF8.self), filter.disabledEvents)
}

private let dump = """
    -- Current Database: `orig`
    --

    CREATE DATABASE /*!32312 IF NOT EXISTS*/ `orig` /*!40100 DEFAULT CHARACTER SET latin1 COLLATE latin1_swedish_ci */ COMMENT 'Sổ';

    USE `orig`;
    INSERT INTO `t` VALUES (1,'USE `orig`;'),(2,'ALTER DATABASE `orig`');
    ALTER DATABASE `orig` CHARACTER SET utf8mb4 COLLATE utf8mb4_vietnamese_ci ;
    /*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER t2 AFTER INSERT ON deeds FOR EACH ROW SET @x=1 */;;
    ALTER DATABASE `orig` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;;
    /*!50106 CREATE*/ /*!50117 DEFINER=`root`@`localhost`*/ /*!50106 EVENT `e_on` ON SCHEDULE EVERY 1 HOUR STARTS '2026-12-07 13:58:51' ON COMPLETION NOT PRESERVE ENABLE DO DELETE FROM deeds WHERE note = ' ON COMPLETION PRESERVE ENABLE'
    */ ;;
    /*!50106 CREATE*/ /*!50117 DEFINER=`a``b`@`%`*/ /*!50106 EVENT `x ON COMPLETION PRESERVE ENABLE` ON SCHEDULE AT '2030-01-01 00:00:00' ON COMPLETION PRESERVE DISABLE DO SET @x = 1 */ ;;
    /*!50106 CREATE*/ /*!50117 DEFINER=`r`*/ /*!50106 EVENT `e2` ON SCHEDULE EVERY '1:30' HOUR_MINUTE STARTS '2026-01-01 00:00:00' ON COMPLETION PRESERVE ENABLE COMMENT 'it''s ON COMPLETION' DO SET @y = 2 */ ;;
    USE `orig`;
    -- Dump completed
    """

@Suite("MariaDB dump filter")
struct MariaDBDumpFilterTests {
    @Test("CREATE DATABASE goes, USE and ALTER DATABASE name the target, data lines stay, in every chunk size")
    func rewritesTheDatabaseLines() throws {
        for chunk in [1, 2, 3, 7, 64, 100_000] {
            let (text, disabled) = try filtered(dump, chunk: chunk)
            #expect(!text.contains("CREATE DATABASE"), "chunk \(chunk)")
            #expect(text.components(separatedBy: "\nUSE `copy`;\n").count == 3, "chunk \(chunk): \(text)")
            #expect(text.contains("INSERT INTO `t` VALUES (1,'USE `orig`;'),(2,'ALTER DATABASE `orig`');"))
            #expect(text.contains("\nALTER DATABASE `copy` CHARACTER SET utf8mb4 COLLATE utf8mb4_vietnamese_ci ;\n"))
            #expect(text.contains("\nALTER DATABASE `copy` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;;\n"))
            #expect(!text.contains("ALTER DATABASE `orig`\n") && !text.contains("\nALTER DATABASE `orig`"))
            #expect(text.contains("ON COMPLETION NOT PRESERVE ENABLE DO"), "events keep their state unless asked")
            #expect(disabled.isEmpty)
        }
    }

    @Test("a copy under another name gets its enabled events DISABLED; names and strings that look like the status are left alone")
    func disablesEvents() throws {
        for chunk in [1, 5, 64, 100_000] {
            let (text, disabled) = try filtered(dump, disableEvents: true, chunk: chunk)
            #expect(disabled == ["e_on", "e2"], "chunk \(chunk)")
            #expect(text.contains("EVENT `e_on` ON SCHEDULE EVERY 1 HOUR STARTS '2026-12-07 13:58:51' ON COMPLETION NOT PRESERVE DISABLE DO DELETE FROM deeds WHERE note = ' ON COMPLETION PRESERVE ENABLE'\n"))
            #expect(text.contains("EVENT `x ON COMPLETION PRESERVE ENABLE` ON SCHEDULE AT '2030-01-01 00:00:00' ON COMPLETION PRESERVE DISABLE DO"))
            #expect(text.contains("ON COMPLETION PRESERVE DISABLE COMMENT 'it''s ON COMPLETION' DO SET @y = 2"))
            #expect(!text.contains("PRESERVE ENABLE DO") && !text.contains("PRESERVE ENABLE COMMENT"))
        }
    }

    @Test("names with a backquote, a space and a newline are read whole")
    func awkwardNames() throws {
        let from = "o`r ig\nx"
        let quoted = SQLIdentifier.mariadb(from)
        let text = "CREATE DATABASE /*!32312 IF NOT EXISTS*/ \(quoted);\nUSE \(quoted);\nALTER DATABASE \(quoted) CHARACTER SET latin1 COLLATE latin1_bin ;\nSELECT 1;\n"
        for chunk in [1, 4, 100] {
            let (out, _) = try filtered(text, from: from, to: "c`p\ny", chunk: chunk)
            #expect(out == "USE `c``p\ny`;\nALTER DATABASE `c``p\ny` CHARACTER SET latin1 COLLATE latin1_bin ;\nSELECT 1;\n", "chunk \(chunk): \(out.debugDescription)")
        }
    }

    @Test("a dump stored without a manifest names its database first: that one is rewritten, any other refused, events disabled under another name")
    func learnsTheDatabase() throws {
        let (text, disabled) = try filtered(dump, from: nil, disableEvents: nil, chunk: 13)
        #expect(text.components(separatedBy: "\nUSE `copy`;\n").count == 3)
        #expect(disabled == ["e_on", "e2"])
        let (same, kept) = try filtered(dump, from: nil, to: "orig", disableEvents: nil, chunk: 13)
        #expect(kept.isEmpty && same.contains("PRESERVE ENABLE DO"))
        #expect(throws: KhoError.self) { try filtered("USE `a`;\nUSE `b`;\n", from: nil, disableEvents: nil, chunk: 5) }
    }

    @Test("a line that would act on another database is refused")
    func refusesOtherDatabases() throws {
        for line in ["USE `prod`;\n", "ALTER DATABASE `prod` CHARACTER SET latin1 COLLATE latin1_bin ;\n",
                     "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `prod`;\n", "USE `orig``x`;\n", "USE prod;\n"] {
            #expect(throws: KhoError.self, "\(line)") { try filtered("SELECT 1;\n" + line + "SELECT 2;\n", chunk: 3) }
        }
    }
}
