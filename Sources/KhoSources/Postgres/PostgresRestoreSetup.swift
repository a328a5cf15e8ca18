import Foundation
import Glibc
import KhoCore
import KhoSupport

/// What a PostgreSQL restore will do besides loading the dump, decided from the snapshot's globals
/// and the target server as it is now, before anything changes: which roles are created and which
/// exist and are kept, where tablespaces go, and what is refused. `plan()` shows it; `load()`
/// decides again (the same cheap queries) right before it acts.
struct PostgresRestoreSetup {
    /// The snapshot's globals; nil for a snapshot of a kho before issue 19.
    var globals: PostgresGlobals?
    /// An old snapshot's roles, by name only (its globals.sql's CREATE ROLE statements), that the
    /// target lacks: created NOLOGIN.
    var bareRoles: [String] = []
    var version: Int
    var superuser: Bool
    /// Recorded roles to create, each under its recorded name (a mapped one is renamed after the load).
    var create: [PostgresGlobals.Role] = []
    /// Recorded names of roles that exist on the target and are kept as they are.
    var kept: [String] = []
    /// Recorded role → name on the target (--map-role), only for roles being created.
    var roleMap: [String: String] = [:]
    /// Recorded tablespace → tablespace on the target, for every recorded tablespace.
    var tablespaceMap: [String: String] = [:]
    /// Extensions to create at the version the database had (not the target's default), where the
    /// target has that version.
    var extensionVersions: [String: String] = [:]
    var items: [DatabaseRestorePlan.Item] = []

    /// The role's name on the target.
    func targetName(_ recorded: String) -> String { roleMap[recorded] ?? recorded }

    static func examine(_ request: RestoreRequest, admin: PostgresConnection, exists: Bool, empty: Bool, createDatabase: Bool, swap: Bool) throws -> PostgresRestoreSetup {
        let options = request.options
        let facts = try admin.query("""
            SELECT current_setting('server_version_num'), r.rolsuper::text, r.rolcreatedb::text, r.rolcreaterole::text, current_user
            FROM pg_roles r WHERE r.rolname = current_user
            """).first ?? []
        let version = Int((facts.first ?? nil) ?? "") ?? 0
        func flag(_ i: Int) -> Bool { facts.count > i && facts[i] == "true" }
        let login = (facts.count > 4 ? facts[4] : nil) ?? request.target.user
        var setup = PostgresRestoreSetup(version: version, superuser: flag(1))
        let canCreateDatabases = flag(1) || flag(2), canCreateRoles = flag(1) || flag(3)
        let place = request.target.isSocket ? request.target.host : "\(request.target.host):\(request.target.port)"
        let database = request.target.database

        if let file = request.recorded?.globalsFile {
            setup.globals = try PostgresGlobals.decode(try request.files.read(file, limit: DatabaseRestore.jsonLimit), file: file)
        } else {
            if !options.roleMap.isEmpty || !options.tablespaceMap.isEmpty {
                setup.items.append(.init(.refuse, "snapshot", "This snapshot was taken by a kho that recorded no roles and tablespaces of the database: --map-role and --map-tablespace cannot be applied to it; restore without them."))
            }
            try setup.examineOldSnapshot(request, admin: admin)
        }
        let existingRoles = Set(try admin.query("SELECT rolname FROM pg_roles").compactMap { $0.first ?? nil })

        if let globals = setup.globals {
            try setup.examineRoles(globals, options: options, existing: existingRoles)
            try setup.examineTablespaces(globals, options: options, admin: admin, place: place)
            if createDatabase { try setup.examineLocale(globals.database, admin: admin, version: version) }
            else if exists && empty { try setup.compareExisting(globals.database, name: database, admin: admin) }
        }
        if createDatabase && !canCreateDatabases {
            setup.items.append(.init(.refuse, "login \(login)", "The login \(login) on \(place) may not create databases (it has neither CREATEDB nor SUPERUSER): restore as a user that may, or run ALTER ROLE \(SQLIdentifier.postgres(login)) CREATEDB on the target."))
        }
        let creating = setup.create.map(\.name) + setup.bareRoles
        if !creating.isEmpty && !canCreateRoles {
            setup.items.append(.init(.refuse, "login \(login)", "The login \(login) on \(place) may not create roles (it has neither CREATEROLE nor SUPERUSER), and the target lacks \(creating.joined(separator: ", ")): restore as a superuser, or create those roles first."))
        }
        let privileged = setup.create.filter { $0.superuser || $0.replication || $0.bypassRowSecurity }.map(\.name)
        if !privileged.isEmpty && !setup.superuser {
            setup.items.append(.init(.refuse, "login \(login)", "Only a superuser may create the roles \(privileged.joined(separator: ", ")) (SUPERUSER, REPLICATION or BYPASSRLS), and \(login) is not one: restore as a superuser."))
        }
        if !setup.superuser {
            setup.items.append(.init(.note, "login \(login)", "\(login) is not a superuser: the dump's ALTER … OWNER TO statements need it to be a member of every role that owns objects; if one fails, the load stops and nothing of the database is kept."))
        }
        if swap { try setup.examineSwap(request, admin: admin, login: login, superuser: setup.superuser, canCreateDatabases: canCreateDatabases) }
        try setup.examineSpace(request, admin: admin, place: place)
        try setup.examineExtensions(request, admin: admin)
        if setup.globals != nil || !setup.bareRoles.isEmpty {
            let created = setup.create.map { setup.targetName($0.name) } + setup.bareRoles
            if !created.isEmpty {
                if options.rolePasswords, setup.globals?.passwordsRecorded == true {
                    setup.items.append(.init(.note, "passwords", "roles are created with the password hashes recorded at backup (--role-passwords)"))
                } else if options.rolePasswords {
                    setup.items.append(.init(.note, "passwords", "the backup's login could not read password hashes (it is not a superuser): roles are created without passwords; set them with ALTER ROLE … PASSWORD"))
                } else {
                    setup.items.append(.init(.note, "passwords", "roles are created without passwords; set them with ALTER ROLE … PASSWORD, or restore with --role-passwords"))
                }
            }
        }
        return setup
    }

