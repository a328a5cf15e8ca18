import Foundation
import KhoCore
import KhoSupport

/// What the operator (or the drill) asks of a database restore besides the target.
public struct DatabaseRestoreOptions: Sendable {
    /// Load beside an existing, non-empty database and swap the new one in once it loaded.
    public var replace = false
    /// Roles (PostgreSQL) or users (MariaDB) to create under another name: recorded name → name on
    /// the target. Ownership and grants follow the new name.
    public var roleMap: [String: String] = [:]
    /// PostgreSQL tablespaces: recorded name → tablespace on the target.
    public var tablespaceMap: [String: String] = [:]
    /// Create roles and users with the password hashes recorded at backup (off: they are created
    /// without a password, and the plan says so).
    public var rolePasswords = false
    /// The target is a scratch server kho started for a drill (nobody else uses it).
    public var scratch = false

    public init() {}
}

/// What a restore will do, shown before anything is read from the repository: what it creates,
/// what exists and is kept as it is, and what it refuses (one refusal stops the restore).
public struct DatabaseRestorePlan: Codable, Sendable {
    public enum Action: String, Codable, Sendable {
        case create, keep, refuse, note
    }

    public struct Item: Codable, Sendable, Equatable {
        public var action: Action
        /// What it is about: "role reporting", "database registry", "event registry.cleanup".
        public var subject: String
        public var detail: String
        public init(_ action: Action, _ subject: String, _ detail: String) {
            self.action = action; self.subject = subject; self.detail = detail
        }
    }

    public var engine: SourceKind
    /// The database's name at backup time, and its name on the target.
    public var sourceDatabase: String
    public var database: String
    public var items: [Item]
    /// The name the dump is loaded under: the target's, or a new `__kho_restore_` one that is
    /// swapped in (`replace`).
    public var loadName: String
    public var createDatabase: Bool
    public var swap: Bool

    public var refusals: [Item] { items.filter { $0.action == .refuse } }

    public init(engine: SourceKind, sourceDatabase: String, database: String, items: [Item], loadName: String, createDatabase: Bool, swap: Bool) {
        self.engine = engine; self.sourceDatabase = sourceDatabase; self.database = database; self.items = items
        self.loadName = loadName; self.createDatabase = createDatabase; self.swap = swap
    }

    /// The error for a plan with refusals: every reason, in one message.
    public var refusal: KhoError {
        let reasons = refusals.map(\.detail)
        return KhoError(.usage, reasons.count == 1 ? reasons[0] : "The restore is refused, nothing was changed: " + reasons.joined(separator: " "))
    }

    /// The plan for a person, one line per item.
    public var lines: [String] {
        items.map { "  \($0.action.rawValue.rightPadded(7)) \($0.subject): \($0.detail)" }
    }
}

/// What a database restore did, for the summary and the drill evidence.
public struct DatabaseRestoreResult: Codable, Sendable {
    public var engine: SourceKind
    public var database: String
    public var bytesLoaded: Int64
    public var seconds: Double
    /// When --replace moved an existing database aside, its new name.
    public var replacedDatabaseKeptAs: String?
    /// Tables, row counts and checksums against the manifest.
    public var comparison: ManifestComparison?
    /// The schema against the fingerprint recorded at backup; nil when the snapshot has none.
    public var schema: SchemaComparison?
    /// What the restore did beyond loading the dump, and what it left for the operator: roles kept
    /// as they were, events disabled (with the command to enable them), passwords not restored.
    public var notes: [String]
    /// The plan it carried out.
    public var plan: DatabaseRestorePlan?

    public init(engine: SourceKind, database: String, bytesLoaded: Int64, seconds: Double, replacedDatabaseKeptAs: String? = nil,
                comparison: ManifestComparison? = nil, schema: SchemaComparison? = nil, notes: [String] = [], plan: DatabaseRestorePlan? = nil) {
        self.engine = engine; self.database = database; self.bytesLoaded = bytesLoaded; self.seconds = seconds
        self.replacedDatabaseKeptAs = replacedDatabaseKeptAs; self.comparison = comparison; self.schema = schema
        self.notes = notes; self.plan = plan
    }

