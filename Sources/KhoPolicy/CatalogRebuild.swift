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

    /// Adds a drill row for every drill of `policy`'s sources whose evidence a repository holds
    /// (`drills/`, see `Repository.drillEvidence`) and the catalog does not know by its drill ID.
    /// A row of the same drill without evidence (the drill was killed or interrupted after its
    /// evidence was saved: same source, snapshot and start) is completed instead of doubled. Each
    /// row carries the evidence exactly as the drill stored it, so that its SHA-256 and keyed seal
    /// verify, and is marked rebuilt. Returns how many drills were recovered.
    public func rebuildDrills(policy: Policy, evidence: [(evidence: DrillEvidence, json: String)]) throws -> Int {
        let rows = try runs(policy: policy.name, kind: .drill)
        let knownIDs = Set(rows.compactMap { $0.decodedDetails(DrillEvidence.self)?.drillID })
        let withoutEvidence = rows.filter { $0.details == nil }
        var added = 0
        for (drill, json) in evidence.sorted(by: { $0.evidence.start < $1.evidence.start })
        where drill.policy == policy.name && policy.sources.contains(where: { $0.name == drill.source }) && !knownIDs.contains(drill.drillID) {
            // The catalog keeps times to the millisecond.
            let unfinished = withoutEvidence.first { $0.source == drill.source && ($0.snapshot ?? drill.snapshot) == drill.snapshot && abs($0.started.timeIntervalSince(drill.start)) < 0.01 }
            var record = unfinished ?? RunRecord(kind: .drill, policy: policy.name, source: drill.source, repository: policy.repository.path,
                                                 planned: nil, started: drill.start)
            record.retryable = nil
            record.errorKind = nil
            record.ended = drill.end
            record.outcome = drill.passed ? .success : .failure
            record.error = drill.failureReasons.isEmpty ? nil : drill.failureReasons.joined(separator: "; ")
            record.snapshot = drill.snapshot
            record.snapshotTime = drill.snapshotTime
            record.details = json
            record.host = drill.host
            record.rebuilt = true
            if unfinished == nil { try insert(record) } else { try update(record) }
            added += 1
        }
        return added
    }
}
