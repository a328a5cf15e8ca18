import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoPolicy
import KhoSources

extension DrillEvidence {
    /// Whether the evidence's SHA-256 (computed over its JSON with that field empty) matches.
    /// The stored text is exactly that JSON with the hash filled in, so emptying the field in
    /// the text gives back the bytes that were hashed, whatever fields the record has.
    static func sealIntact(_ text: String, hash: String) -> Bool {
        guard hash.count == 64 else { return false }
        let field = "\"evidenceSHA256\":\"\(hash)\""
        guard let range = text.range(of: field) else { return false }
        var unsealed = text
        unsealed.replaceSubrange(range, with: "\"evidenceSHA256\":\"\"")
        do {
            return try SHA256.hash(Array(unsealed.utf8)).hex == hash
        } catch {
            return false
        }
    }
}

/// What a drill's evidence says about the restored data.
struct DrillContent {
    /// Tables or files that differ from the snapshot; nil when nothing was compared.
    var differences: Int?
    /// Tables or files compared, when known.
    var compared: Int?
    /// Tables missing or with other row counts, files missing.
    var missing: Int?
    var restoreFailed: Bool
    var engineChecks: Int
    var engineChecksFailed: Int

    /// Checks of the restored data itself: not the comparisons (manifest, file contents), the RTO,
    /// the restore or the globals. The file modes count here.
    static let dataChecks: Set<DrillCheckKind> = [.pgAmcheck, .checkTable, .sqliteIntegrity, .fileModes]

    init(_ evidence: DrillEvidence?) {
        let checks = evidence?.checks ?? []
        restoreFailed = evidence == nil || checks.contains { $0.checkKind == .restore && $0.outcome == .fail }
        let engine = checks.filter { DrillContent.dataChecks.contains($0.checkKind) }
        engineChecks = engine.count
        engineChecksFailed = engine.filter { $0.outcome != .pass }.count
        if let rows = evidence?.comparison?.rows, evidence?.check(.manifest) != nil {
            compared = rows.count
            differences = rows.filter { $0.outcome != .equal }.count
            missing = rows.filter { $0.outcome == .missing || $0.outcome == .rowsDiffer }.count
        } else if let files = evidence?.check(.fileContents) {
            let output = files.output
            if files.outcome == .pass {
                // Evidence of a kho before `filesCompared` has the count only at the start of the output.
                compared = evidence?.filesCompared ?? Int(output.prefix { $0.isNumber })
                differences = 0
                missing = 0
            } else {
                let lines = output.split(separator: "\n").filter { !$0.isEmpty }
                differences = max(1, lines.count)
                // Evidence of a kho before `filesMissing` says it only in the lines of the output.
                missing = evidence?.filesMissing ?? lines.filter { $0.contains("missing after restore") }.count
            }
        }
    }
}

/// Everything computed for one dataset, with what the province-wide figures need.
struct DatasetComputation {
    var dataset: Dataset
    var periodBackups: [RunRecord]
    var missedFires: [Date]
}

struct DatasetBuilder {
    let policy: Policy
    let source: SourceSpec
    /// Every run of the dataset started by the period end, oldest first.
    let runs: [RunRecord]
    let scope: ReportScope

    private func finished(_ run: RunRecord) -> Bool { run.ended.map { $0 <= scope.to } ?? false }
    private func inPeriod(_ run: RunRecord) -> Bool { run.started >= scope.from && run.started <= scope.to }

