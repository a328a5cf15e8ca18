import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoPolicy

/// What a report covers: a period and, optionally, one policy.
public struct ReportScope: Sendable, Equatable {
    public var from: Date
    public var to: Date
    public var policy: String?
    public var timeZone: TimeZone

    public static let defaultTimeZone = TimeZone(identifier: "Asia/Ho_Chi_Minh")!

    public init(from: Date, to: Date, policy: String? = nil, timeZone: TimeZone = ReportScope.defaultTimeZone) {
        self.from = from
        self.to = to
        self.policy = policy
        self.timeZone = timeZone
    }
}

/// The audit ledger as a report reads it: every line (nil where a line is not an entry) and the
/// first break in the hash chain.
public struct LedgerInput: Sendable {
    public var present: Bool
    public var lines: [LedgerEntry?]
    public var firstBreak: (line: Int, reason: String)?

    public init(present: Bool, lines: [LedgerEntry?], firstBreak: (line: Int, reason: String)?) {
        self.present = present
        self.lines = lines
        self.firstBreak = firstBreak
    }

    public static func read(_ ledger: AuditLedger) throws -> LedgerInput {
        guard let data = FileManager.default.contents(atPath: ledger.path) else {
            return LedgerInput(present: false, lines: [], firstBreak: nil)
        }
        var lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }
        // try?: a line that is not an entry is shown as such (nil); the ledger check names it.
        let entries = lines.map { try? JSON.decoder.decode(LedgerEntry.self, from: Data($0.utf8)) }
        return LedgerInput(present: true, lines: entries, firstBreak: try ledger.verify())
    }
}

/// Builds the report data. Only runs that finished by the period end count, so that the same
/// catalog gives the same data later (`kho report --check`), however many runs were added since.
public enum ReportBuilder {
    /// The drill period assumed for a policy that sets none.
    public static let defaultDrillPeriod: TimeInterval = 30 * 86400

    /// `wal` and `binlog`: the continuous protection sections, read from the repositories
    /// (`WALSection.read`, `BinlogSection.read`) by the caller, since they are not in the catalog.
    public static func build(policies: [Policy], catalog: Catalog, ledger: AuditLedger, scope: ReportScope, wal: [WALClusterReport] = [],
                             binlog: [BinlogSourceReport] = []) throws -> ReportData {
        let runs = try catalog.runs(policy: scope.policy, to: scope.to)
        return build(policies: policies, runs: runs, ledger: try LedgerInput.read(ledger), scope: scope, wal: wal, binlog: binlog)
    }

    public static func build(policies: [Policy], runs: [RunRecord], ledger: LedgerInput, scope: ReportScope, wal: [WALClusterReport] = [],
                             binlog: [BinlogSourceReport] = []) -> ReportData {
        var byDataset: [String: [RunRecord]] = [:]
        for run in runs where run.started <= scope.to {
            byDataset[run.policy + "/" + run.source, default: []].append(run)
        }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = scope.timeZone
        var days: [String: Day] = [:]
        var order: [String] = []
        var cursor = calendar.startOfDay(for: scope.from)
        while cursor <= scope.to {
            let key = LocalTime.dateKey(cursor, calendar: calendar)
            days[key] = Day(date: key, succeeded: 0, failed: 0, partial: 0, missed: 0, drills: 0)
            order.append(key)
            cursor = calendar.date(byAdding: .day, value: 1, to: cursor)!
        }
        func count(_ date: Date, _ change: (inout Day) -> Void) {
            let key = LocalTime.dateKey(date, calendar: calendar)
            if days[key] != nil { change(&days[key]!) }
        }

        var datasets: [Dataset] = []
        for policy in policies where scope.policy == nil || policy.name == scope.policy {
            for source in policy.sources {
                let key = policy.name + "/" + source.name
                let computed = DatasetBuilder(policy: policy, source: source, runs: byDataset[key] ?? [], scope: scope).build()
                datasets.append(computed.dataset)
                for run in computed.periodBackups {
                    switch run.outcome {
                    case .success: count(run.started) { $0.succeeded += 1 }
                    case .partial: count(run.started) { $0.partial += 1 }
                    case .failure, .running, .late, .missed: count(run.started) { $0.failed += 1 }
                    }
                }
                for fire in computed.missedFires { count(fire) { $0.missed += 1 } }
                for drill in computed.dataset.drills.records { count(drill.started) { $0.drills += 1 } }
            }
        }
        datasets.sort { $0.key < $1.key }
        let agencyNames = Array(Set(datasets.map(\.agency))).sorted()
        let agencies = agencyNames.map { name in
            let members = datasets.filter { $0.agency == name }
            return Agency(name: name, totals: Totals.sum(members), datasets: members)
        }
        let ledgerSection = LedgerSection.make(ledger, scope: scope)
        var data = ReportData(
            period: Period(from: scope.from, to: scope.to, timeZone: scope.timeZone.identifier, policy: scope.policy),
            province: Totals.sum(datasets),
            agencies: agencies,
            daily: order.map { days[$0]! },
            copies: CopiesSummary.sum(datasets),
            ledger: ledgerSection,
            controls: [],
            securityLevels: SecurityLevels.requirements)
        data.wal = wal.isEmpty ? nil : wal.sorted { ($0.policy, $0.source, $0.cluster) < ($1.policy, $1.source, $1.cluster) }
        data.binlog = binlog.isEmpty ? nil : binlog.sorted { ($0.policy, $0.source) < ($1.policy, $1.source) }
        data.controls = ControlMapping.evaluate(datasets: datasets, ledger: ledgerSection, policies: policies, scope: scope)
        return data
    }
}

