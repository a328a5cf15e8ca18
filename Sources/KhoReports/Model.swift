import Foundation
import KhoCatalog
import KhoCore

// The data of a compliance report: one language-neutral model built from the catalog, the
// policies and the audit ledger, from which every format (JSON, HTML, Markdown, CSV) is rendered.
// Its canonical JSON (sorted keys, RFC 3339 times) is what the report's SHA-256 covers; the
// schema is docs/report.schema.json. Nothing in it is estimated: a figure the catalog cannot give
// is absent from the JSON and the verdict that needed it is `noEvidence`.

/// The result of one measurement, dimension or dataset.
public enum Verdict: String, Codable, Sendable, CaseIterable {
    case pass
    case fail
    /// Nothing in the period to judge by: shown red, never as a pass.
    case noEvidence
    /// The measurement does not exist for this kind of source (no engine check for a folder).
    case notApplicable
    /// kho does not record this yet; shown for completeness, not counted.
    case notRecorded

    /// Combines measurements: any failure fails; otherwise any missing evidence leaves the whole
    /// without evidence; only measurements that all passed pass.
    public static func combine(_ verdicts: [Verdict]) -> Verdict {
        let counted = verdicts.filter { $0 != .notApplicable && $0 != .notRecorded }
        if counted.contains(.fail) { return .fail }
        if counted.isEmpty || counted.contains(.noEvidence) { return .noEvidence }
        return .pass
    }
}

/// How far a control is met.
public enum ControlStatus: String, Codable, Sendable, CaseIterable {
    case met, partlyMet, notMet
}

public struct ReportData: Codable, Sendable, Equatable {
    public var period: Period
    public var province: Totals
    public var agencies: [Agency]
    /// Backup runs and drills per local day of the period.
    public var daily: [Day]
    public var copies: CopiesSummary
    public var ledger: LedgerSection
    public var controls: [Control]
    /// The backup requirements per security level that the level controls are judged by.
    public var securityLevels: [LevelRequirement]
    /// WAL-archived clusters (continuous protection); absent when no policy in scope has one,
    /// so that reports without WAL keep their data and hash.
    public var wal: [WALClusterReport]?
    /// MariaDB sources with an archived binary log; absent when none, as `wal`.
    public var binlog: [BinlogSourceReport]?

    /// Every dataset, agency by agency.
    public var datasets: [Dataset] { agencies.flatMap(\.datasets) }
}

public struct Period: Codable, Sendable, Equatable {
    public var from: Date
    public var to: Date
    /// Days are counted and dates shown in this zone.
    public var timeZone: String
    /// The one policy the report is limited to; absent for every policy.
    public var policy: String?
}

/// Figures summed over datasets (the province, or an agency).
public struct Totals: Codable, Sendable, Equatable {
    public var agencies: Int
    public var datasets: Int
    public var planned: Int
    public var attempted: Int
    public var succeeded: Int
    public var failed: Int
    public var partial: Int
    public var missed: Int
    public var unfinished: Int
    /// succeeded / (attempted + missed); absent when both are 0.
    public var successRate: Double?
    public var drills: Int
    public var drillsPassed: Int
    public var drillsFailed: Int
    public var datasetsPassing: Int
    public var datasetsFailing: Int
    public var datasetsNoEvidence: Int
    public var rpoMet: Int
    public var rtoMet: Int
    /// Datasets whose dimension passed, per dimension.
    public var dimensionsPassing: DimensionCounts
}

public struct DimensionCounts: Codable, Sendable, Equatable {
    public var correct: Int
    public var complete: Int
    public var clean: Int
    public var live: Int
}

public struct Agency: Codable, Sendable, Equatable {
    public var name: String
    public var totals: Totals
    public var datasets: [Dataset]
}

/// One source of one policy.
public struct Dataset: Codable, Sendable, Equatable {
    /// "policy/source".
    public var key: String
    public var policy: String
    public var agency: String
    public var system: String
    public var securityLevel: Int
    public var source: String
    public var sourceKind: SourceKind
    public var schedule: String
    public var objectives: Objectives
    public var backups: Backups
    public var drills: Drills
    public var dimensions: Dimensions
    public var copies: Copies
    public var overall: Verdict
}

