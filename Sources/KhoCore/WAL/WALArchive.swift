import Foundation
import KhoSupport

/// The cluster a WAL file comes from, as its data directory says: PostgreSQL runs
/// `archive_command` in the data directory, so `global/pg_control` (the system identifier is its
/// first 8 bytes) and `PG_VERSION` are at hand for every push, including history and backup files,
/// which carry no header of their own.
public struct WALClusterIdentity: Sendable, Equatable {
    public var cluster: SystemIdentifier
    /// The major version from `PG_VERSION` (15, 16, 17).
    public var serverVersion: Int

    public init(cluster: SystemIdentifier, serverVersion: Int) {
        self.cluster = cluster
        self.serverVersion = serverVersion
    }

    /// Reads `global/pg_control` and `PG_VERSION` of the data directory `directory`.
    public static func read(dataDirectory directory: String) throws -> WALClusterIdentity {
        func refuse(_ what: String) -> KhoError {
            KhoError(.usage, "\(directory) is not a PostgreSQL data directory kho can read (\(what)): run kho wal push from archive_command, which runs in the data directory, or pass --data-directory.")
        }
        let control: [UInt8]
        do {
            control = Array(try Syscall.readFile(directory + "/global/pg_control", limit: 64 << 10).prefix(8))
        } catch let error as KhoError {
            throw refuse("global/pg_control: \(error.message)")
        }
        guard control.count == 8 else { throw refuse("global/pg_control is shorter than 8 bytes") }
        let sysid = (0..<8).reduce(UInt64(0)) { $0 | UInt64(control[$1]) << (8 * UInt64($1)) }
        guard sysid != 0 else { throw refuse("global/pg_control names system identifier 0") }
        let versionText: [UInt8]
        do {
            versionText = try Syscall.readFile(directory + "/PG_VERSION", limit: 64)
        } catch let error as KhoError {
            throw refuse("PG_VERSION: \(error.message)")
        }
        let trimmed = String(decoding: versionText, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let major = Int(trimmed), (10...99).contains(major) else { throw refuse("PG_VERSION does not hold a major version") }
        return WALClusterIdentity(cluster: SystemIdentifier(sysid), serverVersion: major)
    }
}

/// What a push did with a file PostgreSQL handed over.
public enum WALPushOutcome: String, Sendable, Codable {
    /// Stored now, durably.
    case stored
    /// The same bytes were already stored under the name (a repeat after a crash or a retried
    /// answer): success, as PostgreSQL requires.
    case repeated
}

/// A source's WAL archive in a repository: pushing files into it and fetching them back, with
/// every check the design (docs/design/pitr.md sections 2-4) and FORMAT section 20 ask for.
/// One value per repository and source; it remembers the archive record it read, so an agent
/// that pushes many files reads it once.
public final class WALArchive: @unchecked Sendable {
    public let repository: Repository
    /// The policy source the archive belongs to.
    public let source: String
    public let host: String
    /// zstd's threads for one file: all cores for a push that is alone (`--direct`, where the
    /// archiver waits for it), fewer when several push at once (the agent).
    public let compressionWorkers: Int
    private let lock = NSLock()
    private var records: [SystemIdentifier: WALArchiveRecord] = [:]

    public init(repository: Repository, source: String, host: String = Host.name, compressionWorkers: Int = WALObject.compressionWorkers) throws {
        guard !source.isEmpty, source.utf8.count <= 200, !source.utf8.contains(where: { $0 < 0x20 || $0 == 0x7f }) else {
            throw KhoError(.usage, "The source name must be 1 to 200 printable characters: pass the policy source's name with --source.")
        }
        self.repository = repository
        self.source = source
        self.host = host
        self.compressionWorkers = max(0, compressionWorkers)
    }

    // MARK: pushing

