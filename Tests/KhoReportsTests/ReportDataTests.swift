import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoPolicy
import Testing
@testable import KhoReports

/// Every figure of the report data, checked against the simulated runs that produced it.
@Suite("report data from a simulated month")
struct ReportDataTests {
    let month: SimulatedMonth
    let data: ReportData

    init() throws {
        month = try SimulatedMonth()
        data = try month.report()
    }

    func dataset(_ key: String) throws -> Dataset {
        try #require(data.datasets.first { $0.key == key }, "dataset \(key) is missing from the report")
    }

    @Test("every dataset of every policy is in the report, grouped by agency")
    func datasetsAndAgencies() throws {
        #expect(data.datasets.map(\.key).sorted() == SimulatedMonth.datasets)
        #expect(data.agencies.map(\.name) == data.agencies.map(\.name).sorted())
        #expect(data.agencies.count == 4)
        for agency in data.agencies {
            #expect(agency.datasets.allSatisfy { $0.agency == agency.name })
        }
        #expect(data.period.from == month.scope.from)
        #expect(data.period.to == month.scope.to)
        #expect(data.period.timeZone == "Asia/Ho_Chi_Minh")
    }

    @Test("backup counts and success rates equal the runs of the month")
    func backupCounts() throws {
        for key in SimulatedMonth.datasets {
            let d = try dataset(key)
            let runs = month.runs(of: key)
            let succeeded = runs.filter { $0.outcome == "success" }.count
            let failed = runs.filter { $0.outcome == "failure" }.count
            let partial = runs.filter { $0.outcome == "partial" }.count
            let planned = month.planned(key)
            // Every run of the month is at its schedule's time, so a missed planned time is a
            // scheduled day without a run.
            let missed = planned - runs.count
            #expect(d.backups.planned == planned, "\(key)")
            #expect(d.backups.attempted == runs.count, "\(key)")
            #expect(d.backups.succeeded == succeeded, "\(key)")
            #expect(d.backups.failed == failed, "\(key)")
            #expect(d.backups.partial == partial, "\(key)")
            #expect(d.backups.missed == missed, "\(key)")
            let expectedRate = planned == 0 ? nil : (Double(succeeded) / Double(runs.count + missed) * 10000).rounded() / 10000
            #expect(d.backups.successRate == expectedRate, "\(key)")
            #expect(d.backups.failures.map(\.started) == runs.filter { $0.outcome != "success" }.map(\.started), "\(key)")
        }
        // The same, written out once by hand.
        #expect(try dataset("ho-tich/ho-tich-db").backups.successRate == 0.9333)
        #expect(try dataset("ho-so-scan/ho-so-scan").backups.planned == 25)
        #expect(try dataset("ho-so-scan/ho-so-scan").backups.missed == 1)
        #expect(try dataset("ho-so-scan/ho-so-scan").backups.successRate == 0.92)
        #expect(try dataset("van-ban/van-ban-scan").backups.missed == 30)
        #expect(try dataset("van-ban/van-ban-scan").backups.successRate == 0)
        #expect(try dataset("van-ban/van-ban-tep").backups.unfinished == 1)
        #expect(try dataset("dat-dai/dat-dai-db").backups.failures.first { $0.outcome == .failure }?.error.contains("min-size-ratio") == true)
    }

