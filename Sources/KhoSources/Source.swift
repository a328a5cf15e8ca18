import Foundation
import KhoCore
import KhoSupport

/// Settings every database source shares.
public struct SourceLimits: Sendable {
    /// A dump command running longer than this is stopped and the backup fails.
    public var timeout: TimeInterval?
    /// A dump smaller than this share of the previous good dump of the same source fails the
    /// backup: a half-empty dump must not silently become the newest recovery point.
    public var minSizeRatio: Double = 0.5
    /// The host name the snapshots are recorded under (`--host`), which the size check compares
    /// with; nil for this machine's name.
    public var hostname: String?
    public init() {}

    var recordedHost: String { hostname ?? Host.name }
}

/// What a source hands the backup pipeline: the streams to store, read only when the pipeline
/// reads them, and the manifest to record once every stream was read (nil for sources without one).
public struct DumpPlan {
    public var streams: [Archiver.StreamInput]
    /// Runs once the pipeline is done with the streams, whether the backup succeeded or not
    /// (a private copy of a database file goes).
    public var cleanup: () -> Void
    public var manifest: () throws -> JSONValue?

    public init(streams: [Archiver.StreamInput], manifest: @escaping () throws -> JSONValue? = { nil },
                cleanup: @escaping () -> Void = {}) {
        self.streams = streams
        self.cleanup = cleanup
        self.manifest = manifest
    }
}

/// A place data comes from and goes back to. Each kind (postgres, mariadb, sqlite, command) says
/// what its dump consists of (`dumpPlan`); the backup pipeline and the shrink guard are the same for
/// all of them (`backup(with:repository:)`). Files are walked by the archiver itself.
public protocol BackupSource {
    var name: String { get }
    var kind: SourceKind { get }
    /// One line for plans and logs; never contains a secret.
    var summary: String { get }
    var limits: SourceLimits { get }
    func dumpPlan() throws -> DumpPlan
    /// Stores the source into one snapshot; dumps share the default below, a base backup
    /// (stored member by member) has its own.
    func backup(with archiver: Archiver, repository: Repository) throws -> Snapshot
}

extension BackupSource {
    /// Stores the source's streams through `archiver` into one snapshot. Before the snapshot is
    /// written, a dump much smaller than the previous good one of the same source is refused
    /// (`SizeGuard`, the source's `min-size-ratio`).
    public func backup(with archiver: Archiver, repository: Repository) throws -> Snapshot {
        let plan = try dumpPlan()
        defer { plan.cleanup() }
        return try archiver.backupStreams(plan.streams, sourceName: name) { total in
            try SizeGuard.check(source: name, total: total, ratio: limits.minSizeRatio, repository: repository, host: limits.recordedHost)
            return try plan.manifest()
        }
    }
}

public enum SizeGuard {
    /// Throws when `total` is below `ratio` × the previous good snapshot of the same source, in
    /// the same family: a base backup is not compared with the source's dumps.
    public static func check(source: String, total: Int64, ratio: Double, repository: Repository, host: String,
                             family: RetentionFamily = .logical) throws {
        guard ratio > 0 else { return }
        let previous = try repository.listSnapshots().last {
            $0.source.name == source && $0.hostname == host && !$0.partial && RetentionGroups.family(of: $0) == family
        }
        guard let previousSize = previous?.summary?.totalSize, previousSize > 0 else { return }
        if Double(total) < ratio * Double(previousSize) {
            let share = Int((Double(total) / Double(previousSize) * 100).rounded())
            throw KhoError(.sourceShrank, "Source \(source): the dump is \(total) bytes, \(share)% of the previous good dump (\(previousSize) bytes, snapshot \(previous!.shortID)), below the allowed \(Int(ratio * 100))%; no snapshot was written: check the database, or lower min-size-ratio if the shrink is expected.")
        }
    }
}
