import Foundation
import Glibc
import KhoTestSupport
import Testing

// A PostgreSQL database comes back whole, by the documented commands only: on a fresh server (its
// roles, their memberships and settings, the database's encoding, ICU locale, owner, connection
// limit, access list, comment and settings, every object and row, sequence values), and under a
// new name beside the original on the production server, which stays as it was. A drill passes on
// the same snapshot. Two servers of their own: "production" and "fresh".

// MARK: the production databases

/// Roles that own objects, hold grants, have settings; the database made with non-default
/// properties.
private let registryCluster = """
    CREATE ROLE app_owner NOLOGIN;
    CREATE ROLE app_rw NOLOGIN;
    CREATE ROLE app_user LOGIN PASSWORD 'app-secret' CONNECTION LIMIT 25 VALID UNTIL '2031-01-01 00:00:00+07';
    GRANT app_rw TO app_user;
    CREATE ROLE reporting LOGIN NOINHERIT;
    CREATE ROLE "Kế toán" NOLOGIN;
    GRANT "Kế toán" TO reporting WITH ADMIN OPTION;
    ALTER ROLE reporting SET search_path = reports, public, "$user";
    ALTER ROLE app_user SET statement_timeout = '30s';
    CREATE ROLE unrelated LOGIN;
    CREATE DATABASE registry OWNER app_owner ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'vi-VN' LC_COLLATE 'C' LC_CTYPE 'C'
        TEMPLATE template0 CONNECTION LIMIT 40;
    REVOKE CONNECT, TEMPORARY ON DATABASE registry FROM PUBLIC;
    GRANT CONNECT ON DATABASE registry TO app_user, reporting;
    GRANT TEMPORARY ON DATABASE registry TO app_user;
    COMMENT ON DATABASE registry IS 'Sổ hộ tịch — civil registry';
    ALTER DATABASE registry SET work_mem = '16MB';
    ALTER DATABASE registry SET search_path = registry, public;
    ALTER ROLE reporting IN DATABASE registry SET work_mem = '64MB';
    """