    @Test("recovery points: last good, last verified, worst achieved RPO against the objective")
    func recoveryPoints() throws {
        for key in SimulatedMonth.datasets {
            let d = try dataset(key)
            let good = month.runs.filter { $0.dataset == key && $0.outcome == "success" && $0.ended <= month.scope.to }.max { $0.started < $1.started }
            #expect(d.backups.lastGood?.snapshot == good?.snapshot, "\(key)")
            #expect(d.backups.lastGood?.time == good?.snapshotTime, "\(key)")
            #expect(d.backups.ageAtEndSeconds == good.map { month.scope.to.timeIntervalSince($0.snapshotTime!) }, "\(key)")
            let verified = month.drills.filter { $0.dataset == key && $0.passed && $0.ended <= month.scope.to }.max { $0.started < $1.started }
            #expect(d.backups.lastVerified?.snapshot == verified?.snapshot, "\(key)")
            #expect(d.backups.lastVerified?.time == verified?.snapshotTime, "\(key)")
            // Worst gap between good snapshots of the month (and from the last one before it,
            // and to the period end), computed here by brute force over the sorted data times.
            let times = month.runs.filter { $0.dataset == key && $0.outcome == "success" }.compactMap(\.snapshotTime).sorted()
            if times.isEmpty {
                #expect(d.backups.worstRpoSeconds == nil, "\(key)")
                #expect(d.backups.rpoMet == nil, "\(key)")
                continue
            }
            var worst = 0.0
            for (a, b) in zip(times, times.dropFirst()) where b > month.scope.from { worst = max(worst, b.timeIntervalSince(a)) }
            worst = max(worst, month.scope.to.timeIntervalSince(times.last!))
            #expect(d.backups.worstRpoSeconds == worst, "\(key)")
            #expect(d.backups.rpoMet == (worst <= d.objectives.rpoSeconds + max(60, d.objectives.rpoSeconds / 100)), "\(key)")
        }
        // Written out: two failed nights give three days; a partial and a refused night two days
        // each; Sundays and the missed Wednesday two days against a 48-hour RPO; nightly one day.
        #expect(try dataset("ho-tich/ho-tich-db").backups.worstRpoSeconds == 3 * 86400)
        #expect(try dataset("ho-tich/ho-tich-db").backups.worstRpoAt == SimulatedMonth.local(11, 12, 1, 30, 11))
        #expect(try dataset("ho-tich/ho-tich-db").backups.rpoMet == false)
        #expect(try dataset("dat-dai/dat-dai-db").backups.worstRpoSeconds == 2 * 86400)
        #expect(try dataset("dat-dai/dat-dai-db").backups.rpoMet == false)
        #expect(try dataset("ho-so-scan/ho-so-scan").backups.worstRpoSeconds == 2 * 86400)
        #expect(try dataset("ho-so-scan/ho-so-scan").backups.rpoMet == true)
        #expect(try dataset("van-ban/van-ban-db").backups.worstRpoSeconds == 86400)
        #expect(try dataset("van-ban/van-ban-db").backups.rpoMet == true)
        #expect(try dataset("dat-dai/dat-dai-db").backups.lastVerified?.time == month.drills.first { $0.dataset == "dat-dai/dat-dai-db" }!.snapshotTime)
        #expect(try dataset("ho-so-scan/ho-so-scan").backups.lastVerified == nil)
    }

    @Test("drills: counts, last drill, measured RTO against the objective, failed checks, evidence seals")
    func drills() throws {
        for key in SimulatedMonth.datasets {
            let d = try dataset(key)
            let drills = month.drills(of: key)
            #expect(d.drills.done == drills.count, "\(key)")
            #expect(d.drills.passed == drills.filter(\.passed).count, "\(key)")
            #expect(d.drills.failed == drills.filter { !$0.passed }.count, "\(key)")
            #expect(d.drills.records.map(\.started) == drills.map(\.started), "\(key)")
            #expect(d.drills.records.map(\.rtoSeconds) == drills.map(\.rtoSeconds), "\(key)")
            #expect(d.drills.records.allSatisfy { $0.sealIntact }, "\(key)")
            #expect(d.drills.lastRtoSeconds == drills.last?.rtoSeconds, "\(key)")
            #expect(d.drills.worstRtoSeconds == drills.compactMap(\.rtoSeconds).max(), "\(key)")
            #expect(d.drills.rtoMet == (drills.isEmpty ? nil : drills.allSatisfy { $0.rtoSeconds! <= d.objectives.rtoSeconds }), "\(key)")
            let last = month.drills.filter { $0.dataset == key }.last
            #expect(d.drills.last?.started == last?.started, "\(key)")
        }
        let hoTich = try dataset("ho-tich/ho-tich-db")
        #expect(hoTich.drills.done == 5, "the October drill is not in November's report")
        #expect(hoTich.drills.last?.started == SimulatedMonth.local(11, 30, 3))
        let datDai = try dataset("dat-dai/dat-dai-db")
        #expect(datDai.drills.rtoMet == false)
        #expect(datDai.drills.worstRtoSeconds == 5400)
        #expect(datDai.drills.failedChecks.map(\.name) == ["rto"])
        #expect(datDai.drills.failedChecks.first?.count == 1)
        #expect(datDai.drills.records.last?.failureReasons == ["restore took 5400.0 s, more than the RTO of 3600 s"])
        let scan = try dataset("ho-so-scan/ho-so-scan")
        #expect(scan.drills.done == 0 && scan.drills.last == nil && scan.drills.rtoMet == nil)
        #expect(scan.objectives.drillEverySeconds == nil)
        #expect(scan.objectives.drillPeriodUsedSeconds == 30 * 86400)
    }

