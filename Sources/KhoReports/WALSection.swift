import Foundation
import KhoCore
import KhoPolicy

/// A WAL-archived cluster over the report's period (docs/design/pitr.md section 7), judged at the
/// period's end from what the repository holds: segments stored after the end are not counted.
public struct WALClusterReport: Codable, Sendable, Equatable {
    public var policy: String
    public var source: String
    public var cluster: String
    public var newestSegment: String?
    public var newestStored: Date?
    /// Period end − storage time of the newest segment stored by then.
    public var achievedRpoSeconds: Double?
    /// The longest time without a newly stored segment in the period (the tail to the end
    /// included): an upper bound, as an idle server archives nothing and loses nothing.
    public var worstRpoSeconds: Double?
    public var segmentsInPeriod: Int
    /// Oldest kept base backup's end → newest segment.
    public var windowStart: Date?
    public var windowEnd: Date?
    /// Holes a recovery would stop at (first missing segment each), with the base backups cut.
    public var gaps: [String]
    // The latest PITR drill and its exactness (design section 8) belong here once drills exist.
}

public enum WALSection {
    /// The longest the archive went without a new file in the period, counting from the last
    /// file stored before it (or the first inside it) to the period's end: the worst RPO
    /// achieved. Nil with no file at all. `sorted`: storage times, oldest first.
    static func worstGap(sorted times: [Date], scope: ReportScope) -> Double? {
        let inPeriod = times.filter { $0 >= scope.from }
        guard let before = times.last(where: { $0 < scope.from }) ?? inPeriod.first else { return nil }
        var previous = max(before, scope.from)
        var longest = 0.0
        for time in inPeriod + [scope.to] {
            longest = max(longest, time.timeIntervalSince(previous))
            previous = time
        }
        return longest
    }

    public static func make(policy: String, archive: WALArchiveView, scope: ReportScope) -> WALClusterReport {
        let size = archive.inventory.segmentSize
        var times: [Date] = []
        var newest: (name: WALFileName, stored: Date)?
        for (timeline, numbers) in archive.inventory.segments {
            for (number, stored) in numbers where stored != .distantPast && stored <= scope.to {
                times.append(stored)
                if newest.map({ $0.stored < stored }) ?? true {
                    newest = (.segment(timeline: timeline, number: number, segmentSize: size), stored)
                }
            }
        }
        times.sort()
        let inPeriod = times.filter { $0 >= scope.from }
        let worst = worstGap(sorted: times, scope: scope)
        let gaps = WALContinuityCheck.gaps(archive.inventory, histories: archive.histories, bases: archive.bases).map { gap in
            gap.gap.description + (gap.cuts.isEmpty ? "" : " (" + gap.cuts.map(\.snapshot.shortID).joined(separator: ", ") + ")")
        }
        return WALClusterReport(policy: policy, source: archive.source, cluster: archive.record.cluster,
                                newestSegment: newest?.name.description, newestStored: newest?.stored,
                                achievedRpoSeconds: newest.map { scope.to.timeIntervalSince($0.stored) }, worstRpoSeconds: worst,
                                segmentsInPeriod: inPeriod.count,
                                windowStart: archive.bases.map(\.manifest.stopTime).filter { $0 <= scope.to }.min(),
                                windowEnd: newest?.stored, gaps: gaps)
    }

    /// Every archive of the policies in scope. A repository that cannot be read is an error: a
    /// report that silently left a cluster out would overstate protection.
    public static func read(policies: [Policy], scope: ReportScope) throws -> [WALClusterReport] {
        var result: [WALClusterReport] = []
        for policy in policies where scope.policy == nil || policy.name == scope.policy {
            guard policy.sources.contains(where: { $0.kind == .postgresBase }) else { continue }
            for archive in try WALArchiveView.read(policy: policy) {
                result.append(make(policy: policy.name, archive: archive, scope: scope))
            }
        }
        return result
    }
}
