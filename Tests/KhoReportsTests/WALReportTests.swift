import Foundation
import KhoCore
import KhoPolicy
import KhoSupport
import Testing
@testable import KhoReports

/// The WAL section of the report (docs/design/pitr.md section 7): achieved and worst RPO judged at
/// the period's end, the recovery window and gaps, in both languages.
@Suite("report WAL section")
struct WALReportTests {
    let cluster = SystemIdentifier(0x6b16_d156_c0f2_5a77)
    let size = WALSegmentSize.default
    let from = Date(timeIntervalSince1970: 1_000_000)

    func segment(_ number: UInt64) -> WALFileName { .segment(timeline: 1, number: number, segmentSize: size) }

    /// Segments 10…19 stored every 60 s from `from` − 120 s, except a 30-minute pause before 15;
    /// 17 missing; one base backup starting at 10.
    func archive() throws -> WALArchiveView {
        var files: [StoredFile] = []
        var time = from.addingTimeInterval(-120)
        for number in UInt64(10)...19 {
            time = time.addingTimeInterval(number == 15 ? 1800 : 60)
            if number == 17 { continue }
            files.append(StoredFile(name: segment(number).storedName(cluster: cluster), size: 100, modified: time))
        }
        let inventory = WALInventory(cluster: cluster, segmentSize: size, files: files)
        let manifest = PhysicalBackupManifest(
            engine: "postgres", serverVersion: "16.4", majorVersion: 16, cluster: cluster.description, timeline: 1,
            startLSN: "0/A000028", endLSN: "0/A000100", startSegment: segment(10).description, endSegment: segment(10).description,
            segmentSize: size.bytes, blockSize: 8192, pageSize: 8192, dataChecksums: true,
            settings: .init(maxConnections: 100, maxWorkerProcesses: 8, maxWalSenders: 10, maxPreparedTransactions: 0, maxLocksPerTransaction: 64),
            superuser: "postgres", stopTime: from.addingTimeInterval(-90), label: "kho", backupManifestSHA256: "", files: 1, bytes: 1)
        var snapshot = Snapshot(time: from.addingTimeInterval(-100), tree: BlobID(w0: 0, w1: 0, w2: 0, w3: 0), paths: ["/"], hostname: "kho-1",
                                username: "root", tags: ["base"], parent: nil, source: SnapshotSource(kind: "postgres-base", name: "db1"),
                                partial: false, summary: nil, manifest: try manifest.json)
        snapshot.id = "ab12cd34" + String(repeating: "0", count: 56)
        let bases = try WALBaseBackup.kept(in: [snapshot])[cluster.description] ?? []
        let record = WALArchiveRecord(source: "db1", cluster: cluster, serverVersion: 16, segmentSize: size, walBlockSize: 8192,
                                      pageMagic: 0xD113, created: from, host: "db-1")
        return WALArchiveView(source: "db1", record: record, inventory: inventory, histories: [:], bases: bases)
    }

    @Test("achieved RPO at the period's end, the longest pause as the worst, the window and the gap that cuts the base backup")
    func figures() throws {
        let to = from.addingTimeInterval(3 * 3600)
        let section = WALSection.make(policy: "ho-tich", archive: try archive(), scope: ReportScope(from: from, to: to))
        let newestStored = from.addingTimeInterval(-120 + 60 * 9 + 1800)
        #expect(section.newestSegment == segment(19).description)
        #expect(section.achievedRpoSeconds == to.timeIntervalSince(newestStored))
        // The tail from the newest segment to the period's end is the longest time without one.
        #expect(section.worstRpoSeconds == to.timeIntervalSince(newestStored))
        #expect(section.segmentsInPeriod == 8)
        #expect(section.windowStart == from.addingTimeInterval(-90) && section.windowEnd == newestStored)
        #expect(section.gaps == [segment(17).description + " (ab12cd34)"])
        // Judged at an earlier end, segments stored later do not count.
        let early = WALSection.make(policy: "ho-tich", archive: try archive(), scope: ReportScope(from: from, to: from.addingTimeInterval(600)))
        #expect(early.newestSegment == segment(14).description && early.worstRpoSeconds == 600 - 180)
    }

    @Test("the section in markdown, in both languages; absent without WAL")
    func rendered() throws {
        let scope = ReportScope(from: from, to: from.addingTimeInterval(3 * 3600))
        let wal = [WALSection.make(policy: "ho-tich", archive: try archive(), scope: scope)]
        let data = ReportBuilder.build(policies: [], runs: [], ledger: LedgerInput(present: false, lines: [], firstBreak: nil), scope: scope, wal: wal)
        for (language, heading) in [(ReportLanguage.vi, "## Bảo vệ liên tục (WAL PostgreSQL)"), (.en, "## Continuous protection (PostgreSQL WAL)")] {
            let text = String(decoding: try ReportDocument(data: data, generatedAt: scope.to, khoVersion: "0.1.0", host: "kho-test", language: language).render(.md), as: UTF8.self)
            #expect(text.contains(heading))
            #expect(text.contains("| ho-tich/db1 | \(cluster) | \(segment(19))"))
        }
        let none = ReportBuilder.build(policies: [], runs: [], ledger: LedgerInput(present: false, lines: [], firstBreak: nil), scope: scope)
        #expect(none.wal == nil)
    }
}
