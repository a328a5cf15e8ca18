import Foundation
import KhoCore
import KhoSupport

/// What a PostgreSQL database needs besides its dump to come back whole on a fresh server, read in
/// the dump's snapshot and stored as `<database>.globals.json` beside the dump (the manifest's
/// `globalsFile`): the database's own properties, which `pg_dump` without `--create` leaves out,
/// the roles it needs, and the tablespaces it uses.
///
/// Password hashes are in this file only (when the backup's login could read them): it lives,
/// encrypted, in the snapshot's tree; the manifest, which `kho snapshots --json` prints, never
/// holds one.
public struct PostgresGlobals: Codable, Sendable, Equatable {
    /// One privilege of the database's ACL (aclexplode): grantee nil is PUBLIC.
    public struct Privilege: Codable, Sendable, Equatable {
        public var grantee: String?
        public var grantor: String
        public var privilege: String
        public var grantable: Bool
    }

    /// `ALTER ROLE role IN DATABASE db SET …`: the settings one role has in this database.
    public struct RoleSettings: Codable, Sendable, Equatable {
        public var role: String
        /// As stored: `name=value`.
        public var settings: [String]
    }

    public struct Database: Codable, Sendable, Equatable {
        public var name: String
        public var owner: String
        public var encoding: String
        public var collate: String
        public var ctype: String
        /// `libc`, `icu` or `builtin`; nil before PostgreSQL 15 (always libc there).
        public var localeProvider: String?
        /// The ICU (or builtin) locale; nil for libc.
        public var locale: String?
        /// ICU tailoring rules (PostgreSQL 16 and later).
        public var icuRules: String?
        public var connectionLimit: Int
        public var isTemplate: Bool
        public var allowConnections: Bool
        public var tablespace: String
        public var comment: String?
        /// nil when the database has the default ACL (CONNECT and TEMPORARY for PUBLIC, all for
        /// the owner).
        public var acl: [Privilege]?
        /// `ALTER DATABASE db SET …`, as stored: `name=value`.
        public var settings: [String]
        public var roleSettings: [RoleSettings]
    }

    public struct Membership: Codable, Sendable, Equatable {
        /// The group role this role is a member of.
        public var group: String
        public var admin: Bool
        /// PostgreSQL 16 and later: whether the member inherits the group's privileges, and may
        /// SET ROLE to it; nil before.
        public var inherit: Bool?
        public var set: Bool?
        public var grantor: String?
    }

    public struct Role: Codable, Sendable, Equatable {
        public var name: String
        public var superuser: Bool
        public var inherit: Bool
        public var createRole: Bool
        public var createDatabase: Bool
        public var login: Bool
        public var replication: Bool
        public var bypassRowSecurity: Bool
        public var connectionLimit: Int
        /// UTC, `YYYY-MM-DD HH:MM:SS.ffffff+00`, or `infinity`; nil when unlimited.
        public var validUntil: String?
        /// `ALTER ROLE role SET …` for every database, as stored: `name=value`.
        public var settings: [String]
        /// Memberships in roles that are recorded here too, or built in (pg_read_all_data …).
        public var memberOf: [Membership]
        /// The hash from pg_authid (SCRAM or MD5), only when the backup's login could read it.
        public var passwordHash: String?
        /// The cluster's bootstrap superuser (OID 10; `postgres` on most servers).
        public var bootstrap: Bool
    }

    public struct Tablespace: Codable, Sendable, Equatable {
        public var name: String
        public var owner: String
        /// Where it was on the backed-up server, for information: a restore maps tablespaces by
        /// name, never creates them.
        public var location: String?
    }

    /// The format of this file; 1 is the first.
    public var version: Int
    public var serverVersionNumber: Int
    public var database: Database
    /// The roles the database needs: its owner, every role that owns something in it, holds a
    /// privilege or a policy, or has settings for it, and their memberships' closure (the groups
    /// they are members of and, recursively, the members of those), without built-in roles.
    public var roles: [Role]
    public var tablespaces: [Tablespace]
    /// Whether password hashes could be read (the backup's login is a superuser).
    public var passwordsRecorded: Bool

    public func encoded() throws -> [UInt8] { Array(try JSON.encoder.encode(self)) }

    public static func decode(_ bytes: [UInt8], file: String) throws -> PostgresGlobals {
        do {
            return try JSON.decoder.decode(PostgresGlobals.self, from: Data(bytes))
        } catch {
            throw KhoError(.integrity, "The globals file \(file) of the snapshot cannot be read (\(error)): run `kho check --read-data`; a kho newer than this one may have written it.")
        }
    }