extension Totals {
    static func sum(_ datasets: [Dataset]) -> Totals {
        var t = Totals(agencies: Set(datasets.map(\.agency)).count, datasets: datasets.count, planned: 0, attempted: 0, succeeded: 0,
                       failed: 0, partial: 0, missed: 0, unfinished: 0, successRate: nil, drills: 0, drillsPassed: 0, drillsFailed: 0,
                       datasetsPassing: 0, datasetsFailing: 0, datasetsNoEvidence: 0, rpoMet: 0, rtoMet: 0,
                       dimensionsPassing: DimensionCounts(correct: 0, complete: 0, clean: 0, live: 0))
        for d in datasets {
            t.planned += d.backups.planned
            t.attempted += d.backups.attempted
            t.succeeded += d.backups.succeeded
            t.failed += d.backups.failed
            t.partial += d.backups.partial
            t.missed += d.backups.missed
            t.unfinished += d.backups.unfinished
            t.drills += d.drills.done
            t.drillsPassed += d.drills.passed
            t.drillsFailed += d.drills.failed
            switch d.overall {
            case .pass: t.datasetsPassing += 1
            case .fail: t.datasetsFailing += 1
            default: t.datasetsNoEvidence += 1
            }
            if d.backups.rpoMet == true { t.rpoMet += 1 }
            if d.drills.rtoMet == true { t.rtoMet += 1 }
            if d.dimensions.correct.verdict == .pass { t.dimensionsPassing.correct += 1 }
            if d.dimensions.complete.verdict == .pass { t.dimensionsPassing.complete += 1 }
            if d.dimensions.clean.verdict == .pass { t.dimensionsPassing.clean += 1 }
            if d.dimensions.live.verdict == .pass { t.dimensionsPassing.live += 1 }
        }
        t.successRate = Totals.rate(t.succeeded, t.attempted + t.missed)
        return t
    }

    /// A ratio rounded to 4 decimals (so that its JSON is short and stable), or nil for 0/0.
    static func rate(_ part: Int, _ whole: Int) -> Double? {
        guard whole > 0 else { return nil }
        return (Double(part) / Double(whole) * 10000).rounded() / 10000
    }
}

extension CopiesSummary {
    static func sum(_ datasets: [Dataset]) -> CopiesSummary {
        let configured = datasets.filter { $0.copies.status != "notConfigured" }
        let current = configured.filter { $0.copies.status == "current" }.count
        let items = configured.flatMap(\.copies.items)
        return CopiesSummary(status: configured.isEmpty ? "notConfigured" : current == configured.count ? "current" : "behind",
                             configured: configured.count, current: current, behind: configured.count - current,
                             destinations: items.count, succeeded: items.reduce(0) { $0 + $1.succeeded },
                             failed: items.reduce(0) { $0 + $1.failed })
    }
}

extension LedgerSection {
    static func make(_ input: LedgerInput, scope: ReportScope) -> LedgerSection {
        guard input.present else { return LedgerSection(status: "absent", entries: 0, brokenAtLine: nil, reason: nil, actions: []) }
        // The part of the ledger the period can rely on: from the first line through the last
        // entry dated by the period end. A break after it (an entry added later and then
        // tampered with) does not change this period's report.
        let through = (input.lines.lastIndex { ($0?.time).map { $0 <= scope.to } ?? false }).map { $0 + 1 } ?? 0
        let entries = input.lines.prefix(through).compactMap { $0 }.count
        var status = "intact"
        var brokenAt: Int?
        var reason: String?
        if let (line, why) = input.firstBreak {
            let entry = line >= 1 && line <= input.lines.count ? input.lines[line - 1] : nil
            let afterPeriod = line > through && (entry.map { $0.time > scope.to } ?? false)
            if !afterPeriod {
                status = "broken"
                brokenAt = line
                reason = why
            }
        }
        let actions = input.lines.compactMap { $0 }.filter { $0.time >= scope.from && $0.time <= scope.to }
            .sorted { $0.sequence < $1.sequence }
            .map { LedgerAction(sequence: $0.sequence, time: $0.time, user: $0.user, host: $0.host, command: $0.command,
                                arguments: $0.arguments, outcome: $0.outcome) }
        return LedgerSection(status: status, entries: entries, brokenAtLine: brokenAt, reason: reason, actions: actions)
    }
}

/// Local dates in the report's time zone.
enum LocalTime {
    static func dateKey(_ date: Date, calendar: Calendar) -> String {
        let c = calendar.dateComponents([.year, .month, .day], from: date)
        return String(format: "%04d-%02d-%02d", c.year!, c.month!, c.day!)
    }
}
