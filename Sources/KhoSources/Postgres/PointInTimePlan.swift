import Foundation
import KhoCore
import KhoSupport

/// What a restore to a point will use, decided before anything is written (docs/design/pitr.md
/// section 6): the source's archive, the base backup to start from, the WAL it needs and whether
/// the archive holds it without a hole up to the target.
public struct PointInTimePlan: Sendable {
    public var record: WALArchiveRecord
    public var cluster: SystemIdentifier
    public var base: Snapshot
    public var manifest: PhysicalBackupManifest
    public var target: RecoveryTarget
    /// The WAL from the base backup's start, as archived.
    public var continuity: WALContinuity
    public var newest: (name: WALFileName, stored: Date)?
    /// Things the operator should know before going on (not refusals).
    public var warnings: [String] = []

    /// Chooses the base backup and checks the archive. `baseBackup` names one (an ID or prefix);
    /// otherwise the newest of the archive's cluster from which the target is reachable.
    public static func make(repository: Repository, source: String, target: RecoveryTarget, baseBackup: String?) throws -> PointInTimePlan {
        guard let record = try WALArchive.currentRecord(source: source, in: repository) else {
            throw KhoError(.usage, "Source \(source) has no WAL archive in this repository: set up archiving with `kho wal setup --source \(source)` first; restore a dump with --target or --to-database instead.")
        }
        let cluster = try SystemIdentifier(parsing: record.cluster)
        let snapshots = try repository.listSnapshots()
        let bases: [(Snapshot, PhysicalBackupManifest)] = snapshots.compactMap { snapshot in
            guard snapshot.source.sourceKind == .postgresBase, !snapshot.partial,
                  let manifest = PhysicalBackupManifest(snapshot.manifest), manifest.cluster == record.cluster else { return nil }
            return (snapshot, manifest)
        }.sorted { $0.0.time < $1.0.time }
        guard !bases.isEmpty else {
            throw KhoError(.usage, "Source \(source) has no base backup of cluster \(cluster) in this repository: take one with `kho backup --postgres-base … --source-name \(source)`; WAL alone cannot be restored.")
        }
        let size = try WALSegmentSize(bytes: record.segmentSize)
        // Where the target lies in the WAL, when that is known before replay.
        var targetLSN: LSN?
        switch target {
        case .lsn(let lsn): targetLSN = lsn
        case .restorePoint(let name): targetLSN = try markerLSN(name: name, cluster: record.cluster, snapshots: snapshots)
        case .time, .latest, .immediate: break
        }
        let chosen: (Snapshot, PhysicalBackupManifest)
        if let baseBackup {
            guard let found = bases.first(where: { ($0.0.id ?? "").hasPrefix(baseBackup) }) else {
                throw KhoError(.usage, "\(baseBackup) is not a base backup of source \(source)'s cluster \(cluster): list them with `kho snapshots --tag base`.")
            }
            chosen = found
        } else {
            let usable = bases.filter { _, manifest in
                switch target {
                case .time(let date): return manifest.stopTime <= date
                case .lsn, .restorePoint:
                    guard let targetLSN, let end = try? LSN(parsing: manifest.endLSN) else { return false }
                    return end <= targetLSN
                case .latest, .immediate: return true
                }
            }
            guard let newest = usable.last else {
                if case .restorePoint(let name) = target, targetLSN == nil {
                    throw KhoError(.usage, "Restore point \(name) was not made by kho beside a dump, so kho cannot tell which base backup precedes it: name one with --base-backup ID.")
                }
                throw KhoError(.usage, "No base backup of source \(source) ends before \(target): the oldest ends at \(bases[0].1.endLSN) (\(Timestamp.format(bases[0].1.stopTime))); choose a later target.")
            }
            chosen = newest
        }
        let inventory = try WALArchive.inventory(of: record, in: repository)
        let histories = try WALArchive.histories(of: inventory, record: record, in: repository)
        let start = try WALFileName(parsing: chosen.1.startSegment)
        let end = try WALFileName(parsing: chosen.1.endSegment)
        let continuity = WALContinuity.walk(inventory, startTimeline: start.timeline, start: start.segmentNumber(segmentSize: size), histories: histories)
        var plan = PointInTimePlan(record: record, cluster: cluster, base: chosen.0, manifest: chosen.1, target: target,
                                   continuity: continuity, newest: inventory.newest.map { ($0.name, $0.modified) })
        // The base backup itself must be replayable to its end.
        let reachedNumber = continuity.reached?.segmentNumber(segmentSize: size)
        guard let reachedNumber, reachedNumber >= end.segmentNumber(segmentSize: size) else {
            throw KhoError(.integrity, "The archive lacks WAL that base backup \(chosen.0.shortID) needs to become consistent (\(continuity.gap?.description ?? end.description) is missing): it cannot be restored; run `kho check` and use another base backup with --base-backup.")
        }
        if let gap = continuity.gap {
            let gapNumber = gap.segmentNumber(segmentSize: size)
            let refuse = KhoError(.integrity, "The archive has a gap at \(gap) (\(continuity.stranded) later segments cannot be reached from base backup \(chosen.0.shortID)): recovery to \(target) would stop there; choose a target before the gap or a base backup after it, and run `kho check`.")
            switch target {
            case .lsn, .restorePoint:
                if let targetLSN, targetLSN.segmentNumber(segmentSize: size) >= gapNumber { throw refuse }
            case .time(let date):
                let reachedStored = continuity.reached.flatMap { inventory.segments[$0.timeline]?[$0.segmentNumber(segmentSize: size)] } ?? .distantPast
                if reachedStored < date { throw refuse }
            case .latest: throw refuse
            case .immediate: break
            }
        }
        if case .time(let date) = target, let newest = plan.newest, newest.stored < date {
            plan.warnings.append("The newest archived WAL (\(newest.name)) was stored at \(Timestamp.format(newest.stored)), before the target: PostgreSQL confirms a time only when it replays a commit after it, so this recovery may fail with \"recovery ended before configured recovery target was reached\"; use --latest to replay everything archived.")
        }
        return plan
    }

    /// The LSN of a restore point kho made beside a dump of this cluster (section 8's markers).
    static func markerLSN(name: String, cluster: String, snapshots: [Snapshot]) throws -> LSN? {
        for snapshot in snapshots.reversed() {
            guard let manifest = DumpManifest(snapshot.manifest) else { continue }
            for database in manifest.databases {
                if let marker = database.pitrMarker, marker.name == name, marker.cluster == cluster {
                    return try LSN(parsing: marker.lsn)
                }
            }
        }
        return nil
    }
}