    /// Whether the restored database equals what was recorded (tables and, where recorded, schema).
    public var equal: Bool { (comparison?.equal ?? true) && (schema?.equal ?? true) }
}

/// What an engine's restore works from.
struct RestoreRequest {
    var target: DatabaseEndpoint
    var options: DatabaseRestoreOptions
    var sourceName: String
    /// The dump file and, when the snapshot has a manifest (a live dump always has one), its database's part.
    var dumpFile: String
    var recorded: DumpManifest.Database?
    var files: any DumpFiles
}

/// How a load ended: what the engine's restorer reports back to `DatabaseRestore`.
struct LoadOutcome {
    var bytes: Int64
    var replacedDatabaseKeptAs: String?
    var notes: [String]
}

/// One engine's restore: PostgreSQL (`PostgresRestorer`) and MariaDB (`MariaDBRestorer`).
protocol EngineRestorer {
    /// Every check that can be made before reading the repository: the target, privileges, roles,
    /// space, connections. Changes nothing.
    func plan(_ request: RestoreRequest) throws -> DatabaseRestorePlan
    /// Carries out a plan without refusals: creates what it says, loads the dump (fed by
    /// `request.files`), swaps names for a replace.
    func load(_ plan: DatabaseRestorePlan, _ request: RestoreRequest, progress: @escaping (Int64) -> Void) throws -> LoadOutcome
    /// The restored database's tables, computed as the manifest's were.
    func tables(_ plan: DatabaseRestorePlan, _ request: RestoreRequest) throws -> [DumpManifest.Table]
    /// The restored database's schema fingerprint, and the recorded one as this restore should
    /// have brought it back (roles mapped, kept roles as they are on the target, events disabled
    /// in a copy under another name).
    func fingerprints(_ plan: DatabaseRestorePlan, _ request: RestoreRequest, recorded: SchemaFingerprint) throws
        -> (expected: SchemaFingerprint, actual: SchemaFingerprint)
}

/// Restores one stored database dump into a database server: the one path both `kho restore
/// --to-database` and a drill take. A drill differs only in its target (a scratch server) and in
/// the checks it runs afterwards.
///
/// It never overwrites: a target that exists and holds tables is refused unless `replace`, and
/// then the dump is loaded into a new database whose name is swapped in only after the load
/// succeeded. Everything that can be checked before reading the repository is checked by `plan()`.
public struct DatabaseRestore {
    public let engine: SourceKind
    let request: RestoreRequest
    /// One restorer for the plan, the load and the comparison: it remembers what the load created
    /// (roles, users) so that the comparison expects them as created.
    let restorer: any EngineRestorer

    /// The largest schema fingerprint or globals file kho reads back.
    public static let jsonLimit = 256 << 20

    public init(engine: SourceKind, target: DatabaseEndpoint, options: DatabaseRestoreOptions, sourceName: String,
                dumpFile: String, recorded: DumpManifest.Database?, files: any DumpFiles) throws {
        guard engine == .postgres || engine == .mariadb else {
            throw KhoError(.usage, "Restoring into \(engine.rawValue) databases is not supported: use --to-file and load it with the engine's tools.")
        }
        self.engine = engine
        request = RestoreRequest(target: target, options: options, sourceName: sourceName, dumpFile: dumpFile, recorded: recorded, files: files)
        restorer = engine == .postgres ? PostgresRestorer(target: target, sourceName: sourceName)
            : MariaDBRestorer(target: target, sourceName: sourceName)
    }

    /// What the restore will do; changes nothing and reads nothing but the snapshot's small files.
    public func plan() throws -> DatabaseRestorePlan {
        try restorer.plan(request)
    }

    /// Carries out `plan` (refused when it has refusals), then compares the restored database with
    /// the manifest and, where the snapshot recorded one, the schema fingerprint.
    public func run(_ plan: DatabaseRestorePlan, progress: @escaping (Int64) -> Void = { _ in }) throws -> DatabaseRestoreResult {
        var result = try load(plan, progress: progress)
        try compare(&result)
        return result
    }