    func metric(_ d: Dataset, _ id: String) throws -> Metric {
        let all = d.dimensions.all.flatMap(\.dimension.metrics)
        return try #require(all.first { $0.id == id }, "metric \(id) of \(d.key)")
    }

    @Test("đúng - đủ - sạch - sống: each metric's value, threshold and verdict; no evidence is never a pass")
    func dimensions() throws {
        let hoTich = try dataset("ho-tich/ho-tich-db")
        #expect(try metric(hoTich, "drillContentEqual").value == 0)
        #expect(try metric(hoTich, "drillContentEqual").of == 2)
        #expect(try metric(hoTich, "evidenceSealsBroken").of == 5)
        #expect(try metric(hoTich, "readDataCoverage").verdict == .notRecorded)
        #expect(try metric(hoTich, "successfulBackups").value == 28)
        #expect(try metric(hoTich, "dumpErrors").value == 2)
        #expect(try metric(hoTich, "dumpErrors").verdict == .fail)
        #expect(try metric(hoTich, "integrityChecksFailed").value == 0)
        #expect(try metric(hoTich, "integrityChecksFailed").of == 1)
        #expect(try metric(hoTich, "newestGoodAge").value == month.scope.to.timeIntervalSince(SimulatedMonth.local(11, 30, 1, 30, 11)))
        #expect(try metric(hoTich, "newestGoodAge").threshold == 86400 + 864)
        #expect(try metric(hoTich, "lastDrillAge").value == month.scope.to.timeIntervalSince(SimulatedMonth.local(11, 30, 3)))
        #expect(try metric(hoTich, "lastDrillAge").threshold == 7 * 86400)
        #expect([hoTich.dimensions.correct.verdict, hoTich.dimensions.complete.verdict, hoTich.dimensions.clean.verdict, hoTich.dimensions.live.verdict]
                == [.pass, .pass, .fail, .pass])
        #expect(hoTich.overall == .fail)

        let datDai = try dataset("dat-dai/dat-dai-db")
        #expect(try metric(datDai, "shrinkAlerts").value == 1)
        #expect(try metric(datDai, "dumpErrors").value == 1)
        #expect(try metric(datDai, "lastBackupComplete").value == 1)
        #expect(datDai.dimensions.correct.verdict == .pass, "the slow drill restored equal data")
        #expect(datDai.dimensions.clean.verdict == .fail)
        #expect(datDai.overall == .fail)

        let scan = try dataset("ho-so-scan/ho-so-scan")
        #expect(scan.dimensions.correct.verdict == .noEvidence)
        #expect(scan.dimensions.complete.verdict == .noEvidence)
        #expect(scan.dimensions.clean.verdict == .noEvidence)
        #expect(scan.dimensions.live.verdict == .noEvidence)
        #expect(try metric(scan, "newestGoodAge").verdict == .pass)
        #expect(try metric(scan, "lastDrillAge").verdict == .noEvidence)
        #expect(scan.overall == .noEvidence, "never drilled: not a pass")

        let db = try dataset("van-ban/van-ban-db")
        #expect(db.dimensions.all.allSatisfy { $0.dimension.verdict == .pass })
        #expect(db.overall == .pass)
        let files = try dataset("van-ban/van-ban-tep")
        #expect(try metric(files, "drillContentEqual").of == 120)
        #expect(try metric(files, "integrityChecksFailed").verdict == .notApplicable)
        #expect(files.overall == .pass)

        let never = try dataset("van-ban/van-ban-scan")
        #expect(never.overall == .noEvidence)
        for (_, dimension) in never.dimensions.all {
            #expect(dimension.verdict == .noEvidence)
            #expect(dimension.metrics.allSatisfy { $0.verdict != .pass })
        }
        // No dataset is a pass without a drill in the period.
        for d in data.datasets where d.drills.done == 0 { #expect(d.overall != .pass, "\(d.key)") }
    }

