import Foundation
import KhoCore
import KhoSupport

/// The statements kho writes itself during a MariaDB restore, from the recorded globals read as
/// data: every name quoted as an identifier (`SQLIdentifier.mariadb`), every string (a comment, a
/// user, a host, a hash) a literal escaped by the connector (`MariaDBConnection.literal`), every
/// privilege one of the names kho knows. Nothing recorded is replayed as server text.
struct MariaDBStatements {
    let connection: MariaDBConnection
    /// Recorded user or role name → name on the target (`--map-role`); the host stays.
    let roleMap: [String: String]

    private let quote = SQLIdentifier.mariadb

    func mapped(_ account: MariaDBGlobals.Account) -> MariaDBGlobals.Account {
        MariaDBGlobals.Account(user: roleMap[account.user] ?? account.user, host: account.host, isRole: account.isRole)
    }

    /// 'user'@'host', or a role's quoted name.
    func grantee(_ account: MariaDBGlobals.Account) throws -> String {
        let target = mapped(account)
        return target.isRole ? quote(target.user) : "\(try connection.literal(target.user))@\(try connection.literal(target.host))"
    }

    /// CREATE DATABASE with the recorded character set, collation and comment; utf8mb4 for a
    /// snapshot that recorded none.
    func createDatabase(_ name: String, _ globals: MariaDBGlobals?) throws -> String {
        guard let globals else { return "CREATE DATABASE \(quote(name)) CHARACTER SET utf8mb4" }
        var sql = "CREATE DATABASE \(quote(name)) CHARACTER SET \(try connection.literal(globals.characterSet)) COLLATE \(try connection.literal(globals.collation))"
        if !globals.comment.isEmpty { sql += " COMMENT \(try connection.literal(globals.comment))" }
        return sql
    }

    /// How the account is created: with its recorded authentication when `passwords` (or when
    /// logging in needs no secret: unix_socket, PAM, GSSAPI), else locked and without one.
    static func asCreated(_ details: MariaDBGlobals.AccountDetails, passwords: Bool) -> MariaDBGlobals.AccountDetails {
        guard !details.account.isRole, details.needsPassword, !passwords else { return details }
        var created = details
        created.authentications = [MariaDBGlobals.Authentication(plugin: "mysql_native_password", string: "")]
        created.accountLocked = true
        return created
    }

    /// CREATE ROLE, or CREATE USER with what `asCreated` says, then the statements that finish it.
    func createAccount(_ recorded: MariaDBGlobals.AccountDetails, passwords: Bool) throws -> [String] {
        let details = MariaDBStatements.asCreated(recorded, passwords: passwords)
        if details.account.isRole { return ["CREATE ROLE \(quote(mapped(details.account).user))"] }
        let name = try grantee(details.account)
        var sql = "CREATE USER \(name)"
        let ways = details.authentications.filter { !($0.plugin == "mysql_native_password" && $0.string.isEmpty && details.authentications.count == 1) }
        if !ways.isEmpty {
            sql += " IDENTIFIED VIA " + (try ways.map { way in
                quote(way.plugin) + (way.string.isEmpty ? "" : " USING \(try connection.literal(way.string))")
            }).joined(separator: " OR ")
        }
        switch details.sslType {
        case 0: break
        case 1: sql += " REQUIRE SSL"
        case 2: sql += " REQUIRE X509"
        default:
            var parts: [String] = []
            if !details.x509Issuer.isEmpty { parts.append("ISSUER \(try connection.literal(details.x509Issuer))") }
            if !details.x509Subject.isEmpty { parts.append("SUBJECT \(try connection.literal(details.x509Subject))") }
            if !details.sslCipher.isEmpty { parts.append("CIPHER \(try connection.literal(details.sslCipher))") }
            sql += parts.isEmpty ? " REQUIRE SSL" : " REQUIRE " + parts.joined(separator: " AND ")
        }
        var limits: [String] = []
        if details.maxQuestions > 0 { limits.append("MAX_QUERIES_PER_HOUR \(details.maxQuestions)") }
        if details.maxUpdates > 0 { limits.append("MAX_UPDATES_PER_HOUR \(details.maxUpdates)") }
        if details.maxConnections > 0 { limits.append("MAX_CONNECTIONS_PER_HOUR \(details.maxConnections)") }
        if details.maxUserConnections != 0 { limits.append("MAX_USER_CONNECTIONS \(details.maxUserConnections)") }
        if details.maxStatementTime > 0 { limits.append("MAX_STATEMENT_TIME \(details.maxStatementTime)") }
        if !limits.isEmpty { sql += " WITH " + limits.joined(separator: " ") }
        if details.accountLocked { sql += " ACCOUNT LOCK" }
        if let lifetime = details.passwordLifetime { sql += lifetime == 0 ? " PASSWORD EXPIRE NEVER" : " PASSWORD EXPIRE INTERVAL \(lifetime) DAY" }
        var statements = [sql]
        if details.passwordExpired { statements.append("ALTER USER \(name) PASSWORD EXPIRE") }
        return statements
    }

