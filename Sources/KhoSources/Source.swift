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

/// A place data comes from and goes back to. Each kind (files, postgres, mariadb, sqlite, command)
/// knows how to back itself up into a snapshot and describe itself for plans and reports.
public protocol BackupSource {
    var name: String { get }
    var kind: SourceKind { get }
    /// One line for plans and logs; never contains a secret.
    var summary: String { get }
    func backup(with archiver: Archiver, repository: Repository) throws -> Snapshot
}

public enum SizeGuard {
    /// Throws when `total` is below `ratio` × the previous good snapshot of the same source.
    public static func check(source: String, total: Int64, ratio: Double, repository: Repository, host: String) throws {
        guard ratio > 0 else { return }
        let previous = try repository.listSnapshots().last {
            $0.source.name == source && $0.hostname == host && !$0.partial
        }
        guard let previousSize = previous?.summary?.totalSize, previousSize > 0 else { return }
        if Double(total) < ratio * Double(previousSize) {
            let share = Int((Double(total) / Double(previousSize) * 100).rounded())
            throw KhoError(.sourceShrank, "Source \(source): the dump is \(total) bytes, \(share)% of the previous good dump (\(previousSize) bytes, snapshot \(previous!.shortID)), below the allowed \(Int(ratio * 100))%; no snapshot was written: check the database, or lower min-size-ratio if the shrink is expected.")
        }
    }
}
