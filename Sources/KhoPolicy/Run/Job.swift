import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoSources
import KhoStorage

/// One backup job: a source of a policy, for a planned time.
public struct Job: Sendable {
    public var policy: Policy
    public var source: SourceSpec
    public var planned: Date
}

public struct JobResult: Sendable, Codable {
    /// A backup (with its copies and retention) or a drill.
    public var kind: RunKind = .backup
    public var policy: String
    public var source: String
    public var planned: Date
    public var outcome: RunOutcome
    public var snapshot: String?
    public var error: String?
    public var bytesRead: Int64
    public var bytesAdded: Int64
    public var seconds: Double
    public var retention: String?
    /// One line per `copies:` destination: what was copied there, or why the copy failed.
    public var copies: [String]?
    /// How many of this backup's copies failed (the backup itself still counts as made).
    public var copiesFailed: Int?

    public init(policy: String, source: String, planned: Date, outcome: RunOutcome, snapshot: String?, error: String?,
                bytesRead: Int64, bytesAdded: Int64, seconds: Double, retention: String?) {
        self.policy = policy; self.source = source; self.planned = planned; self.outcome = outcome; self.snapshot = snapshot
        self.error = error; self.bytesRead = bytesRead; self.bytesAdded = bytesAdded; self.seconds = seconds; self.retention = retention
    }
}

extension JobResult {
    /// Incomplete when a job failed, or a copy failed (the backup is saved, but not where the
    /// policy wants it); partial when a backup could not read everything; else success.
    public static func verdict(of results: [JobResult]) -> Verdict {
        if results.contains(where: { $0.outcome == .failure || ($0.copiesFailed ?? 0) > 0 }) { return .incomplete }
        if results.contains(where: { $0.outcome == .partial }) { return .partial }
        return .success
    }
}

public struct RunOptions: Sendable {
    public var onlyDue = true
    public var policy: String?
    public var source: String?
    public var jobs = 2
    public var lockWait: TimeInterval = 600
    public var metricsFile: String?
    /// Recorded in drill evidence.
    public var khoVersion = "unknown"
    /// Where `kho run`'s drills record themselves in the audit ledger (nil: the default state folder).
    public var stateDirectory: String?
    public init() {}
}
