import Foundation
import Glibc
import KhoCore
import KhoSources
import KhoStorage
import KhoSupport

/// The binary log archive of one MariaDB policy source, as `kho status` shows it
/// (docs/design/pitr.md section 9): whether it is continuous, and how far behind it is against the
/// source's `wal-rpo`.
public struct BinlogSourceStatus: Codable, Sendable {
    public var archive: String
    public var serverId: UInt32?
    public var newestFile: String?
    /// When the storage received the newest piece.
    public var newestStored: Date?
    /// When `kho binlog serve` on this host last had everything stored (its status file).
    public var caughtUp: Date?
    /// Seconds the archive is behind: since the later of the two times above.
    public var lagSeconds: Double?
    public var rpoSeconds: Double
    public var freshness: SourceStatus.Freshness
    public var continuity: WALSourceStatus.Continuity
    public var gap: String?
    public var files: Int
    public var lastError: String?

    /// A hole, or an archive more than twice its RPO behind: changes are being lost.
    public var failing: Bool { continuity != .ok || freshness == .missed }
}

public enum BinlogStatusReport {
    /// Per MariaDB source of `policy` with a binary log archive in the policy's repository. The
    /// repository is opened only when its storage holds any binary log.
    public static func compute(policy: Policy, stateFolder: String = BinlogArchiverStatus.stateFolder, now: Date) -> [String: BinlogSourceStatus] {
        let candidates = policy.sources.filter { $0.kind == .mariadb }
        guard !candidates.isEmpty else { return [:] }
        var result: [String: BinlogSourceStatus] = [:]
        do {
            let storage = try StorageFactory.make(location: policy.repository.path)
            guard try !storage.list(.binlog, under: "").isEmpty else { return [:] }
            let repository = try Repository.open(storage: storage, password: try policy.repository.password())
            for source in candidates where result[source.name] == nil {
                let archive = try BinlogArchive(repository: repository, source: source.name)
                result[source.name] = try status(of: archive, rpo: source.walRPO ?? SourceSpec.defaultWALRPO, stateFolder: stateFolder, now: now)
            }
        } catch {
            // Archiving a binary log is optional: only a source whose serve runs on this host (it
            // has a status file here) is said to be unreadable; the others show as before.
            let message = (error as? KhoError)?.message ?? "\(error)"
            for source in candidates where result[source.name] == nil {
                guard let id = try? BinlogArchiveID(source: source.name), access(BinlogArchiverStatus.path(folder: stateFolder, archive: id), F_OK) == 0 else { continue }
                result[source.name] = BinlogSourceStatus(archive: "", rpoSeconds: source.walRPO ?? SourceSpec.defaultWALRPO, freshness: .missed,
                                                         continuity: .unknown, files: 0, lastError: "the binary log archive cannot be read: \(message)")
            }
        }
        return result.filter { $0.value.lastError != nil || $0.value.files > 0 || $0.value.serverId != nil }
    }

    public static func status(of archive: BinlogArchive, rpo: TimeInterval, stateFolder: String, now: Date) throws -> BinlogSourceStatus {
        var status = BinlogSourceStatus(archive: archive.id.description, rpoSeconds: rpo, freshness: .missed, continuity: .ok, files: 0)
        let listed = try archive.repository.storage.list(.binlog, under: archive.id.description)
        guard !listed.isEmpty else { return status }
        status.serverId = try archive.record()?.serverId
        let inventory = try archive.inventory()
        status.files = inventory.files.count
        status.newestFile = inventory.files.last?.name.description
        status.newestStored = listed.compactMap(\.modified).max()
        // The end markers are not opened here (one read per file): a file marked whole whose
        // pieces reach its recorded end is what `kho binlog ls` checks.
        if let gap = BinlogArchive.gaps(inventory.files, whole: inventory.files.map { $0.ended && !$0.holes }).first {
            status.continuity = .gap
            status.gap = gap
        }
        do {
            if let serve = try BinlogArchiverStatus.read(folder: stateFolder, archive: archive.id) {
                status.caughtUp = serve.caughtUp
                status.lastError = serve.lastError
            }
        } catch let error as KhoError {
            status.lastError = error.message
        }
        if let newest = [status.newestStored, status.caughtUp].compactMap({ $0 }).max() {
            status.lagSeconds = max(0, now.timeIntervalSince(newest))
            let lag = status.lagSeconds!
            status.freshness = lag <= rpo ? .ok : lag <= 2 * rpo ? .late : .missed
        }
        return status
    }
}
