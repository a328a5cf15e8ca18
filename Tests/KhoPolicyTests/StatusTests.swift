import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoTestSupport
import KhoPolicy
import Testing

// Freshness against the RPO (ok / late / missed) and the rest of `kho status`, computed from a
// catalog the tests fill; the Prometheus metrics written from it; retention with a policy's rules
// and time zone; which jobs the runner plans (a missed run caught up once) and which drills are due.

/// A policy folder with one policy (rpo 24h, nightly at 01:00) and a catalog in a state folder.
private final class StatusFixture {
    let folder: TemporaryFolder
    let catalog: Catalog
    let policies: [Policy]

    init(extra: String = "", timeZone: String? = nil, retention: String = "  keep-daily: 7\n  keep-weekly: 2\n", extraSources: String = "") throws {
        folder = try TemporaryFolder("status")
        let passwordFile = try folder.write("repository.pass", "x\n")
        try folder.write("policies/nightly.yaml", """
            name: nightly
            agency: Văn phòng UBND tỉnh
            system: Quản lý văn bản
            security-level: 2
            schedule: "0 1 * * *"
            \(timeZone.map { "time-zone: \($0)" } ?? "")
            repository:
              path: \(folder.path)/repo
              password-file: \(passwordFile)
            sources:
              - name: van-ban
                kind: sqlite
                path: /srv/van-ban.sqlite
              - name: scans
                kind: files
                paths: [/srv/scans]
            \(extraSources)
            retention:
            \(retention)
            objectives:
              rpo: 24h
              rto: 4h
            \(extra)
            """)
        let loaded = PolicyLoader().load(directory: folder.path + "/policies")
        #expect(loaded.errors.isEmpty, "\(loaded.errors)")
        policies = loaded.policies
        catalog = try Catalog(stateDirectory: folder.path + "/state")
    }

    var policy: Policy { policies[0] }

    @discardableResult
    func record(_ kind: RunKind = .backup, source: String = "van-ban", outcome: RunOutcome, started: String, snapshot: String? = nil,
                planned: String? = nil, error: String? = nil, bytesAdded: Int64 = 0, seconds: Double = 90) throws -> RunRecord {
        var record = RunRecord(kind: kind, policy: "nightly", source: source, repository: folder.path + "/repo",
                               planned: planned.map { at($0) }, started: at(started))
        record.outcome = outcome
        record.ended = at(started).addingTimeInterval(seconds)
        record.snapshot = snapshot
        record.snapshotTime = snapshot == nil ? nil : at(started)
        record.error = error
        record.bytesAdded = bytesAdded
        return try catalog.insert(record)
    }

    func status(at time: String, source: String = "van-ban") throws -> SourceStatus {
        let all = try StatusReport.compute(policies: policies, catalog: catalog, now: at(time))
        return try #require(all.first { $0.source == source })
    }
}

extension KhoPolicyUnitTests {
@Suite("status, metrics, retention and planning")
struct StatusTests {
    @Test("no backup at all: missed, with the next run")
    func nothingYet() throws {
        let f = try StatusFixture()
        let statuses = try StatusReport.compute(policies: f.policies, catalog: f.catalog, now: at("2026-03-02T08:00:00+07:00"))
        #expect(statuses.map(\.source) == ["van-ban", "scans"])
        for s in statuses {
            #expect(s.freshness == .missed)
            #expect(s.lastSuccess == nil && s.lastSnapshot == nil && s.ageSeconds == nil && s.newestGoodSnapshotTime == nil)
            #expect(s.lastFailure == nil && s.lastError == nil)
            #expect(s.rpoSeconds == 86400 && s.rtoSeconds == 14400)
            #expect(local(s.nextRun) == "2026-03-03T01:00:00+07:00")
            #expect(s.agency == "Văn phòng UBND tỉnh")
            #expect(s.untested)
        }
        #expect(statuses.map(\.kind) == [.sqlite, .files])
    }