    public func role(_ name: String) -> Role? { roles.first { $0.name == name } }
}

extension PostgresGlobals {
    /// Whether `name` is one of the server's own predefined roles (pg_read_all_data …), which every
    /// server of a version has and no restore creates.
    static func isPredefined(_ name: String) -> Bool { name.hasPrefix("pg_") }

    /// Reads the globals of the connected database, in the connection's transaction (the dump's
    /// snapshot at backup). `referenced` are the roles the schema fingerprint names (owners,
    /// grantees, policy roles); the catalogs' own dependency records add the rest.
    static func read(_ connection: PostgresConnection, referenced: Set<String>) throws -> PostgresGlobals {
        let version = Int(try connection.value("SELECT current_setting('server_version_num')") ?? "") ?? 0
        let provider = version >= 150000 ? "CASE d.datlocprovider WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin' ELSE 'libc' END" : "NULL"
        let locale = version >= 170000 ? "d.datlocale" : version >= 150000 ? "d.daticulocale" : "NULL"
        let rules = version >= 160000 ? "d.daticurules" : "NULL"
        guard let row = try connection.query("""
            SELECT d.datname, pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
                   \(provider), \(locale), \(rules), d.datconnlimit::text, d.datistemplate::text, d.datallowconn::text,
                   t.spcname, shobj_description(d.oid, 'pg_database'), (d.datacl IS NULL)::text, d.oid::text
            FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = current_database()
            """).first, row.count == 15 else {
            throw KhoError(.source, "Source \(connection.source): PostgreSQL returned no row for the current database: report this as a bug.")
        }
        func text(_ i: Int) -> String { row[i] ?? "" }
        let databaseOID = text(14)
        var acl: [Privilege]?
        if text(13) == "false" {
            acl = try connection.query("""
                SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, pg_get_userbyid(a.grantor),
                       a.privilege_type, a.is_grantable::text
                FROM pg_database d, aclexplode(d.datacl) a WHERE d.oid = $1::oid ORDER BY 1 NULLS FIRST, 3, 2
                """, [databaseOID]).map { Privilege(grantee: $0[0], grantor: $0[1] ?? "", privilege: $0[2] ?? "", grantable: $0[3] == "true") }
        }
        var settings: [String] = []
        var roleSettings: [RoleSettings] = []
        for setting in try connection.query("""
            SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, array_to_json(s.setconfig)::text
            FROM pg_db_role_setting s WHERE s.setdatabase = $1::oid ORDER BY 1 NULLS FIRST
            """, [databaseOID]) {
            let values = try decodeArray(setting[1], connection)
            if let role = setting[0] { roleSettings.append(RoleSettings(role: role, settings: values)) } else { settings = values }
        }
        let database = Database(
            name: text(0), owner: text(1), encoding: text(2), collate: text(3), ctype: text(4), localeProvider: row[5], locale: row[6],
            icuRules: row[7], connectionLimit: Int(text(8)) ?? -1, isTemplate: text(9) == "true", allowConnections: text(10) == "true",
            tablespace: text(11), comment: row[12], acl: acl, settings: settings, roleSettings: roleSettings)

        // The roles: named by the schema, by the catalogs' dependencies on roles (owners, ACLs,
        // policies, also of objects the fingerprint does not describe), by settings; then the
        // groups they belong to, and the members of those, without expanding built-in roles.
        var seeds = referenced
        seeds.insert(database.owner)
        for privilege in acl ?? [] { if let grantee = privilege.grantee { seeds.insert(grantee) } }
        for setting in roleSettings { seeds.insert(setting.role) }
        for dependent in try connection.query("""
            SELECT DISTINCT pg_get_userbyid(s.refobjid) FROM pg_shdepend s
            WHERE s.refclassid = 'pg_authid'::regclass AND (s.dbid = $1::oid OR (s.dbid = 0 AND s.classid = 'pg_database'::regclass AND s.objid = $1::oid))
            """, [databaseOID]) {
            if let name = dependent[0] { seeds.insert(name) }
        }
        let seedJSON = String(decoding: try JSON.encoder.encode(seeds.sorted()), as: UTF8.self)
        let canReadPasswords = try connection.value("SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')::text") == "true"
        let password = canReadPasswords ? "(SELECT a.rolpassword FROM pg_authid a WHERE a.oid = r.oid)" : "NULL"
        let membershipOptions = version >= 160000 ? "m.inherit_option::text, m.set_option::text" : "NULL, NULL"
        let roleRows = try connection.query("""
            WITH RECURSIVE seeds AS (
                SELECT r.oid FROM pg_roles r WHERE r.rolname IN (SELECT json_array_elements_text($1::json))
            ), up(oid) AS (
                SELECT oid FROM seeds
                UNION SELECT m.roleid FROM pg_auth_members m JOIN up ON m.member = up.oid
                    JOIN pg_roles g ON g.oid = up.oid WHERE g.rolname !~ '^pg_'
            ), down(oid) AS (
                SELECT oid FROM up
                UNION SELECT m.member FROM pg_auth_members m JOIN down ON m.roleid = down.oid
                    JOIN pg_roles g ON g.oid = down.oid WHERE g.rolname !~ '^pg_'
            )
            SELECT r.rolname, r.rolsuper::text, r.rolinherit::text, r.rolcreaterole::text, r.rolcreatedb::text, r.rolcanlogin::text,
                   r.rolreplication::text, r.rolbypassrls::text, r.rolconnlimit::text,
                   CASE WHEN r.rolvaliduntil IS NULL THEN NULL WHEN NOT isfinite(r.rolvaliduntil) THEN r.rolvaliduntil::text
                        ELSE to_char(r.rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' END,
                   (SELECT array_to_json(s.setconfig)::text FROM pg_db_role_setting s WHERE s.setrole = r.oid AND s.setdatabase = 0),
                   (SELECT json_agg(json_build_array(g.rolname, m.admin_option::text, \(membershipOptions),
                                                     CASE WHEN m.grantor = 0 THEN NULL ELSE pg_get_userbyid(m.grantor) END)
                                    ORDER BY g.rolname, m.grantor)::text
                    FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                    WHERE m.member = r.oid AND (g.oid IN (SELECT oid FROM down) OR g.rolname ~ '^pg_')),
                   \(password), (r.oid = 10)::text
            FROM pg_roles r WHERE r.oid IN (SELECT oid FROM down) AND r.rolname !~ '^pg_'
            ORDER BY r.rolname
            """, [seedJSON])
        var roles: [Role] = []
        for row in roleRows {
            func text(_ i: Int) -> String { row[i] ?? "" }
            var memberOf: [Membership] = []
            if let json = row[11] {
                let entries = try JSON.decoder.decode([[String?]].self, from: Data(json.utf8))
                for entry in entries where entry.count == 5 {
                    memberOf.append(Membership(group: entry[0] ?? "", admin: entry[1] == "true", inherit: entry[2].map { $0 == "true" },
                                               set: entry[3].map { $0 == "true" }, grantor: entry[4]))
                }
            }
            roles.append(Role(name: text(0), superuser: text(1) == "true", inherit: text(2) == "true", createRole: text(3) == "true",
                              createDatabase: text(4) == "true", login: text(5) == "true", replication: text(6) == "true",
                              bypassRowSecurity: text(7) == "true", connectionLimit: Int(text(8)) ?? -1, validUntil: row[9],
                              settings: try decodeArray(row[10], connection), memberOf: memberOf, passwordHash: row[12],
                              bootstrap: text(13) == "true"))
        }
        let tablespaces = try connection.query("""
            SELECT t.spcname, pg_get_userbyid(t.spcowner), NULLIF(pg_tablespace_location(t.oid), '')
            FROM pg_tablespace t
            WHERE t.oid = (SELECT dattablespace FROM pg_database WHERE oid = $1::oid)
               OR t.oid IN (SELECT c.reltablespace FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE c.reltablespace <> 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                              AND n.nspname !~ '^pg_toast')
            ORDER BY 1
            """, [databaseOID]).map { Tablespace(name: $0[0] ?? "", owner: $0[1] ?? "", location: $0[2]) }
        return PostgresGlobals(version: 1, serverVersionNumber: version, database: database, roles: roles, tablespaces: tablespaces,
                               passwordsRecorded: canReadPasswords)
    }

    private static func decodeArray(_ json: String?, _ connection: PostgresConnection) throws -> [String] {
        guard let json else { return [] }
        do {
            return try JSON.decoder.decode([String].self, from: Data(json.utf8))
        } catch {
            throw KhoError(.source, "Source \(connection.source): PostgreSQL returned settings kho cannot read (\(error)): report this as a bug.")
        }
    }
}
