import Foundation
import KhoCatalog
import KhoCore
@testable import KhoReports
import KhoSupport
import Testing

@Suite("the latest PITR drill in the report")
struct PITRSectionTests {
    private func drill(_ id: String, started: Date, pitr: PITRDrillEvidence?) throws -> RunRecord {
        var evidence = DrillEvidence(drillID: id, policy: "p", source: "db1", sourceKind: .postgresBase, snapshot: "base1", snapshotTime: started,
                                     start: started, rtoObjectiveSeconds: 3600, khoVersion: "test", host: "h")
        evidence.pitr = pitr
        evidence.checks = [.init(.restore, outcome: .pass, output: "ok")]
        evidence.rtoSeconds = 42
        evidence.passed = true
        evidence.end = started.addingTimeInterval(60)
        try evidence.seal()
        var run = RunRecord(kind: .drill, policy: "p", source: "db1", repository: "/r", planned: nil, started: started)
        run.ended = evidence.end
        run.outcome = .success
        run.details = String(decoding: try JSON.encoder.encode(evidence), as: UTF8.self)
        return run
    }

    @Test("the newest drill with PITR evidence is summarised with its exactness, in Vietnamese and English; none without one")
    func newestPITRDrill() throws {
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        var approximate = PITRDrillEvidence(cluster: "7311", baseBackup: "base1", target: "restore point kho-1", exactness: .approximate)
        approximate.committedInWindow = 3
        let proven = PITRDrillEvidence(cluster: "7311", baseBackup: "base1", target: "restore point kho-2", exactness: .proven)
        let views = try [drill("a", started: t0, pitr: proven), drill("b", started: t0 + 3600, pitr: approximate), drill("c", started: t0 + 7200, pitr: nil)]
            .map { DrillView(run: $0, objective: 3600) }
        let summary = try #require(PITRDrillSummary.newest(views))
        #expect(summary.drillID == "b")
        #expect(summary.exactness == .approximate)
        #expect(summary.passed)
        #expect(summary.rtoSeconds == 42)
        let en = Formatter(language: .en, timeZone: "Asia/Ho_Chi_Minh").pitrSummary(summary)
        let vi = Formatter(language: .vi, timeZone: "Asia/Ho_Chi_Minh").pitrSummary(summary)
        #expect(en.contains("approximate: 3 transactions committed"), "\(en)")
        #expect(vi.contains("gần đúng: 3 giao dịch"), "\(vi)")
        #expect(PITRDrillSummary.newest(Array(views.suffix(1))) == nil)
        #expect(Formatter(language: .en, timeZone: "UTC").pitrSummary(nil) == L.never.en)
    }
}