/// Schemas, an extension, an enum, a domain, a composite type, partitioned tables, an identity
/// column, a generated column, a deferrable foreign key, triggers (one disabled) and their
/// functions, a procedure, an advanced sequence, a view and a materialized view, row-level
/// security, grants on tables, columns, schemas, sequences, default privileges, comments.
private let registryObjects = """
    SET ROLE app_owner;
    CREATE SCHEMA registry AUTHORIZATION app_owner;
    CREATE SCHEMA reports;
    RESET ROLE;
    CREATE EXTENSION citext SCHEMA public;
    -- An extension at an older version than the server's default (kept through pg_upgrade, say):
    -- pg_dump does not write the version; the restore creates it at the recorded one.
    CREATE EXTENSION hstore VERSION '1.4' SCHEMA public;
    SET ROLE app_owner;
    CREATE TYPE registry.gender AS ENUM ('nam', 'nữ', 'khác');
    CREATE DOMAIN registry.id_number AS text CHECK (VALUE ~ '^[0-9]{12}$') NOT NULL;
    CREATE TYPE registry.address AS (street text, ward text, province text);
    CREATE SEQUENCE registry.certificate_no AS bigint START 1000 INCREMENT 7 CACHE 1;
    CREATE TABLE registry.person (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      citizen_id registry.id_number UNIQUE,
      full_name text NOT NULL COLLATE "C",
      email public.citext,
      gender registry.gender NOT NULL DEFAULT 'khác',
      born date NOT NULL,
      home registry.address,
      name_upper text GENERATED ALWAYS AS (upper(full_name)) STORED,
      updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX person_born_idx ON registry.person (born) WITH (fillfactor = 80);
    CREATE TABLE registry.event (
      id bigserial,
      person_id bigint NOT NULL REFERENCES registry.person(id) DEFERRABLE INITIALLY DEFERRED,
      kind text NOT NULL CHECK (kind IN ('birth', 'marriage', 'death')),
      certificate bigint NOT NULL DEFAULT nextval('registry.certificate_no'),
      happened date NOT NULL,
      PRIMARY KEY (id, happened)
    ) PARTITION BY RANGE (happened);
    CREATE TABLE registry.event_2025 PARTITION OF registry.event FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
    CREATE TABLE registry.event_2026 PARTITION OF registry.event FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
    CREATE INDEX event_kind_idx ON registry.event (kind);
    CREATE FUNCTION registry.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
    CREATE TRIGGER person_touch BEFORE UPDATE ON registry.person FOR EACH ROW EXECUTE FUNCTION registry.touch();
    CREATE FUNCTION registry.audit_guard() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = registry, pg_temp
      AS $$ BEGIN RETURN NEW; END $$;
    CREATE TRIGGER event_guard BEFORE INSERT ON registry.event_2026 FOR EACH ROW EXECUTE FUNCTION registry.audit_guard();
    ALTER TABLE registry.event_2026 DISABLE TRIGGER event_guard;
    CREATE PROCEDURE registry.archive(before date) LANGUAGE sql AS $$ DELETE FROM registry.event WHERE happened < before $$;
    INSERT INTO registry.person (citizen_id, full_name, email, gender, born, home)
    SELECT lpad(g::text, 12, '0'), 'Người số ' || g, 'p' || g || '@example.vn', (ARRAY['nam','nữ','khác'])[1 + g % 3]::registry.gender,
           date '1950-01-01' + g * 7, ROW('Đường ' || g, 'Phường ' || (g % 10), 'Quảng Ngãi')::registry.address
    FROM generate_series(1, 300) g;
    INSERT INTO registry.event (person_id, kind, happened)
    SELECT 1 + g % 300, (ARRAY['birth','marriage','death'])[1 + g % 3], date '2025-01-01' + (g % 700) FROM generate_series(1, 900) g;
    SELECT setval('registry.certificate_no', 987654, true);
    CREATE MATERIALIZED VIEW reports.events_per_kind AS SELECT kind, count(*) AS n FROM registry.event GROUP BY kind;
    CREATE VIEW reports.people AS SELECT id, full_name, born FROM registry.person WITH LOCAL CHECK OPTION;
    ALTER TABLE registry.person ENABLE ROW LEVEL SECURITY;
    CREATE POLICY person_reporting ON registry.person FOR SELECT TO reporting USING (born < date '2000-01-01');
    GRANT USAGE ON SCHEMA registry, reports TO reporting, app_rw;
    GRANT SELECT ON ALL TABLES IN SCHEMA registry TO reporting;
    GRANT SELECT ON reports.events_per_kind, reports.people TO reporting;
    GRANT SELECT, INSERT, UPDATE ON registry.person, registry.event TO app_rw;
    GRANT USAGE ON SEQUENCE registry.certificate_no TO app_rw;
    GRANT UPDATE (full_name) ON registry.person TO "Kế toán";
    REVOKE EXECUTE ON FUNCTION registry.audit_guard() FROM PUBLIC;
    ALTER DEFAULT PRIVILEGES IN SCHEMA registry GRANT SELECT ON TABLES TO reporting;
    COMMENT ON TABLE registry.person IS 'Công dân';
    COMMENT ON COLUMN registry.person.citizen_id IS 'Số định danh cá nhân';
    RESET ROLE;
    """

