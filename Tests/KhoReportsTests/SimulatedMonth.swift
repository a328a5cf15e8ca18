import Foundation
import KhoCatalog
import Glibc
import KhoCore
import KhoSupport
import KhoTestSupport
import KhoPolicy
import KhoVerify
@testable import KhoReports

// A simulated month of one province's backups, written into a real catalog (Catalog API, temporary
// state folder) and a real audit ledger: November 2026, four policies of four agencies, six
// datasets. What happens to each dataset is written down here, night by night, so that a test can
// compute every figure of the report from these runs by itself and compare.
//
// - ho-tich/ho-tich-db (PostgreSQL, nightly 01:30, RPO 24h, RTO 4h, drills weekly): fails on
//   Nov 10 and 11; five drills in November, all passing; one drill in October.
// - dat-dai/dat-dai-db (MariaDB, nightly 02:00, RPO 24h, RTO 1h, drills every 14 days): partial on
//   Nov 15, refused as a suspicious shrink on Nov 20; the Nov 7 drill passes, the Nov 21 drill
//   restores correctly but takes 90 minutes: it fails its RTO.
// - ho-so-scan/ho-so-scan (files, 00:15 Monday to Saturday, RPO 48h): no run on Nov 18, partial
//   on Nov 25; the policy has no drills: never drilled.
// - van-ban/van-ban-db (SQLite, nightly 23:00, RPO 24h, RTO 2h, drills every 30 days): all good,
//   drilled on Nov 14. van-ban/van-ban-tep (files): all good, drilled on Nov 28 (a folder: no
//   engine check). van-ban/van-ban-scan (files): in the policy but never run.
//
// Copies (`copies:`), recorded as `kho run` records them (one copy run per snapshot copied, or per
// failed attempt; the details name the destination), from October 25:
// - ho-tich copies to a folder at the second site (every night with a snapshot) and to an S3
//   bucket that is unreachable on Nov 3, 4 and 5 and catches up on Nov 6 (the three missing
//   snapshots, then that night's): both current at the end of November.
// - dat-dai copies to an S3 bucket that is unreachable from Nov 28 to the end: three days behind.

struct SimulatedRun {
    var dataset: String
    var planned: Date
    var started: Date
    var ended: Date
    var outcome: String
    var snapshot: String?
    var snapshotTime: Date?
    var error: String?
    var errorKind: KhoError.Kind?
}

struct SimulatedCopy {
    var dataset: String
    var destination: String
    var started: Date
    var ended: Date
    var outcome: String
    var snapshot: String
    var snapshotTime: Date
    var caughtUp: Bool
    var bytesAdded: Int64
    var error: String?
}

struct SimulatedDrill {
    var dataset: String
    var started: Date
    var ended: Date
    var snapshot: String
    var snapshotTime: Date
    var rtoSeconds: Double?
    var rtoObjective: Double
    var passed: Bool
    var checks: [(String, String, String)]
    var comparison: [(table: String, rows: Int64, outcome: String)]?
    var failureReasons: [String]
    var details: String = ""
    var sourceKind = "files"
}

final class SimulatedMonth: @unchecked Sendable {
    let root: String
    let policiesDir: String
    let stateDir: String
    let policies: [Policy]
    let catalog: Catalog
    let ledger: AuditLedger
    var runs: [SimulatedRun] = []
    var drills: [SimulatedDrill] = []
    var copies: [SimulatedCopy] = []
    let scope: ReportScope
    static let zone = TimeZone(identifier: "Asia/Ho_Chi_Minh")!

    static func local(_ month: Int, _ day: Int, _ hour: Int = 0, _ minute: Int = 0, _ second: Int = 0, year: Int = 2026) -> Date {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        return calendar.date(from: DateComponents(year: year, month: month, day: day, hour: hour, minute: minute, second: second))!
    }

    static func weekday(_ date: Date) -> Int {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        return calendar.component(.weekday, from: date)
    }