    func build() -> DatasetComputation {
        let backups = runs.filter { $0.kind == .backup }.sorted { ($0.started, $0.id ?? 0) < ($1.started, $1.id ?? 0) }
        let drillRuns = runs.filter { $0.kind == .drill }.sorted { ($0.started, $0.id ?? 0) < ($1.started, $1.id ?? 0) }
        let periodRuns = backups.filter(inPeriod)
        let done = periodRuns.filter(finished)
        let succeeded = done.filter { $0.outcome == .success }.count
        let partial = done.filter { $0.outcome == .partial }.count
        let failed = done.count - succeeded - partial

        // Planned runs: the schedule's times in the period, from the first backup kho ever ran of
        // this source (its planned time: before that, the source was not in kho's hands). A
        // planned time is missed when no run was planned for it and none started between it and
        // the next planned time.
        let firstAttempt = backups.map { min($0.planned ?? $0.started, $0.started) }.min()
        let windowStart = max(scope.from, firstAttempt ?? scope.from)
        var fires: [Date] = []
        var cursor = windowStart.addingTimeInterval(-60)
        while let fire = policy.schedule.next(after: cursor, limit: max(120, scope.to.timeIntervalSince(cursor) + 120)), fire <= scope.to {
            if fire >= windowStart { fires.append(fire) }
            cursor = fire
        }
        let plannedFor = Set(backups.compactMap(\.planned))
        let starts = backups.map(\.started).sorted()
        var missedFires: [Date] = []
        var next = 0
        for (i, fire) in fires.enumerated() {
            let end = i + 1 < fires.count ? fires[i + 1] : scope.to.addingTimeInterval(1)
            while next < starts.count && starts[next] < fire { next += 1 }
            let started = next < starts.count && starts[next] < end
            if !started && !plannedFor.contains(fire) { missedFires.append(fire) }
        }

        // Recovery points: the good snapshots whose backup finished by the period end, in the
        // order of their data's time. The achieved RPO is the longest gap between two of them
        // (or between the last one and the period end) within the period.
        let goods = backups.filter { $0.outcome == .success && finished($0) }
            .map { (time: $0.snapshotTime ?? $0.started, run: $0) }
            .sorted { $0.time < $1.time }
        var worst: (seconds: Double, at: Date)?
        var newest: Date?
        if let firstAttempt {
            let start = max(scope.from, firstAttempt)
            newest = goods.last { $0.time <= start }?.time
            func consider(_ at: Date) {
                let gap = at.timeIntervalSince(newest ?? firstAttempt)
                if worst == nil || gap > worst!.seconds { worst = (gap, at) }
            }
            for g in goods where g.time > start {
                consider(g.time)
                newest = g.time
            }
            consider(scope.to)
        } else {
            newest = goods.last?.time
        }
        let ageAtEnd = newest.map { scope.to.timeIntervalSince($0) }
        let rpoLimit = policy.rpo + DatasetBuilder.rpoTolerance(policy.rpo)
        let lastGood = goods.last.map { g in
            RecoveryPoint(snapshot: g.run.snapshot ?? "", time: g.time, confirmedAt: g.run.ended!, drillID: nil)
        }
        let failures = done.filter { $0.outcome != .success }.map {
            RunFailure(started: $0.started, outcome: $0.outcome, error: String(($0.error ?? "").prefix(300)))
        }

        // Drills.
        let finishedDrills = drillRuns.filter(finished).map { DrillView(run: $0, objective: policy.rto) }
        let periodDrills = finishedDrills.filter { inPeriod($0.run) }
        let records = periodDrills.map(\.record)
        let lastVerified = finishedDrills.last { $0.record.passed }.map { d in
            RecoveryPoint(snapshot: d.record.snapshot, time: d.record.snapshotTime ?? d.run.snapshotTime ?? d.run.started,
                          confirmedAt: d.record.ended, drillID: d.record.drillID)
        }
        var failedChecks: [String: FailedCheck] = [:]
        for d in periodDrills {
            var names = (d.evidence?.checks ?? []).filter { $0.outcome == .fail }.map(\.name)
            if !d.record.sealIntact { names.append("evidence seal") }
            for name in Set(names) {
                var entry = failedChecks[name] ?? FailedCheck(name: name, count: 0, lastAt: d.record.started)
                entry.count += 1
                entry.lastAt = max(entry.lastAt, d.record.started)
                failedChecks[name] = entry
            }
        }
        let rtos = records.compactMap(\.rtoSeconds)
        let rtoMet: Bool? = records.isEmpty ? nil : records.allSatisfy { ($0.rtoSeconds.map { $0 <= policy.rto }) ?? false }
        let drills = Drills(done: records.count, passed: records.filter(\.passed).count, failed: records.filter { !$0.passed }.count,
                            last: finishedDrills.last?.record, lastRtoSeconds: records.last?.rtoSeconds, worstRtoSeconds: rtos.max(),
                            rtoMet: rtoMet, failedChecks: failedChecks.values.sorted { $0.name < $1.name }, records: records,
                            lastPITR: PITRDrillSummary.newest(finishedDrills))

        let backupFigures = Backups(
            planned: fires.count, attempted: done.count, succeeded: succeeded, failed: failed, partial: partial,
            missed: missedFires.count, unfinished: periodRuns.count - done.count,
            successRate: Totals.rate(succeeded, done.count + missedFires.count),
            lastGood: lastGood, lastVerified: lastVerified,
            worstRpoSeconds: worst?.seconds, worstRpoAt: worst?.at, rpoMet: worst.map { $0.seconds <= rpoLimit },
            ageAtEndSeconds: ageAtEnd, failures: failures)

        let dimensions = dimensions(backups: backupFigures, done: done, drills: drills, periodDrills: periodDrills,
                                    lastDrill: finishedDrills.last)
        let overall: Verdict
        let allDimensions = [dimensions.correct.verdict, dimensions.complete.verdict, dimensions.clean.verdict, dimensions.live.verdict]
        if done.isEmpty && records.isEmpty {
            overall = .noEvidence
        } else if allDimensions.allSatisfy({ $0 == .pass }) && backupFigures.rpoMet == true && drills.rtoMet == true {
            overall = .pass
        } else if allDimensions.contains(.fail) || backupFigures.rpoMet == false || drills.rtoMet == false {
            overall = .fail
        } else {
            overall = .noEvidence
        }
        let dataset = Dataset(
            key: policy.name + "/" + source.name, policy: policy.name, agency: policy.agency, system: policy.system,
            securityLevel: policy.securityLevel, source: source.name, sourceKind: source.kind,
            schedule: policy.schedule.expression,
            objectives: Objectives(rpoSeconds: policy.rpo, rpoToleranceSeconds: DatasetBuilder.rpoTolerance(policy.rpo),
                                   rtoSeconds: policy.rto, drillEverySeconds: policy.drills?.every,
                                   drillPeriodUsedSeconds: drillPeriod),
            backups: backupFigures, drills: drills, dimensions: dimensions,
            copies: copies(lastGood: lastGood), overall: overall)
        return DatasetComputation(dataset: dataset, periodBackups: done, missedFires: missedFires)
    }