    /// Stores one file PostgreSQL archives (`%f` = `name`, its bytes `file`) from the cluster
    /// `identity`. Returns only once the object is durable; throws `.integrity` for everything
    /// PostgreSQL must not be told is archived (another cluster, different content under the
    /// name, an invalid file) and the storage's own errors otherwise. `digest`, when the caller
    /// hashed `file` already (the agent does, for its ledger), saves hashing it again.
    public func push(name: WALFileName, file: [UInt8], identity: WALClusterIdentity, digest known: BlobID? = nil,
                     now: Date = Date()) throws -> WALPushOutcome {
        let record = try record(for: identity, creatingFrom: name, file: file, now: now)
        let expectation = try record.expectation()
        var pageMagic: UInt16?
        do {
            switch name.kind {
            case .segment, .partial:
                let header = try WALSegmentHeader(parsing: file, file: name.description)
                try header.validate(as: name, against: expectation)
                guard name.kind == .partial ? file.count <= record.segmentSize : file.count == record.segmentSize else {
                    throw KhoError(.source, "\(name) is \(file.count) bytes, the archive's segments are \(record.segmentSize): it was refused and nothing was stored; check what wrote it into pg_wal.")
                }
                pageMagic = header.magic
            case .history:
                _ = try WALTextFile.history(file, name: name)
            case .backup:
                try WALTextFile.backup(file, name: name, segmentSize: expectation.segmentSize)
            }
        } catch let error as KhoError where error.kind == .source || error.kind == .usage {
            throw KhoError(.integrity, error.message)
        }
        let digest = try (known ?? SHA256.hash(file)).hex
        let meta = WALObjectMeta(cluster: identity.cluster, name: name, size: file.count, sha256: digest,
                                 segmentSize: expectation.segmentSize, pageMagic: pageMagic, pushed: now,
                                 host: host, key: repository.keyID)
        let sealed = try repository.sealWAL(file, meta: meta, cluster: identity.cluster, name: name, workers: compressionWorkers)
        let handle = name.handle(cluster: identity.cluster)
        if try repository.storage.saveIfAbsent(handle, data: sealed) { return .stored }
        // Something is stored under the name; it is durable (the storage only shows whole,
        // synced objects under a final name). Only the same bytes make this push a success.
        let stored = try repository.openWAL(try repository.storage.load(handle), cluster: identity.cluster, name: name)
        guard stored.meta.sha256 == digest else {
            throw KhoError(.integrity, "wal/\(handle.name) is already archived with different content (pushed \(stored.meta.pushed) by \(stored.meta.host), \(stored.meta.size) bytes; this one \(file.count) bytes from \(host)): nothing was replaced; two servers may be writing one cluster's archive (a restored copy promoted on the same timeline?): stop archiving on the copy and run `kho check`.")
        }
        return .repeated
    }

    /// The archive record of `identity.cluster`, checked against this source; the first file of a
    /// cluster that is not yet archived anywhere creates it. Another cluster already archived for
    /// this source, or this cluster archived for another source, is refused.
    private func record(for identity: WALClusterIdentity, creatingFrom name: WALFileName, file: [UInt8], now: Date) throws -> WALArchiveRecord {
        if let known = lock.withLock({ records[identity.cluster] }) { return known }
        let cluster = identity.cluster
        let handle = WALArchiveRecord.handle(cluster: cluster)
        var record: WALArchiveRecord
        if try repository.storage.exists(handle) {
            record = try repository.openWALRecord(try repository.storage.load(handle), cluster: cluster)
        } else {
            let known = try WALArchive.inventory(in: repository)
            let ours = known.records.filter { $0.source == source && $0.cluster != cluster.description }
            if let other = ours.last(where: { !known.isRetired($0) }) {
                throw KhoError(.integrity, "Cluster \(cluster) is not the cluster archived for source \(source) (that is \(other.cluster), archived since \(other.created) from \(other.host)): nothing was stored; point archive_command at the right source, or after pg_upgrade or a rebuilt cluster run `kho wal adopt --source \(source) --cluster \(other.cluster)`.")
            }
            let previous = try ours.last.map { try SystemIdentifier(parsing: $0.cluster) }
            record = try newRecord(identity: identity, name: name, file: file, now: now, previous: previous)
            if try !repository.storage.saveIfAbsent(handle, data: try repository.sealWALRecord(record)) {
                record = try repository.openWALRecord(try repository.storage.load(handle), cluster: cluster)
            }
        }
        guard record.source == source else {
            throw KhoError(.integrity, "Cluster \(cluster) is archived for source \(record.source), not \(source): nothing was stored; give kho wal push the source this cluster belongs to.")
        }
        guard record.serverVersion == identity.serverVersion else {
            throw KhoError(.integrity, "Cluster \(cluster) was archived as PostgreSQL \(record.serverVersion) and now runs \(identity.serverVersion): nothing was stored; after pg_upgrade run `kho wal adopt --source \(source) --cluster \(cluster)` and take a base backup.")
        }
        // Only whether it exists: a marker that does not open stops archiving as loudly as a real
        // one, and `kho check` names it.
        if try repository.storage.exists(WALRetirement.handle(cluster: cluster)) {
            throw KhoError(.integrity, "Cluster \(cluster)'s archive for source \(source) was retired by `kho wal adopt`: nothing was stored; this server should no longer archive into it; stop it or point archive_command elsewhere.")
        }
        lock.withLock { records[cluster] = record }
        return record
    }

