import Foundation
import KhoCore
import KhoPolicy
import KhoSupport
import Testing
@testable import KhoReports

/// The binary log section of the report (docs/design/pitr.md section 9): achieved RPO against the
/// source's wal-rpo and the worst RPO judged at the period's end, gaps, in both languages.
@Suite("report binary log section")
struct BinlogReportTests {
    let from = Date(timeIntervalSince1970: 1_000_000)

    /// kho-bin.000001 whole (stored before and early in the period), .000002 with a 30-minute
    /// pause between its pieces, .000003 never stored, .000004 begun.
    func archive() throws -> BinlogArchiveView {
        let id = try #require(BinlogArchiveID(folder: "reg"))
        func at(_ seconds: Double) -> Date { from.addingTimeInterval(seconds) }
        let listed = [
            StoredFile(name: "reg/archive", size: 300, modified: at(-3600)),
            StoredFile(name: "reg/kho-bin.000001/000000000000-0000002c", size: 120, modified: at(-120)),
            StoredFile(name: "reg/kho-bin.000001/00000000002c-00000028", size: 110, modified: at(60)),
            StoredFile(name: "reg/kho-bin.000001/end", size: 90, modified: at(61)),
            StoredFile(name: "reg/kho-bin.000002/000000000000-0000002c", size: 120, modified: at(100)),
            StoredFile(name: "reg/kho-bin.000002/00000000002c-00000028", size: 110, modified: at(1900)),
            StoredFile(name: "reg/kho-bin.000004/000000000000-0000002c", size: 120, modified: at(2000)),
        ]
        let record = BinlogArchiveRecord(source: "reg", archive: id, serverId: 11, gtidDomainId: 0, basename: "kho-bin",
                                         serverVersion: "10.11.19-MariaDB", created: at(-3600), host: "db-1")
        return BinlogArchiveView(source: "reg", rpoSeconds: 600, archive: id, record: record, listed: listed)
    }

    @Test("achieved RPO at the period's end against wal-rpo, the longest pause as the worst, the missing file as a gap; judged at an earlier end, later objects do not count")
    func figures() throws {
        let to = from.addingTimeInterval(3 * 3600)
        let section = BinlogSection.make(policy: "ho-tich", archive: try archive(), scope: ReportScope(from: from, to: to))
        let newest = from.addingTimeInterval(2000)
        #expect(section.newestFile == "kho-bin.000004" && section.newestStored == newest && section.serverId == 11)
        #expect(section.achievedRpoSeconds == to.timeIntervalSince(newest) && section.worstRpoSeconds == to.timeIntervalSince(newest))
        #expect(section.piecesInPeriod == 4 && section.rpoSeconds == 600)
        #expect(section.gaps == ["the files between kho-bin.000002 and kho-bin.000004 are missing"], "\(section.gaps)")
        #expect(section.rpoMet == false)

        let early = BinlogSection.make(policy: "ho-tich", archive: try archive(), scope: ReportScope(from: from, to: from.addingTimeInterval(600)))
        #expect(early.newestFile == "kho-bin.000002" && early.achievedRpoSeconds == 500 && early.worstRpoSeconds == 500)
        #expect(early.piecesInPeriod == 2 && early.gaps.isEmpty && early.rpoMet == true)
        let before = BinlogSection.make(policy: "ho-tich", archive: try archive(), scope: ReportScope(from: from.addingTimeInterval(-7200), to: from.addingTimeInterval(-3000)))
        #expect(before.newestFile == nil && before.achievedRpoSeconds == nil && before.rpoMet == nil)
    }

    @Test("the section in markdown, HTML and JSON (valid against the schema), in both languages; absent without a binary log archive")
    func rendered() throws {
        let scope = ReportScope(from: from, to: from.addingTimeInterval(600))
        let binlog = [BinlogSection.make(policy: "ho-tich", archive: try archive(), scope: scope)]
        let data = ReportBuilder.build(policies: [], runs: [], ledger: LedgerInput(present: false, lines: [], firstBreak: nil), scope: scope, binlog: binlog)
        for (language, heading, met) in [(ReportLanguage.vi, "Bảo vệ liên tục (nhật ký nhị phân MariaDB)", "Achieved RPO"), (.en, "Continuous protection (MariaDB binary log)", "Achieved RPO")] {
            let document = try ReportDocument(data: data, generatedAt: scope.to, khoVersion: "0.1.0", host: "kho-test", language: language)
            let text = String(decoding: try document.render(.md), as: UTF8.self)
            #expect(text.contains("## " + heading))
            #expect(text.contains("| ho-tich/reg | 11 | kho-bin.000002"), "\(text)")
            #expect(language == .vi || text.contains(met))
            let html = String(decoding: try document.render(.html), as: UTF8.self)
            #expect(html.contains("<section id=\"binlog\">") && html.contains(heading))
            let object = try JSONSerialization.jsonObject(with: Data(try document.render(.json)))
            let errors = try SchemaValidator(path: Paths.packageRoot + "/docs/report.schema.json").validate(object)
            #expect(errors.isEmpty, "\(errors.prefix(10))")
            let carried = ((object as? [String: Any])?["data"] as? [String: Any])?["binlog"] as? [[String: Any]]
            #expect(carried?.first?["serverId"] as? Int == 11 && carried?.first?["rpoSeconds"] as? Double == 600, "\(carried ?? [])")
        }
        let none = ReportBuilder.build(policies: [], runs: [], ledger: LedgerInput(present: false, lines: [], firstBreak: nil), scope: scope)
        #expect(none.binlog == nil)
    }
}