/// A small data set for the published Pagila schema (Tests/Fixtures/postgres/pagila): every table
/// filled, the foreign keys holding, payments in their monthly partitions.
private let pagilaData = """
    SET session_replication_role = replica;
    INSERT INTO public.language (name) VALUES ('English'), ('Vietnamese'), ('French');
    INSERT INTO public.country (country) SELECT 'Country ' || g FROM generate_series(1, 20) g;
    INSERT INTO public.city (city, country_id) SELECT 'City ' || g, 1 + g % 20 FROM generate_series(1, 60) g;
    INSERT INTO public.address (address, district, city_id, postal_code, phone)
      SELECT g || ' Lê Lợi', 'District ' || (g % 7), 1 + g % 60, lpad(g::text, 5, '0'), '0255' || lpad(g::text, 6, '0') FROM generate_series(1, 200) g;
    INSERT INTO public.store (manager_staff_id, address_id) VALUES (1, 1), (2, 2);
    INSERT INTO public.staff (first_name, last_name, address_id, email, store_id, username, picture)
      VALUES ('Mike', 'Hillyer', 3, 'mike@example.org', 1, 'Mike', '\\x89504e470d0a'), ('Jon', 'Stephens', 4, NULL, 2, 'Jon', NULL);
    INSERT INTO public.actor (first_name, last_name) SELECT 'ACTOR' || g, 'LAST' || (g % 37) FROM generate_series(1, 100) g;
    INSERT INTO public.category (name) SELECT unnest(ARRAY['Action', 'Animation', 'Children', 'Classics', 'Comedy', 'Documentary']);
    INSERT INTO public.film (title, description, release_year, language_id, rental_duration, rental_rate, length, replacement_cost, rating,
                             special_features, fulltext)
      SELECT 'FILM ' || g, 'A story about number ' || g, 2000 + g % 20, 1 + g % 3, 3 + g % 5, 0.99 + g % 5, 60 + g % 120, 9.99 + g % 20,
             (ARRAY['G', 'PG', 'PG-13', 'R', 'NC-17'])[1 + g % 5]::public.mpaa_rating, ARRAY['Trailers', 'Commentaries'],
             to_tsvector('pg_catalog.english', 'FILM ' || g || ' A story about number ' || g)
      FROM generate_series(1, 150) g;
    INSERT INTO public.film_actor (actor_id, film_id) SELECT DISTINCT 1 + (g * 7) % 100, 1 + g % 150 FROM generate_series(1, 400) g;
    INSERT INTO public.film_category (film_id, category_id) SELECT g, 1 + g % 6 FROM generate_series(1, 150) g;
    INSERT INTO public.customer (store_id, first_name, last_name, email, address_id, active)
      SELECT 1 + g % 2, 'CUST' || g, 'NAME' || g, 'c' || g || '@example.org', 5 + g % 190, 1 FROM generate_series(1, 300) g;
    INSERT INTO public.inventory (film_id, store_id) SELECT 1 + g % 150, 1 + g % 2 FROM generate_series(1, 500) g;
    INSERT INTO public.rental (rental_date, inventory_id, customer_id, return_date, staff_id)
      SELECT timestamptz '2022-01-01 10:00+00' + g * interval '7 hours', 1 + g % 500, 1 + g % 300,
             CASE WHEN g % 10 = 0 THEN NULL ELSE timestamptz '2022-01-03 10:00+00' + g * interval '7 hours' END, 1 + g % 2
      FROM generate_series(1, 600) g;
    INSERT INTO public.payment (customer_id, staff_id, rental_id, amount, payment_date)
      SELECT r.customer_id, r.staff_id, r.rental_id, 2.99 + r.rental_id % 5, r.rental_date + interval '1 hour' FROM public.rental r ORDER BY r.rental_id;
    RESET session_replication_role;
    REFRESH MATERIALIZED VIEW public.rental_by_category;
    """

private func makeProduction(_ server: ScratchPostgres) throws {
    try server.psql(registryCluster)
    try server.psql(registryObjects, database: "registry")
    try server.createDatabase("pagila")
    let schema = try String(contentsOfFile: TestPaths.packageRoot + "/Tests/Fixtures/postgres/pagila/pagila-schema.sql", encoding: .utf8)
    try server.psql(schema, database: "pagila")
    try server.psql(pagilaData, database: "pagila")
}

// MARK: what is compared