    /// Extensions whose recorded version is not the target's default: created at the recorded one
    /// when the target has it, else at the default, said in the plan (the schema comparison then
    /// names the difference).
    private mutating func examineExtensions(_ request: RestoreRequest, admin: PostgresConnection) throws {
        guard let file = request.recorded?.schemaFile else { return }
        let fingerprint = try SchemaFingerprint.decode(try request.files.read(file, limit: DatabaseRestore.jsonLimit), file: file)
        let recorded = fingerprint.objects.filter { $0.kind == .extension }
        guard !recorded.isEmpty else { return }
        var defaults: [String: String] = [:]
        for row in try admin.query("SELECT name, default_version FROM pg_available_extensions") {
            if row.count == 2, let name = row[0], let version = row[1] { defaults[name] = version }
        }
        var available = Set<String>()
        for row in try admin.query("SELECT name, version FROM pg_available_extension_versions") {
            if row.count == 2, let name = row[0], let version = row[1] { available.insert(name + "\u{0}" + version) }
        }
        for object in recorded {
            // try?: a definition that is not the JSON kho writes has no version to keep; the
            // schema comparison still compares it as text.
            guard let name = PostgresStatements.parseIdentifier(Array(object.name.utf8)),
                  case .object(let fields)? = try? JSON.decoder.decode(JSONValue.self, from: Data(object.definition.utf8)),
                  case .string(let version)? = fields["version"] else { continue }
            guard let defaultVersion = defaults[name] else {
                items.append(.init(.note, "extension \(name)", "not installed on the target server: the load stops at its CREATE EXTENSION; install the extension's package (version \(version)) first"))
                continue
            }
            guard version != defaultVersion else { continue }
            if available.contains(name + "\u{0}" + version) {
                extensionVersions[name] = version
                items.append(.init(.create, "extension \(name)", "at its recorded version \(version) (the target's default is \(defaultVersion))"))
            } else {
                items.append(.init(.note, "extension \(name)", "version \(version) is not available on the target: created at its default \(defaultVersion); the schema comparison will name the difference"))
            }
        }
    }

