import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoTestSupport
import Testing

// The policy engine driven through the `kho` binary: `kho run --due` with the test-only fake clock
// (KHO_TEST_NOW) every six simulated hours over two simulated weeks against a real PostgreSQL
// server and a SQLite file, checked day by day (runs in the catalog, catch-up after an outage,
// retention, `kho status` freshness, metrics, a failing source and its notify: hook); `kho catalog
// rebuild`; `kho schedule install`; `kho daemon` and SIGTERM; `kho policy validate` on bad files.
// Everything added here is private and named `Engine…` so that it cannot clash with other tests.

// MARK: - JSON printed by kho

private struct EngineJobResult: Decodable {
    var kind: String
    var policy: String
    var source: String
    var planned: String
    var outcome: String
    var snapshot: String?
    var error: String?
    var bytesRead: Int64
    var bytesAdded: Int64
    var retention: String?
}

private struct EngineStatus: Decodable {
    var policy: String
    var source: String
    var kind: String
    var freshness: String
    var lastSnapshot: String?
    var newestGoodSnapshotTime: String?
    var ageSeconds: Double?
    var rpoSeconds: Double
    var lastFailure: String?
    var lastError: String?
    var nextRun: String?
}

private struct EngineSnapshot: Decodable {
    struct Source: Decodable {
        var kind: String
        var name: String?
    }
    var id: String
    var time: String
    var source: Source
    var tags: [String]?
}

// MARK: - helpers

private let engineZone = TimeZone(identifier: "Asia/Ho_Chi_Minh")!

