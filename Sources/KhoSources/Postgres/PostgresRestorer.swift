import Foundation
import KhoCore
import KhoSupport

/// Restores a PostgreSQL dump, the same way for an operator and for a drill: the roles the
/// database needs that the target lacks, then the database with its recorded properties (encoding,
/// locale, owner, connection limit, tablespace), then the dump, loaded by `psql` (the engine's own
/// tool) in one transaction, then the database's access list, comment and settings; for `--replace`
/// all of that on a new database that is swapped in at the end.
///
/// kho's own statements go through a libpq connection, every name quoted and every text escaped
/// (`PostgresStatements`); nothing of the dump but `SET default_tablespace` lines of mapped
/// tablespaces and the versions of extensions are changed on the way (`PostgresDumpFilter`).
///
/// Roles that exist on the target are kept as they are (their attributes, memberships and
/// passwords are never changed). A role mapped with --map-role is created under its recorded name,
/// so that the dump's ownership and grants resolve, and renamed once loaded: PostgreSQL follows a
/// rename everywhere (owners, privileges, policies, memberships, settings).
struct PostgresRestorer: EngineRestorer {
    var target: DatabaseEndpoint
    var sourceName: String
    /// What the load created, for the comparison afterwards (one restorer serves one restore).
    let session = Session()

    final class Session {
        /// Target names of the roles this restore created.
        var createdRoles: Set<String> = []
    }

    var tools: PostgresSource {
        PostgresSource(name: sourceName, endpoint: target, databases: [target.database], includeGlobals: false)
    }

    func connect(_ database: String) throws -> PostgresConnection {
        try PostgresConnection(endpoint: target, database: database, source: sourceName)
    }

    /// The maintenance database: `postgres`, or `template1` on a server without it.
    func maintenance() throws -> PostgresConnection {
        do {
            return try connect("postgres")
        } catch {
            // try?: template1 is only the second choice; the first error is the one to report.
            if let fallback = try? connect("template1") { return fallback }
            throw error
        }
    }

    func state(_ admin: PostgresConnection) throws -> (exists: Bool, empty: Bool) {
        let exists = try admin.value("SELECT count(*) FROM pg_database WHERE datname = $1", [target.database]) == "1"
        guard exists else { return (false, true) }
        let count = try connect(target.database).value("""
            SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r','p','v','m','S','f') AND n.nspname NOT IN ('pg_catalog','information_schema')
              AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
            """) ?? "0"
        return (true, count == "0")
    }

    func setup(_ request: RestoreRequest, admin: PostgresConnection) throws -> (DatabaseRestorePlan, PostgresRestoreSetup) {
        let state = try state(admin)
        var plan = DatabaseRestorePlan.basic(engine: .postgres, request: request, exists: state.exists, empty: state.empty)
        let setup = try PostgresRestoreSetup.examine(request, admin: admin, exists: state.exists, empty: state.empty,
                                                      createDatabase: plan.createDatabase, swap: plan.swap)
        plan.items += setup.items
        return (plan, setup)
    }

    func plan(_ request: RestoreRequest) throws -> DatabaseRestorePlan {
        try setup(request, admin: try maintenance()).0
    }

