import Testing
import KhoSupport

// The exit codes are a contract (`kho --help`, README): a verdict maps to exactly one code.

@Suite struct VerdictTests {
    @Test("each verdict has its documented exit code")
    func codes() {
        #expect(KhoExitCode(Verdict.success).rawValue == 0)
        #expect(KhoExitCode(Verdict.partial).rawValue == 3)
        #expect(KhoExitCode(Verdict.damaged).rawValue == 12)
        #expect(KhoExitCode(Verdict.incomplete).rawValue == 1)
    }

    @Test("of two verdicts the worse decides: damage over an unfinished job over a partial snapshot")
    func worst() {
        let all: [Verdict] = [.success, .partial, .incomplete, .damaged]
        for (i, a) in all.enumerated() {
            for (j, b) in all.enumerated() {
                #expect(a.worst(b) == all[max(i, j)], "\(a) and \(b)")
            }
        }
    }
}
