import Foundation
import KhoCore
import KhoSupport

/// Reads `MariaDBGlobals` from a server's catalogs (`information_schema`, `mysql.*`): at backup in
/// the dump's transaction, and after a restore to compare what came back. Needs SELECT on `mysql`.
///
/// Which accounts a database needs: every account with privileges on it (`mysql.db` rows whose
/// database is its name, or a pattern that matches it; `mysql.tables_priv`, `columns_priv`,
/// `procs_priv` rows of its name), every account that defines one of its views, routines, triggers
/// or events, then, until nothing changes, every role granted to a needed account and every account
/// granted a needed role as a member. A role's creator holds it WITH ADMIN OPTION (MariaDB grants it
/// so on CREATE ROLE): such administrator grants do not make the administrator needed.
enum MariaDBGlobalsReader {
    typealias Account = MariaDBGlobals.Account

    /// `mysql.db` privilege columns and the privilege each stands for.
    static let databaseColumns: [(column: String, privilege: String)] = [
        ("Select_priv", "SELECT"), ("Insert_priv", "INSERT"), ("Update_priv", "UPDATE"), ("Delete_priv", "DELETE"),
        ("Create_priv", "CREATE"), ("Drop_priv", "DROP"), ("References_priv", "REFERENCES"), ("Index_priv", "INDEX"),
        ("Alter_priv", "ALTER"), ("Create_tmp_table_priv", "CREATE TEMPORARY TABLES"), ("Lock_tables_priv", "LOCK TABLES"),
        ("Create_view_priv", "CREATE VIEW"), ("Show_view_priv", "SHOW VIEW"), ("Create_routine_priv", "CREATE ROUTINE"),
        ("Alter_routine_priv", "ALTER ROUTINE"), ("Execute_priv", "EXECUTE"), ("Event_priv", "EVENT"), ("Trigger_priv", "TRIGGER"),
        ("Delete_history_priv", "DELETE HISTORY"),
    ]

    /// Every privilege a restore may write into a GRANT: the statement text holds nothing else.
    static let knownPrivileges: Set<String> = Set(databaseColumns.map(\.privilege))

    /// A SET value of `tables_priv`, `columns_priv` or `procs_priv` ("Select,Show view,Grant") as
    /// privileges and the grant option.
    static func privileges(fromSet value: String?) -> (privileges: [String], grantOption: Bool) {
        var privileges: [String] = []
        var option = false
        for part in (value ?? "").split(separator: ",") {
            switch part.lowercased() {
            case "grant": option = true
            case "delete versioning rows": privileges.append("DELETE HISTORY")
            default: privileges.append(part.uppercased())
            }
        }
        return (privileges.sorted(), option)
    }

    /// The database name a `mysql.db` pattern stands for when it has no unescaped `_` or `%`.
    static func exactName(_ pattern: String) -> String? {
        var name = ""
        var escaped = false
        for character in pattern {
            if escaped { name.append(character); escaped = false; continue }
            if character == "\\" { escaped = true; continue }
            if character == "_" || character == "%" { return nil }
            name.append(character)
        }
        return escaped ? nil : name
    }

    /// `mysql.global_priv.Priv`, the keys kho reads.
    private struct Privileges: Decodable {
        struct Alternative: Decodable {
            var plugin: String?
            var authentication_string: String?
        }
        var plugin: String?
        var authentication_string: String?
        var auth_or: [Alternative]?
        var ssl_type: Int?
        var ssl_cipher: String?
        var x509_issuer: String?
        var x509_subject: String?
        var max_questions: Int64?
        var max_updates: Int64?
        var max_connections: Int64?
        var max_user_connections: Int64?
        var max_statement_time: Double?
        var account_locked: Bool?
        var password_last_changed: Int64?
        var password_lifetime: Int64?
        var default_role: String?
        var is_role: Bool?
    }

