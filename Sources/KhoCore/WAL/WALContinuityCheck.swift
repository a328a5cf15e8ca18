import Foundation
import KhoSupport

/// A hole in a cluster's archived WAL that a recovery would stop at, with what it costs: the
/// kept base backups whose recovery it cuts and the last point still reachable before it.
public struct WALGap: Sendable {
    public var gap: WALFileName
    /// Base backups from which recovery stops at this gap (empty when the cluster has none and
    /// the walk began at the oldest archived segment).
    public var cuts: [WALBaseBackup]
    /// The last segment reached before the gap, and when the storage received it.
    public var reached: WALFileName?
    public var reachedStored: Date?
    public var stranded: Int
}

/// Continuity as `kho check`, `kho status` and the report judge it (docs/design/pitr.md section 7):
/// walked from every kept base backup's start segment, because those are the points a recovery
/// begins at; holes below the oldest kept base backup cut nothing and are not findings. A cluster
/// without a base backup is walked from its oldest segment (its WAL is all there is).
public enum WALContinuityCheck {
    public static func gaps(_ inventory: WALInventory, histories: [UInt32: [WALTimelineSwitch]], bases: [WALBaseBackup]) -> [WALGap] {
        let size = inventory.segmentSize
        var starts: [(timeline: UInt32, number: UInt64, base: WALBaseBackup?)] = bases.map {
            ($0.start.timeline, $0.start.segmentNumber(segmentSize: size), $0)
        }
        if bases.isEmpty, let timeline = inventory.segments.keys.min(), let start = inventory.segments[timeline]?.keys.min() {
            starts = [(timeline, start, nil)]
        }
        var found: [String: WALGap] = [:]
        var order: [String] = []
        for start in starts {
            let walk = WALContinuity.walk(inventory, startTimeline: start.timeline, start: start.number, histories: histories)
            guard let gap = walk.gap else { continue }
            let key = gap.description
            if found[key] == nil {
                let stored = walk.reached.flatMap { inventory.segments[$0.timeline]?[$0.segmentNumber(segmentSize: size)] }
                found[key] = WALGap(gap: gap, cuts: [], reached: walk.reached, reachedStored: stored == .distantPast ? nil : stored,
                                    stranded: walk.stranded)
                order.append(key)
            }
            if let base = start.base { found[key]!.cuts.append(base) }
        }
        return order.compactMap { found[$0] }
    }

    /// Kept base backups whose own WAL (start to end segment) is not all archived: they cannot
    /// become consistent, whatever the target.
    public static func incomplete(_ inventory: WALInventory, histories: [UInt32: [WALTimelineSwitch]], bases: [WALBaseBackup]) -> [WALBaseBackup] {
        let size = inventory.segmentSize
        return bases.filter { base in
            // A manifest's end that does not parse is reported by the snapshot checks; here it
            // cannot be judged, so it is not claimed incomplete.
            guard let end = try? WALFileName(parsing: base.manifest.endSegment) else { return false }
            let walk = WALContinuity.walk(inventory, startTimeline: base.start.timeline, start: base.start.segmentNumber(segmentSize: size), histories: histories)
            guard let reached = walk.reached else { return true }
            return reached.segmentNumber(segmentSize: size) < end.segmentNumber(segmentSize: size)
        }
    }

    /// One sentence per finding, each with the fix; the caller names the cluster first.
    public static func problems(_ inventory: WALInventory, histories: [UInt32: [WALTimelineSwitch]], bases: [WALBaseBackup]) -> [String] {
        var result: [String] = []
        let found = gaps(inventory, histories: histories, bases: bases)
        let cut = Set(found.flatMap { $0.cuts.compactMap(\.snapshot.id) })
        for gap in found {
            let reach = gap.reached.map { "\($0)" + (gap.reachedStored.map { " (stored \(Timestamp.format($0)))" } ?? "") } ?? "nothing (the first segment is missing)"
            if gap.cuts.isEmpty {
                result.append("has a gap: \(gap.gap) is missing and \(gap.stranded) later segments cannot be reached; recovery ends at \(reach); take a base backup now so that later WAL is usable")
            } else {
                let names = gap.cuts.map(\.snapshot.shortID).joined(separator: ", ")
                result.append("has a gap that cuts base backups \(names): \(gap.gap) is missing and \(gap.stranded) later segments cannot be reached; recovery from them ends at \(reach); take a base backup now so that later WAL is usable")
            }
        }
        for base in incomplete(inventory, histories: histories, bases: bases) where !cut.contains(base.snapshot.id ?? "") {
            result.append("lacks WAL that base backup \(base.snapshot.shortID) needs to become consistent (\(base.start) to \(base.manifest.endSegment)): it cannot be restored; take a new base backup and forget this one")
        }
        return result
    }
}
