import Foundation
import GRDB
import KhoCore
import KhoSupport
import KhoSources

/// One job run as the catalog records it.
public struct RunRecord: Codable, Sendable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "runs"
    public var id: Int64?
    /// backup, retention, drill or copy.
    public var kind: String
    public var policy: String
    public var source: String
    public var repository: String
    public var planned: Date?
    public var started: Date
    public var ended: Date?
    /// success, failure or partial.
    public var outcome: String
    public var error: String?
    public var bytesRead: Int64
    public var bytesAdded: Int64
    public var snapshot: String?
    /// When the snapshot's data was taken (its time), for freshness against the RPO.
    public var snapshotTime: Date?
    /// JSON: for backups the manifest summary, for drills the evidence record.
    public var details: String?
    public var host: String
    /// True for rows recreated by `kho catalog rebuild` from what a repository still holds.
    public var rebuilt: Bool

    public init(kind: String, policy: String, source: String, repository: String, planned: Date?, started: Date) {
        self.kind = kind
        self.policy = policy
        self.source = source
        self.repository = repository
        self.planned = planned
        self.started = started
        outcome = "running"
        bytesRead = 0
        bytesAdded = 0
        host = Host.name
        rebuilt = false
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }

    public var duration: TimeInterval? { ended.map { $0.timeIntervalSince(started) } }
}

/// The embedded SQLite catalog of every job run. Losing it loses history, never data: `rebuild`
/// recreates the backup history from the repositories.
public final class Catalog: @unchecked Sendable {
    public let path: String
    let queue: DatabaseQueue

    public static let schemaVersion = 1