    /// The globals of `database` on the server behind `connection`. `including`: accounts to read
    /// even when nothing on the server ties them to the database (after a restore: the accounts the
    /// snapshot named, so that one that lost every grant still shows).
    static func read(_ connection: MariaDBConnection, database: String, including: [Account] = []) throws -> MariaDBGlobals {
        let properties = try connection.query("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, COALESCE(SCHEMA_COMMENT, '') FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", [database])
        guard let property = properties.first, property.count == 3 else {
            throw KhoError(.source, "Source \(connection.source): the database \(database) does not exist on the server: check the database name.")
        }

        // Every account of the server, with its details as the server stores them.
        var stored: [Account: Privileges] = [:]
        for row in try connection.query("SELECT User, Host, Priv FROM mysql.global_priv") {
            guard row.count == 3, let user = row[0], let host = row[1] else { continue }
            let privileges = (try? JSONDecoder().decode(Privileges.self, from: Data((row[2] ?? "{}").utf8)))
            // try?: a Priv that is not JSON (the server refuses to store one) is an account with defaults.
            let details = privileges ?? Privileges()
            stored[Account(user: user, host: host, isRole: details.is_role ?? false)] = details
        }
        func account(_ user: String, _ host: String) -> Account {
            let role = Account(user: user, host: host, isRole: true)
            return host.isEmpty && stored[role] != nil ? role : Account(user: user, host: host, isRole: false)
        }

        var reasons: [Account: [String]] = [:]
        func need(_ account: Account, _ reason: String) {
            guard stored[account] != nil else { return }
            if reasons[account]?.contains(reason) != true { reasons[account, default: []].append(reason) }
        }

        // Privileges on a table or routine outlive it in mysql.* (DROP TABLE leaves them): only
        // those on objects that exist are the database's.
        let tables = Set(try MariaDBManifest.names(connection, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", [database]))
        let routines = Set(try connection.query("SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?", [database])
            .map { "\(($0.first ?? nil) ?? "") \(($0.last ?? nil) ?? "")".lowercased() })

        var grants: [MariaDBGlobals.Grant] = []
        var wildcards: [MariaDBGlobals.WildcardGrant] = []
        let columns = databaseColumns.map { "\($0.column) = 'Y'" }.joined(separator: ", ")
        for row in try connection.query("SELECT Db, User, Host, Grant_priv = 'Y', \(columns) FROM mysql.db WHERE Db = ? OR ? LIKE Db ORDER BY Db, User, Host", [database, database]) {
            guard row.count == 4 + databaseColumns.count, let pattern = row[0], let user = row[1], let host = row[2] else { continue }
            let grantee = account(user, host)
            guard stored[grantee] != nil else { continue }
            let privileges = databaseColumns.enumerated().filter { row[4 + $0.offset] == "1" }.map(\.element.privilege).sorted()
            let option = row[3] == "1"
            if pattern == database || exactName(pattern) == database {
                grants.append(.init(level: .database, object: nil, column: nil, grantee: grantee, privileges: privileges, grantOption: option, spelling: pattern))
                need(grantee, "privileges on the database")
            } else {
                wildcards.append(.init(pattern: pattern, grantee: grantee, privileges: privileges, grantOption: option))
                need(grantee, "privileges on the databases matching \(pattern)")
            }
        }
        for row in try connection.query("SELECT User, Host, Table_name, Table_priv FROM mysql.tables_priv WHERE Db = ? ORDER BY Table_name, User, Host", [database]) {
            guard row.count == 4, let user = row[0], let host = row[1], let table = row[2] else { continue }
            let grantee = account(user, host)
            let (privileges, option) = privileges(fromSet: row[3])
            guard stored[grantee] != nil, !privileges.isEmpty || option, tables.contains(table) else { continue }
            grants.append(.init(level: .table, object: table, column: nil, grantee: grantee, privileges: privileges, grantOption: option))
            need(grantee, "privileges on table \(table)")
        }
        for row in try connection.query("SELECT User, Host, Table_name, Column_name, Column_priv FROM mysql.columns_priv WHERE Db = ? ORDER BY Table_name, Column_name, User, Host", [database]) {
            guard row.count == 5, let user = row[0], let host = row[1], let table = row[2], let column = row[3] else { continue }
            let grantee = account(user, host)
            let (privileges, _) = privileges(fromSet: row[4])
            guard stored[grantee] != nil, !privileges.isEmpty, tables.contains(table) else { continue }
            grants.append(.init(level: .column, object: table, column: column, grantee: grantee, privileges: privileges, grantOption: false))
            need(grantee, "privileges on column \(table).\(column)")
        }
        // MariaDB 10.11 stores a GRANT … ON PROCEDURE's database name in procs_priv as if its UTF-8
        // bytes were latin1 (`kho bạc` as `kho bÃ¡Âº¡c`), while mysql.db holds it as written: both match.
        for row in try connection.query("SELECT User, Host, Routine_name, Routine_type, Proc_priv FROM mysql.procs_priv WHERE Db IN (?, CONVERT(BINARY ? USING latin1)) ORDER BY Routine_type, Routine_name, User, Host", [database, database]) {
            guard row.count == 5, let user = row[0], let host = row[1], let routine = row[2],
                  let level = MariaDBGlobals.Level(rawValue: (row[3] ?? "").lowercased()) else { continue }
            let grantee = account(user, host)
            let (privileges, option) = privileges(fromSet: row[4])
            guard stored[grantee] != nil, !privileges.isEmpty || option, routines.contains("\(level.rawValue) \(routine)".lowercased()) else { continue }
            grants.append(.init(level: level, object: routine, column: nil, grantee: grantee, privileges: privileges, grantOption: option))
            need(grantee, "privileges on \(level.rawValue) \(routine)")
        }

        // Definers, as information_schema writes them: user@host, or a role's name.
        var missingDefiners: Set<String> = []
        for row in try connection.query("""
            SELECT 'view', TABLE_NAME, DEFINER FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ?
            UNION ALL SELECT LOWER(ROUTINE_TYPE), ROUTINE_NAME, DEFINER FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?
            UNION ALL SELECT 'trigger', TRIGGER_NAME, DEFINER FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?
            UNION ALL SELECT 'event', EVENT_NAME, DEFINER FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?
            """, [database, database, database, database]) {
            guard row.count == 3, let kind = row[0], let name = row[1], let definer = row[2], !definer.isEmpty else { continue }
            let definerAccount: Account
            if let at = definer.lastIndex(of: "@") {
                definerAccount = account(String(definer[..<at]), String(definer[definer.index(after: at)...]))
            } else {
                definerAccount = account(definer, "")
            }
            if stored[definerAccount] == nil { missingDefiners.insert(definer); continue }
            need(definerAccount, "definer of \(kind) \(name)")
        }
        for extra in including { need(extra, "named by the snapshot") }

        var mappings: [(member: Account, role: Account, admin: Bool)] = []
        for row in try connection.query("SELECT User, Host, Role, Admin_option = 'Y' FROM mysql.roles_mapping ORDER BY Role, User, Host") {
            guard row.count == 4, let user = row[0], let host = row[1], let role = row[2] else { continue }
            mappings.append((account(user, host), Account(user: role, host: "", isRole: true), row[3] == "1"))
        }
        var changed = true
        while changed {
            changed = false
            for mapping in mappings where stored[mapping.member] != nil && stored[mapping.role] != nil {
                if reasons[mapping.member] != nil && reasons[mapping.role] == nil {
                    need(mapping.role, "granted to \(mapping.member.display)")
                    changed = true
                } else if reasons[mapping.role] != nil && reasons[mapping.member] == nil && !mapping.admin {
                    need(mapping.member, "has \(mapping.role.display)")
                    changed = true
                }
            }
        }
        let roleGrants = mappings.filter { reasons[$0.member] != nil && reasons[$0.role] != nil }
            .map { MariaDBGlobals.RoleGrant(role: $0.role.user, grantee: $0.member, adminOption: $0.admin) }

        var accounts: [MariaDBGlobals.AccountDetails] = []
        for (account, why) in reasons.sorted(by: { ($0.key.isRole ? 1 : 0, $0.key.user, $0.key.host) < ($1.key.isRole ? 1 : 0, $1.key.user, $1.key.host) }) {
            guard let privileges = stored[account] else { continue }
            accounts.append(try details(connection, account, privileges, reasons: why))
        }
        return MariaDBGlobals(database: database, characterSet: property[0] ?? "", collation: property[1] ?? "", comment: property[2] ?? "",
                              accounts: accounts, grants: grants, roleGrants: roleGrants, wildcardGrants: wildcards,
                              missingDefiners: missingDefiners.sorted())
    }

    private static func details(_ connection: MariaDBConnection, _ account: Account, _ stored: Privileges, reasons: [String]) throws -> MariaDBGlobals.AccountDetails {
        var authentications: [MariaDBGlobals.Authentication] = []
        if !account.isRole {
            let main = MariaDBGlobals.Authentication(plugin: stored.plugin ?? "mysql_native_password", string: stored.authentication_string ?? "")
            if let alternatives = stored.auth_or, !alternatives.isEmpty {
                // An empty element stands for the main plugin, in its place in the order.
                authentications = alternatives.map { $0.plugin == nil ? main : .init(plugin: $0.plugin!, string: $0.authentication_string ?? "") }
            } else {
                authentications = [main]
            }
        }
        let name = account.isRole ? try connection.literal(account.user) : "\(try connection.literal(account.user))@\(try connection.literal(account.host))"
        var showCreate: String?
        if !account.isRole { showCreate = try connection.value("SHOW CREATE USER \(name)") }
        var global: String?
        for row in try connection.query("SHOW GRANTS FOR \(name)") {
            guard let line = row.first ?? nil, line.hasPrefix("GRANT "), let on = line.range(of: " ON *.* TO ") else { continue }
            let privileges = String(line[..<on.lowerBound])
            if !privileges.contains("`") && privileges != "GRANT USAGE" { global = privileges + " ON *.*" }
        }
        return MariaDBGlobals.AccountDetails(
            account: account, reasons: reasons, authentications: authentications,
            sslType: stored.ssl_type ?? 0, sslCipher: stored.ssl_cipher ?? "", x509Issuer: stored.x509_issuer ?? "", x509Subject: stored.x509_subject ?? "",
            maxQuestions: stored.max_questions ?? 0, maxUpdates: stored.max_updates ?? 0, maxConnections: stored.max_connections ?? 0,
            maxUserConnections: stored.max_user_connections ?? 0, maxStatementTime: stored.max_statement_time ?? 0,
            accountLocked: stored.account_locked ?? false, passwordExpired: !account.isRole && stored.password_last_changed == 0,
            passwordLifetime: (stored.password_lifetime ?? -1) < 0 ? nil : stored.password_lifetime,
            defaultRole: (stored.default_role ?? "").isEmpty ? nil : stored.default_role,
            showCreateUser: showCreate, globalPrivileges: global)
    }
}
