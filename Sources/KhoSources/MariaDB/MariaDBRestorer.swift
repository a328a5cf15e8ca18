import Foundation
import KhoCore
import KhoSupport

/// Restores a MariaDB dump with what it needs around it: the database with its recorded character
/// set, collation and comment; the users and roles the snapshot recorded for it (kept as they are
/// where they exist, created where they do not); the dump, filtered so that none of its statements
/// reaches another database (`DatabaseNameFilter`); then the recorded privileges on the database,
/// re-targeted to its name on the target, the role grants and default roles of the accounts it
/// created.
///
/// kho's own statements go through a Connector/C connection, written by `MariaDBStatements` from
/// the recorded data (every name quoted, every string a literal the connector escaped); the dump
/// itself is loaded by the `mariadb` client in sandbox mode (statements only, none of the client's
/// own commands) and binary mode (a routine's body comes back byte for byte), connected to the
/// target as its default database.
struct MariaDBRestorer: EngineRestorer {
    typealias Account = MariaDBGlobals.Account

    var target: DatabaseEndpoint
    var sourceName: String
    /// What `load` found and did about accounts, for `fingerprints` (called on the same restorer).
    private let loaded = LoadedAccounts()

    init(target: DatabaseEndpoint, sourceName: String) {
        self.target = target
        self.sourceName = sourceName
    }

    final class LoadedAccounts: @unchecked Sendable {
        var kept: Set<Account> = []
        var created: Set<Account> = []
    }

    func connect() throws -> MariaDBConnection {
        try MariaDBConnection(endpoint: target, database: nil, source: sourceName)
    }

    func state(_ connection: MariaDBConnection) throws -> (exists: Bool, empty: Bool) {
        let exists = try connection.value("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", [target.database]) == "1"
        guard exists else { return (false, true) }
        let count = try connection.value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", [target.database]) ?? "0"
        return (true, count == "0")
    }

    /// Drops every table and view of `database` (what a failed load into an existing, empty
    /// database left there).
    static func dropTablesAndViews(_ admin: MariaDBConnection, database: String) throws {
        let quote = SQLIdentifier.mariadb
        let objects = try admin.query("SELECT TABLE_TYPE, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", [database])
        try admin.query("SET FOREIGN_KEY_CHECKS = 0")
        for object in objects {
            guard object.count == 2, let name = object[1] else { continue }
            let kind = object[0] == "VIEW" ? "VIEW" : object[0] == "SEQUENCE" ? "SEQUENCE" : "TABLE"
            try admin.query("DROP \(kind) IF EXISTS \(quote(database)).\(quote(name))")
        }
        try admin.query("SET FOREIGN_KEY_CHECKS = 1")
    }

    func recordedGlobals(_ request: RestoreRequest) throws -> MariaDBGlobals? {
        guard let file = request.recorded?.globalsFile else { return nil }
        return try MariaDBGlobals.decode(try request.files.read(file, limit: DatabaseRestore.jsonLimit), file: file)
    }

    func recordedFingerprint(_ request: RestoreRequest) throws -> SchemaFingerprint? {
        guard let file = request.recorded?.schemaFile else { return nil }
        return try SchemaFingerprint.decode(try request.files.read(file, limit: DatabaseRestore.jsonLimit), file: file)
    }

    func exists(_ connection: MariaDBConnection, _ account: Account) throws -> Bool {
        try connection.value("SELECT COUNT(*) FROM mysql.global_priv WHERE User = ? AND Host = ?", [account.user, account.host]) != "0"
    }

    // MARK: plan