    /// Roles of a snapshot before issue 19: the names its globals.sql creates, nothing else.
    private mutating func examineOldSnapshot(_ request: RestoreRequest, admin: PostgresConnection) throws {
        let file = PostgresSource.clusterGlobalsFile
        guard request.dumpFile != file, request.files.size(file) != nil else {
            items.append(.init(.note, "roles", "This snapshot recorded no roles (it was taken with --no-globals by a kho before issue 19): objects owned by roles the target lacks make the load fail, and nothing is kept."))
            return
        }
        let names = PostgresStatements.rolesCreated(byGlobalsScript: try request.files.read(file, limit: 64 << 20))
        let existing = Set(try admin.query("SELECT rolname FROM pg_roles").compactMap { $0.first ?? nil })
        for name in names where !existing.contains(name) && !PostgresGlobals.isPredefined(name) {
            bareRoles.append(name)
            items.append(.init(.create, "role \(name)", "named by the snapshot's globals.sql (taken by a kho before issue 19): created NOLOGIN, without its attributes, memberships, settings or password"))
        }
        items.append(.init(.note, "database properties", "This snapshot was taken by a kho that did not record the database's properties: the database is created with the target's defaults (encoding, collation, owner, access)."))
    }

    private mutating func examineRoles(_ globals: PostgresGlobals, options: DatabaseRestoreOptions, existing: Set<String>) throws {
        let recordedNames = Set(globals.roles.map(\.name))
        var targets: [String: String] = [:]
        for (old, new) in options.roleMap.sorted(by: { $0.key < $1.key }) {
            if !recordedNames.contains(old) {
                items.append(.init(.refuse, "role \(old)", "--map-role \(old)=\(new): the snapshot records no role \(old) that the database needs (it needs \(globals.roles.map(\.name).joined(separator: ", "))): check the name."))
            } else if let other = targets[new] {
                items.append(.init(.refuse, "role \(new)", "--map-role maps both \(other) and \(old) to \(new): give each role a name of its own."))
            } else if recordedNames.contains(new) && options.roleMap[new] == nil {
                items.append(.init(.refuse, "role \(new)", "--map-role \(old)=\(new): \(new) is another role the database needs; map to a new name."))
            }
            targets[new] = old
        }
        for role in globals.roles {
            let name = role.name
            if let new = options.roleMap[name], new != name {
                if existing.contains(name) {
                    items.append(.init(.refuse, "role \(name)", "--map-role \(name)=\(new): the role \(name) exists on the target. kho maps a role by creating it under its recorded name for the load and renaming it to \(new) afterwards, which needs both names free: restore without mapping it (the existing \(name) is then kept), or restore onto a server without it."))
                } else if existing.contains(new) {
                    items.append(.init(.refuse, "role \(new)", "--map-role \(name)=\(new): the role \(new) exists on the target; kho maps a role only to a new role it creates: choose a name that does not exist, or create the objects' owner under \(name)."))
                } else {
                    roleMap[name] = new
                    create.append(role)
                    items.append(.init(.create, "role \(new)", "\(describe(role)), as \(name) in the snapshot (renamed after the load)"))
                }
            } else if existing.contains(name) {
                kept.append(name)
                items.append(.init(.keep, "role \(name)", "exists on the target and is kept as it is: attributes and memberships not changed"))
            } else {
                create.append(role)
                items.append(.init(.create, "role \(name)", describe(role)))
            }
        }
        let missingPredefined = Set(globals.roles.flatMap { $0.memberOf.map(\.group) }).filter { PostgresGlobals.isPredefined($0) && !existing.contains($0) }
        for name in missingPredefined.sorted() {
            items.append(.init(.note, "role \(name)", "a built-in role of the backed-up server that this server version lacks: memberships in it are left out"))
        }
    }

    func describe(_ role: PostgresGlobals.Role) -> String {
        var parts: [String] = [role.login ? "LOGIN" : "NOLOGIN"]
        if role.superuser { parts.append("SUPERUSER") }
        if role.createDatabase { parts.append("CREATEDB") }
        if role.createRole { parts.append("CREATEROLE") }
        if role.replication { parts.append("REPLICATION") }
        if role.bypassRowSecurity { parts.append("BYPASSRLS") }
        if !role.inherit { parts.append("NOINHERIT") }
        if role.connectionLimit >= 0 { parts.append("CONNECTION LIMIT \(role.connectionLimit)") }
        if let until = role.validUntil { parts.append("VALID UNTIL \(until)") }
        var text = parts.joined(separator: " ")
        if !role.memberOf.isEmpty { text += ", member of " + role.memberOf.map(\.group).uniqued().joined(separator: ", ") }
        if !role.settings.isEmpty { text += ", settings " + role.settings.joined(separator: ", ") }
        return text
    }