    @Test("province and agency totals are the sums of their datasets")
    func totals() throws {
        let p = data.province
        #expect(p.datasets == 6 && p.agencies == 4)
        #expect(p.planned == 175)
        #expect(p.attempted == month.runs.filter { $0.started >= month.scope.from }.count)
        #expect(p.succeeded == month.runs.filter { $0.started >= month.scope.from && $0.outcome == "success" }.count)
        #expect(p.failed == 3 && p.partial == 2 && p.missed == 31 && p.unfinished == 1)
        #expect(p.successRate == 0.7943)
        #expect(p.drills == 9 && p.drillsPassed == 8 && p.drillsFailed == 1)
        #expect(p.datasetsPassing == 2 && p.datasetsFailing == 2 && p.datasetsNoEvidence == 2)
        #expect(p.rpoMet == 3 && p.rtoMet == 3)
        #expect(p.dimensionsPassing == DimensionCounts(correct: 4, complete: 4, clean: 2, live: 4))
        for agency in data.agencies {
            #expect(agency.totals.planned == agency.datasets.map(\.backups.planned).reduce(0, +))
            #expect(agency.totals.succeeded == agency.datasets.map(\.backups.succeeded).reduce(0, +))
            #expect(agency.totals.drills == agency.datasets.map(\.drills.done).reduce(0, +))
        }
    }

    @Test("runs per day: every day of the period, counted from the runs started that day")
    func daily() throws {
        #expect(data.daily.count == 30)
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = SimulatedMonth.zone
        for (i, day) in data.daily.enumerated() {
            #expect(day.date == String(format: "2026-11-%02d", i + 1))
            let runs = month.runs.filter { calendar.component(.day, from: $0.started) == i + 1 && $0.started >= month.scope.from && $0.ended <= month.scope.to }
            #expect(day.succeeded == runs.filter { $0.outcome == "success" }.count, "\(day.date)")
            #expect(day.failed == runs.filter { $0.outcome == "failure" }.count, "\(day.date)")
            #expect(day.partial == runs.filter { $0.outcome == "partial" }.count, "\(day.date)")
            #expect(day.missed == (i + 1 == 18 ? 2 : 1), "\(day.date): van-ban-scan every night, ho-so-scan on the 18th")
            #expect(day.drills == month.drills.filter { calendar.component(.day, from: $0.started) == i + 1 && $0.started >= month.scope.from }.count)
        }
    }

    @Test("audit ledger: intact, entries through the period end, the period's privileged actions")
    func ledger() throws {
        #expect(data.ledger.status == "intact")
        #expect(data.ledger.entries == 4)
        #expect(data.ledger.actions.map(\.command) == ["restore", "forget", "prune"])
        #expect(data.ledger.actions.map(\.sequence) == [2, 3, 4])
        #expect(data.ledger.actions[2].outcome == "exit 10: the repository is locked")
    }