    func load(_ plan: DatabaseRestorePlan, _ request: RestoreRequest, progress: @escaping (Int64) -> Void) throws -> LoadOutcome {
        let quote = SQLIdentifier.postgres
        let admin = try maintenance()
        // Decided again right before acting: the target may have changed since the plan was shown.
        let (current, setup) = try setup(request, admin: admin)
        guard current.refusals.isEmpty else { throw current.refusal }
        let loadName = plan.loadName, createDatabase = plan.createDatabase
        var notes: [String] = []
        var createdRoles: [String] = []  // names during the load (recorded names)
        var createdDatabase = false

        do {
            // Roles first: the database's owner and the dump's ALTER … OWNER TO and GRANT name them.
            for role in setup.create {
                try admin.query(PostgresStatements.createRole(role, name: role.name))
                createdRoles.append(role.name)
            }
            for name in setup.bareRoles {
                try admin.query(PostgresStatements.createBareRole(name))
                createdRoles.append(name)
            }
            if let globals = setup.globals {
                notes += try addMemberships(globals, setup: setup, admin: admin)
                for role in setup.create {
                    for entry in role.settings {
                        if let sql = PostgresStatements.roleSetting(entry, role: role.name) { try admin.query(sql) }
                    }
                }
            }

            let database = setup.globals?.database
            if createDatabase {
                if let database {
                    try createDatabaseStatement(admin, loadName: loadName, database: database, setup: setup)
                } else {
                    try admin.query("CREATE DATABASE \(quote(loadName)) TEMPLATE template0")
                }
                createdDatabase = true
            } else if let database {
                // The existing empty database: what can be changed is set as recorded.
                try admin.query("ALTER DATABASE \(quote(loadName)) OWNER TO \(quote(database.owner))")
                try admin.query("ALTER DATABASE \(quote(loadName)) WITH CONNECTION LIMIT \(database.connectionLimit)")
            }

            let bytes = try feedDump(request, database: loadName, setup: setup, progress: progress)

            if let database {
                for sql in PostgresStatements.databaseACL(database.acl, database: loadName, owner: database.owner, roleName: { $0 }) {
                    try admin.query(sql)
                }
                if database.comment != nil { try admin.query(PostgresStatements.comment(database.comment, database: loadName)) }
                for entry in database.settings {
                    if let sql = PostgresStatements.databaseSetting(entry, database: loadName) { try admin.query(sql) }
                }
                for roleSettings in database.roleSettings {
                    for entry in roleSettings.settings {
                        if let sql = PostgresStatements.roleSetting(entry, role: roleSettings.role, database: loadName) { try admin.query(sql) }
                    }
                }
                if database.isTemplate { try admin.query("ALTER DATABASE \(quote(loadName)) WITH IS_TEMPLATE true") }
            }

            var keptAs: String?
            if plan.swap {
                let aside = "\(target.database)__kho_replaced_\(Int(Date().timeIntervalSince1970))"
                try admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                                [target.database])
                try admin.query("ALTER DATABASE \(quote(target.database)) RENAME TO \(quote(aside))")
                try admin.query("ALTER DATABASE \(quote(loadName)) RENAME TO \(quote(target.database))")
                keptAs = aside
            }
            createdDatabase = false  // from here on the database stays, whatever happens

            for (old, new) in setup.roleMap.sorted(by: { $0.key < $1.key }) {
                try admin.query("ALTER ROLE \(quote(old)) RENAME TO \(quote(new))")
            }
            notes += try setPasswords(setup, request: request, admin: admin)
            session.createdRoles = Set(createdRoles.map { setup.targetName($0) })
            notes += summary(setup, request: request)
            return LoadOutcome(bytes: bytes, replacedDatabaseKeptAs: keptAs, notes: notes)
        } catch {
            // The restore failed: what it created goes, so that it can be run again; the target's
            // own databases and roles were not touched.
            var undo = RestoreUndo()
            if createdDatabase { undo.attempt("database \(loadName)") { try admin.query("DROP DATABASE IF EXISTS \(quote(loadName))") } }
            for name in createdRoles.reversed() { undo.attempt("role \(name)") { try admin.query("DROP ROLE IF EXISTS \(quote(name))") } }
            throw undo.error(error)
        }
    }

    private func createDatabaseStatement(_ admin: PostgresConnection, loadName: String, database: PostgresGlobals.Database, setup: PostgresRestoreSetup) throws {
        let tablespace = setup.tablespaceMap[database.tablespace] ?? database.tablespace
        do {
            try admin.query(PostgresStatements.createDatabase(loadName, database, owner: database.owner, tablespace: tablespace, version: setup.version))
        } catch let error as KhoError {
            var locale = "\(database.encoding), LC_COLLATE \(database.collate), LC_CTYPE \(database.ctype)"
            if let provider = database.localeProvider, provider != "libc" { locale += ", \(provider) locale \(database.locale ?? "")" }
            throw KhoError(error.kind, "\(error.message) — creating the database as it was (\(locale)) failed; if the target's operating system lacks that locale, install it (dpkg-reconfigure locales) and restart PostgreSQL, then restore again. Nothing was loaded.")
        }
    }

    /// Memberships that involve a role this restore creates: the created role in its recorded
    /// groups, and kept roles in created groups. A kept role's own memberships are never changed
    /// otherwise.
    private func addMemberships(_ globals: PostgresGlobals, setup: PostgresRestoreSetup, admin: PostgresConnection) throws -> [String] {
        let created = Set(setup.create.map(\.name))
        let existing = Set(try admin.query("SELECT rolname FROM pg_roles").compactMap { $0.first ?? nil })
        var skipped: [String] = []
        for role in globals.roles {
            for membership in role.memberOf where created.contains(role.name) || created.contains(membership.group) {
                guard existing.contains(membership.group) else {
                    skipped.append("\(role.name) in \(membership.group)")
                    continue
                }
                try admin.query(PostgresStatements.grantMembership(membership, to: role.name, version: setup.version))
            }
        }
        return skipped.isEmpty ? [] : ["memberships left out because this server has no such built-in role: \(skipped.joined(separator: ", "))"]
    }

    private func setPasswords(_ setup: PostgresRestoreSetup, request: RestoreRequest, admin: PostgresConnection) throws -> [String] {
        guard request.options.rolePasswords, let globals = setup.globals, globals.passwordsRecorded else { return [] }
        var skipped: [String] = []
        for role in setup.create {
            guard let hash = role.passwordHash else { continue }
            let name = setup.targetName(role.name)
            // An MD5 hash is salted with the role's name: under another name it matches no password.
            if hash.hasPrefix("md5") && name != role.name {
                skipped.append(name)
                continue
            }
            try admin.query("ALTER ROLE \(SQLIdentifier.postgres(name)) PASSWORD \(PostgresLiteral.quote(hash))")
        }
        return skipped.isEmpty ? [] : ["the MD5 password hashes of \(skipped.joined(separator: ", ")) were recorded for their old names and were not set: set their passwords with ALTER ROLE … PASSWORD"]
    }

    private func summary(_ setup: PostgresRestoreSetup, request: RestoreRequest) -> [String] {
        var notes: [String] = []
        let created = setup.create.map { setup.targetName($0.name) } + setup.bareRoles
        if !created.isEmpty {
            let passwords = request.options.rolePasswords && setup.globals?.passwordsRecorded == true ? "with their recorded password hashes" : "without passwords (set them with ALTER ROLE … PASSWORD, or restore with --role-passwords)"
            notes.append("roles created: \(created.joined(separator: ", ")), \(passwords)")
        }
        if !setup.bareRoles.isEmpty {
            notes.append("roles named by the old snapshot's globals.sql were created NOLOGIN, without attributes, memberships or settings: \(setup.bareRoles.joined(separator: ", "))")
        }
        if !setup.kept.isEmpty {
            notes.append("roles that existed on the target and were kept as they are (attributes, memberships, passwords unchanged): \(setup.kept.joined(separator: ", "))")
        }
        let moved = setup.tablespaceMap.filter { $0.key != $0.value }.sorted { $0.key < $1.key }
        if !moved.isEmpty {
            notes.append("tablespaces mapped: \(moved.map { "\($0.key) → \($0.value)" }.joined(separator: ", "))")
        }
        return notes
    }

    /// Streams the dump into psql, through the filter when a tablespace is mapped or an extension
    /// is created at its recorded version.
    private func feedDump(_ request: RestoreRequest, database: String, setup: PostgresRestoreSetup, progress: @escaping (Int64) -> Void) throws -> Int64 {
        let moved = setup.tablespaceMap.filter { $0.key != $0.value }
        let extensionVersions = setup.extensionVersions
        let produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void = { write in
            let rewriter = PostgresDumpFilter(tablespaces: moved, extensionVersions: extensionVersions)
            let filter = rewriter.changesNothing ? nil : rewriter
            try request.files.stream(request.dumpFile) { chunk in
                if let filter { try filter.feed(chunk, write) } else { try write(chunk) }
                progress(Int64(chunk.count))
            }
            try filter?.finish(write)
        }
        let psql = try tools.tool("psql")
        let env = try tools.environment(database: database)
        let arguments = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-w", "--single-transaction", "-o", "/dev/null"]
        return try ClientFeeder.feed(program: psql, arguments: arguments, environment: env, engine: "postgres",
                                     sourceName: sourceName, produce: produce)
    }

    func tables(_ plan: DatabaseRestorePlan, _ request: RestoreRequest) throws -> [DumpManifest.Table] {
        try PostgresManifest.tables(try connect(target.database))
    }

    /// The restored database's fingerprint, read as at backup, and the recorded one as this
    /// restore should have brought it back: mapped roles and tablespaces under their new names;
    /// roles that existed on the target compared as they are there (the restore keeps them as
    /// they are by design), so only the roles it created are compared with the snapshot's.
    func fingerprints(_ plan: DatabaseRestorePlan, _ request: RestoreRequest, recorded: SchemaFingerprint) throws
        -> (expected: SchemaFingerprint, actual: SchemaFingerprint) {
        let admin = try maintenance()
        let existingTablespaces = Set(try admin.query("SELECT spcname FROM pg_tablespace").compactMap { $0.first ?? nil })
        let mapping = PostgresFingerprintMapping(roleMap: request.options.roleMap, tablespaceMap: request.options.tablespaceMap,
                                                 existingTablespaces: existingTablespaces, createdRoles: session.createdRoles)
        let recordedRoles = Set(recorded.objects.filter { $0.kind == .role }.map { mapping.role($0.name) })
        let actual = try PostgresFingerprint.read(try connect(target.database), local: false, roles: recordedRoles).fingerprint
        return try mapping.adjust(expected: recorded, actual: actual)
    }
}
