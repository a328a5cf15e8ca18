import Foundation
import Glibc
import KhoTestSupport
import Testing

// A drill proves the schema, not only the rows: the same snapshot passes, and fails naming the
// object when one index, one grant or one sequence value of the restored copy is changed while
// the drill is paused with its scratch server loaded (KHO_TEST_DRILL_PAUSE).

@Suite("drills compare the schema", .serialized, .scratchPostgres, .scratchMariaDB,
       .enabled(if: ScratchPostgres.isAvailable, Comment(rawValue: ScratchPostgres.unavailableReason ?? "")),
       .enabled(if: ScratchMariaDB.isAvailable, Comment(rawValue: ScratchMariaDB.unavailableReason ?? "")))
struct DrillSchemaTests {
    @Test("a drill passes on a good snapshot and fails naming the object when an index, a grant or a sequence value of the restored copy is changed (PostgreSQL and MariaDB)")
    func schemaDifferencesFailTheDrill() throws {
        try requireRoot()
        let pg = try ScratchPostgres.requireShared()
        let maria = try ScratchMariaDB.requireShared()
        let bench = try DrillBench("drill-schema")
        try pg.psql("DROP DATABASE IF EXISTS drill_schema; DROP ROLE IF EXISTS drill_schema_reader;")
        try pg.psql("CREATE ROLE drill_schema_reader NOLOGIN;")
        try pg.createDatabase("drill_schema")
        try pg.psql("""
            CREATE TABLE so_ho (id bigserial PRIMARY KEY, chu_ho text NOT NULL, xa text NOT NULL);
            CREATE INDEX so_ho_xa_idx ON so_ho (xa);
            GRANT SELECT ON so_ho TO drill_schema_reader;
            INSERT INTO so_ho (chu_ho, xa) SELECT 'Nguyễn Văn ' || i, 'xã ' || (i % 7) FROM generate_series(1, 200) i;
            """, database: "drill_schema")
        try maria.sql("""
            DROP DATABASE IF EXISTS drill_schema; DROP USER IF EXISTS 'drill_schema_reader'@'%';
            CREATE DATABASE drill_schema; USE drill_schema;
            CREATE TABLE thua_dat (id INT PRIMARY KEY AUTO_INCREMENT, so_to INT NOT NULL, chu TEXT, KEY so_to_idx (so_to));
            CREATE SEQUENCE so_hieu START WITH 100;
            CREATE USER 'drill_schema_reader'@'%';
            GRANT SELECT ON drill_schema.thua_dat TO 'drill_schema_reader'@'%';
            INSERT INTO thua_dat (so_to, chu) SELECT seq % 13, CONCAT('chủ ', seq) FROM seq_1_to_200;
            """)
        try bench.writePolicy("schema", """
            sources:
              - name: schema-pg
                kind: postgres
                host: 127.0.0.1
                port: \(pg.port)
                databases: [drill_schema]
              - name: schema-maria
                kind: mariadb
                host: 127.0.0.1
                port: \(maria.port)
                databases: [drill_schema]
            objectives:
              rpo: 24h
              rto: 1h

            """)
        try bench.ok(["run", "--all"])

        // The good snapshot passes, with the schema compared.
        for source in ["schema-pg", "schema-maria"] {
            let (result, drills) = try bench.verify(["--source", source])
            let drill = try #require(drills.first, "\(result)")
            #expect(result.exitCode == 0 && drill.passed, "\(drill)")
            let schema = try #require(drill.check("schema"), "\(drill)")
            #expect(schema.outcome == "pass" && schema.output.contains("objects: present and equal"), "\(schema.output)")
        }

        // PostgreSQL: one index dropped, one grant revoked and a sequence moved in the scratch copy.
        let psql = pg.program("psql")
        let (pgResult, pgDrills) = try pausedDrill(bench, source: "schema-pg") { info in
            let host = try #require(info["host"]), port = try #require(info["port"])
            _ = try ServerSupport.require(psql, ["-X", "-w", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port, "-U", "postgres", "-d", "drill_schema", "-c",
                                                 "DROP INDEX so_ho_xa_idx; REVOKE SELECT ON so_ho FROM drill_schema_reader; SELECT setval('so_ho_id_seq', 5000);"],
                                          scratch: bench.box.dir)
        }
        #expect(pgResult.exitCode != 0, "\(pgResult)")
        let pgDrill = try #require(pgDrills.first, "\(pgResult)")
        #expect(!pgDrill.passed, "\(pgDrill)")
        let pgReasons = pgDrill.failureReasons.joined(separator: "\n")
        #expect(pgReasons.contains("so_ho_xa_idx") && pgReasons.contains("missing"), "the dropped index is named: \(pgReasons)")
        #expect(pgReasons.contains("drill_schema_reader"), "the revoked grant is named: \(pgReasons)")
        #expect(pgReasons.contains("so_ho_id_seq"), "the moved sequence is named: \(pgReasons)")

        // MariaDB: the same, on its own objects.
        let mariadb = try #require(ScratchMariaDB.client)
        let (mariaResult, mariaDrills) = try pausedDrill(bench, source: "schema-maria") { info in
            let socket = try #require(info["host"])
            _ = try ServerSupport.require(mariadb, ["--no-defaults", "--protocol=SOCKET", "--socket=" + socket, "-u", "root", "drill_schema", "-e",
                                                    "DROP INDEX so_to_idx ON thua_dat; REVOKE SELECT ON drill_schema.thua_dat FROM 'drill_schema_reader'@'%'; SELECT SETVAL(so_hieu, 5000);"],
                                          scratch: bench.box.dir)
        }
        #expect(mariaResult.exitCode != 0, "\(mariaResult)")
        let mariaDrill = try #require(mariaDrills.first, "\(mariaResult)")
        #expect(!mariaDrill.passed, "\(mariaDrill)")
        let mariaReasons = mariaDrill.failureReasons.joined(separator: "\n")
        #expect(mariaReasons.contains("so_to_idx") && mariaReasons.contains("missing"), "the dropped index is named: \(mariaReasons)")
        #expect(mariaReasons.contains("drill_schema_reader"), "the revoked grant is named: \(mariaReasons)")
        #expect(mariaReasons.contains("so_hieu"), "the moved sequence is named: \(mariaReasons)")

        try expectNothingLeft(bench, after: "schema drills")
        try pg.psql("DROP DATABASE IF EXISTS drill_schema; DROP ROLE IF EXISTS drill_schema_reader;")
        try maria.sql("DROP DATABASE IF EXISTS drill_schema; DROP USER IF EXISTS 'drill_schema_reader'@'%';")
    }
}
