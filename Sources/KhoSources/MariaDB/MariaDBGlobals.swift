import Foundation
import KhoCore
import KhoSupport

/// What a MariaDB database needs besides its dump to come back whole on a fresh server, recorded at
/// backup as `<database>.globals.json` (`DumpManifest.Database.globalsFile`): the database's own
/// character set, collation and comment; the accounts (users and roles) that hold privileges on it,
/// the roles they have and the accounts that define its views, routines, triggers and events; and
/// the privileges on this database, as data (level, object, privileges, grant option), never as
/// server text to replay.
///
/// The authentication (plugin and password hash) is in this file only, which lives in the encrypted
/// snapshot tree: never in the manifest (printed by `kho snapshots --json`), a log or an argument.
struct MariaDBGlobals: Codable, Sendable, Equatable {
    /// One account: a user (`user@host`) or a role (`host` empty, `isRole`).
    struct Account: Codable, Sendable, Equatable, Hashable {
        var user: String
        var host: String
        var isRole: Bool

        /// The account as MariaDB prints it: 'user'@'host', or the role's name.
        var display: String { isRole ? "role \(user)" : "'\(user)'@'\(host)'" }
    }

    /// One way an account may log in (MariaDB tries them in order: IDENTIFIED VIA a OR b).
    struct Authentication: Codable, Sendable, Equatable {
        var plugin: String
        /// A password hash for the password plugins, a service or principal name for others.
        var string: String
    }

    /// How an account logs in and what limits it: `mysql.global_priv` read as data.
    struct AccountDetails: Codable, Sendable, Equatable {
        var account: Account
        /// Why the database needs it: "grants on the database", "has role r", "definer of view v" …
        var reasons: [String]
        var authentications: [Authentication]
        /// REQUIRE: 0 none, 1 SSL, 2 X509, 3 specified (issuer, subject, cipher).
        var sslType: Int
        var sslCipher: String
        var x509Issuer: String
        var x509Subject: String
        var maxQuestions: Int64
        var maxUpdates: Int64
        var maxConnections: Int64
        var maxUserConnections: Int64
        var maxStatementTime: Double
        var accountLocked: Bool
        var passwordExpired: Bool
        /// nil: the server's default; 0: never; N: every N days.
        var passwordLifetime: Int64?
        var defaultRole: String?
        /// `SHOW CREATE USER` as the source server wrote it (holds the hash): for a person reading
        /// the file, never replayed.
        var showCreateUser: String?
        /// The account's global privileges on the source server (`GRANT … ON *.*`, without the
        /// account and any password): recorded and reported, never granted by a restore.
        var globalPrivileges: String?

        /// Whether logging in needs a secret kho holds only as a hash (a password plugin), so that a
        /// restore without --role-passwords cannot give the account its way in.
        var needsPassword: Bool {
            authentications.isEmpty || authentications.contains { MariaDBGlobals.passwordPlugins.contains($0.plugin) }
        }
    }

    /// The level a privilege applies at.
    enum Level: String, Codable, Sendable, Comparable {
        case database, table, column, function, procedure, package
        case packageBody = "package body"

        static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    }

    /// Privileges of one grantee on one object of the database.
    struct Grant: Codable, Sendable, Equatable {
        var level: Level
        /// The table or routine; nil for the database level.
        var object: String?
        /// The column, for the column level.
        var column: String?
        var grantee: Account
        /// Upper case, as in GRANT (SELECT, SHOW VIEW, DELETE HISTORY …), sorted; no GRANT OPTION.
        var privileges: [String]
        var grantOption: Bool
        /// For the database level, the database as `mysql.db` spells it (the name, or the name with
        /// `_` and `%` escaped): an in-place restore grants on the same text.
        var spelling: String?
    }

    /// A `mysql.db` row whose database pattern (with `_` or `%`) matches this database without
    /// naming it: recorded and reported; a restore does not grant it (it is about other databases
    /// too), it says which command would.
    struct WildcardGrant: Codable, Sendable, Equatable {
        var pattern: String
        var grantee: Account
        var privileges: [String]
        var grantOption: Bool
    }

    struct RoleGrant: Codable, Sendable, Equatable {
        var role: String
        var grantee: Account
        var adminOption: Bool
    }

    /// The file's format; 1 is the first.
    var version = 1
    var database: String
    var characterSet: String
    var collation: String
    var comment: String
    var accounts: [AccountDetails]
    var grants: [Grant]
    var roleGrants: [RoleGrant]
    var wildcardGrants: [WildcardGrant]
    /// Definers that do not exist on the source server (their objects fail when used).
    var missingDefiners: [String]

    static let passwordPlugins: Set<String> = ["mysql_native_password", "mysql_old_password", "ed25519", "caching_sha2_password",
                                               "sha256_password", "parsec"]

    func encoded() throws -> [UInt8] { Array(try JSON.encoder.encode(self)) }

    static func decode(_ bytes: [UInt8], file: String) throws -> MariaDBGlobals {
        do {
            return try JSON.decoder.decode(MariaDBGlobals.self, from: Data(bytes))
        } catch {
            throw KhoError(.integrity, "The MariaDB globals file \(file) of the snapshot cannot be read (\(error)): run `kho check --read-data`; a kho newer than this one may have written it.")
        }
    }
}
