import Foundation
import KhoCore
import KhoSupport
import KhoSources
import KhoStorage

/// The WAL archive of one policy source, as `kho status` and the metrics show it
/// (docs/design/pitr.md section 7): how old the newest archived segment is against the source's
/// `wal-rpo`, whether the WAL from every kept base backup is whole, the recovery window, and what
/// the WAL agent on this host says.
public struct WALSourceStatus: Codable, Sendable {
    public enum Continuity: String, Codable, Sendable {
        /// No hole from any kept base backup (or, without one, from the oldest segment).
        case ok
        /// A hole a recovery would stop at.
        case gap
        /// The archive could not be read (see `lastError`).
        case unknown
    }
    public var cluster: String?
    public var newestSegment: String?
    /// When the storage received the newest segment.
    public var newestStored: Date?
    /// Seconds the archive is behind: the newest segment's age, or 0 when the agent here runs
    /// and nothing waits in PostgreSQL's queue (an idle server writes no WAL to archive).
    public var lagSeconds: Double?
    public var rpoSeconds: Double
    public var freshness: SourceStatus.Freshness
    public var continuity: Continuity
    public var gap: String?
    /// Short IDs of the kept base backups the gap cuts.
    public var gapCuts: [String] = []
    public var baseBackups: Int
    /// Recovery window: the oldest kept base backup's end to the newest segment.
    public var windowStart: Date?
    public var windowEnd: Date?
    /// From the agent's status file on this host, when there is one.
    public var agentRunning: Bool?
    public var readyFiles: Int?
    public var stalled: Bool
    public var lastError: String?

    /// A stalled archiver or a hole: WAL is being lost or recovery cannot pass it.
    public var failing: Bool { stalled || continuity != .ok }
}

/// Where `kho status` and the metrics read WAL agents' status files.
public struct WALStatusOptions: Sendable {
    public var stateDirectory: String
    public init(stateDirectory: String) { self.stateDirectory = stateDirectory }

    /// `$KHO_STATE_DIR/wal`, else `/var/lib/kho/wal`: where `kho wal serve` writes by default.
    public static var standard: WALStatusOptions {
        WALStatusOptions(stateDirectory: ProcessInfo.processInfo.environment["KHO_STATE_DIR"].flatMap { $0.isEmpty ? nil : $0 + "/wal" }
                         ?? WALAgentPaths.stateFolder)
    }
}

public enum WALStatusReport {
    /// Per source name of `policy` that has a current WAL archive in the policy's repository. The
    /// repository is opened (its records and snapshots are sealed) only when its storage holds
    /// any WAL at all.
    public static func compute(policy: Policy, options: WALStatusOptions, now: Date) -> [String: WALSourceStatus] {
        let candidates = policy.sources.filter { $0.kind == .postgres || $0.kind == .postgresBase }
        guard !candidates.isEmpty else { return [:] }
        var result: [String: WALSourceStatus] = [:]
        do {
            let storage = try StorageFactory.make(location: policy.repository.path)
            guard try !storage.list(.wal, under: "").isEmpty else { return [:] }
            let repository = try Repository.open(storage: storage, password: try policy.repository.password())
            let archive = try WALArchive.inventory(in: repository)
            let bases = try WALBaseBackup.kept(in: try repository.listSnapshots())
            for source in candidates where result[source.name] == nil {
                guard let record = archive.current(source: source.name) else { continue }
                result[source.name] = try status(of: record, source: source.name, rpo: source.walRPO ?? SourceSpec.defaultWALRPO,
                                                 files: archive.files, bases: bases[record.cluster] ?? [], repository: repository,
                                                 options: options, now: now)
            }
        } catch {
            // The rest of the status still matters: the sources that may archive WAL say why
            // theirs cannot be shown.
            let message = (error as? KhoError)?.message ?? "\(error)"
            for source in candidates where result[source.name] == nil && source.kind == .postgresBase {
                result[source.name] = WALSourceStatus(rpoSeconds: source.walRPO ?? SourceSpec.defaultWALRPO, freshness: .missed, continuity: .unknown,
                                                      baseBackups: 0, stalled: false, lastError: "the WAL archive cannot be read: \(message)")
            }
        }
        return result
    }

