import Foundation
import KhoCatalog
import KhoCore
@testable import KhoReports
import KhoSupport
import Testing

@Suite("drill content read from typed evidence")
struct DrillContentTests {
    private func evidence(output: String, missing: Int?) -> DrillEvidence {
        var evidence = DrillEvidence(drillID: "d1", policy: "p", source: "tep", sourceKind: .files, snapshot: "abc", snapshotTime: Date(),
                                     start: Date(), rtoObjectiveSeconds: 3600, khoVersion: "test", host: "h")
        evidence.checks = [.init(.fileContents, name: "file contents and sizes", outcome: .fail, output: output)]
        evidence.filesCompared = 10
        evidence.filesMissing = missing
        return evidence
    }

    @Test("missing files come from filesMissing, whatever the output's wording; evidence of an earlier kho is still read from its lines")
    func missingFiles() {
        // The output is bounded to 4 KiB: of 300 missing files only the first lines survive, the count does not.
        let bounded = "a: missing after restore\nb: size 3, snapshot says 4"
        #expect(DrillContent(evidence(output: bounded, missing: 300)).missing == 300)
        #expect(DrillContent(evidence(output: "a: gone\nb: gone", missing: 2)).missing == 2)
        #expect(DrillContent(evidence(output: bounded, missing: nil)).missing == 1)
        #expect(DrillContent(evidence(output: bounded, missing: nil)).differences == 2)
    }
}
