import Foundation
import KhoSupport

/// Which archived WAL no kept base backup needs (docs/design/pitr.md section 7): every segment,
/// partial segment and backup history file positioned before the start of the oldest kept base
/// backup of its cluster. Timeline history files and the archive record are always kept; a cluster
/// without any base backup keeps everything (its WAL may be all there is until one is taken).
public enum WALRetention {
    /// The files of `inventory` below `cutoff` (the oldest kept base backup's start segment number),
    /// oldest first, so that a removal interrupted half way leaves a shorter prefix removed and
    /// never a hole.
    public static func unneeded(_ inventory: WALInventory, cutoff: UInt64) -> [WALFileName] {
        let size = inventory.segmentSize
        var result: [WALFileName] = []
        for (timeline, numbers) in inventory.segments {
            for number in numbers.keys where number < cutoff {
                result.append(.segment(timeline: timeline, number: number, segmentSize: size))
            }
        }
        result += inventory.partials.filter { $0.segmentNumber(segmentSize: size) < cutoff }
        result += inventory.backups.filter { $0.segmentNumber(segmentSize: size) < cutoff }
        return result.sorted {
            ($0.segmentNumber(segmentSize: size), $0.timeline, $0.description) < ($1.segmentNumber(segmentSize: size), $1.timeline, $1.description)
        }
    }

    /// Removes, per cluster that has kept base backups, the WAL none of them needs. `starts` maps a
    /// cluster (16 hex digits) to the start segments of its kept base backups. Runs under the
    /// exclusive lock (prune's), after snapshots were forgotten. Returns the files and bytes removed.
    public static func removeUnneeded(repository: Repository, starts: [String: [WALFileName]], dryRun: Bool,
                                      removed: (String) -> Void = { _ in }) throws -> (files: Int, bytes: Int64) {
        var files = 0
        var bytes: Int64 = 0
        for record in try WALArchive.records(in: repository) {
            guard let kept = starts[record.cluster], !kept.isEmpty else { continue }
            let inventory = try WALArchive.inventory(of: record, in: repository)
            let size = inventory.segmentSize
            let cutoff = kept.map { $0.segmentNumber(segmentSize: size) }.min()!
            let cluster = inventory.cluster
            let listed = Dictionary(try repository.storage.list(.wal, under: cluster.description).map { ($0.name, $0.size) },
                                    uniquingKeysWith: { a, _ in a })
            let names = unneeded(inventory, cutoff: cutoff)
            // Refused only when something is due, as forget refuses only when it would remove.
            if !dryRun && !names.isEmpty { try repository.refuseRemovalIfAppendOnly(command: "WAL retention") }
            // Object lock: a locked file stays until its date; a later prune removes it.
            let locked = try repository.retentionDates(names.map { $0.handle(cluster: cluster) })
            for name in names {
                let handle = name.handle(cluster: cluster)
                if locked[handle] != nil { continue }
                if !dryRun { try repository.storage.remove(handle) }
                files += 1
                bytes += Int64(listed[handle.name] ?? 0)
                removed(handle.path)
            }
        }
        return (files, bytes)
    }
}