/// Everything about a database that a faithful restore keeps, except its name: a schema-only
/// pg_dump (without the random `\restrict` key lines of newer pg_dump), the pg_database row, its
/// settings, every row of every table, every sequence's value.
private struct DatabaseState: Equatable, CustomStringConvertible {
    var schema: String
    var properties: String
    var settings: String
    var rows: String
    var sequences: String

    var description: String { [properties, settings, sequences, rows, schema].joined(separator: "\n---\n") }
}

private func state(_ server: ScratchPostgres, _ database: String) throws -> DatabaseState {
    let dump = try ServerSupport.require(server.program("pg_dump"), ["-h", server.dir, "-p", String(server.port), "-U", server.superuser,
                                                                   "--schema-only", database], scratch: server.dir)
    let schema = dump.split(separator: "\n", omittingEmptySubsequences: false)
        .filter { !$0.hasPrefix("\\restrict") && !$0.hasPrefix("\\unrestrict") }.joined(separator: "\n")
    let literal = "'" + database.replacingOccurrences(of: "'", with: "''") + "'"
    let properties = try server.psql("""
        SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype, datlocprovider, daticulocale, datconnlimit,
               datistemplate, datallowconn, datacl, shobj_description(oid, 'pg_database'), (SELECT spcname FROM pg_tablespace WHERE oid = dattablespace)
        FROM pg_database WHERE datname = \(literal);
        """)
    let settings = try server.psql("""
        SELECT coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '(every role)'), s.setconfig FROM pg_db_role_setting s
        WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = \(literal)) ORDER BY 1;
        """)
    let sequences = try server.psql("""
        SELECT string_agg(format('%I.%I', schemaname, sequencename) || ' ' || coalesce(last_value::text, '-'), E'\\n' ORDER BY schemaname, sequencename) FROM pg_sequences;
        """, database: database)
    return DatabaseState(schema: schema, properties: properties, settings: settings, rows: try server.fingerprint(database), sequences: sequences)
}

/// The roles the registry needs, with their attributes, memberships and cluster-wide settings,
/// without passwords.
private func roles(_ server: ScratchPostgres) throws -> String {
    try server.psql("""
        SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolreplication, r.rolbypassrls,
               r.rolconnlimit, r.rolvaliduntil AT TIME ZONE 'UTC',
               (SELECT string_agg(g.rolname || CASE WHEN m.admin_option THEN ' (admin)' ELSE '' END, ', ' ORDER BY g.rolname)
                FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid),
               (SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setrole = r.oid AND s.setdatabase = 0)
        FROM pg_roles r WHERE r.rolname IN ('app_owner', 'app_rw', 'app_user', 'reporting', 'Kế toán', 'postgres') ORDER BY 1;
        """)
}

// MARK: JSON printed by kho restore --json

private struct RestoreJSON: Decodable {
    struct Comparison: Decodable {
        struct Row: Decodable { var table: String; var outcome: String }
        var rows: [Row]
    }
    struct Schema: Decodable {
        struct Difference: Decodable { var kind: String; var name: String; var outcome: String }
        var compared: Int
        var differences: [Difference]
    }
    struct Plan: Decodable {
        struct Item: Decodable { var action: String; var subject: String; var detail: String }
        var items: [Item]
    }
    var database: String
    var comparison: Comparison?
    var schema: Schema?
    var notes: [String]
    var plan: Plan?

    func item(_ subject: String) -> Plan.Item? { plan?.items.first { $0.subject == subject } }
}

