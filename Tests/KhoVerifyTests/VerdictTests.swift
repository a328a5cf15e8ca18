import Foundation
import KhoCatalog
import KhoSupport
@testable import KhoVerify
import Testing

private func evidence(_ checks: [(DrillCheckKind, DrillCheckOutcome)]) -> DrillEvidence {
    var e = DrillEvidence(drillID: "d", policy: "p", source: "s", sourceKind: .postgres, snapshot: "s1", snapshotTime: Date(timeIntervalSince1970: 0),
                          start: Date(timeIntervalSince1970: 10), rtoObjectiveSeconds: 60, khoVersion: "test", host: "h")
    e.checks = checks.map { DrillEvidence.Check($0.0, outcome: $0.1, output: "") }
    return e
}

private func decided(_ checks: [(DrillCheckKind, DrillCheckOutcome)], requiring: Set<DrillRequirement> = Set(DrillRequirement.all),
                     findings: [DrillFinding] = []) -> DrillEvidence {
    var e = evidence(checks)
    DrillRunner.decide(&e, findings, requirements: requiring)
    return e
}

@Suite("drill verdicts")
struct VerdictTests {
    @Test("a manifest difference the policy does not count: the drill passes and kho verify exits 0 (it exited 12)")
    func uncountedManifest() {
        let e = decided([(.pgAmcheck, .pass), (.manifest, .fail), (.rto, .pass)], requiring: [.integrity, .rto],
                        findings: [DrillFinding(kind: .manifest, reason: "table public.orders: checksum differs")])
        #expect(e.passed)
        #expect(e.check(.manifest)?.counted == false && e.check(.pgAmcheck)?.counted == true)
        #expect(e.failureReasons == ["table public.orders: checksum differs (not counted: the policy's drills do not require the manifest check)"])
        #expect(KhoExitCode(DrillVerdict.of([e], couldNotRun: false)) == .success)
    }

    @Test("a counted manifest difference or engine check failure fails the drill with exit 12")
    func countedDataFailure() {
        let manifest = decided([(.pgAmcheck, .pass), (.manifest, .fail), (.rto, .pass)])
        #expect(!manifest.passed && KhoExitCode(DrillVerdict.of([manifest], couldNotRun: false)) == .integrity)
        let engine = decided([(.checkTable, .fail), (.manifest, .pass), (.rto, .pass)], requiring: [.integrity])
        #expect(!engine.passed && KhoExitCode(DrillVerdict.of([engine], couldNotRun: false)) == .integrity)
        let modes = decided([(.fileContents, .pass), (.fileModes, .fail), (.rto, .pass)])
        #expect(!modes.passed && KhoExitCode(DrillVerdict.of([modes], couldNotRun: false)) == .integrity)
    }

    @Test("only the RTO missed: exit 1; not counted: exit 0")
    func rto() {
        let counted = decided([(.sqliteIntegrity, .pass), (.manifest, .pass), (.rto, .fail)])
        #expect(!counted.passed && KhoExitCode(DrillVerdict.of([counted], couldNotRun: false)) == .failure)
        let uncounted = decided([(.sqliteIntegrity, .pass), (.manifest, .pass), (.rto, .fail)], requiring: [.integrity, .manifest])
        #expect(uncounted.passed && KhoExitCode(DrillVerdict.of([uncounted], couldNotRun: false)) == .success)
    }

    @Test("the restore always counts: a failed restore is 12 even when the policy requires nothing else; one that could not run is 1")
    func restore() {
        let failed = decided([(.restore, .fail)], requiring: [])
        #expect(!failed.passed && KhoExitCode(DrillVerdict.of([failed], couldNotRun: false)) == .integrity)
        let couldNot = decided([(.restore, .error)], requiring: [])
        #expect(!couldNot.passed && KhoExitCode(DrillVerdict.of([couldNot], couldNotRun: false)) == .failure)
    }

    @Test("a drill that could not start at all makes the run exit 1 even when the others passed")
    func couldNotRun() {
        let good = decided([(.fileContents, .pass), (.fileModes, .pass), (.rto, .pass)])
        #expect(good.passed && KhoExitCode(DrillVerdict.of([good], couldNotRun: false)) == .success)
        #expect(KhoExitCode(DrillVerdict.of([good], couldNotRun: true)) == .failure)
    }

    @Test("evidence of an earlier kho (no check kinds, no counted flags) decodes, keeps its seal and reads its checks by kind")
    func oldEvidence() throws {
        let text = """
            {"checks":[{"name":"pg_amcheck shop","outcome":"pass","output":"ok"},{"name":"manifest","outcome":"fail","output":"x"},\
            {"name":"rto","outcome":"pass","output":"usable after 1.00 s"}],"drillID":"d","end":"2026-03-02T01:00:00Z",\
            "evidenceSHA256":"","failureReasons":["table t: checksum differs"],"host":"h","khoVersion":"0.1.0","passed":false,\
            "policy":"p","rtoObjectiveSeconds":60,"rtoSeconds":1,"scratch":"x","snapshot":"s1","snapshotTime":"2026-03-01T01:00:00Z",\
            "source":"s","sourceKind":"postgres","start":"2026-03-02T00:59:00Z"}
            """
        var old = try JSON.decoder.decode(DrillEvidence.self, from: Data(text.utf8))
        try old.seal()
        let stored = String(decoding: try JSON.encoder.encode(old), as: UTF8.self)
        #expect(!stored.contains("\"kind\"") && !stored.contains("\"counted\"") && !stored.contains("filesCompared"))
        let read = try JSON.decoder.decode(DrillEvidence.self, from: Data(stored.utf8))
        #expect(read.verifySeal())
        #expect(read.check(.pgAmcheck)?.name == "pg_amcheck shop" && read.check(.manifest)?.outcome == .fail)
        #expect(read.sourceKind == .postgres)
        // Without counted flags every failed check counts, as the earlier kho decided.
        #expect(KhoExitCode(DrillVerdict.of([read], couldNotRun: false)) == .integrity)
    }
}