    var drillPeriod: TimeInterval { policy.drills?.every ?? ReportBuilder.defaultDrillPeriod }

    /// The copies to each `copies:` destination, from the catalog's copy runs (one per snapshot
    /// copied, or per failed attempt; the details name the destination). A destination is current
    /// when the newest snapshot copied there by the period end is no more than the RPO (plus its
    /// tolerance) older than the newest good backup: a copy that keeps within the RPO of the main
    /// repository loses no more than the RPO allows if the main site is lost.
    func copies(lastGood: RecoveryPoint?) -> Copies {
        guard !policy.copies.isEmpty else { return Copies(status: "notConfigured", allowedLagSeconds: nil, items: []) }
        let allowed = policy.rpo + DatasetBuilder.rpoTolerance(policy.rpo)
        let copyRuns = runs.filter { $0.kind == .copy }.sorted { ($0.started, $0.id ?? 0) < ($1.started, $1.id ?? 0) }
        let items = policy.copies.map { spec -> CopyItem in
            let mine = copyRuns.compactMap { run -> (run: RunRecord, details: CopyDetails)? in
                guard let details = run.decodedDetails(CopyDetails.self), details.destination == spec.path else { return nil }
                return (run, details)
            }
            let done = mine.filter { finished($0.run) }
            let period = done.filter { inPeriod($0.run) }
            let good = period.filter { $0.run.outcome == .success }
            let newest = done.filter { $0.run.outcome == .success && $0.run.snapshot != nil }
                .max { ($0.run.snapshotTime ?? $0.run.started, $0.run.ended!) < ($1.run.snapshotTime ?? $1.run.started, $1.run.ended!) }
            let newestCopied = newest.map { c in
                RecoveryPoint(snapshot: c.run.snapshot ?? "", time: c.run.snapshotTime ?? c.run.started, confirmedAt: c.run.ended!, drillID: nil)
            }
            let lag = newestCopied.map { copied in lastGood.map { max(0, $0.time.timeIntervalSince(copied.time)) } ?? 0 }
            let status = lag.map { $0 <= allowed ? "current" : "behind" } ?? "neverCopied"
            return CopyItem(
                destination: CopyLocation.masked(spec.path), status: status, succeeded: good.count, failed: period.count - good.count,
                caughtUp: good.filter { $0.details.caughtUp == true }.count,
                bytesAdded: good.reduce(Int64(0)) { $0 + $1.details.bytesAdded },
                newestCopied: newestCopied, lagSeconds: lag,
                failures: period.filter { $0.run.outcome != .success }.map {
                    RunFailure(started: $0.run.started, outcome: $0.run.outcome, error: String(($0.run.error ?? "").prefix(300)))
                })
        }
        return Copies(status: items.allSatisfy { $0.status == "current" } ? "current" : "behind", allowedLagSeconds: allowed, items: items)
    }

