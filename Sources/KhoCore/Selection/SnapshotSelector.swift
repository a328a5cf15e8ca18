import Foundation
import KhoSupport

/// Which snapshot a command means: `latest`, an ID or a unique prefix of one, or — by source — the
/// newest complete snapshot of that source, taken at or before a time. One rule for `restore`,
/// `ls`, `dump`, `copy`, `forget` and the drill, so that the same words pick the same snapshot.
public struct SnapshotSelector: Sendable {
    /// `latest`, a full ID or a unique prefix; nil selects by `source`.
    public var reference: String?
    /// The snapshot must be of this source (its --source-name or --stdin-name).
    public var source: String?
    /// With `source` and no reference: the newest taken at or before this time.
    public var at: Date?
    /// `at` as the operator wrote it, for messages.
    public var atText: String?
    /// With `source`: only snapshots of this family. A source's dumps and its base backups share
    /// its name; a restore into a database means the newest dump, not the newest base backup.
    public var family: RetentionFamily?

    public init(reference: String? = nil, source: String? = nil, at: Date? = nil, atText: String? = nil) {
        self.reference = reference
        self.source = source
        self.at = at
        self.atText = atText
    }

    public func select(in repository: Repository) throws -> Snapshot {
        if let reference {
            return try checkSource(of: try repository.findSnapshot(reference, filter: { source == nil || $0.source.name == source }))
        }
        return try newest(of: try repository.listSnapshots())
    }

    /// A snapshot named by reference must be of `source` when one is given too.
    func checkSource(of snapshot: Snapshot) throws -> Snapshot {
        if let source, snapshot.source.name != source {
            throw KhoError(.usage, "Snapshot \(snapshot.shortID) is of source \(snapshot.source.name ?? snapshot.paths.joined(separator: " ")), not \(source).")
        }
        return snapshot
    }

    /// The newest complete snapshot of `source` at or before `at`, among `snapshots` (oldest first).
    public func newest(of snapshots: [Snapshot]) throws -> Snapshot {
        guard let source else {
            throw KhoError(.usage, "Name the snapshot (an ID, a prefix or `latest`) or the source with --source NAME.")
        }
        let limit = at ?? .distantFuture
        guard let newest = snapshots.last(where: { snapshot in
            snapshot.source.name == source && snapshot.time <= limit && !snapshot.partial
                && (family.map { RetentionGroups.family(of: snapshot) == $0 } ?? true)
        }) else {
            throw KhoError(.usage, "No snapshot of source \(source)\(atText.map { " at or before \($0)" } ?? ""): see `kho snapshots`.")
        }
        return newest
    }

    /// The one snapshot file whose name starts with `reference` (an ID or a prefix), among `names`.
    public static func uniqueName(_ reference: String, among names: [String]) throws -> String {
        guard !reference.isEmpty, reference.allSatisfy(\.isHexDigit) else {
            throw KhoError(.usage, "\"\(reference)\" is not a snapshot ID: give `latest`, an ID or a unique prefix as shown by `kho snapshots`.")
        }
        let prefix = reference.lowercased()
        let matches = names.filter { $0.hasPrefix(prefix) }
        guard matches.count == 1 else {
            throw KhoError(.usage, matches.isEmpty
                ? "No snapshot has an ID starting with \(reference): see `kho snapshots`."
                : "\(matches.count) snapshots have IDs starting with \(reference): give more digits.")
        }
        return matches[0]
    }

    /// `latest` (the newest that passes `filter`) or the snapshot `uniqueName` finds; the lists are
    /// read only when needed, so that an ID costs one listing and one read.
    static func find(_ reference: String, names: () throws -> [String], snapshots: () throws -> [Snapshot],
                     load: (String) throws -> Snapshot, filter: (Snapshot) -> Bool) throws -> Snapshot {
        if reference == "latest" {
            guard let newest = try snapshots().filter(filter).last else {
                throw KhoError(.usage, "The repository has no snapshot yet (that matches the filters): run `kho backup` first.")
            }
            return newest
        }
        return try load(try uniqueName(reference, among: try names()))
    }
}