private func restore(_ bench: DrillBench, _ arguments: [String], objects: Int = 50, sourceLocation: SourceLocation = #_sourceLocation) throws -> RestoreJSON {
    let result = try bench.run(["restore"] + arguments + ["--yes", "--json"])
    try #require(result.exitCode == 0, "\(result)", sourceLocation: sourceLocation)
    let restored = try result.decode(RestoreJSON.self)
    #expect(restored.comparison?.rows.isEmpty == false, sourceLocation: sourceLocation)
    #expect(restored.comparison?.rows.allSatisfy { $0.outcome == "equal" } == true, "\(result)", sourceLocation: sourceLocation)
    let schema = try #require(restored.schema, "the snapshot records a schema fingerprint: \(result)", sourceLocation: sourceLocation)
    #expect(schema.compared > objects && schema.differences.isEmpty, "\(result)", sourceLocation: sourceLocation)
    return restored
}

// MARK: the tests

@Suite("PostgreSQL: the whole database, on a fresh server and beside the original", .serialized,
       .enabled(if: ScratchPostgres.isAvailable, Comment(rawValue: ScratchPostgres.unavailableReason ?? "")))
struct PostgresRestoreTests {
    @Test("restored onto a fresh server by the documented commands, roles, properties, schema, rows and sequences equal the original's; under a new name on production the original is unchanged and the copy equal; a drill passes on the same snapshot")
    func wholeDatabase() throws {
        let production = try ScratchPostgres(label: "pg-production")
        defer { production.stop() }
        let fresh = try ScratchPostgres(label: "pg-fresh")
        defer { fresh.stop() }
        try makeProduction(production)
        let registry = try state(production, "registry")
        let pagila = try state(production, "pagila")
        let productionRoles = try roles(production)

        let bench = try DrillBench("pg-whole")
        try bench.ok(["backup", "--postgres", production.url("registry,pagila"), "--source-name", "registry-db"])
        let listing = try bench.ok(["ls", "latest"]).out
        for file in ["globals.sql", "registry.sql", "registry.schema.json", "registry.globals.json", "pagila.sql", "pagila.schema.json", "pagila.globals.json"] {
            #expect(listing.contains("/" + file), "\(file) is not in the snapshot:\n\(listing)")
        }
        // Password hashes are in the encrypted globals file, never in the manifest kho prints.
        let snapshots = try bench.ok(["snapshots", "--json"]).out
        #expect(!snapshots.contains("SCRAM-SHA-256"), "a password hash is in the manifest")
        #expect(try bench.ok(["dump", "latest", "registry.globals.json"]).out.contains("SCRAM-SHA-256"))

        // A fresh server: everything is created.
        let fresh1 = try restore(bench, ["--source", "registry-db", "--database", "registry", "--to-database", fresh.url("registry")])
        for role in ["app_owner", "app_rw", "app_user", "reporting", "Kế toán"] {
            #expect(fresh1.item("role \(role)")?.action == "create", "\(role): \(String(describing: fresh1.item("role \(role)")))")
        }
        #expect(fresh1.item("role unrelated") == nil, "a role the database does not need was planned")
        #expect(fresh1.item("passwords")?.detail.contains("--role-passwords") == true)
        #expect(fresh1.notes.contains { $0.hasPrefix("roles created: ") && $0.contains("without passwords") }, "\(fresh1.notes)")
        _ = try restore(bench, ["--source", "registry-db", "--database", "pagila", "--to-database", fresh.url("pagila")])

        let freshRegistry = try state(fresh, "registry")
        #expect(freshRegistry.schema == registry.schema)
        #expect(freshRegistry.properties == registry.properties)
        #expect(freshRegistry.properties.contains("\ti\tvi-VN\t40\t"), "\(freshRegistry.properties)")
        #expect(freshRegistry.settings == registry.settings)
        #expect(freshRegistry.rows == registry.rows)
        #expect(freshRegistry.sequences == registry.sequences && freshRegistry.sequences.contains("registry.certificate_no 987654"), "\(freshRegistry.sequences)")
        #expect(try state(fresh, "pagila") == pagila)
        #expect(try roles(fresh) == productionRoles)
        #expect(try fresh.value("SELECT count(*) FROM pg_roles WHERE rolname = 'unrelated'") == "0")
        #expect(try fresh.value("SELECT count(*) FROM pg_authid WHERE rolpassword IS NOT NULL") == "0", "a password was restored without --role-passwords")

        // Beside the original on production, under a new name: the roles exist and are kept.
        let copy = try restore(bench, ["--source", "registry-db", "--database", "registry", "--to-database", production.url("registry_copy")])
        #expect(copy.item("role app_owner")?.action == "keep")
        #expect(copy.item("role app_owner")?.detail == "exists on the target and is kept as it is: attributes and memberships not changed")
        let original = try state(production, "registry"), copied = try state(production, "registry_copy")
        #expect(original == registry, "restoring a copy changed the original:\n\(original)\n=====\n\(registry)")
        #expect(copied == registry, "the copy differs:\n\(copied)\n=====\n\(registry)")
        #expect(try roles(production) == productionRoles)
        #expect(try production.value("SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = 'app_user'") == "t")

        // The drill restores the same snapshot by the same path into its scratch cluster.
        try bench.writePolicy("registry", """
            sources:
              - name: registry-db
                kind: postgres
                host: 127.0.0.1
                port: \(production.port)
                databases: [registry, pagila]
            objectives:
              rpo: 24h
              rto: 1h
            drills:
              every: 7d

            """)
        let (result, drills) = try bench.verify(["--policy", "registry"])
        #expect(result.exitCode == 0, "\(result)")
        let drill = try #require(drills.first)
        #expect(drill.passed, "\(drill)")
        let schema = try #require(drill.check("schema"), "\(drill)")
        #expect(schema.outcome == "pass" && schema.output.hasSuffix("objects: present and equal to the schema recorded at backup"), "\(schema.output)")
        try expectNothingLeft(bench, after: "the drill")
    }