    /// How late a recovery point may be and still count as within the RPO: 1% of it, at least a
    /// minute. A nightly job with a 24-hour RPO starts a few seconds later some nights than
    /// others; that jitter is not a missed objective.
    static func rpoTolerance(_ rpo: TimeInterval) -> TimeInterval { max(60, (rpo * 0.01).rounded()) }

    /// đúng, đủ, sạch, sống: each from the measurements the issue names, with its threshold.
    func dimensions(backups: Backups, done: [RunRecord], drills: Drills, periodDrills: [DrillView], lastDrill: DrillView?) -> Dimensions {
        let last = periodDrills.last
        let content = last.map { DrillContent($0.evidence) }
        let noBackups = done.isEmpty

        // đúng: the data read back equals what was recorded; the evidence is sealed.
        var drillContent = Metric(id: "drillContentEqual", verdict: .noEvidence, value: nil, of: nil, threshold: 0, unit: "count")
        if let content {
            drillContent.value = content.differences.map(Double.init)
            drillContent.of = content.compared.map(Double.init)
            drillContent.verdict = (content.differences == 0 && !content.restoreFailed) ? .pass : .fail
        }
        var seals = Metric(id: "evidenceSealsBroken", verdict: .noEvidence, value: nil, of: nil, threshold: 0, unit: "count")
        if !periodDrills.isEmpty {
            let broken = periodDrills.filter { !$0.record.sealIntact }.count
            seals.value = Double(broken)
            seals.of = Double(periodDrills.count)
            seals.verdict = broken == 0 ? .pass : .fail
        }
        let readData = Metric(id: "readDataCoverage", verdict: .notRecorded, value: nil, of: nil, threshold: nil, unit: "count")
        let correct = [drillContent, seals, readData]

        // đủ: every table and row present in the last drill; the source has a (complete) backup.
        var tables = Metric(id: "drillTablesMissing", verdict: .noEvidence, value: nil, of: nil, threshold: 0, unit: "count")
        if let content {
            tables.value = content.missing.map(Double.init)
            tables.of = content.compared.map(Double.init)
            tables.verdict = (content.missing == 0 && !content.restoreFailed) ? .pass : .fail
        }
        var hasBackup = Metric(id: "successfulBackups", verdict: .noEvidence, value: nil, of: nil, threshold: 1, unit: "count")
        var lastComplete = Metric(id: "lastBackupComplete", verdict: .noEvidence, value: nil, of: nil, threshold: 1, unit: "flag")
        if !noBackups {
            hasBackup.value = Double(backups.succeeded)
            hasBackup.of = Double(backups.attempted)
            hasBackup.verdict = backups.succeeded >= 1 ? .pass : .fail
            let newest = done.last { $0.outcome.isGood }
            lastComplete.value = newest?.outcome == .success ? 1 : 0
            lastComplete.verdict = newest?.outcome == .success ? .pass : .fail
        }
        let complete = [tables, hasBackup, lastComplete]

        // sạch: the engine's own checks clean; no dump errors; no suspicious shrink.
        var integrity = Metric(id: "integrityChecksFailed", verdict: .noEvidence, value: nil, of: nil, threshold: 0, unit: "count")
        if let content {
            if content.restoreFailed {
                integrity.verdict = .fail
            } else if content.engineChecks == 0 {
                integrity.verdict = .notApplicable
            } else {
                integrity.value = Double(content.engineChecksFailed)
                integrity.of = Double(content.engineChecks)
                integrity.verdict = content.engineChecksFailed == 0 ? .pass : .fail
            }
        }
        var dumpErrors = Metric(id: "dumpErrors", verdict: .noEvidence, value: nil, of: nil, threshold: 0, unit: "count")
        var shrink = Metric(id: "shrinkAlerts", verdict: .noEvidence, value: nil, of: nil, threshold: 0, unit: "count")
        if !noBackups {
            dumpErrors.value = Double(backups.failed)
            dumpErrors.of = Double(backups.attempted)
            dumpErrors.verdict = backups.failed == 0 ? .pass : .fail
            let shrinks = done.filter { $0.outcome == .failure && $0.errorKind == .sourceShrank }.count
            shrink.value = Double(shrinks)
            shrink.verdict = shrinks == 0 ? .pass : .fail
        }
        let clean = [integrity, dumpErrors, shrink]

        // sống: the newest good snapshot within the RPO; the last drill within the drill period.
        let rpoLimit = policy.rpo + DatasetBuilder.rpoTolerance(policy.rpo)
        var freshness = Metric(id: "newestGoodAge", verdict: .noEvidence, value: nil, of: nil, threshold: rpoLimit, unit: "seconds")
        if let age = backups.ageAtEndSeconds {
            freshness.value = age
            freshness.verdict = age <= rpoLimit ? .pass : .fail
        }
        var recency = Metric(id: "lastDrillAge", verdict: .noEvidence, value: nil, of: nil, threshold: drillPeriod, unit: "seconds")
        if let lastDrill {
            let age = scope.to.timeIntervalSince(lastDrill.record.started)
            recency.value = age
            recency.verdict = age <= drillPeriod ? .pass : .fail
        }
        let live = [freshness, recency]

        return Dimensions(correct: Dimension(verdict: .combine(correct.map(\.verdict)), metrics: correct),
                          complete: Dimension(verdict: .combine(complete.map(\.verdict)), metrics: complete),
                          clean: Dimension(verdict: .combine(clean.map(\.verdict)), metrics: clean),
                          live: Dimension(verdict: .combine(live.map(\.verdict)), metrics: live))
    }
}