    @Test("control mapping: each control's facts and status")
    func controls() throws {
        func control(_ id: String) throws -> Control { try #require(data.controls.first { $0.id == id }, "control \(id)") }
        func fact(_ c: Control, _ id: String) throws -> Fact { try #require(c.facts.first { $0.id == id }, "fact \(id) of \(c.id)") }
        let iso = try control("iso27001-A.8.13")
        #expect(try fact(iso, "goodBackupInPeriod").met == 5)
        #expect(try fact(iso, "rpoMet").met == 3)
        #expect(try fact(iso, "passedDrillWithinPeriod").met == 3)
        #expect(try fact(iso, "passedDrillWithinPeriod").failing == ["dat-dai/dat-dai-db", "ho-so-scan/ho-so-scan", "van-ban/van-ban-scan"])
        #expect(try fact(iso, "contentVerified").met == 4)
        #expect(iso.status == .partlyMet)
        // Only ho-tich's copies are current (dat-dai's are three days behind; no other policy copies).
        #expect(try control("cis-11.4").status == .partlyMet)
        #expect(try fact(try control("cis-11.4"), "offsiteCopy").met == 1)
        #expect(try fact(try control("cis-11.1"), "drillsScheduled").failing == ["ho-so-scan/ho-so-scan"])
        #expect(try fact(try control("cis-11.3"), "evidenceSealed").met == 9)
        #expect(try fact(try control("cis-11.3"), "ledgerIntact").met == 1)
        #expect(try fact(try control("nist-CP-4"), "rtoMet").met == 3)
        #expect(try control("nist-CP-9").status == .partlyMet)
        let level2 = try control("level-2")
        #expect(try fact(level2, "levelRpoObjective").failing == ["ho-so-scan/ho-so-scan"])
        #expect(try fact(level2, "levelRpoObjective").threshold == 86400)
        #expect(level2.facts.first { $0.id == "offsiteCopy" } == nil, "level 2 needs no offsite copy")
        let level3 = try control("level-3")
        #expect(try fact(level3, "offsiteCopy").met == 1)
        #expect(try fact(level3, "offsiteCopy").failing == ["dat-dai/dat-dai-db"])
        // dat-dai's last passed drill (Nov 7) is older than its policy's 14 days, but within the
        // level-3 baseline of 30 days.
        #expect(try fact(level3, "levelDrillFrequency").met == 2)
        #expect(try fact(level3, "levelDrillFrequency").threshold == 30 * 86400)
        #expect(level3.status == .partlyMet)
        #expect(data.controls.map(\.id) == ["iso27001-A.8.13", "cis-11.1", "cis-11.2", "cis-11.3", "cis-11.4", "cis-11.5", "nist-CP-4", "nist-CP-9", "level-2", "level-3"])
        #expect(data.securityLevels.count == 5)
    }

    @Test("the data do not change when runs are added after the period or the report is made again")
    func stable() throws {
        let first = try ReportDocument.hash(data)
        var late = RunRecord(kind: .drill, policy: "ho-so-scan", source: "ho-so-scan", repository: "/x", planned: nil, started: SimulatedMonth.local(12, 5))
        late.ended = SimulatedMonth.local(12, 5, 0, 5)
        late.outcome = .success
        try month.catalog.insert(late)
        try month.ledger.append(command: "prune", arguments: ["prune"], outcome: "success", time: SimulatedMonth.local(12, 6))
        #expect(try ReportDocument.hash(try month.report()) == first)
        // Limited to one policy: only its datasets.
        var scope = month.scope
        scope.policy = "van-ban"
        let one = try ReportBuilder.build(policies: month.policies, catalog: month.catalog, ledger: month.ledger, scope: scope)
        #expect(one.datasets.map(\.key) == ["van-ban/van-ban-db", "van-ban/van-ban-scan", "van-ban/van-ban-tep"])
        #expect(one.period.policy == "van-ban")
        #expect(one.province.datasets == 3)
    }
}

@Suite("report evidence and ledger damage")
struct ReportDamageTests {
    @Test("drill evidence edited in the catalog: its seal is broken, the drill does not count as passed")
    func tamperedEvidence() throws {
        let month = try SimulatedMonth()
        let drill = try #require(try month.catalog.runs(policy: "van-ban", source: "van-ban-db", kind: .drill).first)
        var edited = drill
        edited.details = drill.details!.replacingOccurrences(of: "\"rtoSeconds\":30", with: "\"rtoSeconds\":3")
        #expect(edited.details != drill.details)
        try month.catalog.update(edited)
        let d = try #require(try month.report().datasets.first { $0.key == "van-ban/van-ban-db" })
        #expect(d.drills.records.first?.sealIntact == false)
        #expect(d.drills.passed == 0)
        #expect(d.drills.failedChecks.map(\.name) == ["evidence seal"])
        #expect(d.dimensions.correct.verdict == .fail)
        #expect(d.backups.lastVerified == nil)
        #expect(d.overall == .fail)
    }

    @Test("a ledger edited within the period is reported broken; one broken only after the period is not this period's concern")
    func brokenLedger() throws {
        let month = try SimulatedMonth()
        let path = month.ledger.path
        let original = try String(contentsOfFile: path, encoding: .utf8)
        var lines = original.split(separator: "\n").map(String.init)
        lines[2] = lines[2].replacingOccurrences(of: "\"--keep-daily\",\"14\"", with: "\"--keep-daily\",\"30\"")
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let broken = try month.report().ledger
        #expect(broken.status == "broken")
        #expect(broken.brokenAtLine == 3)
        #expect(broken.reason?.contains("changed") == true)
        #expect(try month.report().controls.first { $0.id == "cis-11.3" }?.facts.first { $0.id == "ledgerIntact" }?.met == 0)

        lines = original.split(separator: "\n").map(String.init)
        lines[4] = lines[4].replacingOccurrences(of: "\"success\"", with: "\"failure\"")
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try month.report().ledger.status == "intact", "the December entry is after November's end")
    }

    @Test("no ledger at all is shown as absent, not intact")
    func absentLedger() throws {
        let month = try SimulatedMonth()
        try FileManager.default.removeItem(atPath: month.ledger.path)
        try? FileManager.default.removeItem(atPath: month.ledger.path + ".head")
        let ledger = try month.report().ledger
        #expect(ledger.status == "absent")
        #expect(ledger.actions.isEmpty)
    }
}