    @Test("a tablespace the target lacks and a login that may not create databases are refused before anything is loaded; --map-tablespace puts the objects elsewhere")
    func refusals() throws {
        let production = try ScratchPostgres(label: "pg-production")
        defer { production.stop() }
        let fresh = try ScratchPostgres(label: "pg-fresh")
        defer { fresh.stop() }
        let location = production.dir + "/fast"
        try makeDirectories(location)
        try ServerSupport.chownTree(location, to: "postgres")
        try production.psql("CREATE TABLESPACE fast LOCATION '\(location)'; CREATE ROLE archivist NOLOGIN; CREATE DATABASE archive OWNER archivist;")
        try production.psql("""
            CREATE TABLE cases (id int PRIMARY KEY, title text) TABLESPACE fast;
            CREATE INDEX cases_title ON cases (title) TABLESPACE fast;
            INSERT INTO cases SELECT g, 'Hồ sơ ' || g FROM generate_series(1, 100) g;
            ALTER TABLE cases OWNER TO archivist;
            """, database: "archive")
        let bench = try DrillBench("pg-refusals")
        try bench.ok(["backup", "--postgres", production.url("archive"), "--source-name", "archive-db"])
        let rolesBefore = try fresh.rows("SELECT rolname FROM pg_roles ORDER BY 1;")

        let missing = try bench.run(["restore", "--source", "archive-db", "--to-database", fresh.url("archive"), "--yes"])
        #expect(missing.exitCode == 2, "\(missing)")
        #expect(missing.err.contains("The tablespace fast, which the database uses (it was at \(location) on the backed-up server), does not exist on 127.0.0.1:\(fresh.port): create it there first (CREATE TABLESPACE), or pass --map-tablespace fast=pg_default (or another tablespace that exists) to put its objects there."), "\(missing)")
        #expect(missing.err.contains("  refuse  tablespace fast: "), "the plan printed before the refusal lists it: \(missing)")
        #expect(try fresh.databases() == ["postgres"])
        #expect(try fresh.rows("SELECT rolname FROM pg_roles ORDER BY 1;") == rolesBefore, "a refused restore created a role")

        // A login that may create roles but not databases.
        try fresh.psql("CREATE ROLE restorer LOGIN CREATEROLE;")
        let denied = try bench.run(["restore", "--source", "archive-db", "--to-database", fresh.url("archive", user: "restorer"),
                                    "--map-tablespace", "fast=pg_default", "--yes"])
        #expect(denied.exitCode == 2, "\(denied)")
        #expect(denied.err.contains("The login restorer on 127.0.0.1:\(fresh.port) may not create databases (it has neither CREATEDB nor SUPERUSER): restore as a user that may, or run ALTER ROLE \"restorer\" CREATEDB on the target."), "\(denied)")
        #expect(try fresh.databases() == ["postgres"])

        // Mapped: the table and its index go to pg_default, and the comparison says equal.
        let mapped = try restore(bench, ["--source", "archive-db", "--to-database", fresh.url("archive"), "--map-tablespace", "fast=pg_default"], objects: 10)
        #expect(mapped.notes.contains("tablespaces mapped: fast → pg_default"), "\(mapped.notes)")
        #expect(try fresh.value("SELECT count(*) FROM pg_class WHERE reltablespace <> 0 AND relname IN ('cases', 'cases_title');", database: "archive") == "0")
        #expect(try fresh.value("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'cases';", database: "archive") == "archivist")
    }

