import Foundation
import KhoCore
@testable import KhoSources
import KhoSupport
import KhoTestSupport
import Testing

// The MariaDB schema fingerprint and globals on a real server: independent of the database's name,
// and a dropped index, a revoked grant, a changed sequence or a changed event status named as such.

private let schema = """
    CREATE TABLE parcels (id INT PRIMARY KEY, owner VARCHAR(50), area INT CHECK (area > 0), KEY k_owner (owner(10))) ENGINE=InnoDB;
    CREATE TABLE deeds (id INT PRIMARY KEY, parcel_id INT, FOREIGN KEY fk_parcel (parcel_id) REFERENCES parcels (id) ON DELETE CASCADE) ENGINE=InnoDB;
    CREATE SEQUENCE deed_no START WITH 10;
    CREATE VIEW big AS SELECT id, owner FROM parcels WHERE area > 10;
    CREATE EVENT tick ON SCHEDULE EVERY 1 DAY STARTS '2031-01-01 00:00:00' ENABLE DO DELETE FROM deeds WHERE id < 0;
    """

private func objects(_ fingerprint: SchemaFingerprint, _ kind: SchemaObjectKind) -> [String] {
    fingerprint.objects.filter { $0.kind == kind }.map(\.name)
}

@Suite("MariaDB schema fingerprint", .serialized,
       .enabled(if: ScratchMariaDB.isAvailable, Comment(rawValue: ScratchMariaDB.unavailableReason ?? "")))