public struct Objectives: Codable, Sendable, Equatable {
    public var rpoSeconds: Double
    /// How late a recovery point may be and still count as within the RPO (1%, at least 60 s).
    public var rpoToleranceSeconds: Double
    public var rtoSeconds: Double
    /// The policy's drill period; absent when the policy sets none.
    public var drillEverySeconds: Double?
    /// The drill period the report judges by: the policy's, else 30 days.
    public var drillPeriodUsedSeconds: Double
}

public struct Backups: Codable, Sendable, Equatable {
    /// Times the schedule fired in the period (from the planned time of the first backup kho ever
    /// ran of the source).
    public var planned: Int
    /// Runs started in the period and finished by its end.
    public var attempted: Int
    public var succeeded: Int
    public var failed: Int
    public var partial: Int
    /// Planned times with no run planned for them and none started before the next planned time.
    public var missed: Int
    /// Runs started in the period that had not finished by its end (running, or killed).
    public var unfinished: Int
    public var successRate: Double?
    /// Newest successful backup finished by the period end (possibly before the period).
    public var lastGood: RecoveryPoint?
    /// Snapshot of the newest passed drill finished by the period end.
    public var lastVerified: RecoveryPoint?
    /// The longest gap in the period between two good snapshots' data times (or between the
    /// last one and the period end); absent when no backup of the source was ever attempted.
    public var worstRpoSeconds: Double?
    /// When that gap ended (the next good snapshot's time, or the period end).
    public var worstRpoAt: Date?
    public var rpoMet: Bool?
    /// Age of the newest good snapshot at the period end.
    public var ageAtEndSeconds: Double?
    /// Failed and partial runs in the period, oldest first.
    public var failures: [RunFailure]
}

public struct RecoveryPoint: Codable, Sendable, Equatable {
    public var snapshot: String
    /// When the data was taken.
    public var time: Date
    /// When the backup (or the drill that verified it) finished.
    public var confirmedAt: Date
    /// The drill that verified it, for a verified point.
    public var drillID: String?
}

public struct RunFailure: Codable, Sendable, Equatable {
    public var started: Date
    public var outcome: RunOutcome
    /// The error as the catalog holds it, cut to 300 characters.
    public var error: String
}

public struct Drills: Codable, Sendable, Equatable {
    public var done: Int
    public var passed: Int
    public var failed: Int
    /// The newest drill finished by the period end (possibly before the period).
    public var last: DrillRecord?
    public var lastRtoSeconds: Double?
    public var worstRtoSeconds: Double?
    /// Every drill in the period restored within the RTO; absent when there was no drill.
    public var rtoMet: Bool?
    /// Checks that failed in the period's drills.
    public var failedChecks: [FailedCheck]
    /// The period's drills, oldest first.
    public var records: [DrillRecord]
    /// The newest PITR drill finished by the period end (PITRSection.swift); absent without one.
    public var lastPITR: PITRDrillSummary?
}

public struct DrillRecord: Codable, Sendable, Equatable {
    /// The catalog row.
    public var run: Int64
    public var drillID: String
    public var started: Date
    public var ended: Date
    public var passed: Bool
    public var snapshot: String
    public var snapshotTime: Date?
    public var rtoSeconds: Double?
    public var rtoObjectiveSeconds: Double
    public var checks: [DrillCheck]
    public var failureReasons: [String]
    public var evidenceSHA256: String
    /// The evidence's SHA-256 matches its content (it was not edited in the catalog).
    public var sealIntact: Bool
}

public struct DrillCheck: Codable, Sendable, Equatable {
    public var name: String
    public var outcome: DrillCheckOutcome
}

public struct FailedCheck: Codable, Sendable, Equatable {
    public var name: String
    public var count: Int
    public var lastAt: Date
}

/// The four dimensions: đúng, đủ, sạch, sống.
public struct Dimensions: Codable, Sendable, Equatable {
    public var correct: Dimension
    public var complete: Dimension
    public var clean: Dimension
    public var live: Dimension

    public var all: [(key: String, dimension: Dimension)] {
        [("correct", correct), ("complete", complete), ("clean", clean), ("live", live)]
    }
}

public struct Dimension: Codable, Sendable, Equatable {
    public var verdict: Verdict
    public var metrics: [Metric]
}