/// Copy destinations as a report shows them: the address without anything that could be a
/// credential. kho's own addresses carry none (a path, or `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`
/// with keys from the environment), but a user and password in a URL's authority are replaced
/// by `***` and a query or fragment is dropped, whatever a future address form may hold.
enum CopyLocation {
    static func masked(_ location: String) -> String {
        var text = location
        if let cut = text.firstIndex(where: { $0 == "?" || $0 == "#" }) { text = String(text[..<cut]) }
        guard let scheme = text.range(of: "://") else { return text }
        let rest = text[scheme.upperBound...]
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return text }
        return String(text[..<scheme.upperBound]) + "***" + String(rest[at...])
    }
}

/// A drill's catalog row with its evidence read.
struct DrillView {
    let run: RunRecord
    let evidence: DrillEvidence?
    let record: DrillRecord

    init(run: RunRecord, objective: TimeInterval) {
        self.run = run
        let text = run.details ?? ""
        let evidence = run.decodedDetails(DrillEvidence.self)
        self.evidence = evidence
        let hash = evidence?.evidenceSHA256 ?? ""
        let intact = evidence != nil && DrillEvidence.sealIntact(text, hash: hash)
        record = DrillRecord(
            run: run.id ?? 0, drillID: evidence?.drillID ?? "", started: run.started, ended: run.ended ?? run.started,
            passed: run.outcome == .success && evidence?.passed == true && intact,
            snapshot: run.snapshot ?? evidence?.snapshot ?? "", snapshotTime: run.snapshotTime ?? evidence?.snapshotTime,
            rtoSeconds: evidence?.rtoSeconds, rtoObjectiveSeconds: evidence?.rtoObjectiveSeconds ?? objective,
            checks: (evidence?.checks ?? []).map { DrillCheck(name: $0.name, outcome: $0.outcome) },
            failureReasons: evidence?.failureReasons ?? [], evidenceSHA256: hash, sealIntact: intact)
    }
}