    static func status(of record: WALArchiveRecord, source: String, rpo: TimeInterval, files: [StoredFile], bases: [WALBaseBackup],
                       repository: Repository, options: WALStatusOptions, now: Date) throws -> WALSourceStatus {
        let cluster = try SystemIdentifier(parsing: record.cluster)
        let inventory = WALInventory(cluster: cluster, segmentSize: try WALSegmentSize(bytes: record.segmentSize), files: files)
        var status = WALSourceStatus(cluster: record.cluster, rpoSeconds: rpo, freshness: .missed, continuity: .ok,
                                     baseBackups: bases.count, stalled: false)
        if let newest = inventory.newest {
            status.newestSegment = newest.name.description
            if newest.modified != .distantPast {
                status.newestStored = newest.modified
                status.windowEnd = newest.modified
                status.lagSeconds = max(0, now.timeIntervalSince(newest.modified))
            }
        }
        status.windowStart = bases.map(\.manifest.stopTime).min()
        do {
            let histories = try WALArchive.histories(of: inventory, record: record, in: repository)
            if let first = WALContinuityCheck.gaps(inventory, histories: histories, bases: bases).first {
                status.continuity = .gap
                status.gap = first.gap.description
                status.gapCuts = first.cuts.map(\.snapshot.shortID)
            }
        } catch let error as KhoError {
            status.continuity = .unknown
            status.lastError = error.message
        }
        let agentStatus: WALAgentStatus?
        do {
            agentStatus = try WALAgentStatus.current(source: source, stateDirectory: options.stateDirectory, now: now)
        } catch let error as KhoError {
            // The archive itself was read: only the agent's side is unknown.
            agentStatus = nil
            status.lastError = status.lastError ?? error.message
        }
        if let agent = agentStatus {
            status.agentRunning = agent.running
            status.readyFiles = agent.readyFiles
            status.stalled = agent.stalled
            if let error = agent.lastError, agent.stalled || agent.consecutiveFailures > 0 { status.lastError = status.lastError ?? error }
            if agent.running && agent.readyFiles == 0 { status.lagSeconds = 0 }
        }
        if let lag = status.lagSeconds {
            status.freshness = lag <= rpo ? .ok : lag <= 2 * rpo ? .late : .missed
        }
        return status
    }
}

/// One source's current WAL archive as read from the policy's repository: what the report judges
/// a period by.
public struct WALArchiveView: Sendable {
    public var source: String
    public var record: WALArchiveRecord
    public var inventory: WALInventory
    public var histories: [UInt32: [WALTimelineSwitch]]
    public var bases: [WALBaseBackup]

    public init(source: String, record: WALArchiveRecord, inventory: WALInventory, histories: [UInt32: [WALTimelineSwitch]], bases: [WALBaseBackup]) {
        self.source = source
        self.record = record
        self.inventory = inventory
        self.histories = histories
        self.bases = bases
    }

    /// The archives of `policy`'s sources in its repository (none when its storage holds no WAL).
    public static func read(policy: Policy) throws -> [WALArchiveView] {
        let candidates = policy.sources.filter { $0.kind == .postgres || $0.kind == .postgresBase }
        guard !candidates.isEmpty else { return [] }
        let storage = try StorageFactory.make(location: policy.repository.path)
        guard try !storage.list(.wal, under: "").isEmpty else { return [] }
        let repository = try Repository.open(storage: storage, password: try policy.repository.password())
        let archive = try WALArchive.inventory(in: repository)
        let bases = try WALBaseBackup.kept(in: try repository.listSnapshots())
        var result: [WALArchiveView] = []
        for name in Set(candidates.map(\.name)).sorted() {
            guard let record = archive.current(source: name) else { continue }
            let inventory = WALInventory(cluster: try SystemIdentifier(parsing: record.cluster),
                                         segmentSize: try WALSegmentSize(bytes: record.segmentSize), files: archive.files)
            result.append(WALArchiveView(source: name, record: record, inventory: inventory,
                                         histories: try WALArchive.histories(of: inventory, record: record, in: repository),
                                         bases: bases[record.cluster] ?? []))
        }
        return result
    }
}
