import Foundation
import GRDB
import KhoCore
import KhoSupport
import KhoSources

/// The embedded SQLite catalog of every job run. Losing it loses history, never data: `rebuild`
/// recreates the backup history from the repositories.
public final class Catalog: @unchecked Sendable {
    public let path: String
    let queue: DatabaseQueue

    public static let schemaVersion = 2

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
        migrator.registerMigration("v2: typed runs") { db in
            try Catalog.typeRuns(db)
        }
        return migrator
    }

    /// Inserts a run and returns it with its id. A failure is the caller's to report: a run
    /// without a row is missing from status, reports and retry planning.
    /// "v2: typed runs": kinds and outcomes are read as `RunKind` and `RunOutcome`, so every stored
    /// value must be one of their raw values. Every kho before this one wrote only those (kinds
    /// backup, retention, drill, copy, notify; outcomes running, success, failure, partial, and late
    /// or missed on notify rows); an outcome outside them (a row edited by hand) becomes a failure
    /// that keeps the old value in its error, and a kind outside them is refused, naming the rows,
    /// because no kind can stand in for it. Adds `retryable`, which decides what the runner retries,
    /// and `errorKind`, filled in for the shrunken dumps older kho named only in their messages.
    static func typeRuns(_ db: Database) throws {
        let kinds = RunKind.allCases.map(\.rawValue)
        let strange = try Row.fetchAll(db, sql: "SELECT kind, count(*) AS n FROM runs WHERE kind NOT IN (\(kinds.map { _ in "?" }.joined(separator: ", "))) GROUP BY kind",
                                       arguments: StatementArguments(kinds))
        if !strange.isEmpty {
            let list = strange.map { row -> String in
                let kind: String = row["kind"]
                let count: Int = row["n"]
                return "\"\(kind)\" (\(count) rows)"
            }.joined(separator: ", ")
            throw KhoError(.failure, "The catalog holds runs of a kind this kho does not know: \(list); delete those rows, or move the catalog aside and run `kho catalog rebuild`.")
        }
        let outcomes = RunOutcome.allCases.map(\.rawValue)
        try db.execute(sql: """
            UPDATE runs SET error = '(recorded as "' || outcome || '" by an older kho)' || coalesce(': ' || error, ''), outcome = ?
            WHERE outcome NOT IN (\(outcomes.map { _ in "?" }.joined(separator: ", ")))
            """, arguments: StatementArguments([RunOutcome.failure.rawValue] + outcomes))
        try db.alter(table: "runs") { t in
            t.add(column: "retryable", .boolean)
            t.add(column: "errorKind", .text)
        }
        // The one failure older kho told apart only by its message: a dump refused because it shrank
        // below min-size-ratio (the message names the setting, in every version that had it).
        try db.execute(sql: "UPDATE runs SET errorKind = ? WHERE outcome = ? AND kind = ? AND error LIKE '%min-size-ratio%'",
                       arguments: [KhoError.Kind.sourceShrank.rawValue, RunOutcome.failure.rawValue, RunKind.backup.rawValue])
    }

    @discardableResult
    public func insert(_ record: RunRecord) throws -> RunRecord {
        var record = record
        record.error = record.error.map(Secrets.mask)
        do {
            try queue.write { db in try record.insert(db) }
        } catch {
            throw KhoError(.failure, "The \(record.kind.rawValue) run of \(record.policy)/\(record.source) cannot be recorded in the catalog \(path) (\(error)): make the state folder writable (or give --state-dir) and run again.")
        }
        return record
    }

    /// A run's error is kept with every secret masked (see Secrets), whoever recorded it.
    public func update(_ record: RunRecord) throws {
        var record = record
        record.error = record.error.map(Secrets.mask)
        guard record.id != nil else {
            throw KhoError(.failure, "The \(record.kind.rawValue) run of \(record.policy)/\(record.source) has no catalog row to update (its insert failed): fix the catalog \(path) and run again.")
        }
        do {
            try queue.write { db in try record.update(db) }
        } catch {
            throw KhoError(.failure, "The \(record.kind.rawValue) run of \(record.policy)/\(record.source) cannot be updated in the catalog \(path) (\(error)): make the state folder writable (or give --state-dir) and run again.")
        }
    }

    public func runs(policy: String? = nil, source: String? = nil, kind: RunKind? = nil, from: Date? = nil, to: Date? = nil) throws -> [RunRecord] {
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
    public func lastPlanned(policy: String, source: String, kind: RunKind = .backup) throws -> Date? {
        try queue.read { db in
            try Date.fetchOne(db, sql: "SELECT max(planned) FROM runs WHERE policy = ? AND source = ? AND kind = ?",
                              arguments: [policy, source, kind])
        }
    }

    /// Every run of a source for one planned time, oldest first (a planned time tried again
    /// after a failure has several).
    public func attempts(policy: String, source: String, kind: RunKind = .backup, planned: Date) throws -> [RunRecord] {
        try queue.read { db in
            try RunRecord.filter(Column("policy") == policy && Column("source") == source && Column("kind") == kind
                                 && Column("planned") == planned)
                .order(Column("started"), Column("id")).fetchAll(db)
        }
    }

    public func last(policy: String, source: String, kind: RunKind, outcome: RunOutcome? = nil) throws -> RunRecord? {
        try queue.read { db in
            var request = RunRecord.filter(Column("policy") == policy && Column("source") == source && Column("kind") == kind)
            if let outcome { request = request.filter(Column("outcome") == outcome) }
            return try request.order(Column("started").desc, Column("id").desc).fetchOne(db)
        }
    }
}