    @Test("freshness: ok up to the RPO, late up to twice the RPO, missed after")
    func freshnessBoundaries() throws {
        let f = try StatusFixture()
        try f.record(outcome: .success, started: "2026-03-02T01:00:00+07:00", snapshot: "s1", planned: "2026-03-02T01:00:00+07:00")
        let cases: [(String, SourceStatus.Freshness, Double)] = [
            ("2026-03-02T01:00:00+07:00", .ok, 0),
            ("2026-03-02T07:00:00+07:00", .ok, 6 * 3600),
            ("2026-03-03T01:00:00+07:00", .ok, 86400),
            ("2026-03-03T01:00:01+07:00", .late, 86401),
            ("2026-03-03T20:00:00+07:00", .late, 43 * 3600),
            ("2026-03-04T01:00:00+07:00", .late, 2 * 86400),
            ("2026-03-04T01:00:01+07:00", .missed, 2 * 86400 + 1),
            ("2026-03-12T01:00:00+07:00", .missed, 10 * 86400),
        ]
        for (time, freshness, age) in cases {
            let s = try f.status(at: time)
            #expect(s.freshness == freshness, "at \(time)")
            #expect(s.ageSeconds == age, "at \(time)")
            #expect(s.lastSnapshot == "s1")
            #expect(s.newestGoodSnapshotTime == at("2026-03-02T01:00:00+07:00"))
            #expect(s.lastSuccess == at("2026-03-02T01:01:30+07:00"))
        }
        // The other source has nothing: missed throughout.
        #expect(try f.status(at: "2026-03-02T07:00:00+07:00", source: "scans").freshness == .missed)
    }

    @Test("a partial snapshot counts as good; a failure after the last good one is shown with its error")
    func partialAndFailures() throws {
        let f = try StatusFixture()
        try f.record(outcome: .success, started: "2026-03-02T01:00:00+07:00", snapshot: "s1")
        try f.record(outcome: .partial, started: "2026-03-03T01:00:00+07:00", snapshot: "s2")
        var s = try f.status(at: "2026-03-03T12:00:00+07:00")
        #expect(s.freshness == .ok && s.lastSnapshot == "s2" && s.ageSeconds == 11 * 3600)
        #expect(s.lastFailure == nil && s.lastError == nil)

        try f.record(outcome: .failure, started: "2026-03-04T01:00:00+07:00", error: "pg_dump: connection refused")
        s = try f.status(at: "2026-03-04T08:00:00+07:00")
        #expect(s.freshness == .late)
        #expect(s.lastSnapshot == "s2")
        #expect(s.lastFailure == at("2026-03-04T01:00:00+07:00"))
        #expect(s.lastError == "pg_dump: connection refused")

        // The next good run hides the failure (it is history, not the current state).
        try f.record(outcome: .success, started: "2026-03-05T01:00:00+07:00", snapshot: "s3")
        s = try f.status(at: "2026-03-05T02:00:00+07:00")
        #expect(s.freshness == .ok && s.lastSnapshot == "s3")
        #expect(s.lastFailure == nil && s.lastError == nil)
        // Retention rows and other sources do not count as backups of this source.
        try f.record(.retention, outcome: .success, started: "2026-03-06T01:00:00+07:00")
        try f.record(source: "scans", outcome: .success, started: "2026-03-06T01:00:00+07:00", snapshot: "other")
        #expect(try f.status(at: "2026-03-06T02:00:00+07:00").lastSnapshot == "s3")
        #expect(try f.status(at: "2026-03-06T02:00:00+07:00").freshness == .late)
        #expect(try f.status(at: "2026-03-06T02:00:00+07:00", source: "scans").lastSnapshot == "other")
    }

    @Test("drills: untested when none within the policy's drill period")
    func drillPeriod() throws {
        let f = try StatusFixture(extra: "drills:\n  every: 7d")
        try f.record(.drill, outcome: .success, started: "2026-03-02T03:00:00+07:00", snapshot: "s1")
        var s = try f.status(at: "2026-03-08T03:00:00+07:00")
        #expect(!s.untested)
        #expect(s.lastDrill == at("2026-03-02T03:00:00+07:00") && s.lastDrillOutcome == .success)
        s = try f.status(at: "2026-03-09T03:00:01+07:00")
        #expect(s.untested)
        #expect(try f.status(at: "2026-03-02T04:00:00+07:00", source: "scans").untested)
        // A drill that failed is shown as the last drill, but proves nothing: the source counts
        // as tested only by the earlier drill that passed, until that one is out of the period.
        try f.record(.drill, outcome: .failure, started: "2026-03-05T03:00:00+07:00", snapshot: "s2")
        s = try f.status(at: "2026-03-06T03:00:00+07:00")
        #expect(s.lastDrill == at("2026-03-05T03:00:00+07:00") && s.lastDrillOutcome == .failure)
        #expect(!s.untested)
        #expect(try f.status(at: "2026-03-09T03:00:01+07:00").untested)
        try f.record(.drill, source: "scans", outcome: .failure, started: "2026-03-02T05:00:00+07:00", snapshot: "f1")
        #expect(try f.status(at: "2026-03-02T06:00:00+07:00", source: "scans").untested)
    }