    func plan(_ request: RestoreRequest) throws -> DatabaseRestorePlan {
        let connection = try connect()
        let state = try state(connection)
        var plan = DatabaseRestorePlan.basic(engine: .mariadb, request: request, exists: state.exists, empty: state.empty)
        let globals = try recordedGlobals(request)
        let fingerprint = try recordedFingerprint(request)
        let renamed = plan.database != plan.sourceDatabase
        let quote = SQLIdentifier.mariadb

        if plan.swap {
            // RENAME TABLE moves tables only: views, triggers, routines and events would stay behind
            // in the scratch database or mix the old database's into the restored one. Known before
            // anything is read: from the snapshot's fingerprint and the existing database.
            let kinds: Set<SchemaObjectKind> = [.view, .trigger, .function, .procedure, .event]
            var unmovable = (fingerprint?.objects ?? []).filter { kinds.contains($0.kind) }.map { "\($0.kind.rawValue) \($0.name)" }
            unmovable += try MariaDBRestorer.unmovableObjects(connection, [target.database]).map { "\($0) (on the target)" }
            if !unmovable.isEmpty {
                let shown = unmovable.prefix(5).joined(separator: ", ") + (unmovable.count > 5 ? " and \(unmovable.count - 5) more" : "")
                plan.items.append(.init(.refuse, "database \(plan.database)", "MariaDB cannot move views, triggers, routines or events between databases (\(shown)), so --replace cannot swap the restored database in; nothing was changed: restore into a new database name and point the application at it, or drop \(plan.database) and restore again."))
            }
        }

        guard let globals else {
            plan.items.append(.init(.note, "database \(plan.database)", "this snapshot recorded no character set, users or grants (taken by an older kho): the database is created with utf8mb4 and no users or privileges are restored."))
            return plan
        }
        if plan.createDatabase {
            plan.items.append(.init(.note, "database \(plan.database)", "character set \(globals.characterSet), collation \(globals.collation)" + (globals.comment.isEmpty ? "" : ", comment \(globals.comment.debugDescription)") + ", as recorded"))
        }

        let recordedNames = Set(globals.accounts.map(\.account.user))
        for old in request.options.roleMap.keys.sorted() where !recordedNames.contains(old) {
            plan.items.append(.init(.refuse, "--map-role \(old)", "The snapshot records no user or role \(old.debugDescription) for \(plan.sourceDatabase) (it records \(recordedNames.sorted().joined(separator: ", "))): check the name given to --map-role."))
        }

        let statements = MariaDBStatements(connection: connection, roleMap: request.options.roleMap)
        var toCreate: [String] = []
        for details in globals.accounts {
            let account = statements.mapped(details.account)
            let subject = account.isRole ? "role \(account.user)" : "user \(account.display)"
            let mappedFrom = account.user == details.account.user ? "" : " (\(details.account.display) in the snapshot)"
            let granted = globals.grants.contains { $0.grantee == details.account }
            let exists = try exists(connection, account)
            if exists {
                plan.items.append(.init(.keep, subject, "exists on the target\(mappedFrom): left as it is" + (account.isRole ? "" : " (authentication, limits and roles unchanged)")
                                        + (granted ? "; it gets the recorded privileges on \(plan.database)" : "")))
            } else {
                toCreate.append(account.display)
                let how: String
                if account.isRole {
                    how = "create the role"
                } else if !details.needsPassword {
                    how = "create it with its recorded authentication (\(details.authentications.map(\.plugin).joined(separator: " or ")))"
                } else if request.options.rolePasswords {
                    how = "create it with the password hash recorded at backup (--role-passwords)"
                } else {
                    how = "create it locked and without a password (pass --role-passwords to use the recorded hash); afterwards: ALTER USER \(try statements.grantee(details.account)) IDENTIFIED BY '…'" + (details.accountLocked ? "" : " ACCOUNT UNLOCK") + ";"
                }
                plan.items.append(.init(.create, subject, how + mappedFrom))
            }
            if let global = details.globalPrivileges, !exists {
                plan.items.append(.init(.note, subject, "had \(global) on the source server: global privileges are not restored (the target's administrator decides them)."))
            }
        }
        for wildcard in globals.wildcardGrants {
            plan.items.append(.init(.note, "grant on \(wildcard.pattern).*", "\(wildcard.grantee.display) holds \(wildcard.privileges.joined(separator: ", ")) on the databases matching \(wildcard.pattern) on the source server: not restored (it is about other databases too); grant it yourself where needed."))
        }
        for definer in globals.missingDefiners {
            plan.items.append(.init(.note, "definer \(definer)", "defines objects of \(plan.sourceDatabase) but did not exist on the source server: those objects fail when used, as they did there."))
        }
        if !globals.grants.isEmpty {
            let grantees = Set(globals.grants.map(\.grantee)).count
            plan.items.append(.init(.create, "privileges on \(plan.database)", "\(globals.grants.count) recorded grants to \(grantees) users and roles" + (renamed ? ", re-targeted from \(plan.sourceDatabase) to \(plan.database)" : "")))
        }
        if renamed, let fingerprint {
            let enabled = MariaDBSchema.eventStatus("ENABLED") + ";"
            for event in fingerprint.objects where event.kind == .event && event.definition.hasPrefix(enabled) {
                plan.items.append(.init(.note, "event \(event.name)", "enabled in the snapshot; created DISABLED in \(plan.database), so that a copy does not run the original's jobs: ALTER EVENT \(quote(plan.database)).\(quote(event.name)) ENABLE;"))
            }
        }

        // The login must be able to do all of it: refused now rather than half way.
        let login = try LoginPrivileges(connection)
        let mayCreate = try login.has("CREATE") || login.mayCreate(connection, database: plan.loadName)
        if plan.createDatabase && !mayCreate {
            plan.items.append(.init(.refuse, "login \(login.name)", "The login \(login.name) lacks the CREATE privilege and cannot create the database \(plan.loadName): restore as a user that has it, or create the database empty first."))
        }
        if !toCreate.isEmpty && !login.has("CREATE USER") {
            plan.items.append(.init(.refuse, "login \(login.name)", "The login \(login.name) lacks the CREATE USER privilege, and the restore must create \(toCreate.joined(separator: ", ")): restore as a user that has it, or create them on the target first (they are then kept as they are)."))
        }
        let needed = Set(globals.grants.flatMap { $0.privileges.isEmpty ? ["USAGE"] : $0.privileges }).subtracting(["USAGE"])
        let missing = needed.filter { !login.grantable($0) }.sorted()
        if !missing.isEmpty {
            plan.items.append(.init(.refuse, "login \(login.name)", "The login \(login.name) cannot grant \(missing.joined(separator: ", ")) (it needs them WITH GRANT OPTION), which the recorded privileges on \(plan.sourceDatabase) hold: restore as a user that can, such as root."))
        }
        return plan
    }