    /// Carries out `plan`: creates what it says and loads the dump. The result has no comparison yet.
    public func load(_ plan: DatabaseRestorePlan, progress: @escaping (Int64) -> Void = { _ in }) throws -> DatabaseRestoreResult {
        guard plan.refusals.isEmpty else { throw plan.refusal }
        let start = Date()
        let outcome = try restorer.load(plan, request, progress: progress)
        return DatabaseRestoreResult(engine: engine, database: plan.database, bytesLoaded: outcome.bytes, seconds: Date().timeIntervalSince(start),
                                     replacedDatabaseKeptAs: outcome.replacedDatabaseKeptAs, notes: outcome.notes, plan: plan)
    }

    /// Compares the restored database with the manifest's tables and, where the snapshot recorded
    /// one, its schema fingerprint (a drill does this after its pause for tests and the engine's
    /// own checks).
    public func compare(_ result: inout DatabaseRestoreResult) throws {
        guard let recorded = request.recorded, let plan = result.plan else { return }
        result.comparison = ManifestComparison(expected: recorded.tables, actual: try restorer.tables(plan, request))
        if let file = recorded.schemaFile {
            let fingerprint = try SchemaFingerprint.decode(try request.files.read(file, limit: DatabaseRestore.jsonLimit), file: file)
            let (expected, actual) = try restorer.fingerprints(plan, request, recorded: fingerprint)
            result.schema = SchemaComparison(expected: expected, actual: actual)
        } else {
            result.notes.append("This snapshot was taken by a kho that recorded no schema fingerprint: tables, row counts and checksums were compared, indexes, constraints, functions, grants and the database's properties were not.")
        }
    }
}

extension String {
    func rightPadded(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}

extension DatabaseRestorePlan {
    /// The plan every engine starts from: create the database, load into an empty one, refuse a
    /// non-empty one, or load beside it and swap (`replace`).
    static func basic(engine: SourceKind, request: RestoreRequest, exists: Bool, empty: Bool) -> DatabaseRestorePlan {
        let name = request.target.database
        let replace = request.options.replace
        var items: [Item] = []
        if !exists {
            items.append(Item(.create, "database \(name)", "create the database, then load the dump into it"))
        } else if empty {
            items.append(Item(.keep, "database \(name)", "load into the existing empty database"))
        } else if replace {
            items.append(Item(.create, "database \(name)", "load into a new database, then swap it in for the existing (kept under another name)"))
        } else {
            let place = request.target.isSocket ? request.target.host : "\(request.target.host):\(request.target.port)"
            items.append(Item(.refuse, "database \(name)", "The database \(name) on \(place) exists and is not empty: restore into a new name, or pass --replace to load into a new database and swap it in when the load succeeded."))
        }
        let swap = exists && !empty && replace
        let loadName = swap ? "\(name)__kho_restore_\(UInt32.random(in: 0...UInt32.max))" : name
        return DatabaseRestorePlan(engine: engine, sourceDatabase: request.recorded?.name ?? name, database: name, items: items,
                                   loadName: loadName, createDatabase: !exists || swap, swap: swap)
    }
}

/// Undoes what a failed restore created (its database, its roles or users), so that it can be
/// run again, and names what could not be undone instead of leaving it unsaid.
struct RestoreUndo {
    private(set) var leftovers: [String] = []

    /// Runs one undo step; a failure is remembered with what was left.
    mutating func attempt(_ what: String, _ step: () throws -> Void) {
        do {
            try step()
        } catch {
            leftovers.append("\(what) (\((error as? KhoError)?.message ?? "\(error)"))")
        }
    }

    /// The restore's own error, with what it left behind named for the operator to remove.
    func error(_ original: Error) -> Error {
        guard !leftovers.isEmpty else { return original }
        var error = original as? KhoError ?? KhoError(.failure, "\(original)")
        error.message += " kho could not remove what this restore created: \(leftovers.joined(separator: "; ")); drop it by hand before restoring again."
        return error
    }
}
