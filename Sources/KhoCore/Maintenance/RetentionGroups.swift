import Foundation
import KhoSupport

/// Snapshots that retention rules count together: one host's snapshots of one source. A source is
/// known by its name when it has one — the name `restore --source` finds it by and a policy runs it
/// under — so that a policy whose paths change, or a source moved from a command to a database
/// dump, stays one group; only snapshots of paths backed up without a name are known by their
/// (sorted) paths, as restic groups them. A source's base backups and its dumps are kept apart
/// (`RetentionFamily`): a weekly base backup must not count as a nightly dump, nor be forgotten
/// by the dumps' rules (FORMAT.md 21).
public struct RetentionGroup: Sendable {
    public var host: String
    /// The source's name; nil for paths backed up without one.
    public var sourceName: String?
    public var family: RetentionFamily = .logical
    /// The paths of an unnamed group; empty for a named one.
    public var paths: [String]
    /// With grouping by tags: the tags every member carries, sorted.
    public var tags: [String]?
    /// The members, oldest first.
    public var snapshots: [Snapshot]

    /// How the group is shown: the paths, or `kind:name` (the kind of the newest member).
    public var label: String {
        guard let sourceName else { return paths.joined(separator: " ") }
        return "\(snapshots.last?.source.kind ?? SourceKind.files.rawValue):\(sourceName)"
    }

    /// The rules applied to this group: one decision per member.
    public func decisions(_ policy: RetentionPolicy) -> [RetentionDecision] {
        Retention.apply(policy, to: snapshots.map { ($0.id ?? "", $0.time, $0.tags) })
    }
}

public enum RetentionGroups {
    /// The groups of `snapshots`, in the order their first (oldest) member appears; with `byTags`,
    /// snapshots with different tag sets are also kept apart.
    public static func group(_ snapshots: [Snapshot], byTags: Bool = false) -> [RetentionGroup] {
        struct Key: Hashable {
            var host: String
            var name: String?
            var family: RetentionFamily
            var paths: [String]
            var tags: [String]?
        }
        var groups: [Key: RetentionGroup] = [:]
        var order: [Key] = []
        for snapshot in snapshots.sorted(by: { ($0.time, $0.id ?? "") < ($1.time, $1.id ?? "") }) {
            let name = snapshot.source.name.flatMap { $0.isEmpty ? nil : $0 }
            let key = Key(host: snapshot.hostname, name: name, family: family(of: snapshot), paths: name == nil ? snapshot.paths.sorted() : [],
                          tags: byTags ? snapshot.tags.sorted() : nil)
            if groups[key] == nil {
                order.append(key)
                groups[key] = RetentionGroup(host: key.host, sourceName: key.name, family: key.family, paths: key.paths, tags: key.tags, snapshots: [])
            }
            groups[key]!.snapshots.append(snapshot)
        }
        return order.map { groups[$0]! }
    }

    /// The family a snapshot is kept with; a kind only a newer kho knows counts as logical.
    public static func family(of snapshot: Snapshot) -> RetentionFamily {
        snapshot.source.sourceKind?.retentionFamily ?? .logical
    }

    /// The group of the source named `sourceName` on `host` in `family`: what a policy's retention
    /// and copies count (empty when the source has no snapshot there yet).
    public static func group(of sourceName: String, host: String, family: RetentionFamily = .logical, in snapshots: [Snapshot]) -> RetentionGroup {
        group(snapshots).first { $0.host == host && $0.sourceName == sourceName && $0.family == family }
            ?? RetentionGroup(host: host, sourceName: sourceName, family: family, paths: [], tags: nil, snapshots: [])
    }
}