    /// Views, triggers, routines and events of `databases`, as "kind db.name".
    static func unmovableObjects(_ connection: MariaDBConnection, _ databases: [String]) throws -> [String] {
        let placeholders = databases.map { _ in "?" }.joined(separator: ", ")
        return try connection.query("""
            SELECT CONCAT(kind, ' ', db, '.', name) FROM (
              SELECT 'view' AS kind, TABLE_SCHEMA AS db, TABLE_NAME AS name FROM information_schema.VIEWS
              UNION ALL SELECT 'trigger', TRIGGER_SCHEMA, TRIGGER_NAME FROM information_schema.TRIGGERS
              UNION ALL SELECT LOWER(ROUTINE_TYPE), ROUTINE_SCHEMA, ROUTINE_NAME FROM information_schema.ROUTINES
              UNION ALL SELECT 'event', EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS) AS objects
            WHERE db IN (\(placeholders)) ORDER BY 1
            """, databases).compactMap { $0.first ?? nil }
    }

    // MARK: load

    func load(_ plan: DatabaseRestorePlan, _ request: RestoreRequest, progress: @escaping (Int64) -> Void) throws -> LoadOutcome {
        let quote = SQLIdentifier.mariadb
        let loadName = plan.loadName, createDatabase = plan.createDatabase, replace = plan.swap
        let produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void = { write in
            try request.files.stream(request.dumpFile) { chunk in
                try write(chunk)
                progress(Int64(chunk.count))
            }
        }
        let original = target
        let loadTarget = target.with(database: loadName)
        let admin = try connect()
        let globals = try recordedGlobals(request)
        let statements = MariaDBStatements(connection: admin, roleMap: request.options.roleMap)
        let renamed = plan.database != plan.sourceDatabase
        var notes: [String] = []

        // Decided again here, with the same queries as plan(): the plan carries no engine state.
        var created: [MariaDBGlobals.AccountDetails] = []
        var kept: [MariaDBGlobals.AccountDetails] = []
        for details in globals?.accounts ?? [] {
            if try exists(admin, statements.mapped(details.account)) { kept.append(details) } else { created.append(details) }
        }
        loaded.kept = Set(kept.map { statements.mapped($0.account) })
        loaded.created = Set(created.map { statements.mapped($0.account) })

        if createDatabase {
            try admin.query(try statements.createDatabase(loadName, globals))
        }
        var made: [Account] = []
        let client = try MariaDBSource.tool(["mariadb", "mysql"], source: sourceName)
        var bytes: Int64 = 0
        // A dump stored without a manifest (`kho backup --stdin`) says its database's name itself.
        let filter = DatabaseNameFilter(from: request.recorded?.name, to: loadName, disableEvents: request.recorded == nil ? nil : renamed,
                                        finalName: plan.database)
        do {
            // Roles before users (a default role must exist), both before the dump (definers).
            for details in created.sorted(by: { $0.account.isRole && !$1.account.isRole }) {
                for sql in try statements.createAccount(details, passwords: request.options.rolePasswords) { try admin.query(sql) }
                made.append(details.account)
            }
            bytes = try ClientFeeder.feed(program: client,
                                          arguments: MariaDBSource.arguments(loadTarget, ["--sandbox", "--binary-mode", "--database=" + loadName]),
                                          environment: try MariaDBSource.environment(loadTarget), engine: "mariadb", sourceName: sourceName) { write in
                try withoutActuallyEscaping(write) { write in
                    try produce { chunk in try filter.process(chunk, write) }
                    try filter.flush(write)
                }
            }
        } catch {
            var undo = RestoreUndo()
            if createDatabase {
                undo.attempt("database \(loadName)") { try admin.query("DROP DATABASE IF EXISTS \(quote(loadName))") }
            } else {
                // The target existed without tables (plan() checked) and MariaDB cannot roll back
                // DDL: the tables and views it holds now came from this failed load.
                undo.attempt("the tables and views loaded into \(loadName)") { try MariaDBRestorer.dropTablesAndViews(admin, database: loadName) }
            }
            for account in made.reversed() { undo.attempt(account.display) { try admin.query(try statements.dropAccount(account)) } }
            throw undo.error(error)
        }
        var keptAs: String?
        if replace {
            // plan() refused a snapshot or target with views, triggers, routines or events; a
            // snapshot without a fingerprint (an older kho) is checked here, before the swap.
            let unmovable = try MariaDBRestorer.unmovableObjects(admin, [original.database, loadName])
            if !unmovable.isEmpty {
                var undo = RestoreUndo()
                undo.attempt("database \(loadName)") { try admin.query("DROP DATABASE IF EXISTS \(quote(loadName))") }
                for account in made.reversed() { undo.attempt(account.display) { try admin.query(try statements.dropAccount(account)) } }
                let shown = unmovable.prefix(5).joined(separator: ", ") + (unmovable.count > 5 ? " and \(unmovable.count - 5) more" : "")
                throw undo.error(KhoError(.source, "Source \(sourceName): the dump loaded, but MariaDB cannot move views, triggers, routines or events between databases (\(shown)), so --replace cannot swap it in; \(original.database) was left as it was: restore into a new database name and point the application at it, or drop \(original.database) and restore again."))
            }
            let aside = "\(original.database)__kho_replaced_\(Int(Date().timeIntervalSince1970))"
            try admin.query("CREATE DATABASE \(quote(aside))")
            let old = try MariaDBManifest.names(admin, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", [original.database])
            let new = try MariaDBManifest.names(admin, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", [loadName])
            let moves = old.map { "\(quote(original.database)).\(quote($0)) TO \(quote(aside)).\(quote($0))" }
                + new.map { "\(quote(loadName)).\(quote($0)) TO \(quote(original.database)).\(quote($0))" }
            if !moves.isEmpty { try admin.query("RENAME TABLE \(moves.joined(separator: ", "))") }
            try admin.query("DROP DATABASE \(quote(loadName))")
            keptAs = aside
        }

        if let globals {
            let database = plan.database
            for grant in globals.grants {
                try admin.query(try statements.grant(grant, database: database, inPlace: !renamed))
            }
            let createdAccounts = Set(created.map(\.account))
            for grant in globals.roleGrants {
                let role = Account(user: grant.role, host: "", isRole: true)
                if createdAccounts.contains(grant.grantee) {
                    try admin.query(try statements.grantRole(grant))
                } else if createdAccounts.contains(role) && !grant.adminOption {
                    notes.append("\(statements.mapped(grant.grantee).display) existed and was left as it is, so the role \(statements.mapped(role).user) was not granted to it: \(try statements.grantRole(grant));")
                }
            }
            for details in created {
                if let sql = try statements.defaultRole(details) { try admin.query(sql) }
            }
            for details in kept where globals.grants.contains(where: { $0.grantee == details.account }) {
                notes.append("\(statements.mapped(details.account).display) existed on the target and was left as it is; it was given the recorded privileges on \(database).")
            }
            for details in created where !details.account.isRole && details.needsPassword && !request.options.rolePasswords {
                notes.append("\(statements.mapped(details.account).display) was created locked and without a password (the snapshot's hash is used only with --role-passwords): ALTER USER \(try statements.grantee(details.account)) IDENTIFIED BY '…'" + (details.accountLocked ? "" : " ACCOUNT UNLOCK") + ";")
            }
        }
        for event in filter.disabledEvents {
            notes.append("event \(plan.database).\(event) was enabled in the snapshot and was created DISABLED in this copy, so that it does not run beside \(filter.from ?? plan.sourceDatabase): ALTER EVENT \(quote(plan.database)).\(quote(event)) ENABLE;")
        }
        return LoadOutcome(bytes: bytes, replacedDatabaseKeptAs: keptAs, notes: notes)
    }

    func tables(_ plan: DatabaseRestorePlan, _ request: RestoreRequest) throws -> [DumpManifest.Table] {
        try MariaDBManifest.tables(try connect(), database: target.database, systemVersioned: request.recorded?.schemaFile != nil)
    }

    // MARK: fingerprints

    /// The restored database's fingerprint, read by the backup's code; and the recorded one as this
    /// restore should have brought it back: accounts under their mapped names, created accounts as
    /// created (locked without a password unless --role-passwords), kept accounts and their role
    /// grants as they are on the target, enabled events DISABLED in a copy under another name.
    /// Definers stay as recorded (a definer is not mapped).
    func fingerprints(_ plan: DatabaseRestorePlan, _ request: RestoreRequest, recorded: SchemaFingerprint) throws
        -> (expected: SchemaFingerprint, actual: SchemaFingerprint) {
        let connection = try connect()
        let statements = MariaDBStatements(connection: connection, roleMap: request.options.roleMap)
        let globals = try recordedGlobals(request)
        let actualGlobals = try MariaDBGlobalsReader.read(connection, database: target.database,
                                                          including: (globals?.accounts ?? []).map { statements.mapped($0.account) })
        let actual = try MariaDBSchema.fingerprint(connection, database: target.database, globals: actualGlobals)

        let accountKinds: Set<SchemaObjectKind> = [.user, .role, .grant]
        let renamed = plan.database != plan.sourceDatabase
        let enabled = MariaDBSchema.eventStatus("ENABLED"), disabled = MariaDBSchema.eventStatus("DISABLED")
        var objects: [SchemaFingerprint.Object] = recorded.objects.compactMap { object in
            if globals != nil && accountKinds.contains(object.kind) { return nil }
            if renamed && object.kind == .event && object.definition.hasPrefix(enabled + ";") {
                var copy = object
                copy.definition = disabled + object.definition.dropFirst(enabled.count)
                return copy
            }
            return object
        }
        if let globals {
            var expected = globals
            let actualAccounts = Dictionary(actualGlobals.accounts.map { ($0.account, $0) }) { first, _ in first }
            expected.accounts = globals.accounts.map { details in
                let account = statements.mapped(details.account)
                if loaded.kept.contains(account), let there = actualAccounts[account] { return there }
                var created = MariaDBStatements.asCreated(details, passwords: request.options.rolePasswords)
                created.account = account
                created.defaultRole = details.defaultRole.map { request.options.roleMap[$0] ?? $0 }
                return created
            }
            expected.grants = globals.grants.map { grant in
                var copy = grant
                copy.grantee = statements.mapped(grant.grantee)
                return copy
            }
            expected.roleGrants = globals.roleGrants.compactMap { grant in
                let member = statements.mapped(grant.grantee)
                guard !loaded.kept.contains(member) else { return nil }
                return MariaDBGlobals.RoleGrant(role: request.options.roleMap[grant.role] ?? grant.role, grantee: member, adminOption: grant.adminOption)
            } + actualGlobals.roleGrants.filter { loaded.kept.contains($0.grantee) }
            objects += MariaDBSchema.accountObjects(expected)
        }
        return (SchemaFingerprint(engine: .mariadb, objects: objects), actual)
    }
}

/// What the restoring login may do, from `information_schema.USER_PRIVILEGES` (its global
/// privileges, with whether it may grant each).
struct LoginPrivileges {
    let name: String
    private var privileges: [String: Bool] = [:]

    init(_ connection: MariaDBConnection) throws {
        name = try connection.value("SELECT CURRENT_USER()") ?? "?"
        for row in try connection.query("""
            SELECT PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema.USER_PRIVILEGES
            WHERE GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')
            """) {
            guard row.count == 2, let privilege = row[0] else { continue }
            privileges[privilege] = row[1] == "YES"
        }
    }

    func has(_ privilege: String) -> Bool { privileges[privilege] != nil }
    func grantable(_ privilege: String) -> Bool { privileges[privilege] == true }

    /// Whether a database-level CREATE of the login covers `database`.
    func mayCreate(_ connection: MariaDBConnection, database: String) throws -> Bool {
        try connection.value("""
            SELECT COUNT(*) FROM information_schema.SCHEMA_PRIVILEGES WHERE PRIVILEGE_TYPE = 'CREATE' AND ? LIKE TABLE_SCHEMA
            AND GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')
            """, [database]) != "0"
    }
}