    func dropAccount(_ account: MariaDBGlobals.Account) throws -> String {
        account.isRole ? "DROP ROLE IF EXISTS \(quote(mapped(account).user))" : "DROP USER IF EXISTS \(try grantee(account))"
    }

    /// GRANT of one recorded privilege set on `database` (the target's name). `inPlace`: the
    /// database keeps its recorded name, and a database-level grant its recorded spelling;
    /// otherwise `_` and `%` in the new name are escaped, so the grant is on that database alone.
    func grant(_ grant: MariaDBGlobals.Grant, database: String, inPlace: Bool) throws -> String {
        let allowed = MariaDBGlobalsReader.knownPrivileges
        guard grant.privileges.allSatisfy({ allowed.contains($0) }) else {
            throw KhoError(.integrity, "The snapshot's globals grant privileges kho does not know (\(grant.privileges.joined(separator: ", "))): it was not written by this kho; restore with a newer kho.")
        }
        let privileges = grant.privileges.isEmpty ? ["USAGE"] : grant.privileges
        let object: String
        switch grant.level {
        case .database:
            let spelled = inPlace ? (grant.spelling ?? database) : MariaDBStatements.escapedPattern(database)
            object = "\(quote(spelled)).*"
        case .table, .column:
            object = "\(quote(database)).\(quote(grant.object ?? ""))"
        case .function, .procedure, .package, .packageBody:
            object = "\(grant.level.rawValue.uppercased()) \(quote(database)).\(quote(grant.object ?? ""))"
        }
        let list = grant.level == .column
            ? privileges.map { "\($0) (\(quote(grant.column ?? "")))" }.joined(separator: ", ")
            : privileges.joined(separator: ", ")
        return "GRANT \(list) ON \(object) TO \(try self.grantee(grant.grantee))" + (grant.grantOption ? " WITH GRANT OPTION" : "")
    }

    func grantRole(_ grant: MariaDBGlobals.RoleGrant) throws -> String {
        let role = mapped(MariaDBGlobals.Account(user: grant.role, host: "", isRole: true))
        return "GRANT \(quote(role.user)) TO \(try grantee(grant.grantee))" + (grant.adminOption ? " WITH ADMIN OPTION" : "")
    }

    func defaultRole(_ details: MariaDBGlobals.AccountDetails) throws -> String? {
        guard let role = details.defaultRole, !details.account.isRole else { return nil }
        return "SET DEFAULT ROLE \(quote(roleMap[role] ?? role)) FOR \(try grantee(details.account))"
    }

    /// A database name as a `mysql.db` pattern that matches that database alone.
    static func escapedPattern(_ name: String) -> String {
        var out = ""
        for character in name {
            if character == "\\" || character == "_" || character == "%" { out.append("\\") }
            out.append(character)
        }
        return out
    }
}
