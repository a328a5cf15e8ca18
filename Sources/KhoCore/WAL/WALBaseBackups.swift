import Foundation
import KhoSupport

/// The complete base backups a repository keeps, by cluster: what WAL retention must not cut and
/// what continuity is checked from (docs/design/pitr.md section 7). A partial base backup (its
/// pg_basebackup did not finish) restores nothing, so it keeps no WAL.
public struct WALBaseBackup: Sendable {
    public var snapshot: Snapshot
    public var manifest: PhysicalBackupManifest
    public var start: WALFileName

    /// Per cluster (16 hex digits), oldest first. A manifest whose start segment does not parse
    /// throws rather than being skipped: skipping it would let retention cut the WAL it needs.
    public static func kept(in snapshots: [Snapshot]) throws -> [String: [WALBaseBackup]] {
        var result: [String: [WALBaseBackup]] = [:]
        for snapshot in snapshots where snapshot.source.sourceKind == .postgresBase && !snapshot.partial {
            guard let manifest = PhysicalBackupManifest(snapshot.manifest) else { continue }
            let start: WALFileName
            do {
                start = try WALFileName(parsing: manifest.startSegment)
            } catch let error as KhoError {
                throw KhoError(.integrity, "Base backup \(snapshot.shortID) names a start segment that is not a WAL segment name (\(error.message)): run `kho check`; WAL retention keeps everything until it is fixed or forgotten.")
            }
            result[manifest.cluster, default: []].append(WALBaseBackup(snapshot: snapshot, manifest: manifest, start: start))
        }
        return result.mapValues { $0.sorted { $0.snapshot.time < $1.snapshot.time } }
    }

    /// The start segments of the repository's kept base backups, for removal: a snapshot that
    /// does not open may be a base backup whose WAL must stay, so it refuses.
    public static func startsForRemoval(in repository: Repository) throws -> [String: [WALFileName]] {
        var damaged: [String] = []
        let snapshots = try repository.listSnapshots { name, _ in damaged.append(String(name.prefix(8))) }
        guard damaged.isEmpty else {
            throw KhoError(.integrity, "Snapshots \(damaged.joined(separator: ", ")) do not open, so WAL retention cannot tell which WAL they need: run `kho check`; no WAL was removed.")
        }
        return starts(try kept(in: snapshots))
    }

    /// The start segments per cluster, as `WALRetention.removeUnneeded` takes them.
    public static func starts(_ kept: [String: [WALBaseBackup]]) -> [String: [WALFileName]] {
        kept.mapValues { $0.map(\.start) }
    }
}