    /// A record for a cluster's first file. Only a segment tells the segment size, page size and
    /// WAL format; a history or backup file arriving first (a promoted copy archives its history
    /// file before any segment) waits until a segment has been archived.
    private func newRecord(identity: WALClusterIdentity, name: WALFileName, file: [UInt8], now: Date, previous: SystemIdentifier?) throws -> WALArchiveRecord {
        guard name.kind == .segment || name.kind == .partial else {
            throw KhoError(.source, "Cluster \(identity.cluster) has no archive yet and \(name) does not say its WAL segment size: nothing was stored; the archive is created by the cluster's first segment (run SELECT pg_switch_wal() on it), after which this file is accepted.", retryable: true)
        }
        let header: WALSegmentHeader
        do {
            header = try WALSegmentHeader(parsing: file, file: name.description)
        } catch let error as KhoError {
            throw KhoError(.integrity, error.message)
        }
        guard header.systemIdentifier == identity.cluster else {
            throw KhoError(.integrity, "\(name) names cluster \(header.systemIdentifier) but the data directory is cluster \(identity.cluster): nothing was stored; check what wrote it into pg_wal.")
        }
        let size: WALSegmentSize
        do { size = try WALSegmentSize(bytes: Int(header.segmentSize)) } catch let error as KhoError { throw KhoError(.integrity, error.message) }
        guard size.bytes <= WALObject.largestSegmentSize else {
            throw KhoError(.integrity, "Cluster \(identity.cluster) writes \(size.bytes >> 20) MiB WAL segments, more than the \(WALObject.largestSegmentSize >> 20) MiB kho archives: nothing was stored; use a cluster with wal_segment_size of at most 64 MiB.")
        }
        return WALArchiveRecord(source: source, cluster: identity.cluster, serverVersion: identity.serverVersion, segmentSize: size,
                                walBlockSize: Int(header.blockSize), pageMagic: header.magic, created: now, host: host, previous: previous)
    }

    /// Every archive record in the repository (one listing of `wal/`; only needed when a cluster
    /// is seen for the first time, and by `kho wal ls`, `adopt` and `check`). A record that does
    /// not open is an integrity error: it could be hiding the source's real cluster.
    public func clusters() throws -> [WALArchiveRecord] {
        try WALArchive.records(in: repository)
    }

    public static func records(in repository: Repository) throws -> [WALArchiveRecord] {
        try inventory(in: repository).records
    }

    /// The archive records and retirements of a repository, from one listing of `wal/`.
    public struct Inventory: Sendable {
        /// Oldest first.
        public var records: [WALArchiveRecord]
        /// Clusters whose retirement marker exists (by its name: see `retire`).
        public var retired: Set<String>
        /// The opened markers, when asked for (`kho wal ls`).
        public var retirements: [String: WALRetirement]
        /// Every file listed under `wal/`, for callers that go on to look at the files.
        public var files: [StoredFile]

        public func isRetired(_ record: WALArchiveRecord) -> Bool { retired.contains(record.cluster) }

        /// The cluster currently archived for `source`: the newest record naming it that is not retired.
        public func current(source: String) -> WALArchiveRecord? {
            records.last { $0.source == source && !isRetired($0) }
        }
    }

    /// Records are opened (one that does not open could be hiding a source's real cluster);
    /// retirement markers count by their name, as pushes count them, and are opened only with
    /// `openingRetirements`: `kho wal adopt` may run as another user than the cluster's pushes,
    /// which must still see that a cluster was retired. `kho check` opens them all.
    public static func inventory(in repository: Repository, openingRetirements: Bool = false) throws -> Inventory {
        var records: [WALArchiveRecord] = []
        var retired: Set<String> = []
        var retirements: [String: WALRetirement] = [:]
        let files = try repository.storage.list(.wal, under: "")
        for file in files {
            let parts = file.name.split(separator: "/")
            guard parts.count == 2, parts[1] == "archive" || parts[1] == "retired",
                  let cluster = try? SystemIdentifier(parsing: parts[0]) else { continue }
            if parts[1] == "archive" {
                records.append(try repository.openWALRecord(try repository.storage.load(Handle(.wal, file.name)), cluster: cluster))
            } else {
                retired.insert(cluster.description)
                if openingRetirements {
                    retirements[cluster.description] = try repository.openWALRetirement(try repository.storage.load(Handle(.wal, file.name)), cluster: cluster)
                }
            }
        }
        return Inventory(records: records.sorted { ($0.created, $0.cluster) < ($1.created, $1.cluster) }, retired: retired,
                         retirements: retirements, files: files)
    }