/// One measurement. `value` compared with `threshold` in the way `id` defines (see the schema).
public struct Metric: Codable, Sendable, Equatable {
    public var id: String
    public var verdict: Verdict
    public var value: Double?
    /// The count `value` is out of, where there is one.
    public var of: Double?
    public var threshold: Double?
    /// count, seconds or flag.
    public var unit: String
}

/// The dataset's copies at a second site: one item per `copies:` destination of its policy.
public struct Copies: Codable, Sendable, Equatable {
    /// notConfigured (the policy has no `copies:`), current (every destination is no more than
    /// `allowedLagSeconds` behind the newest good backup at the period end) or behind (some
    /// destination lags more, or has never received a copy).
    public var status: String
    /// How far a destination may lag behind the newest good backup and still be current: the
    /// RPO plus its tolerance. Absent when no copies are configured.
    public var allowedLagSeconds: Double?
    /// In the order the policy lists them.
    public var items: [CopyItem]
}

/// One `copies:` destination of a dataset.
public struct CopyItem: Codable, Sendable, Equatable {
    /// The destination as the policy writes it (a path or an s3: address), credentials masked.
    public var destination: String
    /// current, behind or neverCopied (no copy there has ever succeeded by the period end).
    public var status: String
    /// Copy runs to it started in the period and finished by its end, by outcome.
    public var succeeded: Int
    public var failed: Int
    /// Of the succeeded ones, snapshots of an earlier run that the destination lacked (catch-up).
    public var caughtUp: Int
    /// Bytes the period's copies added there.
    public var bytesAdded: Int64
    /// The newest source snapshot (by its data's time) copied there by the period end, possibly
    /// before the period; `confirmedAt` is when that copy finished.
    public var newestCopied: RecoveryPoint?
    /// The newest good backup's time minus the newest copied snapshot's time, at the period end
    /// (0 when the destination has it); absent when nothing was ever copied there.
    public var lagSeconds: Double?
    /// Failed copy runs to it in the period, oldest first.
    public var failures: [RunFailure]
}

/// Copies for the whole report.
public struct CopiesSummary: Codable, Sendable, Equatable {
    /// notConfigured (no dataset has copies), current (every dataset with copies is current) or
    /// behind (at least one is behind).
    public var status: String
    /// Datasets with copies configured.
    public var configured: Int
    /// Of those, current at the period end.
    public var current: Int
    /// Of those, behind at the period end.
    public var behind: Int
    /// Copy destinations over every dataset.
    public var destinations: Int
    /// Copy runs in the period, by outcome.
    public var succeeded: Int
    public var failed: Int
}

public struct Day: Codable, Sendable, Equatable {
    /// Local date, YYYY-MM-DD.
    public var date: String
    public var succeeded: Int
    public var failed: Int
    public var partial: Int
    public var missed: Int
    public var drills: Int
}

public struct LedgerSection: Codable, Sendable, Equatable {
    /// intact, broken or absent (no ledger file).
    public var status: String
    /// Entries from the first through the last one dated by the period end.
    public var entries: Int
    public var brokenAtLine: Int?
    /// Why the chain is broken, as `kho audit verify` says it.
    public var reason: String?
    /// Privileged actions in the period, oldest first.
    public var actions: [LedgerAction]
}

public struct LedgerAction: Codable, Sendable, Equatable {
    public var sequence: Int
    public var time: Date
    public var user: String
    public var host: String
    public var command: String
    public var arguments: [String]
    public var outcome: String
}

public struct Control: Codable, Sendable, Equatable {
    /// e.g. iso27001-A.8.13, cis-11.2, nist-CP-9, level-3.
    public var id: String
    public var framework: String
    public var clause: String
    public var status: ControlStatus
    public var facts: [Fact]
}

/// One piece of evidence a control rests on: `met` of `of` datasets (or drills, or ledgers) satisfy it.
public struct Fact: Codable, Sendable, Equatable {
    public var id: String
    public var met: Int
    public var of: Int
    public var threshold: Double?
    /// Keys of the datasets that do not satisfy it.
    public var failing: [String]

    public var satisfied: Bool { of > 0 && met == of }
}

public struct LevelRequirement: Codable, Sendable, Equatable {
    public var level: Int
    public var maxRpoSeconds: Double
    public var drillEverySeconds: Double
    public var minSuccessRate: Double
    public var offsiteCopy: Bool
    public var auditLedger: Bool
}