    @Test("metrics: every series per source, each family grouped under its HELP and TYPE")
    func metrics() throws {
        let f = try StatusFixture()
        try f.record(outcome: .success, started: "2026-03-02T01:00:00+07:00", snapshot: "s1", bytesAdded: 4096, seconds: 12.5)
        try f.record(source: "scans", outcome: .success, started: "2026-03-01T01:00:00+07:00", snapshot: "f1", bytesAdded: 10)
        try f.record(source: "scans", outcome: .failure, started: "2026-03-02T01:00:00+07:00", error: "no such folder", seconds: 1)
        let path = f.folder.path + "/kho.prom"
        try Metrics.write(to: path, policies: f.policies, catalog: f.catalog, now: at("2026-03-02T12:00:00+07:00"))
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let epoch = Int(at("2026-03-02T01:00:00+07:00").timeIntervalSince1970)
        let scansEpoch = Int(at("2026-03-01T01:00:00+07:00").timeIntervalSince1970)
        let v = "policy=\"nightly\",source=\"van-ban\""
        let sc = "policy=\"nightly\",source=\"scans\""
        #expect(text == """
            # HELP kho_last_success_timestamp_seconds Time of the newest good snapshot of the source.
            # TYPE kho_last_success_timestamp_seconds gauge
            kho_last_success_timestamp_seconds{\(v)} \(epoch)
            kho_last_success_timestamp_seconds{\(sc)} \(scansEpoch)
            # HELP kho_rpo_seconds The source's recovery point objective.
            # TYPE kho_rpo_seconds gauge
            kho_rpo_seconds{\(v)} 86400
            kho_rpo_seconds{\(sc)} 86400
            # HELP kho_rpo_state 1 for the source's current freshness state (ok, late, missed).
            # TYPE kho_rpo_state gauge
            kho_rpo_state{\(v),state="ok"} 1
            kho_rpo_state{\(v),state="late"} 0
            kho_rpo_state{\(v),state="missed"} 0
            kho_rpo_state{\(sc),state="ok"} 0
            kho_rpo_state{\(sc),state="late"} 1
            kho_rpo_state{\(sc),state="missed"} 0
            # HELP kho_last_run_success 1 when the last backup run of the source succeeded.
            # TYPE kho_last_run_success gauge
            kho_last_run_success{\(v)} 1
            kho_last_run_success{\(sc)} 0
            # HELP kho_last_run_duration_seconds Duration of the last backup run.
            # TYPE kho_last_run_duration_seconds gauge
            kho_last_run_duration_seconds{\(v)} 12.500
            kho_last_run_duration_seconds{\(sc)} 1.000
            # HELP kho_last_run_bytes_added Bytes the last backup run added to the repository.
            # TYPE kho_last_run_bytes_added gauge
            kho_last_run_bytes_added{\(v)} 4096
            kho_last_run_bytes_added{\(sc)} 0

            """)
        // No temporary file is left beside it.
        let names = try FileManager.default.contentsOfDirectory(atPath: f.folder.path)
        #expect(names.filter { $0.hasPrefix("kho.prom") } == ["kho.prom"])
    }

    @Test("retention with the policy's rules: keep-daily 7 and keep-weekly 2 over three weeks of nightly snapshots")
    func retentionRules() throws {
        let f = try StatusFixture()
        // One snapshot a night at 01:00, Monday 2 March to Sunday 22 March 2026.
        var snapshots: [(id: String, time: Date, tags: [String])] = []
        for day in 2...22 {
            snapshots.append((String(format: "d%02d", day), at(String(format: "2026-03-%02dT01:00:00+07:00", day)), []))
        }
        let decisions = Retention.apply(f.policy.retention, to: snapshots)
        let kept = decisions.filter(\.keep).map(\.snapshotID).sorted()
        // The last 7 days (16–22), and the newest of each of the last 2 ISO weeks (22 and 15).
        #expect(kept == ["d15", "d16", "d17", "d18", "d19", "d20", "d21", "d22"])
        let reasons = Dictionary(uniqueKeysWithValues: decisions.map { ($0.snapshotID, $0.reasons) })
        #expect(reasons["d22"] == ["daily 2026-03-22 (1 of 7)", "weekly 2026-W12 (1 of 2)"])
        #expect(reasons["d15"] == ["weekly 2026-W11 (2 of 2)"])
        #expect(reasons["d14"] == ["no rule keeps it"])
    }

    @Test("retention counts days in the policy's time zone")
    func retentionTimeZone() throws {
        // 22 March 16:30 UTC is 23:30 that day in Ho Chi Minh City; 17:30 UTC is 00:30 on the 23rd.
        let snapshots: [(id: String, time: Date, tags: [String])] = [
            ("a", at("2026-03-21T12:00:00Z"), []), ("b", at("2026-03-22T16:30:00Z"), []), ("c", at("2026-03-22T17:30:00Z"), []),
        ]
        let local = try StatusFixture(retention: "  keep-daily: 2\n")
        #expect(local.policy.retention.timeZone == "Asia/Ho_Chi_Minh")
        #expect(Retention.apply(local.policy.retention, to: snapshots).filter(\.keep).map(\.snapshotID).sorted() == ["b", "c"])
        let inUTC = try StatusFixture(timeZone: "UTC", retention: "  keep-daily: 2\n")
        #expect(Retention.apply(inUTC.policy.retention, to: snapshots).filter(\.keep).map(\.snapshotID).sorted() == ["a", "c"])
    }

    @Test("planning: a source never run is due at once; a long outage is caught up once; nothing twice")
    func planning() throws {
        let f = try StatusFixture()
        let runner = PolicyRunner(policies: f.policies, catalog: f.catalog, options: RunOptions()) { _ in }
        // Never run: due now, for the latest planned time within a day.
        var jobs = try runner.plan(now: at("2026-03-02T14:00:00+07:00"))
        #expect(jobs.map(\.source.name) == ["van-ban", "scans"])
        #expect(jobs.map { local($0.planned) } == ["2026-03-02T01:00:00+07:00", "2026-03-02T01:00:00+07:00"])
        // Before 01:00 the latest planned time within a day is the previous night's.
        #expect(try runner.plan(now: at("2026-03-02T00:30:00+07:00")).map { local($0.planned) }
                == ["2026-03-01T01:00:00+07:00", "2026-03-01T01:00:00+07:00"])

        try f.record(outcome: .success, started: "2026-03-02T01:00:05+07:00", snapshot: "s1", planned: "2026-03-02T01:00:00+07:00")
        try f.record(source: "scans", outcome: .success, started: "2026-03-02T01:00:05+07:00", snapshot: "f1", planned: "2026-03-02T01:00:00+07:00")
        #expect(try runner.plan(now: at("2026-03-02T14:00:00+07:00")).isEmpty)
        #expect(try runner.plan(now: at("2026-03-03T00:59:59+07:00")).isEmpty)
        #expect(try runner.plan(now: at("2026-03-03T01:00:00+07:00")).map { local($0.planned) }
                == ["2026-03-03T01:00:00+07:00", "2026-03-03T01:00:00+07:00"])
        // Down from the 3rd to the 5th at 14:00: one job per source, for the 5th's 01:00.
        jobs = try runner.plan(now: at("2026-03-05T14:00:00+07:00"))
        #expect(jobs.count == 2)
        #expect(jobs.map { local($0.planned) } == ["2026-03-05T01:00:00+07:00", "2026-03-05T01:00:00+07:00"])
        // A failed run is reported (status, notify) and its planned time is tried again later
        // (see the retry test); a run that succeeded is not.
        try f.record(outcome: .failure, started: "2026-03-05T14:00:00+07:00", planned: "2026-03-05T01:00:00+07:00", error: "boom")
        #expect(try runner.plan(now: at("2026-03-05T14:10:00+07:00")).map(\.source.name) == ["scans"])

        // --all: everything selected, planned now.
        var all = RunOptions()
        all.onlyDue = false
        all.source = "scans"
        let forced = try PolicyRunner(policies: f.policies, catalog: f.catalog, options: all) { _ in }.plan(now: at("2026-03-05T20:00:00+07:00"))
        #expect(forced.map(\.source.name) == ["scans"])
        #expect(forced.map(\.planned) == [at("2026-03-05T20:00:00+07:00")])
        var other = RunOptions()
        other.policy = "no-such-policy"
        #expect(try PolicyRunner(policies: f.policies, catalog: f.catalog, options: other) { _ in }.plan(now: at("2026-03-09T20:00:00+07:00")).isEmpty)
    }

    @Test("planning: a failed backup is tried again 15 and then 30 minutes later, three attempts in all, until the schedule fires; never beside one still running")
    func failedBackupIsRetried() throws {
        let f = try StatusFixture()
        var options = RunOptions()
        options.source = "van-ban"
        let runner = PolicyRunner(policies: f.policies, catalog: f.catalog, options: options) { _ in }
        let night = "2026-03-05T01:00:00+07:00"
        try f.record(outcome: .success, started: "2026-03-04T01:00:05+07:00", snapshot: "s1", planned: "2026-03-04T01:00:00+07:00")
        try f.record(outcome: .failure, started: "2026-03-05T01:00:05+07:00", planned: night, error: "the server closed the connection")
        #expect(try runner.plan(now: at("2026-03-05T01:15:04+07:00")).isEmpty)
        #expect(try runner.plan(now: at("2026-03-05T01:15:05+07:00")).map { local($0.planned) } == [night])
        try f.record(outcome: .failure, started: "2026-03-05T01:15:05+07:00", planned: night, error: "still down")
        #expect(try runner.plan(now: at("2026-03-05T01:45:04+07:00")).isEmpty)
        #expect(try runner.plan(now: at("2026-03-05T01:45:05+07:00")).map { local($0.planned) } == [night])
        try f.record(outcome: .failure, started: "2026-03-05T01:45:05+07:00", planned: night, error: "still down")
        // Three attempts: none more until the next night.
        #expect(try runner.plan(now: at("2026-03-05T12:00:00+07:00")).isEmpty)
        #expect(try runner.plan(now: at("2026-03-06T01:00:00+07:00")).map { local($0.planned) } == ["2026-03-06T01:00:00+07:00"])
        // An attempt still running (a long backup, or one killed) is not started again beside it.
        try f.record(outcome: .failure, started: "2026-03-06T01:00:05+07:00", planned: "2026-03-06T01:00:00+07:00", error: "boom")
        try f.record(outcome: .running, started: "2026-03-06T01:15:05+07:00", planned: "2026-03-06T01:00:00+07:00")
        #expect(try runner.plan(now: at("2026-03-06T03:00:00+07:00")).isEmpty)
        #expect(try runner.plan(now: at("2026-03-07T01:00:00+07:00")).map { local($0.planned) } == ["2026-03-07T01:00:00+07:00"])
        // A retry that succeeds ends the retries.
        try f.record(outcome: .failure, started: "2026-03-07T01:00:05+07:00", planned: "2026-03-07T01:00:00+07:00", error: "boom")
        try f.record(outcome: .success, started: "2026-03-07T01:15:05+07:00", snapshot: "s2", planned: "2026-03-07T01:00:00+07:00")
        #expect(try runner.plan(now: at("2026-03-07T03:00:00+07:00")).isEmpty)
    }

    @Test("drills due: only policies with drills, the least recently drilled source, once per period")
    func drillsDue() throws {
        let without = try StatusFixture()
        #expect(try PolicyRunner(policies: without.policies, catalog: without.catalog, options: RunOptions()) { _ in }
                    .dueDrills(now: at("2026-03-02T14:00:00+07:00")).isEmpty)
        let f = try StatusFixture(extra: "drills:\n  every: 7d")
        let runner = PolicyRunner(policies: f.policies, catalog: f.catalog, options: RunOptions()) { _ in }
        #expect(try runner.dueDrills(now: at("2026-03-02T14:00:00+07:00")).map(\.1.name) == ["van-ban"])
        try f.record(.drill, outcome: .success, started: "2026-03-02T14:00:00+07:00", snapshot: "s1")
        // The other source has never been drilled: its turn.
        #expect(try runner.dueDrills(now: at("2026-03-02T15:00:00+07:00")).map(\.1.name) == ["scans"])
        try f.record(.drill, source: "scans", outcome: .success, started: "2026-03-02T15:00:00+07:00", snapshot: "f1")
        #expect(try runner.dueDrills(now: at("2026-03-09T13:59:59+07:00")).isEmpty)
        #expect(try runner.dueDrills(now: at("2026-03-09T14:00:00+07:00")).map(\.1.name) == ["van-ban"])
    }

    @Test("drills due: a base-backup source is drilled (point in time) on its own pitr-every period, beside the dump drills' rotation, and not at all without it")
    func pitrDrillsAreDue() throws {
        let base = "  - name: cluster\n    kind: postgres-base\n    host: 127.0.0.1"
        let without = try StatusFixture(extra: "drills:\n  every: 7d", extraSources: base)
        #expect(try PolicyRunner(policies: without.policies, catalog: without.catalog, options: RunOptions()) { _ in }
                    .dueDrills(now: at("2026-03-02T14:00:00+07:00")).map(\.1.name) == ["van-ban"])
        let f = try StatusFixture(extra: "drills:\n  every: 7d\n  pitr-every: 3d", extraSources: base)
        #expect(f.policy.drills?.pitrEvery.map { Int($0.rounded()) } == 259_200)
        let runner = PolicyRunner(policies: f.policies, catalog: f.catalog, options: RunOptions()) { _ in }
        #expect(try runner.dueDrills(now: at("2026-03-02T14:00:00+07:00")).map(\.1.name) == ["cluster", "van-ban"])
        try f.record(.drill, source: "cluster", outcome: .success, started: "2026-03-02T14:00:00+07:00", snapshot: "b1")
        #expect(try runner.dueDrills(now: at("2026-03-05T13:59:59+07:00")).map(\.1.name) == ["van-ban"])
        #expect(try runner.dueDrills(now: at("2026-03-05T14:00:00+07:00")).map(\.1.name) == ["cluster", "van-ban"])
    }

    @Test("drills due: a drill that failed or was killed is tried again after a quarter of the period (at most a day)")
    func failedDrillIsRetried() throws {
        #expect(PolicyRunner.retryPause(every: 7 * 86400) == 86400)
        #expect(PolicyRunner.retryPause(every: 86400) == 6 * 3600)
        let f = try StatusFixture(extra: "drills:\n  every: 7d")
        let runner = PolicyRunner(policies: f.policies, catalog: f.catalog, options: RunOptions()) { _ in }
        try f.record(.drill, outcome: .success, started: "2026-03-02T14:00:00+07:00", snapshot: "s1")
        try f.record(.drill, source: "scans", outcome: .failure, started: "2026-03-02T15:00:00+07:00", snapshot: "f1")
        // Not again at the next run, but a day later, long before the week is out.
        #expect(try runner.dueDrills(now: at("2026-03-02T16:00:00+07:00")).isEmpty)
        #expect(try runner.dueDrills(now: at("2026-03-03T14:59:59+07:00")).isEmpty)
        #expect(try runner.dueDrills(now: at("2026-03-03T15:00:00+07:00")).map(\.1.name) == ["scans"])
        // A drill killed with its process (its record still says running) is treated the same way.
        try f.record(.drill, source: "scans", outcome: .running, started: "2026-03-03T15:00:00+07:00", snapshot: "f1")
        #expect(try runner.dueDrills(now: at("2026-03-04T14:00:00+07:00")).isEmpty)
        #expect(try runner.dueDrills(now: at("2026-03-04T15:00:00+07:00")).map(\.1.name) == ["scans"])
        // Both due: the source that has never passed goes before the one that passed a week ago.
        #expect(try runner.dueDrills(now: at("2026-03-09T14:00:00+07:00")).map(\.1.name) == ["scans"])
        try f.record(.drill, source: "scans", outcome: .success, started: "2026-03-09T14:00:00+07:00", snapshot: "f2")
        #expect(try runner.dueDrills(now: at("2026-03-09T15:00:00+07:00")).map(\.1.name) == ["van-ban"])
    }
}
}