    /// The cluster currently archived for `source`: the newest record naming it that is not retired.
    public static func currentRecord(source: String, in repository: Repository) throws -> WALArchiveRecord? {
        try inventory(in: repository).current(source: source)
    }

    /// One line per archive record or retirement (`kho wal adopt`'s marker) that does not open
    /// as its cluster's, for `kho check`.
    public static func unreadableRecords(in repository: Repository) throws -> [String] {
        var problems: [String] = []
        for file in try repository.storage.list(.wal, under: "") {
            let parts = file.name.split(separator: "/")
            guard parts.count == 2, parts[1] == "archive" || parts[1] == "retired" else { continue }
            do {
                let cluster = try SystemIdentifier(parsing: parts[0])
                let sealed = try repository.storage.load(Handle(.wal, file.name))
                if parts[1] == "archive" {
                    _ = try repository.openWALRecord(sealed, cluster: cluster)
                } else {
                    _ = try repository.openWALRetirement(sealed, cluster: cluster)
                }
            } catch let error as KhoError {
                problems.append("wal/\(file.name): \(error.message)")
            }
        }
        return problems
    }

    // MARK: retiring

    /// What `retire` did.
    public enum RetireOutcome: Sendable, Equatable {
        case retired
        /// The cluster was retired before (by an earlier `kho wal adopt`).
        case alreadyRetired
    }

    /// Retires `cluster`'s archive of this source (`kho wal adopt`): from now on its pushes are
    /// refused, and the next cluster that pushes for the source creates a record naming it as
    /// `previous`. The archived files stay: recovery from base backups of the old cluster still
    /// needs them. The cluster must be archived for this source.
    public func retire(cluster: SystemIdentifier, now: Date = Date()) throws -> RetireOutcome {
        let handle = WALArchiveRecord.handle(cluster: cluster)
        guard try repository.storage.exists(handle) else {
            throw KhoError(.usage, "Cluster \(cluster) has no WAL archive in this repository: nothing was retired; list the archived clusters with `kho wal ls`.")
        }
        let record = try repository.openWALRecord(try repository.storage.load(handle), cluster: cluster)
        guard record.source == source else {
            throw KhoError(.usage, "Cluster \(cluster) is archived for source \(record.source), not \(source): nothing was retired; pass --source \(record.source) if that archive is the one to retire.")
        }
        let marker = WALRetirement(cluster: cluster, source: source, retired: now, host: host)
        let retired = WALRetirement.handle(cluster: cluster)
        if try repository.storage.saveIfAbsent(retired, data: try repository.sealWALRetirement(marker)) {
            lock.withLock { records[cluster] = nil }
            return .retired
        }
        _ = try repository.openWALRetirement(try repository.storage.load(retired), cluster: cluster)
        return .alreadyRetired
    }

    // MARK: fetching

    /// The file archived as `name` for `cluster`, opened and checked (AAD, size and SHA-256; for a
    /// segment also its header against the archive record), or nil when nothing is stored under
    /// the name. A damaged object throws `.integrity`: recovery must stop, not end early.
    public static func fetch(name: WALFileName, cluster: SystemIdentifier, record: WALArchiveRecord, from repository: Repository) throws -> [UInt8]? {
        let handle = name.handle(cluster: cluster)
        let sealed: [UInt8]
        do {
            sealed = try repository.storage.load(handle)
        } catch let error as KhoError where error.kind == .integrity {
            if try repository.storage.exists(handle) { throw error }
            return nil
        }
        let opened = try repository.openWAL(sealed, cluster: cluster, name: name)
        if name.kind == .segment || name.kind == .partial {
            do {
                try WALSegmentHeader(parsing: opened.file, file: name.description).validate(as: name, against: try record.expectation())
            } catch let error as KhoError {
                throw KhoError(.integrity, "wal/\(handle.name) opens but is not that segment (\(error.message)): run `kho check`.")
            }
        }
        return opened.file
    }
}
