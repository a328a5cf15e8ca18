import Foundation

/// The statements kho writes itself during a PostgreSQL restore: roles, the database and its
/// properties. Every name is quoted with `SQLIdentifier.postgres`, every text with
/// `PostgresLiteral.quote`; numbers are printed from integers. Nothing here comes from the dump.
enum PostgresStatements {
    static let quote = SQLIdentifier.postgres

    /// CREATE ROLE with the recorded attributes; the password hash only when given.
    static func createRole(_ role: PostgresGlobals.Role, name: String, passwordHash: String? = nil) -> String {
        var sql = "CREATE ROLE \(quote(name)) WITH " + PostgresFingerprint.roleAttributes(role)
        sql += " CONNECTION LIMIT \(role.connectionLimit)"
        if let validUntil = role.validUntil { sql += " VALID UNTIL \(PostgresLiteral.quote(validUntil))" }
        if let passwordHash { sql += " PASSWORD \(PostgresLiteral.quote(passwordHash))" }
        return sql
    }

    /// An old snapshot's role, known by name only.
    static func createBareRole(_ name: String) -> String {
        "CREATE ROLE \(quote(name)) WITH NOLOGIN"
    }

    /// GRANT group TO member, with the options the server of `version` takes.
    static func grantMembership(_ membership: PostgresGlobals.Membership, to member: String, version: Int) -> String {
        var sql = "GRANT \(quote(membership.group)) TO \(quote(member))"
        if version >= 160000 {
            var options = ["ADMIN \(membership.admin ? "TRUE" : "FALSE")"]
            if let inherit = membership.inherit { options.append("INHERIT \(inherit ? "TRUE" : "FALSE")") }
            if let set = membership.set { options.append("SET \(set ? "TRUE" : "FALSE")") }
            sql += " WITH " + options.joined(separator: ", ")
        } else if membership.admin {
            sql += " WITH ADMIN OPTION"
        }
        return sql
    }

    /// `ALTER ROLE r [IN DATABASE d] SET name TO value` for a stored `name=value`; nil for an entry
    /// without `=` (none is ever stored).
    static func roleSetting(_ entry: String, role: String, database: String? = nil) -> String? {
        guard let (name, value) = PostgresLiteral.setting(entry) else { return nil }
        let scope = database.map { " IN DATABASE \(quote($0))" } ?? ""
        return "ALTER ROLE \(quote(role))\(scope) SET \(quote(name)) TO \(value)"
    }

    static func databaseSetting(_ entry: String, database: String) -> String? {
        guard let (name, value) = PostgresLiteral.setting(entry) else { return nil }
        return "ALTER DATABASE \(quote(database)) SET \(quote(name)) TO \(value)"
    }

    /// CREATE DATABASE as it was: from template0 (so that encoding and collation may differ from
    /// the target's template1), with its encoding, locale, provider, owner, connection limit and
    /// tablespace. `version` is the target's server_version_num.
    static func createDatabase(_ name: String, _ database: PostgresGlobals.Database, owner: String, tablespace: String, version: Int) -> String {
        var sql = "CREATE DATABASE \(quote(name)) WITH TEMPLATE template0 ENCODING \(PostgresLiteral.quote(database.encoding))"
        sql += " LC_COLLATE \(PostgresLiteral.quote(database.collate)) LC_CTYPE \(PostgresLiteral.quote(database.ctype))"
        if version >= 150000, let provider = database.localeProvider {
            sql += " LOCALE_PROVIDER \(quote(provider))"
            if let locale = database.locale {
                // 15 and 16 call it ICU_LOCALE; 17 also takes the builtin provider's locale as LOCALE.
                if provider == "icu" {
                    sql += " ICU_LOCALE \(PostgresLiteral.quote(locale))"
                } else if provider == "builtin" {
                    sql += " BUILTIN_LOCALE \(PostgresLiteral.quote(locale))"
                }
            }
            if let rules = database.icuRules, version >= 160000 { sql += " ICU_RULES \(PostgresLiteral.quote(rules))" }
        }
        sql += " OWNER \(quote(owner)) CONNECTION LIMIT \(database.connectionLimit) TABLESPACE \(quote(tablespace))"
        return sql
    }

    /// The database's ACL made equal to the recorded one: nothing for the default ACL (a new
    /// database has it), else everything revoked, then each recorded privilege granted.
    static func databaseACL(_ privileges: [PostgresGlobals.Privilege]?, database: String, owner: String, roleName: (String) -> String) -> [String] {
        guard let privileges else { return [] }
        var statements = ["REVOKE ALL ON DATABASE \(quote(database)) FROM PUBLIC", "REVOKE ALL ON DATABASE \(quote(database)) FROM \(quote(owner))"]
        for privilege in privileges {
            let grantee = privilege.grantee.map { quote(roleName($0)) } ?? "PUBLIC"
            // The privilege names come from aclexplode: CONNECT, CREATE, TEMPORARY.
            guard ["CONNECT", "CREATE", "TEMPORARY"].contains(privilege.privilege) else { continue }
            statements.append("GRANT \(privilege.privilege) ON DATABASE \(quote(database)) TO \(grantee)\(privilege.grantable ? " WITH GRANT OPTION" : "")")
        }
        return statements
    }

    static func comment(_ text: String?, database: String) -> String {
        "COMMENT ON DATABASE \(quote(database)) IS \(text.map(PostgresLiteral.quote) ?? "NULL")"
    }

    /// The role names `CREATE ROLE name;` statements of a pg_dumpall --globals-only script create
    /// (an old snapshot's globals.sql), in order.
    static func rolesCreated(byGlobalsScript script: [UInt8]) -> [String] {
        var names: [String] = []
        let prefix = Array("CREATE ROLE ".utf8)
        for line in script.split(separator: 0x0a, omittingEmptySubsequences: true) {
            let bytes = Array(line)
            guard bytes.starts(with: prefix), bytes.last == 0x3b else { continue }
            let identifier = Array(bytes[prefix.count..<(bytes.count - 1)])
            if let name = parseIdentifier(identifier) { names.append(name) }
        }
        return names
    }

    /// One identifier as pg_dump writes it (fmtId): bare, or in double quotes with "" inside; nil
    /// for anything else.
    static func parseIdentifier(_ bytes: [UInt8]) -> String? {
        guard let first = bytes.first else { return nil }
        if first == 0x22 {
            guard bytes.count >= 2, bytes.last == 0x22 else { return nil }
            var name: [UInt8] = []
            var i = 1
            while i < bytes.count - 1 {
                if bytes[i] == 0x22 {
                    guard i + 1 < bytes.count - 1, bytes[i + 1] == 0x22 else { return nil }
                    name.append(0x22)
                    i += 2
                    continue
                }
                name.append(bytes[i])
                i += 1
            }
            return String(decoding: name, as: UTF8.self)
        }
        let bare = bytes.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5f || $0 >= 0x80 }
        return bare ? String(decoding: bytes, as: UTF8.self) : nil
    }
}