private func engineDate(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> Date {
    guard let date = Timestamp.parse(text) else {
        Issue.record("not an RFC 3339 time: \(text)", sourceLocation: sourceLocation)
        return Date(timeIntervalSince1970: 0)
    }
    return date
}

/// Day `day` (0 = Monday 2 March 2026) at `hour`:`minute` in Asia/Ho_Chi_Minh, as RFC 3339.
private func engineTime(day: Int, hour: Int, minute: Int = 0) -> String {
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = engineZone
    let start = calendar.date(from: DateComponents(year: 2026, month: 3, day: 2))!
    let date = calendar.date(byAdding: DateComponents(day: day, hour: hour, minute: minute), to: start)!
    let formatter = ISO8601DateFormatter()
    formatter.timeZone = engineZone
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.string(from: date)
}

private func engineDecode<T: Decodable>(_ result: ProcessResult, as type: T.Type, sourceLocation: SourceLocation = #_sourceLocation) throws -> T {
    do {
        return try JSONDecoder().decode(T.self, from: Data(result.stdout))
    } catch {
        Issue.record("cannot decode \(type) from \(result): \(error)", sourceLocation: sourceLocation)
        throw error
    }
}

/// The samples of a Prometheus text file, keyed by `name{labels}`; checks that each family's
/// samples follow its own HELP and TYPE lines.
private func engineMetrics(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: String] {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    var samples: [String: String] = [:]
    var family = ""
    var typed = Set<String>()
    for line in text.split(separator: "\n").map(String.init) {
        if line.hasPrefix("# TYPE ") {
            family = String(line.dropFirst(7).split(separator: " ")[0])
            #expect(typed.insert(family).inserted, "a second TYPE line for \(family)", sourceLocation: sourceLocation)
            continue
        }
        if line.hasPrefix("#") { continue }
        guard let space = line.lastIndex(of: " ") else {
            Issue.record("metrics line without a value: \(line)", sourceLocation: sourceLocation)
            continue
        }
        let key = String(line[..<space])
        let name = String(key.prefix { $0 != "{" })
        #expect(name == family, "sample \(key) outside its family's group (after TYPE \(family))", sourceLocation: sourceLocation)
        samples[key] = String(line[line.index(after: space)...])
    }
    return samples
}

/// Runs SQL on the catalog with the sqlite3 program; rows of tab-separated columns.
private func engineCatalogRows(_ sql: String, state: String, scratch: String) throws -> [[String]] {
    try ScratchSQLite.sql(sql, path: state + "/catalog.sqlite", scratch: scratch)
        .split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
}

/// What retention should keep of one source's snapshots (newest first): the newest of each of the
/// 7 most recent days and of each of the 2 most recent ISO weeks, counted in Asia/Ho_Chi_Minh.
private func engineRetained(_ snapshots: [(id: String, time: Date)]) -> Set<String> {
    var calendar = Calendar(identifier: .iso8601)
    calendar.timeZone = engineZone
    let newestFirst = snapshots.sorted { ($0.time, $0.id) > ($1.time, $1.id) }
    var keep = Set<String>()
    var days: [String] = []
    var weeks: [String] = []
    for snapshot in newestFirst {
        let d = calendar.dateComponents([.year, .month, .day], from: snapshot.time)
        let day = "\(d.year!)-\(d.month!)-\(d.day!)"
        if !days.contains(day) && days.count < 7 {
            days.append(day)
            keep.insert(snapshot.id)
        }
        let w = calendar.dateComponents([.yearForWeekOfYear, .weekOfYear], from: snapshot.time)
        let week = "\(w.yearForWeekOfYear!)-W\(w.weekOfYear!)"
        if !weeks.contains(week) && weeks.count < 2 {
            weeks.append(week)
            keep.insert(snapshot.id)
        }
    }
    return keep
}

extension ScratchPostgres {
    /// Stops the server but keeps its data (for a simulated outage of the source).
    func engineStopKeepingData() throws {
        try ServerSupport.require(ScratchPostgres.runuser!, ["-u", "postgres", "--", program("pg_ctl"), "-D", dataDirectory, "-m", "fast", "-w", "stop"],
                                  scratch: dir, timeout: 60)
    }

    /// Starts it again on the same port.
    func engineStartAgain() throws {
        try ServerSupport.require(ScratchPostgres.runuser!, ["-u", "postgres", "--", program("pg_ctl"), "-D", dataDirectory, "-l", logFile, "-w", "-t", "60",
                                                             "-o", "-p \(port) -k \(dir) -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off",
                                                             "start"],
                                  scratch: dir, timeout: 90)
    }
}

@Suite("policy engine", .serialized)
struct PolicyEngineTests {
    // MARK: two simulated weeks

    @Test("kho run --due every 6 simulated hours for two weeks: PostgreSQL and SQLite, outage, failure, retention, status, metrics, notify, catalog rebuild",
          .enabled(if: ScratchPostgres.isAvailable && ScratchSQLite.isAvailable,
                   Comment(rawValue: ScratchPostgres.unavailableReason ?? ScratchSQLite.unavailableReason)))
    func twoWeeks() throws {
        let sandbox = try Sandbox("engine")
        try sandbox.initRepository()
        let passwordFile = sandbox.path("repository.pass")
        try writeFile(passwordFile, Array((sandbox.password + "\n").utf8), mode: 0o600)
        let policies = sandbox.path("policies")
        let state = sandbox.path("state")
        let metrics = sandbox.path("kho.prom")
        let notifyLog = sandbox.path("notify.log")
        try makeDirectories(policies)

        let pg = try ScratchPostgres(label: "pg-engine")
        defer { pg.stop() }
        try pg.createDatabase("ho_tich")
        try pg.psql("""
            CREATE TABLE citizens (id serial PRIMARY KEY, full_name text NOT NULL, commune text NOT NULL);
            INSERT INTO citizens (full_name, commune)
            SELECT 'Công dân ' || i, (ARRAY['Nghĩa Hành','Sơn Tịnh','Bình Sơn','Mộ Đức'])[1 + i % 4] FROM generate_series(1, 400) AS i;
            """, database: "ho_tich")
        let sqlite = sandbox.path("van-ban.sqlite")
        try ScratchSQLite.sql("""
            CREATE TABLE van_ban (id INTEGER PRIMARY KEY, so_hieu TEXT, trich_yeu TEXT);
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
            INSERT INTO van_ban SELECT i, i || '/UBND', 'Văn bản số ' || i FROM n;
            """, path: sqlite, scratch: sandbox.dir)

        let policyName = "ho-tich-test"
        let pgSource = "ho-tich-db"
        let liteSource = "van-ban-db"
        let sources = [pgSource, liteSource]
        try writeFile(policies + "/ho-tich-test.yaml", Array("""
            # written by PolicyEngineTests
            name: \(policyName)
            agency: Sở Tư pháp tỉnh Quảng Ngãi
            system: Hộ tịch (kiểm thử)
            security-level: 3
            schedule: "0 1 * * *"
            repository:
              path: \(sandbox.repo)
              password-file: \(passwordFile)
            sources:
              - name: \(pgSource)
                kind: postgres
                host: 127.0.0.1
                port: \(pg.port)
                user: postgres
                databases: [ho_tich]
              - name: \(liteSource)
                kind: sqlite
                path: \(sqlite)
            retention:
              keep-daily: 7
              keep-weekly: 2
            objectives:
              rpo: 24h
              rto: 2h
            notify: 'printf "%s|%s|%s|%s|%s|%s|%s\\n" "$KHO_EVENT" "$KHO_POLICY" "$KHO_SOURCE" "$KHO_AGENCY" "$KHO_TIME" "$KHO_SNAPSHOT" "$KHO_DETAIL" >> \(notifyLog)'

            """.utf8))
        let flags = ["--policies", policies, "--state-dir", state]

        // What the test expects, kept as the simulation goes.
        var kept: [String: [(id: String, time: Date)]] = [pgSource: [], liteSource: []]
        var newestGood: [String: (id: String, time: Date)] = [:]
        var lastFailure: [String: (time: Date, error: String)] = [:]
        var lastBytesAdded: [String: Int64] = [:]
        var lastRunSucceeded: [String: Bool] = [:]
        /// Every backup attempt: source, local start, local planned time, outcome, snapshot.
        var attempts: [[String]] = []
        var notifications: [String] = []
        var everySnapshot: [String: (source: String, time: Date)] = [:]
        /// The freshness states `kho status` showed, per source.
        var seen: [String: Set<String>] = [:]

        func localText(_ date: Date) -> String {
            let formatter = DateFormatter()
            formatter.timeZone = engineZone
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.dateFormat = "yyyy-MM-dd HH:mm"
            return formatter.string(from: date)
        }

        func expectedFreshness(_ source: String, at now: Date) -> String {
            guard let good = newestGood[source] else { return "missed" }
            let age = now.timeIntervalSince(good.time)
            return age <= 86400 ? "ok" : age <= 2 * 86400 ? "late" : "missed"
        }

        /// `kho status --json` at `time`, checked against the expectations.
        func checkStatus(_ time: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let now = engineDate(time)
            let result = try sandbox.kho(["status", "--json"] + flags, env: ["KHO_TEST_NOW": time])
            try #require(result.exitCode == 0, "\(result)", sourceLocation: sourceLocation)
            let statuses = try engineDecode(result, as: [EngineStatus].self, sourceLocation: sourceLocation)
            #expect(statuses.map(\.source) == sources, sourceLocation: sourceLocation)
            for status in statuses {
                let source = status.source
                seen[source, default: []].insert(status.freshness)
                #expect(status.policy == policyName, sourceLocation: sourceLocation)
                #expect(status.rpoSeconds == 86400, sourceLocation: sourceLocation)
                #expect(status.freshness == expectedFreshness(source, at: now), "\(source) at \(time)", sourceLocation: sourceLocation)
                #expect(status.lastSnapshot == newestGood[source]?.id, "\(source) at \(time)", sourceLocation: sourceLocation)
                #expect(status.newestGoodSnapshotTime.map { engineDate($0) } == newestGood[source]?.time, "\(source) at \(time)", sourceLocation: sourceLocation)
                #expect(status.ageSeconds == newestGood[source].map { now.timeIntervalSince($0.time) }, "\(source) at \(time)", sourceLocation: sourceLocation)
                // The last failure shows while it is newer than the newest good backup.
                let failure = lastFailure[source].flatMap { f in f.time > (newestGood[source]?.time ?? .distantPast) ? f : nil }
                #expect(status.lastFailure.map { engineDate($0) } == failure?.time, "\(source) at \(time)", sourceLocation: sourceLocation)
                #expect(status.lastError == failure?.error, "\(source) at \(time)", sourceLocation: sourceLocation)
                // Next run: the next 01:00 in Ho Chi Minh City.
                let next = try #require(status.nextRun.map { engineDate($0) }, sourceLocation: sourceLocation)
                #expect(next > now && next.timeIntervalSince(now) <= 86400 && localText(next).hasSuffix(" 01:00"),
                        "next run \(localText(next)) after \(time)", sourceLocation: sourceLocation)
            }
        }

        /// The repository's snapshots against what retention should have kept.
        func checkSnapshots(sourceLocation: SourceLocation = #_sourceLocation) throws {
            let result = try sandbox.kho("snapshots", "--json")
            try #require(result.exitCode == 0, "\(result)", sourceLocation: sourceLocation)
            let snapshots = try engineDecode(result, as: [EngineSnapshot].self, sourceLocation: sourceLocation)
            for source in sources {
                let found = snapshots.filter { $0.source.name == source }
                #expect(Set(found.map(\.id)) == Set(kept[source]!.map(\.id)),
                        "\(source): the repository holds \(found.map { String($0.id.prefix(8)) + "@" + localText(engineDate($0.time)) }.sorted()), retention should keep \(kept[source]!.map { String($0.id.prefix(8)) + "@" + localText($0.time) }.sorted())",
                        sourceLocation: sourceLocation)
                for snapshot in found {
                    #expect(engineDate(snapshot.time) == everySnapshot[snapshot.id]?.time, "time of \(snapshot.id.prefix(8))", sourceLocation: sourceLocation)
                    #expect(snapshot.tags?.contains("policy:\(policyName)") == true, sourceLocation: sourceLocation)
                }
            }
            #expect(snapshots.count == kept.values.reduce(0) { $0 + $1.count }, sourceLocation: sourceLocation)
        }

        /// The catalog's backup rows against every attempt made.
        func checkCatalog(sourceLocation: SourceLocation = #_sourceLocation) throws {
            let rows = try engineCatalogRows("""
                SELECT source, strftime('%Y-%m-%d %H:%M', started, '+7 hours'), strftime('%Y-%m-%d %H:%M', planned, '+7 hours'),
                       outcome, ifnull(snapshot, '') FROM runs WHERE kind = 'backup' ORDER BY id;
                """, state: state, scratch: sandbox.dir)
            #expect(rows == attempts, "catalog rows:\n\(rows.map { $0.joined(separator: " ") }.joined(separator: "\n"))", sourceLocation: sourceLocation)
            // Exactly one good backup per source per day with runs, none twice; a planned time that
            // failed is tried at most three times.
            var goodPerDay: [String: Int] = [:]
            var triesPerPlanned: [String: Int] = [:]
            for row in rows {
                if row[3] == "success" { goodPerDay[row[0] + " " + row[1].prefix(10), default: 0] += 1 }
                triesPerPlanned[row[0] + " " + row[2], default: 0] += 1
            }
            #expect(goodPerDay.values.allSatisfy { $0 == 1 }, "\(goodPerDay)", sourceLocation: sourceLocation)
            #expect(triesPerPlanned.values.allSatisfy { $0 <= 3 }, "\(triesPerPlanned)", sourceLocation: sourceLocation)
        }

        func checkMetrics(_ time: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let now = engineDate(time)
            let samples = try engineMetrics(metrics, sourceLocation: sourceLocation)
            for source in sources {
                let labels = "policy=\"\(policyName)\",source=\"\(source)\""
                #expect(samples["kho_last_success_timestamp_seconds{\(labels)}"] == newestGood[source].map { String(Int($0.time.timeIntervalSince1970)) },
                        "\(source) at \(time)", sourceLocation: sourceLocation)
                #expect(samples["kho_rpo_seconds{\(labels)}"] == "86400", sourceLocation: sourceLocation)
                let freshness = expectedFreshness(source, at: now)
                for state in ["ok", "late", "missed"] {
                    #expect(samples["kho_rpo_state{\(labels),state=\"\(state)\"}"] == (state == freshness ? "1" : "0"),
                            "\(source) \(state) at \(time)", sourceLocation: sourceLocation)
                }
                #expect(samples["kho_last_run_success{\(labels)}"] == (lastRunSucceeded[source]! ? "1" : "0"), "\(source) at \(time)", sourceLocation: sourceLocation)
                #expect(samples["kho_last_run_bytes_added{\(labels)}"] == String(lastBytesAdded[source]!), "\(source) at \(time)", sourceLocation: sourceLocation)
                let duration = try #require(samples["kho_last_run_duration_seconds{\(labels)}"].flatMap(Double.init), sourceLocation: sourceLocation)
                #expect(duration >= 0, sourceLocation: sourceLocation)
            }
            #expect(samples.count == 2 * 8, "\(samples.keys.sorted())", sourceLocation: sourceLocation)
        }

        func checkNotifications(sourceLocation: SourceLocation = #_sourceLocation) throws {
            let lines = access(notifyLog, F_OK) == 0
                ? try String(contentsOfFile: notifyLog, encoding: .utf8).split(separator: "\n").map(String.init) : []
            #expect(lines == notifications, "notify.log:\n\(lines.joined(separator: "\n"))", sourceLocation: sourceLocation)
        }

        /// One `kho run --due` at `time`; `expect` says which sources should back up and whether
        /// the PostgreSQL one fails.
        /// `announced` adds what the run's freshness check notifies, after its jobs' own notices.
        func run(_ time: String, backups expected: [String], planned: String?, failing: Set<String> = [],
                 announced: () -> Void = {}, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let now = engineDate(time)
            let result = try sandbox.kho(["run", "--due", "--json", "--metrics-file", metrics] + flags, env: ["KHO_TEST_NOW": time])
            try #require(result.exitCode == (failing.isEmpty ? 0 : 1), "at \(time): \(result)", sourceLocation: sourceLocation)
            let results = try engineDecode(result, as: [EngineJobResult].self, sourceLocation: sourceLocation)
            #expect(results.map(\.source) == expected, "jobs at \(time): \(result)", sourceLocation: sourceLocation)
            for job in results {
                #expect(job.kind == "backup" && job.policy == policyName, sourceLocation: sourceLocation)
                #expect(engineDate(job.planned) == planned.map { engineDate($0) }, "planned time of \(job.source) at \(time)", sourceLocation: sourceLocation)
                lastBytesAdded[job.source] = job.bytesAdded
                if failing.contains(job.source) {
                    #expect(job.outcome == "failure", "\(job.source) at \(time): \(result)", sourceLocation: sourceLocation)
                    let error = try #require(job.error, sourceLocation: sourceLocation)
                    #expect(!error.isEmpty && job.snapshot == nil && job.retention == nil, sourceLocation: sourceLocation)
                    #expect(job.bytesAdded == 0, sourceLocation: sourceLocation)
                    lastFailure[job.source] = (now, error)
                    lastRunSucceeded[job.source] = false
                    attempts.append([job.source, localText(now), localText(engineDate(planned!)), "failure", ""])
                    notifications.append("failure|\(policyName)|\(job.source)|Sở Tư pháp tỉnh Quảng Ngãi|\(Timestamp.format(now))||\(error)")
                    continue
                }
                #expect(job.outcome == "success", "\(job.source) at \(time): \(result)", sourceLocation: sourceLocation)
                let id = try #require(job.snapshot, sourceLocation: sourceLocation)
                #expect(job.bytesRead > 0 && job.bytesAdded > 0, sourceLocation: sourceLocation)
                everySnapshot[id] = (job.source, now)
                newestGood[job.source] = (id, now)
                lastRunSucceeded[job.source] = true
                attempts.append([job.source, localText(now), localText(engineDate(planned!)), "success", id])
                let before = kept[job.source]!.count + 1
                let retained = engineRetained(kept[job.source]! + [(id, now)])
                kept[job.source] = (kept[job.source]! + [(id, now)]).filter { retained.contains($0.id) }
                #expect(job.retention == "kept \(retained.count), removed \(before - retained.count)", "\(job.source) at \(time)", sourceLocation: sourceLocation)
            }
            announced()
            try checkCatalog(sourceLocation: sourceLocation)
            try checkSnapshots(sourceLocation: sourceLocation)
            try checkStatus(time, sourceLocation: sourceLocation)
            try checkMetrics(time, sourceLocation: sourceLocation)
            try checkNotifications(sourceLocation: sourceLocation)
        }

        let slots = [2, 8, 14, 20]
        let outageDays = 4...6         // Friday 6 to Sunday 8 March
        let outageEndsAt = 14          // the host comes back on Sunday at 14:00
        let pgDownDay = 9              // Wednesday 11 March
        var lateAnnounced = false
        for day in 0..<14 {
            if day == pgDownDay { try pg.engineStopKeepingData() }
            if day == pgDownDay + 1 { try pg.engineStartAgain() }
            // During the day the agencies' data changes.
            if day != pgDownDay {
                try pg.psql("INSERT INTO citizens (full_name, commune) SELECT 'Công dân mới \(day)-' || i, 'Đức Phổ' FROM generate_series(1, 20) AS i;",
                            database: "ho_tich")
            }
            try ScratchSQLite.sql("INSERT INTO van_ban (so_hieu, trich_yeu) VALUES ('\(day)/UBND-VX', 'Văn bản ngày \(day)');", path: sqlite, scratch: sandbox.dir)

            for hour in slots {
                let time = engineTime(day: day, hour: hour)
                if outageDays.contains(day) && (day < outageDays.upperBound || hour < outageEndsAt) {
                    // The host is down: no run. Monitoring elsewhere still reads the status.
                    try checkStatus(time)
                    continue
                }
                let planned = engineTime(day: day, hour: 1)
                if day == outageDays.upperBound && hour == outageEndsAt {
                    // Back after three missed nights: each source is caught up once, for the latest planned time.
                    try checkStatus(time)
                    try run(time, backups: sources, planned: planned)
                } else if hour == 2 {
                    try run(time, backups: sources, planned: planned, failing: day == pgDownDay ? [pgSource] : [])
                } else {
                    let announceLate = {
                        if day == pgDownDay && !lateAnnounced && expectedFreshness(pgSource, at: engineDate(time)) == "late" {
                            // The PostgreSQL source's newest good backup is now older than the RPO: announced once.
                            let good = newestGood[pgSource]!
                            let age = Int(engineDate(time).timeIntervalSince(good.time))
                            notifications.append("late|\(policyName)|\(pgSource)|Sở Tư pháp tỉnh Quảng Ngãi|\(Timestamp.format(engineDate(time)))|\(good.id)|the newest good backup is \(age / 3600)h\(age % 3600 / 60)m old; the RPO is 1d")
                            lateAnnounced = true
                        }
                    }
                    if day == pgDownDay && hour < 20 {
                        // The failed night is tried again (15 and 30 minutes after, here at the
                        // next runs), still for 01:00; PostgreSQL is still down. Three attempts.
                        try run(time, backups: [pgSource], planned: planned, failing: [pgSource], announced: announceLate)
                    } else {
                        try run(time, backups: [], planned: nil, announced: announceLate)
                    }
                }
            }
        }
        #expect(lateAnnounced)
        // The outage took both sources through late to missed; the failed night made PostgreSQL late.
        #expect(seen[liteSource] == ["ok", "late", "missed"])
        #expect(seen[pgSource] == ["ok", "late", "missed"])
        // The outage left two days without backups and one catch-up; every other day one each.
        let days = Set(attempts.map { $0[1].prefix(10) })
        #expect(days.count == 12, "\(days.sorted())")
        #expect(attempts.filter { $0[0] == pgSource }.count == 14)
        #expect(attempts.filter { $0[0] == pgSource && $0[3] == "failure" }.count == 3)
        #expect(attempts.filter { $0[1] == "2026-03-08 14:00" }.map { $0[2] } == ["2026-03-08 01:00", "2026-03-08 01:00"])
        // keep-daily 7 + keep-weekly 2 at the end (Sunday 15 March): seven days and last week's newest.
        #expect(kept[liteSource]!.map { localText($0.time) }.sorted() == [
            "2026-03-08 14:00", "2026-03-09 02:00", "2026-03-10 02:00", "2026-03-11 02:00", "2026-03-12 02:00",
            "2026-03-13 02:00", "2026-03-14 02:00", "2026-03-15 02:00",
        ])
        // For PostgreSQL the failed night leaves a gap: the seven newest days reach back to the 8th.
        #expect(kept[pgSource]!.map { localText($0.time) }.sorted() == [
            "2026-03-08 14:00", "2026-03-09 02:00", "2026-03-10 02:00", "2026-03-12 02:00",
            "2026-03-13 02:00", "2026-03-14 02:00", "2026-03-15 02:00",
        ])

        // MARK: the catalog lost and rebuilt from the repository

        let finalTime = engineTime(day: 13, hour: 20)
        let beforeStatus = try engineDecode(try sandbox.kho(["status", "--json"] + flags, env: ["KHO_TEST_NOW": finalTime]), as: [EngineStatus].self)
        for name in try FileManager.default.contentsOfDirectory(atPath: state) where name.hasPrefix("catalog.sqlite") {
            try FileManager.default.removeItem(atPath: state + "/" + name)
        }
        // This time the folders come from the environment.
        let env: [String: String?] = ["KHO_POLICIES": policies, "KHO_STATE_DIR": state, "KHO_TEST_NOW": finalTime]
        let rebuilt = try sandbox.kho(["catalog", "rebuild"], env: env)
        try #require(rebuilt.exitCode == 0, "\(rebuilt)")
        let inRepository = kept.values.reduce(0) { $0 + $1.count }
        #expect(rebuilt.out.contains("\(policyName): \(inRepository) backups recovered from \(sandbox.repo)"), "\(rebuilt)")
        let rows = try engineCatalogRows("SELECT source, snapshot, outcome, rebuilt, strftime('%Y-%m-%d %H:%M', snapshotTime, '+7 hours') FROM runs WHERE kind = 'backup' ORDER BY snapshot;",
                                         state: state, scratch: sandbox.dir)
        let expectedRows = kept.flatMap { source, snapshots in snapshots.map { [source, $0.id, "success", "1", localText($0.time)] } }
            .sorted { $0[1] < $1[1] }
        #expect(rows == expectedRows, "rebuilt rows:\n\(rows.map { $0.joined(separator: " ") }.joined(separator: "\n"))")
        // Same snapshot IDs as the original history (those retention kept).
        let original = Set(attempts.map { $0[4] }.filter { !$0.isEmpty })
        #expect(Set(rows.map { $0[1] }).isSubset(of: original))
        let afterStatus = try engineDecode(try sandbox.kho(["status", "--json"], env: env), as: [EngineStatus].self)
        #expect(afterStatus.map(\.lastSnapshot) == beforeStatus.map(\.lastSnapshot))
        #expect(afterStatus.map(\.newestGoodSnapshotTime) == beforeStatus.map(\.newestGoodSnapshotTime))
        #expect(afterStatus.map(\.freshness) == beforeStatus.map(\.freshness))
        // Rebuilding again adds nothing.
        let again = try sandbox.kho(["catalog", "rebuild"], env: env)
        #expect(again.exitCode == 0 && again.out.contains("\(policyName): 0 backups recovered"), "\(again)")
        // The schedule carries on from the recovered history: nothing due tonight, the next night as usual.
        let tonight = try sandbox.kho(["run", "--due", "--json"], env: env)
        try #require(tonight.exitCode == 0, "\(tonight)")
        #expect(try engineDecode(tonight, as: [EngineJobResult].self).isEmpty, "\(tonight)")
        let nextNight = try sandbox.kho(["run", "--due", "--json"], env: env.merging(["KHO_TEST_NOW": engineTime(day: 14, hour: 2)]) { $1 })
        try #require(nextNight.exitCode == 0, "\(nextNight)")
        let nextJobs = try engineDecode(nextNight, as: [EngineJobResult].self)
        #expect(nextJobs.map(\.source) == sources)
        #expect(nextJobs.allSatisfy { $0.outcome == "success" && engineDate($0.planned) == engineDate(engineTime(day: 14, hour: 1)) })
    }

    // MARK: kho schedule install

    @Test("kho schedule install --systemd and --cron write the timer and the crontab entry that run kho run --due")
    func scheduleInstall() throws {
        let sandbox = try Sandbox("schedule")
        let policies = sandbox.path("the policies")   // a space: the command line must quote it
        let state = sandbox.path("state")
        try makeDirectories(policies)
        let binary = URL(fileURLWithPath: Harness.binary).standardizedFileURL.path

        let systemdRoot = sandbox.path("root-systemd")
        let systemd = try sandbox.kho(["schedule", "install", "--systemd", "--root", systemdRoot, "--policies", policies, "--state-dir", state])
        try #require(systemd.exitCode == 0, "\(systemd)")
        let command = "\(binary) run --due --policies '\(policies)' --state-dir \(state) --metrics-file \(state)/kho.prom"
        #expect(try FileManager.default.subpathsOfDirectory(atPath: systemdRoot).sorted()
                == ["etc", "etc/systemd", "etc/systemd/system", "etc/systemd/system/kho-run.service", "etc/systemd/system/kho-run.timer"])
        let service = try String(contentsOfFile: systemdRoot + "/etc/systemd/system/kho-run.service", encoding: .utf8)
        #expect(service.contains("\nType=oneshot\n"), "\(service)")
        #expect(service.contains("\nExecStart=\(command)\n"), "\(service)")
        let timer = try String(contentsOfFile: systemdRoot + "/etc/systemd/system/kho-run.timer", encoding: .utf8)
        #expect(timer.contains("\nOnCalendar=*:0/5\n"), "\(timer)")
        #expect(timer.contains("\nPersistent=true\n"), "\(timer)")
        #expect(timer.contains("\nWantedBy=timers.target\n"), "\(timer)")
        #expect(systemd.out.contains("wrote \(systemdRoot)/etc/systemd/system/kho-run.timer"))

        let cronRoot = sandbox.path("root-cron")
        let cron = try sandbox.kho(["schedule", "install", "--cron", "--every", "10", "--root", cronRoot, "--policies", policies, "--state-dir", state])
        try #require(cron.exitCode == 0, "\(cron)")
        #expect(try FileManager.default.subpathsOfDirectory(atPath: cronRoot).sorted() == ["etc", "etc/cron.d", "etc/cron.d/kho"])
        let crontab = try String(contentsOfFile: cronRoot + "/etc/cron.d/kho", encoding: .utf8)
        #expect(crontab.contains("\nSHELL=/bin/sh\n"), "\(crontab)")
        #expect(crontab.contains("\n*/10 * * * * root \(command) >>/var/log/kho.log 2>&1\n"), "\(crontab)")

        // A relative state folder is written as an absolute path: cron and systemd do not start in
        // the folder the command was given in.
        let relativeRoot = sandbox.path("root-relative")
        let relative = try sandbox.kho(["schedule", "install", "--cron", "--root", relativeRoot, "--policies", policies, "--state-dir", "var/kho-state"])
        try #require(relative.exitCode == 0, "\(relative)")
        let cwd = FileManager.default.currentDirectoryPath
        #expect(try String(contentsOfFile: relativeRoot + "/etc/cron.d/kho", encoding: .utf8)
                    .contains(" --state-dir \(cwd)/var/kho-state --metrics-file \(cwd)/var/kho-state/kho.prom "))

        // --dry-run writes nothing; both flags at once is a usage error.
        let dryRoot = sandbox.path("root-dry")
        let dry = try sandbox.kho(["schedule", "install", "--dry-run", "--root", dryRoot, "--policies", policies, "--state-dir", state])
        #expect(dry.exitCode == 0 && dry.out.contains("ExecStart=\(command)"), "\(dry)")
        #expect(access(dryRoot, F_OK) != 0)
        let both = try sandbox.kho(["schedule", "install", "--systemd", "--cron", "--root", dryRoot])
        #expect(both.exitCode == 2, "\(both)")
        #expect(access(dryRoot, F_OK) != 0)
    }

    // MARK: kho daemon

    @Test("kho daemon: policies due at once are backed up; SIGTERM lets the job finish, exits 0 and leaves no lock",
          .enabled(if: ScratchSQLite.isAvailable, Comment(rawValue: ScratchSQLite.unavailableReason)))
    func daemonStopsCleanly() throws {
        let sandbox = try Sandbox("daemon")
        try sandbox.initRepository()
        let passwordFile = sandbox.path("repository.pass")
        try writeFile(passwordFile, Array((sandbox.password + "\n").utf8), mode: 0o600)
        let policies = sandbox.path("policies")
        let state = sandbox.path("state")
        try makeDirectories(policies)
        let files = sandbox.path("scans")
        try makeDirectories(files)
        for i in 0..<12 { try writeFile(files + "/scan-\(i).pdf", randomBytes(1 << 20)) }
        let sqlite = sandbox.path("office.sqlite")
        try ScratchSQLite.sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('a'), ('b');", path: sqlite, scratch: sandbox.dir)
        for (name, source) in [("scans", "  - name: scans\n    kind: files\n    paths: [\(files)]"),
                               ("office", "  - name: office-db\n    kind: sqlite\n    path: \(sqlite)")] {
            try writeFile(policies + "/\(name).yaml", Array("""
                name: \(name)
                agency: Trung tâm Phục vụ hành chính công
                system: \(name)
                security-level: 2
                schedule: "0 1 * * *"
                repository:
                  path: \(sandbox.repo)
                  password-file: \(passwordFile)
                sources:
                \(source)
                retention:
                  keep-daily: 7
                objectives:
                  rpo: 24h
                  rto: 4h

                """.utf8))
        }
        // The fake clock keeps the test away from the real 01:00: nothing becomes due a second time.
        let clock: [String: String?] = ["KHO_TEST_NOW": "2026-03-02T14:00:00+07:00"]
        let daemon = try sandbox.start(["daemon", "--policies", policies, "--state-dir", state], env: clock)
        // Wait until the first backup is in the catalog (the row is written when the job starts).
        try ServerSupport.waitUntil("the daemon's first backup is in the catalog", timeout: 120) {
            guard daemon.isRunning else { return true }
            guard access(state + "/catalog.sqlite", F_OK) == 0,
                  let count = try? engineCatalogRows("SELECT count(*) FROM runs WHERE kind = 'backup';", state: state, scratch: sandbox.dir).first?.first
            else { return false }
            return Int(count) ?? 0 > 0
        }
        try #require(daemon.isRunning, "the daemon ended by itself: \(daemon.wait(timeout: 5))")
        daemon.send(SIGTERM)
        let ended = daemon.wait(timeout: 120)
        #expect(ended.exitCode == 0, "\(ended)")
        #expect(ended.err.contains("kho daemon stopped"), "\(ended)")
        // No lock left in the repository.
        let locks = try FileManager.default.contentsOfDirectory(atPath: sandbox.repo + "/locks")
        #expect(locks.isEmpty, "locks left: \(locks)")
        // The job that was running finished its step: no run is left "running", and every
        // successful backup's snapshot is in the repository.
        let rows = try engineCatalogRows("SELECT kind, source, outcome, ifnull(snapshot, '') FROM runs ORDER BY id;", state: state, scratch: sandbox.dir)
        #expect(!rows.isEmpty)
        #expect(rows.allSatisfy { $0[2] != "running" }, "\(rows)")
        let backups = rows.filter { $0[0] == "backup" }
        #expect(!backups.isEmpty && backups.allSatisfy { $0[2] == "success" && !$0[3].isEmpty }, "\(rows)")
        let snapshotIDs = Set(try sandbox.snapshots().compactMap { $0["id"] as? String })
        #expect(Set(backups.map { $0[3] }).isSubset(of: snapshotIDs), "\(rows) vs \(snapshotIDs)")
        try sandbox.ok("check")
        // A second start picks up where it stopped: the other policy (if it was skipped) is due, the finished one is not.
        // It writes its metrics file after each round: once it is there, the daemon is past its
        // start (a SIGTERM in the first milliseconds of the process can be lost: see the report).
        let metrics = sandbox.path("kho.prom")
        let second = try sandbox.start(["daemon", "--policies", policies, "--state-dir", state, "--metrics-file", metrics], env: clock)
        try ServerSupport.waitUntil("both policies are backed up and the round is over", timeout: 120) {
            guard second.isRunning else { return true }
            let done = (try? engineCatalogRows("SELECT count(DISTINCT policy) FROM runs WHERE kind = 'backup' AND outcome = 'success';",
                                               state: state, scratch: sandbox.dir).first?.first).flatMap { Int($0) } ?? 0
            return done == 2 && access(metrics, F_OK) == 0
        }
        try #require(second.isRunning, "the daemon ended by itself: \(second.wait(timeout: 5))")
        second.send(SIGTERM)
        let secondEnded = second.wait(timeout: 120)
        #expect(secondEnded.exitCode == 0, "\(secondEnded)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: sandbox.repo + "/locks").isEmpty)
        let perPolicy = try engineCatalogRows("SELECT policy, count(*) FROM runs WHERE kind = 'backup' GROUP BY policy ORDER BY policy;",
                                              state: state, scratch: sandbox.dir)
        #expect(perPolicy == [["office", "1"], ["scans", "1"]], "each policy once: \(perPolicy)")
    }

    // MARK: kho policy validate

    @Test("kho policy validate on a folder with invalid files: exit 2, every error with file:line:column")
    func validateFolder() throws {
        let sandbox = try Sandbox("validate")
        let folder = sandbox.path("policies")
        try makeDirectories(folder)
        let passwordFile = sandbox.path("repository.pass")
        try writeFile(passwordFile, Array("x\n".utf8))
        func policy(_ name: String, schedule: String = "\"0 1 * * *\"", rpo: String = "24h", extra: String = "") -> String {
            """
            name: \(name)
            agency: Sở Tư pháp
            system: \(name)
            security-level: 3
            schedule: \(schedule)
            repository:
              path: \(sandbox.repo)
              password-file: \(passwordFile)
            sources:
              - name: \(name)-files
                kind: files
                paths: [/srv/\(name)]
            objectives:
              rpo: \(rpo)
              rto: 4h
            \(extra)
            """
        }
        try writeFile(folder + "/a-valid.yaml", Array(policy("valid").utf8))
        try writeFile(folder + "/b-typos.yaml", Array(policy("typos", rpo: "a day", extra: "notfy: echo").utf8))
        try writeFile(folder + "/c-never.yaml", Array(policy("never", schedule: "\"0 0 31 2 *\"").utf8))
        try writeFile(folder + "/d-secret.yaml", Array(policy("secret").replacingOccurrences(of: "password-file: \(passwordFile)", with: "password: hunter2").utf8))
        try writeFile(folder + "/notes.txt", Array("not a policy".utf8))
        let result = try sandbox.kho("policy", "validate", folder)
        #expect(result.exitCode == 2, "\(result)")
        let topKeys = "name, agency, system, security-level, schedule, time-zone, repository, sources, retention, objectives, notify, drills, copies"
        #expect(result.out.split(separator: "\n").map(String.init) == [
            "\(folder)/b-typos.yaml:16:1: unknown key \"notfy\" in the policy (did you mean \"notify\"?); expected one of: \(topKeys)",
            "\(folder)/b-typos.yaml:14:8: rpo must be a duration such as 30m, 24h, 7d or 1w; got \"a day\"",
            "\(folder)/c-never.yaml:5:11: the schedule \"0 0 31 2 *\" never runs (no such date)",
            "\(folder)/d-secret.yaml:8:3: unknown key \"password\" in repository (did you mean \"password-env\"?); expected one of: path, password-file, password-env",
            "\(folder)/d-secret.yaml:7:3: repository needs password-file or password-env (a password is never written in a policy)",
            "5 problems found",
        ], "\(result)")
        #expect(!result.all.contains("hunter2"))
        // The same errors stop `kho run` (on stderr) with a usage exit, before any job.
        let run = try sandbox.kho("run", "--due", "--policies", folder, "--state-dir", sandbox.path("state"))
        #expect(run.exitCode == 2, "\(run)")
        #expect(run.err.contains("\(folder)/c-never.yaml:5:11: the schedule \"0 0 31 2 *\" never runs (no such date)"), "\(run)")
        #expect(run.err.contains("5 problems in the policies in \(folder)"), "\(run)")
        // Fixed, the folder validates; `kho policy list` shows the next run from the fake clock.
        for name in ["b-typos.yaml", "c-never.yaml", "d-secret.yaml"] { unlink(folder + "/" + name) }
        let valid = try sandbox.kho("policy", "validate", folder)
        #expect(valid.exitCode == 0 && valid.out.contains("1 policies, 1 sources: all valid"), "\(valid)")
        let list = try sandbox.kho(["policy", "list", "--json", "--policies", folder], env: ["KHO_TEST_NOW": "2026-03-02T08:00:00+07:00"])
        try #require(list.exitCode == 0, "\(list)")
        let entries = try #require(try list.json() as? [[String: Any]])
        #expect(entries.count == 1)
        #expect(entries.first?["policy"] as? String == "valid")
        #expect((entries.first?["nextRun"] as? String).map { engineDate($0) } == engineDate("2026-03-03T01:00:00+07:00"))
    }
}
