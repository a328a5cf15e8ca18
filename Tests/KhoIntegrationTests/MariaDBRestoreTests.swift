import Foundation
import Glibc
import KhoTestSupport
import Testing

// A MariaDB database restored whole, by the documented commands only, between two real servers: a
// "production" one and a "fresh" one. The database has what a DBA expects back — a character set,
// collation and comment of its own, users and a role with privileges down to columns, triggers,
// views, routines created under another database collation (so mariadb-dump writes ALTER DATABASE
// lines around them), an enabled and a disabled event, FULLTEXT and SPATIAL indexes, a foreign key,
// a CHECK constraint and a sequence — and is compared after the restore with the server's own
// tools: mariadb-dump --no-data, SHOW CREATE DATABASE, SHOW GRANTS, row counts and checksums.

private struct RestoreJSON: Decodable {
    struct Schema: Decodable {
        struct Difference: Decodable {
            var kind: String
            var name: String
            var outcome: String
        }
        var compared: Int
        var differences: [Difference]
    }
    struct Comparison: Decodable {
        struct Row: Decodable { var table: String; var outcome: String }
        var rows: [Row]
    }
    var database: String
    var notes: [String]
    var schema: Schema?
    var comparison: Comparison?
}

/// The land-records database on "production", in the shape an agency's looks like.
private func makeLand(_ server: ScratchMariaDB) throws {
    try server.sql(#"""
        CREATE DATABASE land CHARACTER SET utf8mb4 COLLATE utf8mb4_vietnamese_ci COMMENT 'Sổ địa chính — thử nghiệm';
        USE land;
        CREATE TABLE owners (
          id INT PRIMARY KEY AUTO_INCREMENT,
          name VARCHAR(120) NOT NULL,
          national_id CHAR(12) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
          UNIQUE KEY uq_national (national_id),
          KEY k_name_prefix (name(20))
        ) ENGINE=InnoDB COMMENT 'chủ sử dụng đất';
        CREATE TABLE parcels (
          id INT PRIMARY KEY AUTO_INCREMENT,
          owner_id INT NOT NULL,
          area DECIMAL(12,2) NOT NULL,
          shape POLYGON NOT NULL,
          notes TEXT,
          double_area DECIMAL(14,2) AS (area * 2) VIRTUAL,
          CONSTRAINT area_positive CHECK (area > 0),
          CONSTRAINT fk_owner FOREIGN KEY (owner_id) REFERENCES owners (id) ON DELETE CASCADE ON UPDATE RESTRICT,
          SPATIAL INDEX sp_shape (shape),
          FULLTEXT INDEX ft_notes (notes)
        ) ENGINE=InnoDB;
        CREATE TABLE deeds (id BIGINT PRIMARY KEY, parcel_id INT NOT NULL, issued DATE, holder VARCHAR(120),
                            FOREIGN KEY (parcel_id) REFERENCES parcels (id)) ENGINE=InnoDB ROW_FORMAT=COMPACT;
        CREATE TABLE parcel_log (id INT AUTO_INCREMENT PRIMARY KEY, parcel_id INT, at TIMESTAMP DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB;
        CREATE SEQUENCE deed_numbers START WITH 1000 INCREMENT BY 10;
        -- A system-versioned table: its history is part of the database.
        CREATE TABLE boundary_changes (id INT PRIMARY KEY, note VARCHAR(80)) WITH SYSTEM VERSIONING;
        INSERT INTO boundary_changes SELECT seq, CONCAT('mốc ', seq) FROM seq_1_to_20;
        UPDATE boundary_changes SET note = CONCAT(note, ' (đo lại)') WHERE id <= 5;
        DELETE FROM boundary_changes WHERE id = 20;
        INSERT INTO owners (name, national_id) SELECT CONCAT('Nguyễn Văn ', seq), LPAD(seq, 12, '0') FROM seq_1_to_300;
        INSERT INTO parcels (owner_id, area, shape, notes)
          SELECT seq, seq * 12.5, ST_GeomFromText(CONCAT('POLYGON((0 0,', seq, ' 0,', seq, ' ', seq, ',0 0))')),
                 CONCAT('ruộng lúa xã Nghĩa Hành thửa ', seq) FROM seq_1_to_300;
        INSERT INTO deeds SELECT NEXTVAL(deed_numbers), seq, DATE_ADD('2020-01-01', INTERVAL seq DAY), CONCAT('Trần Thị ', seq) FROM seq_1_to_200;
        CREATE VIEW big_parcels AS SELECT p.id, o.name, p.area FROM parcels p JOIN owners o ON o.id = p.owner_id WHERE p.area > 1000 WITH CHECK OPTION;
        CREATE TRIGGER log_parcel AFTER INSERT ON parcels FOR EACH ROW INSERT INTO parcel_log (parcel_id) VALUES (NEW.id);
        -- Routines, a trigger and an event created while the database had another collation: they keep
        -- it, and mariadb-dump writes ALTER DATABASE lines around them.
        ALTER DATABASE land CHARACTER SET latin1 COLLATE latin1_swedish_ci;
        SET NAMES latin1;
        CREATE FUNCTION parcel_area(p INT) RETURNS DECIMAL(12,2) DETERMINISTIC READS SQL DATA RETURN (SELECT area FROM parcels WHERE id = p);
        CREATE PROCEDURE count_parcels(OUT n INT) SQL SECURITY INVOKER COMMENT 'count (latin1)' SELECT COUNT(*) INTO n FROM parcels;
        CREATE TRIGGER deed_holder BEFORE INSERT ON deeds FOR EACH ROW SET NEW.holder = TRIM(NEW.holder);
        CREATE EVENT nightly_cleanup ON SCHEDULE EVERY 1 DAY STARTS '2031-01-01 02:00:00' ON COMPLETION PRESERVE ENABLE COMMENT 'cleanup'
          DO DELETE FROM parcel_log WHERE at < NOW() - INTERVAL 30 DAY;
        SET NAMES utf8mb4;
        ALTER DATABASE land CHARACTER SET utf8mb4 COLLATE utf8mb4_vietnamese_ci;
        CREATE EVENT yearly_report ON SCHEDULE AT '2032-01-01 00:00:00' ON COMPLETION PRESERVE DISABLE DO INSERT INTO parcel_log (parcel_id) VALUES (0);
        CREATE USER 'app'@'%' IDENTIFIED BY 'mật-khẩu-ứng-dụng' WITH MAX_USER_CONNECTIONS 20;
        GRANT SELECT, INSERT, UPDATE, DELETE ON land.* TO 'app'@'%';
        GRANT EXECUTE ON FUNCTION land.parcel_area TO 'app'@'%';
        CREATE USER 'reporter'@'127.0.0.1' IDENTIFIED BY 'báo-cáo' PASSWORD EXPIRE NEVER;
        GRANT SELECT ON land.owners TO 'reporter'@'127.0.0.1';
        GRANT SELECT (id, issued), UPDATE (holder) ON land.deeds TO 'reporter'@'127.0.0.1';
        CREATE ROLE land_auditor;
        GRANT SELECT ON land.big_parcels TO land_auditor;
        GRANT EXECUTE ON PROCEDURE land.count_parcels TO land_auditor WITH GRANT OPTION;
        GRANT land_auditor TO 'reporter'@'127.0.0.1';
        SET DEFAULT ROLE land_auditor FOR 'reporter'@'127.0.0.1';
        GRANT PROCESS ON *.* TO 'reporter'@'127.0.0.1';
        """#)
}

private let mariadbDump = ServerSupport.find("mariadb-dump", in: ServerSupport.standardDirectories)
    ?? ServerSupport.find("mysqldump", in: ServerSupport.standardDirectories)

/// `mariadb-dump --no-data --routines --events --triggers` of `database`: AUTO_INCREMENT counters
/// (data, not schema) and the server's host line are the only things normalised.
private func schemaDump(_ server: ScratchMariaDB, _ database: String) throws -> String {
    let arguments = ["--no-defaults", "--protocol=TCP", "--host=127.0.0.1", "--port=\(server.port)", "--user=root", "--no-data", "--routines", "--events",
                     "--triggers", "--skip-dump-date", "--databases", database]
    let text = try ServerSupport.require(try #require(mariadbDump), arguments, scratch: server.dir)
    return text.split(separator: "\n", omittingEmptySubsequences: false)
        .filter { !$0.hasPrefix("-- Host:") }
        .map { $0.replacingOccurrences(of: #" AUTO_INCREMENT=\d+"#, with: "", options: .regularExpression) }
        .joined(separator: "\n")
}

/// What must not change on production when a copy is restored beside the original.
private func untouchable(_ server: ScratchMariaDB, _ database: String) throws -> String {
    try server.sql("""
        SHOW CREATE DATABASE `\(database)`;
        SELECT ROUTINE_TYPE, ROUTINE_NAME, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION, LAST_ALTERED, MD5(ROUTINE_DEFINITION)
          FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '\(database)' ORDER BY 1, 2;
        SELECT TRIGGER_NAME, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION, CREATED FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '\(database)' ORDER BY 1;
        SELECT EVENT_NAME, STATUS, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION, LAST_ALTERED FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '\(database)' ORDER BY 1;
        SELECT TABLE_NAME, TABLE_COLLATION, CREATE_TIME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '\(database)' ORDER BY 1;
        """) + "\n" + (try server.fingerprint(database))
}

/// SHOW GRANTS for an account, sorted, without the password hash line's hash (compared separately).
/// Column lists are sorted: the server prints a column grant's columns in an order of its own.
private func grants(_ server: ScratchMariaDB, _ account: String) throws -> [String] {
    try server.rows("SHOW GRANTS FOR \(account);").map { line in
        var out = ""
        var rest = Substring(line)
        while let open = rest.firstIndex(of: "("), let close = rest[open...].firstIndex(of: ")") {
            out += rest[...open]
            out += rest[rest.index(after: open)..<close].components(separatedBy: ", ").sorted().joined(separator: ", ")
            rest = rest[close...]
        }
        return out + rest
    }.sorted()
}

/// SHOW GRANTS of a production account as a restore brings it back: global privileges are not
/// restored, so its `ON *.*` line says USAGE.
private func restorable(_ lines: [String]) -> [String] {
    lines.map { $0.replacingOccurrences(of: #"^GRANT [A-Z ,]+ ON \*\.\* TO"#, with: "GRANT USAGE ON *.* TO", options: .regularExpression) }.sorted()
}

private func withoutHash(_ lines: [String]) -> [String] {
    lines.map { $0.replacingOccurrences(of: #" IDENTIFIED BY PASSWORD '[^']*'"#, with: "", options: .regularExpression) }
}

/// Runs the mariadb client as `user` with `password` (through MYSQL_PWD, never an argument).
private func asUser(_ server: ScratchMariaDB, _ user: String, _ password: String, _ sql: String) throws -> ToolResult {
    try ServerSupport.run(ScratchMariaDB.client!, ["--no-defaults", "--protocol=TCP", "-h", "127.0.0.1", "-P", String(server.port), "-u", user,
                                                   "--batch", "--skip-column-names", "-e", sql],
                          scratch: server.dir, environment: ServerSupport.environment(["MYSQL_PWD": password]))
}

@Suite("MariaDB restore onto a fresh server and beside the original", .serialized,
       .enabled(if: ScratchMariaDB.isAvailable, Comment(rawValue: ScratchMariaDB.unavailableReason ?? "")))
struct MariaDBRestoreTests {
    @Test("the documented commands bring the database back whole on a fresh server and as a copy beside the original; a drill passes on the same snapshot; refusals come before loading")
    func twoServers() throws {
        let production = try ScratchMariaDB(label: "maria-production")
        defer { production.stop() }
        let fresh = try ScratchMariaDB(label: "maria-fresh")
        defer { fresh.stop() }
        let bench = try DrillBench("mariadb-restore")
        try makeLand(production)

        let backup = try bench.run(["backup", "--mariadb", production.url("land"), "--source-name", "land-db"])
        try #require(backup.exitCode == 0, "\(backup)")
        let listing = try bench.ok(["ls", "latest"]).out
        #expect(listing.contains("/land.schema.json") && listing.contains("/land.globals.json"), "\(listing)")
        let snapshots = try bench.ok(["snapshots", "--json"]).out
        #expect(!snapshots.contains("*") && !snapshots.contains("mật"), "no hash or secret in the manifest kho snapshots prints")
        #expect(snapshots.contains("\"globalsFile\" : \"land.globals.json\""), "\(snapshots)")

        // 1. The incident: a fresh server, the documented command.
        let restored = try bench.run(["restore", "--source", "land-db", "--to-database", fresh.url("land"), "--yes", "--json"])
        try #require(restored.exitCode == 0, "\(restored)")
        let result = try restored.decode(RestoreJSON.self)
        #expect(result.schema?.differences.isEmpty == true, "\(restored)")
        #expect((result.schema?.compared ?? 0) > 40)
        #expect(result.comparison?.rows.allSatisfy { $0.outcome == "equal" } == true)
        #expect(try schemaDump(fresh, "land") == (try schemaDump(production, "land")))
        #expect(try fresh.value("SHOW CREATE DATABASE land;") == (try production.value("SHOW CREATE DATABASE land;")))
        #expect(try fresh.fingerprint("land") == (try production.fingerprint("land")))
        #expect(try fresh.value("SELECT next_not_cached_value FROM land.deed_numbers;") == (try production.value("SELECT next_not_cached_value FROM land.deed_numbers;")))
        // The system-versioned table: in the manifest, and its history (25 row versions) back too.
        #expect(result.comparison?.rows.contains { $0.table == "boundary_changes" } == true, "\(restored)")
        let history = "SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT_WS('|', id, note))), 0) FROM land.boundary_changes FOR SYSTEM_TIME ALL;"
        #expect(try production.value(history).hasPrefix("25\t"))
        #expect(try fresh.value(history) == (try production.value(history)))
        #expect(try fresh.rows("SELECT ROUTINE_NAME, DATABASE_COLLATION FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'land' ORDER BY 1;")
                == ["count_parcels\tlatin1_swedish_ci", "parcel_area\tlatin1_swedish_ci"])
        for account in ["'app'@'%'", "'reporter'@'127.0.0.1'", "land_auditor"] {
            let expected = restorable(try grants(production, account))
            let there = try grants(fresh, account)
            #expect(withoutHash(there) == withoutHash(expected), "\(account): \(there) vs \(expected)")
        }
        // Global privileges are reported, not replayed.
        #expect(try !grants(fresh, "'reporter'@'127.0.0.1'").contains { $0.contains("PROCESS") })
        #expect(try fresh.value("SHOW CREATE USER 'app'@'%';") == "CREATE USER `app`@`%` WITH MAX_USER_CONNECTIONS 20 ACCOUNT LOCK")
        // Created locked without the hash: the note says how to let the application in.
        let unlock = try #require(result.notes.first { $0.contains("'app'@'%'") && $0.contains("ALTER USER") }, "\(result.notes)")
        #expect(unlock.hasSuffix("ALTER USER 'app'@'%' IDENTIFIED BY '…' ACCOUNT UNLOCK;"), "\(unlock)")
        #expect(try !asUser(fresh, "app", "mật-khẩu-ứng-dụng", "SELECT 1;").succeeded, "no way in before the operator sets a password")
        try fresh.sql("ALTER USER 'app'@'%' IDENTIFIED BY 'mới-sau-sự-cố' ACCOUNT UNLOCK;")
        let login = try asUser(fresh, "app", "mới-sau-sự-cố", "SELECT COUNT(*) FROM land.parcels;")
        #expect(login.succeeded && login.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "300", "\(login)")

        // 1b. A published sample database kho's authors did not write (the "world" database of
        // MariaDB's test suite, trimmed: Tests/Fixtures/mariadb/world), the same way.
        let world = try String(contentsOfFile: TestPaths.packageRoot + "/Tests/Fixtures/mariadb/world/world.sql", encoding: .utf8)
        try production.sql("CREATE DATABASE world;\nUSE world;\n" + world)
        let worldBackup = try bench.run(["backup", "--mariadb", production.url("world"), "--source-name", "world-db"])
        try #require(worldBackup.exitCode == 0, "\(worldBackup)")
        let worldRestored = try bench.run(["restore", "--source", "world-db", "--to-database", fresh.url("world"), "--yes", "--json"])
        try #require(worldRestored.exitCode == 0, "\(worldRestored)")
        #expect(try worldRestored.decode(RestoreJSON.self).schema?.differences.isEmpty == true, "\(worldRestored)")
        #expect(try schemaDump(fresh, "world") == (try schemaDump(production, "world")))
        #expect(try fresh.fingerprint("world") == (try production.fingerprint("world")))
        #expect(try fresh.value("SELECT COUNT(*) FROM world.City;") == "120")

        // 2. A login without CREATE USER is refused before anything is loaded when users must be made.
        try fresh.sql("""
            DROP DATABASE land; DROP USER 'app'@'%', 'reporter'@'127.0.0.1'; DROP ROLE land_auditor;
            CREATE USER 'loader'@'127.0.0.1' IDENTIFIED BY 'nạp'; GRANT ALL PRIVILEGES ON *.* TO 'loader'@'127.0.0.1' WITH GRANT OPTION;
            REVOKE CREATE USER ON *.* FROM 'loader'@'127.0.0.1';
            """)
        let databasesBefore = try fresh.databases()
        let unprivileged = try bench.run(["restore", "--source", "land-db", "--to-database", fresh.url("land", user: "loader"), "--yes",
                                          "--password-env", "LOADER_PASSWORD"], env: ["LOADER_PASSWORD": "nạp"])
        #expect(unprivileged.exitCode == 2, "\(unprivileged)")
        #expect(unprivileged.err.contains("lacks the CREATE USER privilege") && unprivileged.err.contains("'app'@'%'"), "\(unprivileged)")
        #expect(!unprivileged.all.contains("achieved recovery time"), "refused before loading: \(unprivileged)")
        #expect(try fresh.databases() == databasesBefore)
        #expect(try fresh.value("SELECT COUNT(*) FROM mysql.global_priv WHERE User IN ('app', 'reporter', 'land_auditor');") == "0")

        // 3. With --role-passwords, the recorded hashes: the application logs in with its old password.
        let withPasswords = try bench.run(["restore", "--source", "land-db", "--to-database", fresh.url("land"), "--role-passwords", "--yes", "--json"])
        try #require(withPasswords.exitCode == 0, "\(withPasswords)")
        #expect(try withPasswords.decode(RestoreJSON.self).schema?.differences.isEmpty == true, "\(withPasswords)")
        for account in ["'app'@'%'", "'reporter'@'127.0.0.1'", "land_auditor"] {
            let expected = restorable(try grants(production, account))
            let there = try grants(fresh, account)
            #expect(there == expected, "\(account): \(there) vs \(expected)")
        }
        #expect(try fresh.value("SHOW CREATE USER 'app'@'%';") == (try production.value("SHOW CREATE USER 'app'@'%';")))
        let oldPassword = try asUser(fresh, "app", "mật-khẩu-ứng-dụng", "SELECT COUNT(*) FROM land.owners;")
        #expect(oldPassword.succeeded && oldPassword.stdout.contains("300"), "\(oldPassword)")
        let reporter = try asUser(fresh, "reporter", "báo-cáo", "SELECT COUNT(*) FROM land.big_parcels; SELECT CURRENT_ROLE();")
        #expect(reporter.succeeded && reporter.stdout.contains("land_auditor"), "the default role came back: \(reporter)")

        // 3b. --map-role: the application's user under another name (the host stays); a name the
        // snapshot does not record is refused before anything happens.
        let mapped = try bench.run(["restore", "--source", "land-db", "--to-database", fresh.url("land_mapped"), "--map-role", "app=land_app", "--yes", "--json"])
        try #require(mapped.exitCode == 0, "\(mapped)")
        #expect(try mapped.decode(RestoreJSON.self).schema?.differences.isEmpty == true, "\(mapped)")
        #expect(try grants(fresh, "'land_app'@'%'").contains("GRANT SELECT, INSERT, UPDATE, DELETE ON `land\\_mapped`.* TO `land_app`@`%`"))
        #expect(try fresh.value("SHOW CREATE USER 'land_app'@'%';") == "CREATE USER `land_app`@`%` WITH MAX_USER_CONNECTIONS 20 ACCOUNT LOCK")
        let unknown = try bench.run(["restore", "--source", "land-db", "--to-database", fresh.url("land_other"), "--map-role", "nobody=x", "--yes"])
        #expect(unknown.exitCode == 2 && unknown.err.contains("records no user or role \"nobody\""), "\(unknown)")
        #expect(try !fresh.databases().contains("land_other"))

        // 4. A copy beside the original on production: the original is untouched, the copy equals it but
        // for its name, and its enabled event is disabled and listed with the command to enable it.
        let before = try untouchable(production, "land")
        let copy = try bench.run(["restore", "--source", "land-db", "--to-database", production.url("land_copy"), "--yes", "--json"])
        try #require(copy.exitCode == 0, "\(copy)")
        let copied = try copy.decode(RestoreJSON.self)
        #expect(copied.schema?.differences.isEmpty == true, "\(copy)")
        #expect(try untouchable(production, "land") == before, "restoring a copy must not change the original")
        #expect(copied.notes.contains { $0.hasSuffix("ALTER EVENT `land_copy`.`nightly_cleanup` ENABLE;") }, "\(copied.notes)")
        #expect(try production.rows("SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'land_copy' ORDER BY 1;")
                == ["nightly_cleanup\tDISABLED", "yearly_report\tDISABLED"])
        let original = try schemaDump(production, "land")
            .replacingOccurrences(of: "ON COMPLETION PRESERVE ENABLE", with: "ON COMPLETION PRESERVE DISABLE")
        let copyDump = try schemaDump(production, "land_copy").replacingOccurrences(of: "`land_copy`", with: "`land`")
            .replacingOccurrences(of: "Database: land_copy", with: "Database: land")
            .replacingOccurrences(of: "for database 'land_copy'", with: "for database 'land'")
        #expect(copyDump == original)
        #expect(try production.value("SHOW CREATE DATABASE land_copy;").replacingOccurrences(of: "land_copy", with: "land")
                == (try production.value("SHOW CREATE DATABASE land;")))
        #expect(try production.fingerprint("land_copy") == (try production.fingerprint("land")))
        #expect(try grants(production, "'app'@'%'").contains("GRANT SELECT, INSERT, UPDATE, DELETE ON `land\\_copy`.* TO `app`@`%`"))

        // 5. --replace of a database with views, routines and events: refused before loading, nothing left.
        let databases = try production.databases()
        let replaced = try bench.run(["restore", "--source", "land-db", "--to-database", production.url("land"), "--replace", "--yes"])
        #expect(replaced.exitCode == 2, "\(replaced)")
        #expect(replaced.err.contains("MariaDB cannot move views, triggers, routines or events between databases") && replaced.err.contains("nothing was changed"), "\(replaced)")
        #expect(!replaced.all.contains("achieved recovery time"), "\(replaced)")
        #expect(try production.databases() == databases, "no scratch or aside database")
        #expect(try untouchable(production, "land") == before)

        // 6. A drill of the same snapshot passes, schema included.
        try bench.writePolicy("land", """
            sources:
              - name: land-db
                kind: mariadb
                host: 127.0.0.1
                port: \(production.port)
                databases: [land]
              - name: world-db
                kind: mariadb
                host: 127.0.0.1
                port: \(production.port)
                databases: [world]
            objectives:
              rpo: 24h
              rto: 1h
            drills:
              every: 7d
              checks: [integrity, manifest, rto]

            """)
        let (drilled, evidence) = try bench.verify(["--policy", "land"])
        #expect(drilled.exitCode == 0, "\(drilled)")
        #expect(evidence.map(\.source) == ["land-db", "world-db"])
        for drill in evidence {
            #expect(drill.passed, "\(drill)")
            #expect(drill.check("schema")?.outcome == "pass", "\(drill)")
        }
    }
}
