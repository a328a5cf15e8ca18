import Foundation
import KhoCatalog
import KhoCore
import KhoSupport

/// Per policy source: how fresh the newest good backup is against the RPO, what failed last, and
/// when the next run is.
public struct SourceStatus: Codable, Sendable {
    public enum Freshness: String, Codable, Sendable, CaseIterable {
        /// The newest good snapshot is within the RPO.
        case ok
        /// Older than the RPO, but within twice the RPO.
        case late
        /// Older than twice the RPO, or no good snapshot at all.
        case missed
    }
    public var policy: String
    public var agency: String
    public var source: String
    public var kind: SourceKind
    public var lastSuccess: Date?
    public var lastSnapshot: String?
    public var newestGoodSnapshotTime: Date?
    public var ageSeconds: Double?
    public var rpoSeconds: Double
    public var rtoSeconds: Double
    public var freshness: Freshness
    public var lastFailure: Date?
    public var lastError: String?
    public var nextRun: Date?
    public var lastDrill: Date?
    public var lastDrillOutcome: RunOutcome?
    /// No drill that passed within the policy's drill period (or never).
    public var untested: Bool
    /// One per `copies:` destination of the policy.
    public var copies: [CopyStatus] = []
    /// The source's WAL archive, when it has one in the policy's repository and WAL was asked for.
    public var wal: WALSourceStatus?
    /// The source's binary log archive (MariaDB), likewise.
    public var binlog: BinlogSourceStatus?
}

/// How far a `copies:` destination is behind the source's newest good backup.
public struct CopyStatus: Codable, Sendable {
    public var destination: String
    /// Time of the newest snapshot copied there (the source snapshot's time).
    public var newestCopiedSnapshotTime: Date?
    /// Newest good snapshot time − newest copied snapshot time; nil when nothing was copied yet.
    public var lagSeconds: Double?
    public var lastCopy: Date?
    public var lastCopyOutcome: RunOutcome?
    /// The last copy to this destination failed.
    public var lastCopyFailed: Bool
    public var lastError: String?
}

public enum StatusReport {
    /// With `wal`, each policy's repository that holds archived WAL is opened and its archives
    /// judged (`WALStatusReport`); without, only the catalog is read.
    public static func compute(policies: [Policy], catalog: Catalog, now: Date, wal: WALStatusOptions? = nil) throws -> [SourceStatus] {
        var result: [SourceStatus] = []
        for policy in policies {
            let walStatuses = wal.map { WALStatusReport.compute(policy: policy, options: $0, now: now) } ?? [:]
            let binlogStatuses = wal == nil ? [:] : BinlogStatusReport.compute(policy: policy, now: now)
            for source in policy.sources {
                let success = try catalog.last(policy: policy.name, source: source.name, kind: .backup, outcome: .success)
                let partial = try catalog.last(policy: policy.name, source: source.name, kind: .backup, outcome: .partial)
                let good = [success, partial].compactMap { $0 }.max { ($0.snapshotTime ?? $0.started) < ($1.snapshotTime ?? $1.started) }
                let failure = try catalog.last(policy: policy.name, source: source.name, kind: .backup, outcome: .failure)
                let drill = try catalog.last(policy: policy.name, source: source.name, kind: .drill)
                let goodTime = good?.snapshotTime ?? good?.started
                let age = goodTime.map { now.timeIntervalSince($0) }
                let freshness: SourceStatus.Freshness
                if let age, age <= policy.rpo { freshness = .ok }
                else if let age, age <= 2 * policy.rpo { freshness = .late }
                else { freshness = .missed }
                let failureIsNewer = failure.map { f in good.map { f.started > $0.started } ?? true } ?? false
                // Tested means a drill that passed, within the period: a failed one proves nothing.
                let passedDrill = drill?.outcome == .success
                    ? drill : try catalog.last(policy: policy.name, source: source.name, kind: .drill, outcome: .success)
                var untested = true
                if let passedDrill, let period = policy.drills?.every {
                    untested = now.timeIntervalSince(passedDrill.started) > period
                } else if passedDrill != nil && policy.drills == nil {
                    untested = false
                }
                var copyStatuses: [CopyStatus] = []
                if !policy.copies.isEmpty {
                    let runs = try catalog.runs(policy: policy.name, source: source.name, kind: .copy)
                    for destination in policy.copies {
                        let mine = runs.filter { $0.decodedDetails(CopyDetails.self)?.destination == destination.path }
                        let newest = mine.filter { $0.outcome == .success }.compactMap(\.snapshotTime).max()
                        let last = mine.last { $0.outcome.isFinished }
                        let lag = newest.map { copied in goodTime.map { max(0, $0.timeIntervalSince(copied)) } ?? 0 }
                        copyStatuses.append(CopyStatus(destination: destination.path, newestCopiedSnapshotTime: newest, lagSeconds: lag,
                                                       lastCopy: last?.started, lastCopyOutcome: last?.outcome,
                                                       lastCopyFailed: last?.outcome == .failure,
                                                       lastError: last?.outcome == .failure ? last?.error : nil))
                    }
                }
                result.append(SourceStatus(policy: policy.name, agency: policy.agency, source: source.name, kind: source.kind,
                                           lastSuccess: good?.ended ?? good?.started, lastSnapshot: good?.snapshot,
                                           newestGoodSnapshotTime: goodTime, ageSeconds: age, rpoSeconds: policy.rpo, rtoSeconds: policy.rto,
                                           freshness: freshness,
                                           lastFailure: failureIsNewer ? failure?.started : nil,
                                           lastError: failureIsNewer ? failure?.error : nil,
                                           nextRun: policy.schedule.next(after: now),
                                           lastDrill: drill?.started, lastDrillOutcome: drill?.outcome, untested: untested, copies: copyStatuses,
                                           wal: walStatuses[source.name], binlog: binlogStatuses[source.name]))
            }
        }
        return result
    }
}