    /// Takes group and other permissions away from `path` if it has any.
    static func restrict(_ path: String, mode: mode_t) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { throw KhoError.posix("stat", path, errno: errno) }
        if info.st_mode & 0o077 != 0 { try Syscall.call("chmod", path) { chmod(path, mode) } }
    }

    public init(stateDirectory: String) throws {
        do {
            try FileSystem.makeFolders(stateDirectory, mode: 0o700)
        } catch let error as KhoError {
            throw KhoError(.usage, "The state folder \(stateDirectory) cannot be created: \(error.message); set --state-dir or KHO_STATE_DIR to a writable folder.")
        }
        path = stateDirectory + "/catalog.sqlite"
        // The history of every agency's backups is for root alone, also in a state folder that
        // an older kho (or an administrator) created readable by all.
        try Catalog.restrict(stateDirectory, mode: 0o700)
        if access(path, F_OK) == 0 { try Catalog.restrict(path, mode: 0o600) }
        var configuration = Configuration()
        configuration.busyMode = .timeout(30)
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
            try Catalog.migrator.migrate(queue)
        } catch {
            throw KhoError(.failure, "The catalog \(path) cannot be opened: \(error): move it aside and run `kho catalog rebuild`.")
        }
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: runs") { db in
            try db.create(table: "runs") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("kind", .text).notNull()
                t.column("policy", .text).notNull()
                t.column("source", .text).notNull()
                t.column("repository", .text).notNull()
                t.column("planned", .datetime)
                t.column("started", .datetime).notNull()
                t.column("ended", .datetime)
                t.column("outcome", .text).notNull()
                t.column("error", .text)
                t.column("bytesRead", .integer).notNull().defaults(to: 0)
                t.column("bytesAdded", .integer).notNull().defaults(to: 0)
                t.column("snapshot", .text)
                t.column("snapshotTime", .datetime)
                t.column("details", .text)
                t.column("host", .text).notNull()
                t.column("rebuilt", .boolean).notNull().defaults(to: false)
            }
            try db.create(index: "runs_by_source", on: "runs", columns: ["policy", "source", "kind", "started"])
        }
        return migrator
    }

    @discardableResult
    public func insert(_ record: RunRecord) throws -> RunRecord {
        var record = record
        record.error = record.error.map(Secrets.mask)
        try queue.write { db in try record.insert(db) }
        return record
    }

    /// A run's error is kept with every secret masked (see Secrets), whoever recorded it.
    public func update(_ record: RunRecord) throws {
        var record = record
        record.error = record.error.map(Secrets.mask)
        try queue.write { db in try record.update(db) }
    }

    public func runs(policy: String? = nil, source: String? = nil, kind: String? = nil, from: Date? = nil, to: Date? = nil) throws -> [RunRecord] {
        try queue.read { db in
            var request = RunRecord.all()
            if let policy { request = request.filter(Column("policy") == policy) }
            if let source { request = request.filter(Column("source") == source) }
            if let kind { request = request.filter(Column("kind") == kind) }
            if let from { request = request.filter(Column("started") >= from) }
            if let to { request = request.filter(Column("started") <= to) }
            return try request.order(Column("started"), Column("id")).fetchAll(db)
        }
    }

    /// The newest planned time for which a backup of this source was attempted.
    public func lastPlanned(policy: String, source: String, kind: String = "backup") throws -> Date? {
        try queue.read { db in
            try Date.fetchOne(db, sql: "SELECT max(planned) FROM runs WHERE policy = ? AND source = ? AND kind = ?",
                              arguments: [policy, source, kind])
        }
    }

    /// Every run of a source for one planned time, oldest first (a planned time tried again
    /// after a failure has several).
    public func attempts(policy: String, source: String, kind: String = "backup", planned: Date) throws -> [RunRecord] {
        try queue.read { db in
            try RunRecord.filter(Column("policy") == policy && Column("source") == source && Column("kind") == kind
                                 && Column("planned") == planned)
                .order(Column("started"), Column("id")).fetchAll(db)
        }
    }

    public func last(policy: String, source: String, kind: String, outcome: String? = nil) throws -> RunRecord? {
        try queue.read { db in
            var request = RunRecord.filter(Column("policy") == policy && Column("source") == source && Column("kind") == kind)
            if let outcome { request = request.filter(Column("outcome") == outcome) }
            return try request.order(Column("started").desc, Column("id").desc).fetchOne(db)
        }
    }

    /// Adds a backup row for every snapshot a repository holds that the catalog does not know.
    public func rebuild(policy: Policy, snapshots: [Snapshot]) throws -> Int {
        let known = Set(try runs(policy: policy.name).compactMap(\.snapshot))
        var added = 0
        for snapshot in snapshots where !known.contains(snapshot.id ?? "") {
            guard let sourceName = snapshot.source.name ?? policy.sources.first(where: { $0.kind == .files && $0.paths.sorted() == snapshot.paths.sorted() })?.name,
                  policy.sources.contains(where: { $0.name == sourceName }) else { continue }
            var record = RunRecord(kind: "backup", policy: policy.name, source: sourceName, repository: policy.repository.path,
                                   planned: snapshot.time, started: snapshot.summary?.start ?? snapshot.time)
            record.ended = snapshot.summary?.end ?? snapshot.time
            record.outcome = snapshot.partial ? "partial" : "success"
            record.bytesRead = snapshot.summary?.bytesRead ?? 0
            record.bytesAdded = snapshot.summary?.bytesAdded ?? 0
            record.snapshot = snapshot.id
            record.snapshotTime = snapshot.time
            record.host = snapshot.hostname
            record.rebuilt = true
            if let manifest = DumpManifest(snapshot.manifest), let data = try? JSON.encoder.encode(ManifestSummary(manifest)) {
                record.details = String(decoding: data, as: UTF8.self)
            }
            try insert(record)
            added += 1
        }
        return added
    }
}

/// The short form of a manifest kept in the catalog: tables and rows per database.
public struct ManifestSummary: Codable, Sendable {
    public var engine: String
    public var databases: [String: Int]
    public var tables: Int
    public var rows: Int64

    public init(_ manifest: DumpManifest) {
        engine = manifest.engine
        databases = Dictionary(manifest.databases.map { ($0.name, $0.tables.count) }, uniquingKeysWith: { a, _ in a })
        tables = manifest.databases.reduce(0) { $0 + $1.tables.count }
        rows = manifest.databases.reduce(Int64(0)) { $0 + $1.tables.reduce(Int64(0)) { $0 + $1.rows } }
    }
}
