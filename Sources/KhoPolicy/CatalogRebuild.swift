import Foundation
import KhoCatalog
import KhoCore
import KhoSupport

extension Catalog {
    /// Adds a backup row for every snapshot of `policy`'s sources a repository holds that the
    /// catalog does not know (`kho catalog rebuild`).
    public func rebuild(policy: Policy, snapshots: [Snapshot]) throws -> Int {
        let known = Set(try runs(policy: policy.name).compactMap(\.snapshot))
        var added = 0
        for snapshot in snapshots where !known.contains(snapshot.id ?? "") {
            guard let sourceName = snapshot.source.name ?? policy.sources.first(where: { $0.kind == .files && $0.paths.sorted() == snapshot.paths.sorted() })?.name,
                  policy.sources.contains(where: { $0.name == sourceName }) else { continue }
            var record = RunRecord(kind: .backup, policy: policy.name, source: sourceName, repository: policy.repository.path,
                                   planned: snapshot.time, started: snapshot.summary?.start ?? snapshot.time)
            record.ended = snapshot.summary?.end ?? snapshot.time
            record.outcome = snapshot.partial ? .partial : .success
            record.bytesRead = snapshot.summary?.bytesRead ?? 0
            record.bytesAdded = snapshot.summary?.bytesAdded ?? 0
            record.snapshot = snapshot.id
            record.snapshotTime = snapshot.time
            record.host = snapshot.hostname
            record.rebuilt = true
            if let manifest = DumpManifest(snapshot.manifest) {
                record.details = try RunRecord.encodeDetails(ManifestSummary(manifest))
            }
            try insert(record)
            added += 1
        }
        return added
    }
}