struct MariaDBFingerprintTests {
    @Test("equal for the same schema under another name; a dropped index, a revoked grant, a changed sequence and a disabled event are named")
    func namesWhatChanged() throws {
        let server = try TestMariaDB(password: "pw")
        defer { server.stop() }
        let root = try server.root()
        for database in ["orig", "copy"] {
            _ = try server.client("CREATE DATABASE \(database) CHARACTER SET latin1 COMMENT 'sổ';\nUSE \(database);\n" + schema)
        }
        _ = try server.client("""
            CREATE USER 'clerk'@'%'; CREATE ROLE viewer;
            GRANT SELECT ON orig.parcels TO 'clerk'@'%'; GRANT SELECT ON copy.parcels TO 'clerk'@'%';
            GRANT SELECT (parcel_id) ON orig.deeds TO viewer; GRANT SELECT (parcel_id) ON copy.deeds TO viewer;
            GRANT viewer TO 'clerk'@'%';
            CREATE USER 'other'@'%'; GRANT SELECT ON `%o%`.* TO 'other'@'%';
            """)
        func fingerprint(_ database: String) throws -> SchemaFingerprint {
            try MariaDBSchema.fingerprint(root, database: database, globals: try MariaDBGlobalsReader.read(root, database: database))
        }
        let original = try fingerprint("orig")
        #expect(SchemaComparison(expected: original, actual: try fingerprint("copy")).differences == [])
        #expect(objects(original, .index) == ["deeds.PRIMARY", "deeds.fk_parcel", "parcels.PRIMARY", "parcels.k_owner"])
        #expect(objects(original, .constraint) == ["deeds.fk_parcel", "parcels.area"])
        #expect(objects(original, .sequence) == ["deed_no"])
        // root defines the view and the event, and holds the role it created WITH ADMIN OPTION.
        #expect(objects(original, .user) == ["'clerk'@'%'", "'other'@'%'", "'root'@'localhost'"])
        #expect(objects(original, .role) == ["viewer"])
        #expect(objects(original, .grant) == ["column deeds.parcel_id to role viewer", "role viewer to 'clerk'@'%'", "role viewer to 'root'@'localhost'",
                                                  "table parcels to 'clerk'@'%'"])
        #expect(original.objects.first { $0.kind == .view }?.definition.contains("`orig`") == false, "the view's own database is not named")
        let globals = try MariaDBGlobalsReader.read(root, database: "orig")
        #expect(globals.characterSet == "latin1" && globals.comment == "sổ")
        #expect(globals.wildcardGrants.map(\.pattern) == ["%o%"], "a wildcard grant is recorded, not replayed")

        _ = try server.client("""
            DROP INDEX k_owner ON copy.parcels;
            REVOKE SELECT ON copy.parcels FROM 'clerk'@'%';
            DO SETVAL(copy.deed_no, 500);
            ALTER EVENT copy.tick DISABLE;
            """)
        let differences = SchemaComparison(expected: original, actual: try fingerprint("copy")).differences
        #expect(differences.map { "\($0.kind.rawValue) \($0.name) \($0.outcome.rawValue)" }.sorted() == [
            "event tick different", "grant table parcels to 'clerk'@'%' missing", "index parcels.k_owner missing", "sequence deed_no different",
        ], "\(differences.map(\.sentence))")
        #expect(differences.contains { $0.sentence.hasPrefix("index parcels.k_owner is missing after the restore") })
    }

    @Test("kho's own statements: a comment, a user and a password hash with quotes and backslashes are literals, whatever the SQL mode")
    func statementsQuoteEverything() throws {
        let server = try TestMariaDB(password: "pw")
        defer { server.stop() }
        let hostile = "it's a \\' quote'); DROP DATABASE mysql; -- \\"
        for mode in ["", "NO_BACKSLASH_ESCAPES"] {
            let connection = try server.root()
            try connection.query("SET SESSION sql_mode = '\(mode)'")
            let statements = MariaDBStatements(connection: connection, roleMap: [:])
            let name = "db `\(mode)"
            let globals = MariaDBGlobals(database: name, characterSet: "utf8mb4", collation: "utf8mb4_bin", comment: hostile,
                                         accounts: [], grants: [], roleGrants: [], wildcardGrants: [], missingDefiners: [])
            try connection.query(try statements.createDatabase(name, globals))
            #expect(try connection.value("SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", [name]) == hostile, "mode \(mode)")
            let account = MariaDBGlobals.Account(user: hostile, host: "%\(mode.lowercased())", isRole: false)
            let details = MariaDBGlobals.AccountDetails(
                account: account, reasons: [], authentications: [.init(plugin: "mysql_native_password", string: "*0123456789ABCDEF0123456789ABCDEF01234567")],
                sslType: 0, sslCipher: "", x509Issuer: "", x509Subject: "", maxQuestions: 0, maxUpdates: 0, maxConnections: 0,
                maxUserConnections: 0, maxStatementTime: 0, accountLocked: false, passwordExpired: false, passwordLifetime: nil,
                defaultRole: nil, showCreateUser: nil, globalPrivileges: nil)
            for sql in try statements.createAccount(details, passwords: true) { try connection.query(sql) }
            let stored = try connection.value("SELECT Priv FROM mysql.global_priv WHERE User = ? AND Host = ?", [hostile, "%\(mode.lowercased())"])
            #expect(stored?.contains("\"authentication_string\":\"*0123456789ABCDEF0123456789ABCDEF01234567\"") == true, "mode \(mode): \(stored ?? "no user")")
            try connection.query(try statements.grant(.init(level: .database, object: nil, column: nil, grantee: account, privileges: ["SELECT"],
                                                            grantOption: false, spelling: nil), database: name, inPlace: false))
            let db = try connection.value("SELECT Db FROM mysql.db WHERE User = ? AND Host = ?", [hostile, "%\(mode.lowercased())"])
            #expect(db == MariaDBStatements.escapedPattern(name), "mode \(mode): \(db ?? "no grant")")
        }
        #expect(try server.root().value("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'mysql'") == "1")
    }

    @Test("a routine grant on a database with a Vietnamese name is recorded, although MariaDB stores that database's name in procs_priv as latin1-read UTF-8")
    func routineGrantOnUnicodeDatabase() throws {
        let server = try TestMariaDB(password: "pw")
        defer { server.stop() }
        let root = try server.root()
        _ = try server.client("""
            CREATE DATABASE `kho bạc`; USE `kho bạc`;
            CREATE PROCEDURE tong(OUT n INT) SELECT 1 INTO n;
            CREATE USER 'xem'@'%';
            GRANT EXECUTE ON PROCEDURE `kho bạc`.tong TO 'xem'@'%';
            """)
        let globals = try MariaDBGlobalsReader.read(root, database: "kho bạc")
        let grant = try #require(globals.grants.first { $0.grantee.user == "xem" }, "\(globals.grants)")
        #expect(grant.level == .procedure && grant.object == "tong" && grant.privileges == ["EXECUTE"])
    }
}