    private mutating func examineTablespaces(_ globals: PostgresGlobals, options: DatabaseRestoreOptions, admin: PostgresConnection, place: String) throws {
        let existing = Set(try admin.query("SELECT spcname FROM pg_tablespace").compactMap { $0.first ?? nil })
        let recorded = Set(globals.tablespaces.map(\.name)).union([globals.database.tablespace])
        for old in options.tablespaceMap.keys.sorted() where !recorded.contains(old) {
            items.append(.init(.refuse, "tablespace \(old)", "--map-tablespace \(old)=…: the database used no tablespace \(old) (it used \(recorded.sorted().joined(separator: ", "))): check the name."))
        }
        for name in recorded.sorted() {
            let mapped = options.tablespaceMap[name] ?? name
            if existing.contains(mapped) {
                tablespaceMap[name] = mapped
                if mapped != name {
                    items.append(.init(.keep, "tablespace \(mapped)", "exists on the target; what was in \(name) goes there (--map-tablespace)"))
                } else if name != "pg_default" {
                    items.append(.init(.keep, "tablespace \(name)", "exists on the target"))
                }
            } else if options.scratch {
                // A drill's scratch cluster has no tablespaces of its own: everything goes to its default.
                tablespaceMap[name] = "pg_default"
                items.append(.init(.note, "tablespace \(name)", "the scratch cluster has no tablespace \(name): its objects are restored into pg_default"))
            } else if mapped != name {
                items.append(.init(.refuse, "tablespace \(mapped)", "The tablespace \(mapped) (--map-tablespace \(name)=\(mapped)) does not exist on \(place): create it there first, or map \(name) to a tablespace that exists (pg_default always does)."))
            } else {
                let location = globals.tablespaces.first { $0.name == name }?.location.map { " (it was at \($0) on the backed-up server)" } ?? ""
                items.append(.init(.refuse, "tablespace \(name)", "The tablespace \(name), which the database uses\(location), does not exist on \(place): create it there first (CREATE TABLESPACE), or pass --map-tablespace \(name)=pg_default (or another tablespace that exists) to put its objects there."))
            }
        }
    }

    private mutating func examineLocale(_ database: PostgresGlobals.Database, admin: PostgresConnection, version: Int) throws {
        let provider = database.localeProvider ?? "libc"
        let subject = "database encoding and locale"
        switch provider {
        case "libc": break
        case "icu":
            if version < 150000 {
                items.append(.init(.refuse, subject, "The database uses the ICU locale \(database.locale ?? "") as its collation provider, which PostgreSQL \(version / 10000) cannot give a database (15 and later can): restore onto PostgreSQL 15 or later."))
            } else if try admin.value("SELECT count(*) FROM pg_collation WHERE collprovider = 'i'") == "0" {
                items.append(.init(.refuse, subject, "The database uses the ICU locale \(database.locale ?? ""), and the target server was built without ICU (it has no ICU collations): restore onto a server built with ICU (Debian's is)."))
            }
            if database.icuRules != nil && version < 160000 {
                items.append(.init(.refuse, subject, "The database has ICU collation rules, which PostgreSQL \(version / 10000) does not support (16 and later do): restore onto PostgreSQL 16 or later."))
            }
        case "builtin":
            if version < 170000 {
                items.append(.init(.refuse, subject, "The database uses the builtin collation provider, which PostgreSQL \(version / 10000) lacks (17 and later have it): restore onto PostgreSQL 17 or later."))
            }
        default:
            items.append(.init(.refuse, subject, "The snapshot names the locale provider \(provider.debugDescription), which kho does not know: the globals file was not written by kho; do not restore from it."))
        }
        for (what, value) in [("LC_COLLATE", database.collate), ("LC_CTYPE", database.ctype)] where !["C", "POSIX", "C.UTF-8", "C.utf8"].contains(value) {
            let known = try admin.value("SELECT count(*) FROM pg_collation WHERE collprovider = 'c' AND (collcollate = $1 OR collctype = $1)", [value]) ?? "0"
            if known == "0" {
                items.append(.init(.note, subject, "\(what) \(value) is not among the target's libc collations: if its operating system lacks that locale, CREATE DATABASE fails before anything is loaded (install the locale, e.g. with dpkg-reconfigure locales, and restart PostgreSQL)."))
            }
        }
        var text = "\(database.encoding), LC_COLLATE \(database.collate), LC_CTYPE \(database.ctype)"
        if provider != "libc" { text += ", \(provider) locale \(database.locale ?? "")" }
        if let rules = database.icuRules { text += " with rules \(rules)" }
        items.append(.init(.create, "database properties", "\(text); owner \(targetName(database.owner)), connection limit \(database.connectionLimit)\(database.acl == nil ? "" : ", its access list")\(database.comment == nil ? "" : ", its comment")\(database.settings.isEmpty && database.roleSettings.isEmpty ? "" : ", its settings")"))
    }