    @Test("--map-role creates a role under its new name: ownership, grants, policies and database settings follow it")
    func mappedRoles() throws {
        let production = try ScratchPostgres(label: "pg-production")
        defer { production.stop() }
        let fresh = try ScratchPostgres(label: "pg-fresh")
        defer { fresh.stop() }
        try production.psql(registryCluster)
        try production.psql(registryObjects, database: "registry")
        let bench = try DrillBench("pg-map-role")
        try bench.ok(["backup", "--postgres", production.url("registry"), "--source-name", "registry-db", "--no-globals"])

        let mapped = try restore(bench, ["--source", "registry-db", "--to-database", fresh.url("so_ho_tich"),
                                         "--map-role", "app_owner=chu_so_huu", "--map-role", "reporting=bao_cao", "--role-passwords"])
        #expect(mapped.item("role chu_so_huu")?.detail.hasSuffix("as app_owner in the snapshot (renamed after the load)") == true, "\(String(describing: mapped.plan))")
        #expect(try fresh.value("SELECT count(*) FROM pg_roles WHERE rolname IN ('app_owner', 'reporting')") == "0")
        #expect(try fresh.value("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'so_ho_tich'") == "chu_so_huu")
        #expect(try fresh.value("SELECT tableowner FROM pg_tables WHERE tablename = 'person'", database: "so_ho_tich") == "chu_so_huu")
        #expect(try fresh.value("SELECT has_table_privilege('bao_cao', 'registry.person', 'SELECT')", database: "so_ho_tich") == "t")
        #expect(try fresh.value("SELECT array_to_string(polroles::regrole[], ',') FROM pg_policy", database: "so_ho_tich") == "bao_cao")
        #expect(try fresh.value("SELECT setconfig::text FROM pg_db_role_setting WHERE setrole = 'bao_cao'::regrole AND setdatabase <> 0") == "{work_mem=64MB}")
        #expect(try fresh.value("SELECT pg_has_role('bao_cao', 'Kế toán', 'MEMBER')") == "t")
        // --role-passwords: the recorded SCRAM hash, for the role that had one.
        #expect(try fresh.value("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'app_user'") == "t")

        // The same mapping again: the new names exist now, and kho maps only to roles it creates.
        let again = try bench.run(["restore", "--source", "registry-db", "--to-database", fresh.url("so_ho_tich_2"),
                                   "--map-role", "app_owner=chu_so_huu", "--yes"])
        #expect(again.exitCode == 2, "\(again)")
        #expect(again.err.contains("--map-role app_owner=chu_so_huu: the role chu_so_huu exists on the target; kho maps a role only to a new role it creates"), "\(again)")
    }
}