    /// The copy destinations, and the November days on which each is unreachable.
    static let drSite = "/srv/dr-site/kho/ho-tich"
    static let hoTichS3 = "s3:https://s3.quangngai.example.vn/kho-offsite/ho-tich"
    static let datDaiS3 = "s3:https://s3.quangngai.example.vn/kho-offsite/dat-dai"
    static let copyDestinations: [String: [(destination: String, down: Set<Int>)]] = [
        "ho-tich/ho-tich-db": [(drSite, []), (hoTichS3, [3, 4, 5])],
        "dat-dai/dat-dai-db": [(datDaiS3, [28, 29, 30])],
    ]

    static let datasets = ["dat-dai/dat-dai-db", "ho-so-scan/ho-so-scan", "ho-tich/ho-tich-db",
                           "van-ban/van-ban-db", "van-ban/van-ban-scan", "van-ban/van-ban-tep"]

    init() throws {
        root = try ServerSupport.makeTemporaryFolder("report-unit")
        policiesDir = root + "/policies"
        stateDir = root + "/state"
        try FileManager.default.createDirectory(atPath: policiesDir, withIntermediateDirectories: true)
        let common = """
        repository:
          path: \(root)/repository
          password-env: KHO_REPORT_TEST_PASSWORD
        retention:
          keep-daily: 14

        """
        let files: [String: String] = [
            "ho-tich.yaml": """
            name: ho-tich
            agency: Sở Tư pháp tỉnh Quảng Ngãi
            system: Cơ sở dữ liệu hộ tịch điện tử
            security-level: 3
            schedule: "30 1 * * *"
            \(common)sources:
              - name: ho-tich-db
                kind: postgres
                databases: [ho_tich]
            objectives:
              rpo: 24h
              rto: 4h
            drills:
              every: 7d
            copies:
              - path: \(SimulatedMonth.drSite)
                password-env: KHO_REPORT_TEST_PASSWORD
              - path: \(SimulatedMonth.hoTichS3)
                password-env: KHO_REPORT_TEST_PASSWORD
                retention:
                  keep-daily: 30
                  keep-monthly: 12
            """,
            "dat-dai.yaml": """
            name: dat-dai
            agency: Sở Tài nguyên và Môi trường tỉnh Quảng Ngãi
            system: Cơ sở dữ liệu đất đai
            security-level: 3
            schedule: "0 2 * * *"
            \(common)sources:
              - name: dat-dai-db
                kind: mariadb
                databases: [dia_chinh]
            objectives:
              rpo: 24h
              rto: 1h
            drills:
              every: 14d
            copies:
              - path: \(SimulatedMonth.datDaiS3)
                password-env: KHO_REPORT_TEST_PASSWORD
            """,
            "ho-so-scan.yaml": """
            name: ho-so-scan
            agency: Trung tâm Phục vụ hành chính công tỉnh Quảng Ngãi
            system: Kho hồ sơ điện tử đã số hóa
            security-level: 2
            schedule: "15 0 * * 1-6"
            \(common)sources:
              - name: ho-so-scan
                kind: files
                paths: [/srv/ho-so-scan]
            objectives:
              rpo: 48h
              rto: 8h
            """,
            "van-ban.yaml": """
            name: van-ban
            agency: Văn phòng UBND tỉnh Quảng Ngãi
            system: Hệ thống quản lý văn bản và điều hành
            security-level: 2
            schedule: "0 23 * * *"
            \(common)sources:
              - name: van-ban-db
                kind: sqlite
                path: /srv/van-ban.sqlite
              - name: van-ban-tep
                kind: files
                paths: [/srv/van-ban]
              - name: van-ban-scan
                kind: files
                paths: [/srv/van-ban-scan]
            objectives:
              rpo: 24h
              rto: 2h
            drills:
              every: 30d
            """,
        ]
        for (name, text) in files {
            let body = text.split(separator: "\n", omittingEmptySubsequences: false).map { String($0) }.joined(separator: "\n")
            FileManager.default.createFile(atPath: policiesDir + "/" + name, contents: Data(body.utf8))
        }
        let (loaded, errors) = PolicyLoader(checkSecrets: false).load(directory: policiesDir)
        guard errors.isEmpty else { throw KhoError(.usage, errors.map(\.description).joined(separator: "\n")) }
        policies = loaded
        catalog = try Catalog(stateDirectory: stateDir)
        ledger = try AuditLedger(stateDirectory: stateDir)
        scope = ReportScope(from: SimulatedMonth.local(11, 1), to: SimulatedMonth.local(11, 30, 23, 59, 59))
        try simulate()
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    static func snapshotID(_ dataset: String, _ date: Date) throws -> String {
        try SHA256.hash(Array("\(dataset) \(Timestamp.format(date))".utf8)).hex
    }

    /// The nightly runs from October 25 to November 30, and the drills.
    func simulate() throws {
        let schedule: [String: (hour: Int, minute: Int, mondayToSaturday: Bool)] = [
            "ho-tich/ho-tich-db": (1, 30, false), "dat-dai/dat-dai-db": (2, 0, false), "ho-so-scan/ho-so-scan": (0, 15, true),
            "van-ban/van-ban-db": (23, 0, false), "van-ban/van-ban-tep": (23, 0, false),
        ]
        let special: [String: [Int: String]] = [
            "ho-tich/ho-tich-db": [10: "failure", 11: "failure"],
            "dat-dai/dat-dai-db": [15: "partial", 20: "shrink"],
            "ho-so-scan/ho-so-scan": [18: "none", 25: "partial"],
        ]
        var days: [(month: Int, day: Int)] = (25...31).map { (10, $0) }
        days += (1...30).map { (11, $0) }
        for (key, s) in schedule.sorted(by: { $0.key < $1.key }) {
            for (month, day) in days {
                let fire = SimulatedMonth.local(month, day, s.hour, s.minute)
                if s.mondayToSaturday && SimulatedMonth.weekday(fire) == 1 { continue }
                let what = month == 11 ? special[key]?[day] ?? "success" : "success"
                if what == "none" { continue }
                let started = fire.addingTimeInterval(10)
                var run = SimulatedRun(dataset: key, planned: fire, started: started, ended: started.addingTimeInterval(120), outcome: "success")
                switch what {
                case "failure":
                    run.outcome = "failure"
                    run.errorKind = .source
                    run.error = "Source ho-tich-db: pg_dump exited with status 1: connection to server at \"127.0.0.1\", port 5432 failed: Connection refused"
                case "shrink":
                    run.outcome = "failure"
                    run.errorKind = .sourceShrank
                    run.error = "Source dat-dai-db: the dump is 1200 bytes, 2% of the previous good dump (61000 bytes, snapshot 1a2b3c4d), below the allowed 50%; no snapshot was written: check the database, or lower min-size-ratio if the shrink is expected."
                case "partial":
                    run.outcome = "partial"
                    run.snapshot = try SimulatedMonth.snapshotID(key, started)
                    run.snapshotTime = started.addingTimeInterval(1)
                default:
                    run.snapshot = try SimulatedMonth.snapshotID(key, started)
                    run.snapshotTime = started.addingTimeInterval(1)
                }
                runs.append(run)
            }
        }
        for run in runs {
            let parts = run.dataset.split(separator: "/").map(String.init)
            var record = RunRecord(kind: .backup, policy: parts[0], source: parts[1], repository: root + "/repository",
                                   planned: run.planned, started: run.started)
            record.ended = run.ended
            record.outcome = RunOutcome(rawValue: run.outcome)!
            record.error = run.error
            record.errorKind = run.errorKind
            record.snapshot = run.snapshot
            record.snapshotTime = run.snapshotTime
            record.bytesRead = 1_000_000
            record.bytesAdded = 10_000
            try catalog.insert(record)
        }
        try simulateCopies()
        // A run started before the period end and still going at it: unfinished. And runs after
        // the period: not in the report.
        var running = RunRecord(kind: .backup, policy: "van-ban", source: "van-ban-tep", repository: root + "/repository",
                                planned: SimulatedMonth.local(11, 30, 23, 59, 0), started: SimulatedMonth.local(11, 30, 23, 59, 30))
        running.ended = SimulatedMonth.local(12, 1, 0, 2, 0)
        running.outcome = .failure
        running.error = "killed"
        try catalog.insert(running)
        var after = RunRecord(kind: .backup, policy: "ho-tich", source: "ho-tich-db", repository: root + "/repository",
                              planned: SimulatedMonth.local(12, 1, 1, 30), started: SimulatedMonth.local(12, 1, 1, 30, 10))
        after.ended = SimulatedMonth.local(12, 1, 1, 32, 10)
        after.outcome = .failure
        try catalog.insert(after)

        // Drills at 03:00 (local) of the newest good snapshot at that time.
        func drill(_ key: String, _ month: Int, _ day: Int, rto: Double, objective: Double, kind: String) -> SimulatedDrill {
            let start = SimulatedMonth.local(month, day, 3, 0)
            let good = runs.filter { $0.dataset == key && $0.outcome == "success" && $0.ended <= start }.max { $0.started < $1.started }!
            let passedRTO = rto <= objective
            var checks: [(String, String, String)] = []
            var comparison: [(String, Int64, String)]?
            switch kind {
            case "postgres":
                checks.append(("pg_amcheck ho_tich", "pass", "no corruption found in tables and B-tree indexes"))
                checks.append(("manifest", "pass", "2 tables: present, row counts and checksums equal"))
                comparison = [("public.citizens", 202000, "equal"), ("public.birth_certificates", 200000, "equal")]
            case "mariadb":
                checks.append(("CHECK TABLE dia_chinh", "pass", "dia_chinh.thua_dat\tcheck\tstatus\tOK"))
                checks.append(("manifest", "pass", "1 tables: present, row counts and checksums equal"))
                comparison = [("dia_chinh.thua_dat", 100000, "equal")]
            case "sqlite":
                checks.append(("PRAGMA integrity_check, foreign_key_check", "pass", "ok"))
                checks.append(("manifest", "pass", "1 tables: present, row counts and checksums equal"))
                comparison = [("van_ban", 30001, "equal")]
            default:
                checks.append(("file contents and sizes", "pass", "120 files: size and content (keyed chunk hashes) equal to the snapshot"))
            }
            checks.append(("rto", passedRTO ? "pass" : "fail", String(format: "usable after %.2f s; objective %.0f s", rto, objective)))
            let reasons = passedRTO ? [] : [String(format: "restore took %.1f s, more than the RTO of %.0f s", rto, objective)]
            return SimulatedDrill(dataset: key, started: start, ended: start.addingTimeInterval(rto + 30), snapshot: good.snapshot!,
                                  snapshotTime: good.snapshotTime!, rtoSeconds: rto, rtoObjective: objective, passed: passedRTO,
                                  checks: checks, comparison: comparison, failureReasons: reasons, sourceKind: kind)
        }
        drills.append(drill("ho-tich/ho-tich-db", 10, 26, rto: 800, objective: 14400, kind: "postgres"))
        for day in [2, 9, 16, 23, 30] { drills.append(drill("ho-tich/ho-tich-db", 11, day, rto: 900 + Double(day), objective: 14400, kind: "postgres")) }
        drills.append(drill("dat-dai/dat-dai-db", 11, 7, rto: 1800, objective: 3600, kind: "mariadb"))
        drills.append(drill("dat-dai/dat-dai-db", 11, 21, rto: 5400, objective: 3600, kind: "mariadb"))
        drills.append(drill("van-ban/van-ban-db", 11, 14, rto: 30, objective: 7200, kind: "sqlite"))
        drills.append(drill("van-ban/van-ban-tep", 11, 28, rto: 60, objective: 7200, kind: "files"))
        for i in drills.indices {
            drills[i].details = try SimulatedMonth.sealedEvidence(drills[i])
            let d = drills[i]
            let parts = d.dataset.split(separator: "/").map(String.init)
            var record = RunRecord(kind: .drill, policy: parts[0], source: parts[1], repository: root + "/repository", planned: d.started, started: d.started)
            record.ended = d.ended
            record.outcome = d.passed ? .success : .failure
            record.error = d.failureReasons.isEmpty ? nil : d.failureReasons.joined(separator: "; ")
            record.snapshot = d.snapshot
            record.snapshotTime = d.snapshotTime
            record.details = d.details
            try catalog.insert(record)
        }

        // The ledger: one action before the period, three in it, one after.
        try ledger.append(command: "key add", arguments: ["key", "add"], outcome: "success", time: SimulatedMonth.local(10, 20, 9))
        try ledger.append(command: "restore", arguments: ["restore", "--source", "ho-tich-db", "--to-database", "postgres://postgres:[removed]@127.0.0.1/ho_tich_thu"],
                          outcome: "success", time: SimulatedMonth.local(11, 5, 10))
        try ledger.append(command: "forget", arguments: ["forget", "--keep-daily", "14"], outcome: "success", time: SimulatedMonth.local(11, 12, 15))
        try ledger.append(command: "prune", arguments: ["prune"], outcome: "exit 10: the repository is locked", time: SimulatedMonth.local(11, 30, 22))
        try ledger.append(command: "verify", arguments: ["verify", "--policy", "ho-tich"], outcome: "success", time: SimulatedMonth.local(12, 2, 8))
    }

    /// The copies after each backup, as `kho run` makes them: after a backup with a snapshot,
    /// every snapshot the destination lacks, oldest first (the earlier ones caught up); after a
    /// backup whose source failed, only what is lacking. An unreachable destination gives one
    /// failed copy run, of that night's snapshot (or the newest one).
    func simulateCopies() throws {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = SimulatedMonth.zone
        for (key, destinations) in SimulatedMonth.copyDestinations.sorted(by: { $0.key < $1.key }) {
            let backups = runs.filter { $0.dataset == key }.sorted { $0.started < $1.started }
            for (destination, down) in destinations {
                var there: Set<String> = []
                var saved: [SimulatedRun] = []
                for backup in backups {
                    if backup.snapshot != nil { saved.append(backup) }
                    guard let newest = saved.last else { continue }
                    let november = calendar.component(.month, from: backup.started) == 11
                    if november && down.contains(calendar.component(.day, from: backup.started)) {
                        copies.append(SimulatedCopy(dataset: key, destination: destination, started: backup.ended, ended: backup.ended.addingTimeInterval(20),
                                                    outcome: "failure", snapshot: newest.snapshot!, snapshotTime: newest.snapshotTime!, caughtUp: false,
                                                    bytesAdded: 0,
                                                    error: "\(destination) cannot be reached: connection to s3.quangngai.example.vn:443 failed: Connection refused"))
                        continue
                    }
                    var start = backup.ended
                    for snapshot in saved where !there.contains(snapshot.snapshot!) {
                        copies.append(SimulatedCopy(dataset: key, destination: destination, started: start, ended: start.addingTimeInterval(30),
                                                    outcome: "success", snapshot: snapshot.snapshot!, snapshotTime: snapshot.snapshotTime!,
                                                    caughtUp: snapshot.snapshot != backup.snapshot, bytesAdded: 12_000))
                        there.insert(snapshot.snapshot!)
                        start = start.addingTimeInterval(30)
                    }
                }
            }
        }
        for copy in copies {
            let parts = copy.dataset.split(separator: "/").map(String.init)
            var record = RunRecord(kind: .copy, policy: parts[0], source: parts[1], repository: root + "/repository", planned: nil, started: copy.started)
            record.ended = copy.ended
            record.outcome = RunOutcome(rawValue: copy.outcome)!
            record.error = copy.error
            record.snapshot = copy.snapshot
            record.snapshotTime = copy.snapshotTime
            record.bytesAdded = copy.bytesAdded
            // `CopyDetails` as the runner encodes it (checked to decode as that type).
            var details: [String: Any] = ["destination": copy.destination, "blobsRead": copy.outcome == "success" ? 12 : 0,
                                          "blobsNew": copy.outcome == "success" ? 3 : 0, "bytesAdded": copy.bytesAdded, "alreadyThere": false]
            if copy.outcome == "success" { details["targetSnapshot"] = String(copy.snapshot.reversed()) }
            if copy.caughtUp { details["caughtUp"] = true }
            let encoded = try JSONSerialization.data(withJSONObject: details, options: [.sortedKeys])
            _ = try JSON.decoder.decode(CopyDetails.self, from: encoded)
            record.details = String(decoding: encoded, as: UTF8.self)
            try catalog.insert(record)
        }
    }

    /// The drill's evidence as `DrillEvidence` writes it (the real type, sealed by it).
    static func sealedEvidence(_ d: SimulatedDrill) throws -> String {
        let parts = d.dataset.split(separator: "/").map(String.init)
        var object: [String: Any] = [
            "drillID": UUID().uuidString.lowercased(), "policy": parts[0], "source": parts[1], "sourceKind": d.sourceKind,
            "snapshot": d.snapshot, "snapshotTime": Timestamp.format(d.snapshotTime), "scratch": "scratch for the test",
            "start": Timestamp.format(d.started), "end": Timestamp.format(d.ended),
            "checks": d.checks.map { ["name": $0.0, "outcome": $0.1, "output": $0.2] },
            "rtoObjectiveSeconds": d.rtoObjective, "passed": d.passed, "failureReasons": d.failureReasons,
            "khoVersion": "0.1.0", "host": "kho-test", "evidenceSHA256": "",
        ]
        if let rto = d.rtoSeconds { object["rtoSeconds"] = rto }
        if let comparison = d.comparison {
            object["comparison"] = ["rows": comparison.map { row -> [String: Any] in
                ["table": row.table, "expectedRows": row.rows, "actualRows": row.rows, "expectedChecksum": "c\(row.rows)",
                 "actualChecksum": "c\(row.rows)", "outcome": row.outcome]
            }]
        }
        var evidence = try JSON.decoder.decode(DrillEvidence.self, from: try JSONSerialization.data(withJSONObject: object))
        try evidence.seal()
        return String(decoding: try JSON.encoder.encode(evidence), as: UTF8.self)
    }

    func report() throws -> ReportData {
        try ReportBuilder.build(policies: policies, catalog: catalog, ledger: ledger, scope: scope)
    }

    func document(_ language: ReportLanguage) throws -> ReportDocument {
        try ReportDocument(data: try report(), generatedAt: SimulatedMonth.local(12, 3, 8, 15), khoVersion: "0.1.0", host: "kho-test", language: language)
    }

    // MARK: expected figures, from the simulated runs alone

    func runs(of key: String, inNovember: Bool = true) -> [SimulatedRun] {
        runs.filter { $0.dataset == key && (!inNovember || ($0.started >= scope.from && $0.ended <= scope.to)) }
    }

    /// The copy runs to `destination` started in November and finished by its end.
    func copies(of key: String, to destination: String) -> [SimulatedCopy] {
        copies.filter { $0.dataset == key && $0.destination == destination && $0.started >= scope.from && $0.ended <= scope.to }
    }

    func drills(of key: String) -> [SimulatedDrill] {
        drills.filter { $0.dataset == key && $0.started >= scope.from && $0.ended <= scope.to }
    }

    /// Days of November on which the dataset's schedule fires.
    func planned(_ key: String) -> Int {
        switch key {
        case "ho-so-scan/ho-so-scan": return (1...30).filter { SimulatedMonth.weekday(SimulatedMonth.local(11, $0)) != 1 }.count
        default: return 30
        }
    }
}