    /// Loading into an existing empty database: its encoding and collation stay as they are; say
    /// so when they differ from the recorded ones.
    private mutating func compareExisting(_ database: PostgresGlobals.Database, name: String, admin: PostgresConnection) throws {
        guard let row = try admin.query("SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = $1",
                                        [name]).first, row.count == 3 else { return }
        let existing = "\(row[0] ?? ""), LC_COLLATE \(row[1] ?? ""), LC_CTYPE \(row[2] ?? "")"
        let recorded = "\(database.encoding), LC_COLLATE \(database.collate), LC_CTYPE \(database.ctype)"
        if existing != recorded {
            items.append(.init(.note, "database \(name)", "the existing empty database keeps its \(existing) (recorded: \(recorded)); to get the recorded ones, drop it and let the restore create it"))
        }
        items.append(.init(.create, "database properties", "owner \(targetName(database.owner)), connection limit \(database.connectionLimit)\(database.acl == nil ? "" : ", its access list")\(database.comment == nil ? "" : ", its comment")\(database.settings.isEmpty && database.roleSettings.isEmpty ? "" : ", its settings") are applied to the existing database"))
    }

    private mutating func examineSwap(_ request: RestoreRequest, admin: PostgresConnection, login: String, superuser: Bool, canCreateDatabases: Bool) throws {
        let name = request.target.database
        let others = try admin.value("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", [name]) ?? "0"
        if others != "0" {
            items.append(.init(.note, "database \(name)", "\(others) sessions are connected to it now: those still connected at the swap are ended (pg_terminate_backend)"))
        }
        let owner = try admin.value("SELECT pg_has_role(current_user, datdba, 'MEMBER')::text FROM pg_database WHERE datname = $1", [name]) == "true"
        if !superuser && !(owner && canCreateDatabases) {
            items.append(.init(.refuse, "database \(name)", "--replace renames \(name) aside, which only its owner (with CREATEDB) or a superuser may do, and \(login) is neither: restore as a superuser."))
        }
    }

    /// The space the database took at backup against what is free where the target keeps its
    /// data, when the server runs on this machine.
    private mutating func examineSpace(_ request: RestoreRequest, admin: PostgresConnection, place: String) throws {
        guard let size = request.recorded?.sizeBytes, size > 0 else { return }
        let host = request.target.host
        let local = request.target.isSocket || ["127.0.0.1", "localhost", "::1"].contains(host)
        let readable = try admin.value("SELECT (pg_has_role(current_user, 'pg_read_all_settings', 'MEMBER') OR rolsuper)::text FROM pg_roles WHERE rolname = current_user") == "true"
        var directory: String?
        if local && readable {
            let tablespace = globals.map { tablespaceMap[$0.database.tablespace] ?? $0.database.tablespace } ?? "pg_default"
            if tablespace == "pg_default" {
                directory = try admin.value("SELECT current_setting('data_directory')")
            } else {
                directory = try admin.value("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = $1", [tablespace])
            }
        }
        var info = statvfs()
        guard let directory, !directory.isEmpty, statvfs(directory, &info) == 0 else {
            items.append(.init(.note, "disk space", "not checked (\(local ? "kho may not read where the server keeps its data" : "the server is not on this machine")): the database took \(ByteCount.text(size)) at backup; make sure \(place) has that much free"))
            return
        }
        let free = Int64(info.f_bavail) * Int64(info.f_frsize)
        if free < size {
            items.append(.init(.refuse, "disk space", "The database took \(ByteCount.text(size)) at backup and \(directory) has \(ByteCount.text(free)) free: free some space first (the load would fill the disk)."))
        } else {
            items.append(.init(.note, "disk space", "\(ByteCount.text(free)) free in \(directory); the database took \(ByteCount.text(size)) at backup"))
        }
    }
}

enum ByteCount {
    static func text(_ bytes: Int64) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(bytes) bytes" : String(format: "%.1f", value) + " " + units[unit]
    }
}
