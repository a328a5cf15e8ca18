import Foundation
import KhoSupport

/// Which archived binary log no kept dump needs (docs/design/pitr.md section 9): a replay starts at
/// a dump's recorded position, so every file before the file of the oldest kept dump's position
/// (of the archive's server) can go. A source without a positioned dump keeps everything.
public enum BinlogRetention {
    /// Per source name and server id, the file of the oldest position a kept, complete dump recorded.
    public static func cutoffs(in snapshots: [Snapshot]) -> [String: [UInt32: BinlogFileName]] {
        var result: [String: [UInt32: BinlogFileName]] = [:]
        for snapshot in snapshots where snapshot.source.sourceKind == .mariadb && !snapshot.partial {
            guard let name = snapshot.source.name, let manifest = DumpManifest(snapshot.manifest) else { continue }
            for database in manifest.databases {
                // try?: a position whose file name kho would not accept protects nothing.
                guard let position = database.binlogPosition, let file = try? BinlogFileName(position.file) else { continue }
                if let known = result[name]?[position.serverId], known.basename == file.basename, known < file { continue }
                result[name, default: [:]][position.serverId] = file
            }
        }
        return result
    }

    /// Removes, per archive whose source has positioned dumps, the files before the cutoff, oldest
    /// first, each file's pieces from its start and its end marker last: an interruption leaves the
    /// oldest file without its beginning, which no replay reads (`kho check` passes over it), and
    /// never a hole after a kept dump's position. Runs after snapshots were forgotten.
    public static func removeUnneeded(repository: Repository, snapshots: [Snapshot], dryRun: Bool,
                                      removed: (String) -> Void = { _ in }) throws -> (files: Int, bytes: Int64) {
        let cutoffs = self.cutoffs(in: snapshots)
        guard !cutoffs.isEmpty else { return (0, 0) }
        let listed = try repository.storage.list(.binlog)
        let sizes = Dictionary(listed.map { ($0.name, $0.size) }, uniquingKeysWith: { a, _ in a })
        var files = 0
        var bytes: Int64 = 0
        for folder in Set(listed.compactMap { $0.name.split(separator: "/").first.map(String.init) }).sorted() {
            guard let id = BinlogArchiveID(folder: folder) else { continue }
            let archive = try BinlogArchive(repository: repository, id: id)
            guard let record = try archive.record(), let cutoff = cutoffs[record.source]?[record.serverId] else { continue }
            let due = try archive.inventory().files.filter { $0.name.basename == cutoff.basename && $0.name < cutoff }
            guard !due.isEmpty else { continue }
            if !dryRun { try repository.refuseRemovalIfAppendOnly(command: "binary log retention") }
            var handles: [BinlogFileName: [Handle]] = [:]
            for file in due { handles[file.name] = file.pieces.map { BinlogObject.pieceHandle(id, $0) } + (file.ended ? [BinlogObject.endHandle(id, file.name)] : []) }
            // Object lock: a locked object stays until its date, and so does everything after it.
            let locked = try repository.retentionDates(handles.values.flatMap { $0 })
            files: for file in due {
                for handle in handles[file.name] ?? [] {
                    if locked[handle] != nil { break files }
                    if !dryRun { try repository.storage.remove(handle) }
                    bytes += Int64(sizes[handle.name] ?? 0)
                    removed(handle.path)
                }
                files += 1
            }
        }
        return (files, bytes)
    }
}
