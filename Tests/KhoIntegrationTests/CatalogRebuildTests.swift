import Foundation
import Glibc
import KhoSupport
import KhoTestSupport
import Testing

// `kho catalog rebuild` after the catalog is lost: drills keep their evidence in the repository
// (drills/), so the proof that restores were tested comes back with the backups, seals intact.
// A files source: the cheapest drill (no database server).

@Suite struct CatalogRebuildTests {
    @Test("a lost catalog is rebuilt with its drill records: same evidence, seals that verify, marked rebuilt; status and audit verify agree; again adds nothing")
    func drillsComeBack() throws {
        let bench = try DrillBench("rebuild-drills")
        let scans = bench.box.path("scans")
        try makeDirectories(scans)
        try writeFile(scans + "/a.txt", Array("so ho so 1\n".utf8))
        try writeFile(scans + "/b.txt", Array(repeating: 0x61, count: 50_000))
        try bench.writePolicy("ho-so", """
            time-zone: Europe/Berlin
            sources:
              - name: scans
                kind: files
                paths: [\(scans)]
            objectives:
              rpo: 24h
              rto: 1h

            """)
        try bench.ok(["run", "--all"])
        var drillIDs: [String] = []
        for _ in 0..<2 {
            let (result, drills) = try bench.verify(["--policy", "ho-so"])
            try #require(result.exitCode == 0 && drills.count == 1 && drills[0].passed, "\(result)")
            drillIDs.append(drills[0].drillID)
        }
        // Each drill's evidence is in the repository.
        let files = try bench.box.repositoryFiles("drills")
        #expect(files.count == 2, "\(files)")

        let catalog = bench.state + "/catalog.sqlite"
        let query = "SELECT outcome, rebuilt, snapshot, details FROM runs WHERE kind = 'drill' ORDER BY started, id;"
        let before = try ScratchSQLite.sql(query, path: catalog, scratch: bench.box.dir)
        #expect(before.split(separator: "\n").count == 2 && drillIDs.allSatisfy { before.contains($0) }, "\(before)")
        let statusBefore = try bench.status()

        for name in try FileManager.default.contentsOfDirectory(atPath: bench.state) where name.hasPrefix("catalog.sqlite") {
            try FileManager.default.removeItem(atPath: bench.state + "/" + name)
        }
        let rebuilt = try bench.ok(["catalog", "rebuild"])
        #expect(rebuilt.out.contains("ho-so: 1 backups recovered from \(bench.box.repo)"), "\(rebuilt)")
        #expect(rebuilt.out.contains("ho-so: 2 drills recovered from \(bench.box.repo)"), "\(rebuilt)")

        // The same evidence, byte for byte, now marked rebuilt.
        let after = try ScratchSQLite.sql(query, path: catalog, scratch: bench.box.dir)
        let expected = before.split(separator: "\n").map { line -> String in
            var fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            fields[1] = "1"
            return fields.joined(separator: "\t")
        }.joined(separator: "\n")
        #expect(after == expected, "before:\n\(before)\nafter:\n\(after)")
        #expect(before.split(separator: "\n").allSatisfy { $0.hasPrefix("success\t0\t") }, "\(before)")

        // Status reads the drills as before; the evidence's keyed seals verify.
        let statusAfter = try bench.status()
        #expect(statusAfter.map(\.lastDrill) == statusBefore.map(\.lastDrill), "\(statusAfter) vs \(statusBefore)")
        #expect(statusAfter.map(\.lastDrillOutcome) == ["success"] && statusAfter.allSatisfy { !$0.untested }, "\(statusAfter)")
        let audit = try bench.run(["audit", "verify"])
        #expect(audit.exitCode == 0 && audit.out.contains("chain intact"), "\(audit)")

        // Rebuilding again adds nothing.
        let again = try bench.ok(["catalog", "rebuild"])
        #expect(again.out.contains("ho-so: 0 backups recovered") && again.out.contains("ho-so: 0 drills recovered"), "\(again)")

        // Status shows the policy's time-zone (Europe/Berlin) on a UTC machine, unless KHO_TIME_ZONE says otherwise.
        let lastDrill = try #require(statusAfter.first?.lastDrill.flatMap(Timestamp.parse))
        let berlin = try bench.ok(["status"], env: ["TZ": "UTC"])
        #expect(berlin.out.contains("drill: success at \(ZonedTime.format(lastDrill, in: TimeZone(identifier: "Europe/Berlin")!))"), "\(berlin)")
        let hanoi = try bench.ok(["status"], env: ["TZ": "UTC", "KHO_TIME_ZONE": "Asia/Ho_Chi_Minh"])
        #expect(hanoi.out.contains("drill: success at \(ZonedTime.format(lastDrill, in: TimeZone(identifier: "Asia/Ho_Chi_Minh")!))"), "\(hanoi)")
    }
}
