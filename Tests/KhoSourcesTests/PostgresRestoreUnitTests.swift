import Foundation
import Glibc
import KhoCore
@testable import KhoSources
import KhoSupport
import KhoTestSupport
import Testing

// The pieces of a PostgreSQL restore that decide things without a server (literals, settings,
// statements, the dump filters, old manifests, the expected fingerprint), and the fingerprint's
// reach against a real server: a dropped index, a revoked grant and a changed sequence are named.

@Suite("PostgreSQL restore, piece by piece")
struct PostgresRestorePieceTests {
    @Test("literals: quotes doubled; a backslash makes an E'' literal with it doubled; nothing else touched")
    func literals() {
        #expect(PostgresLiteral.quote("vi-VN") == "'vi-VN'")
        #expect(PostgresLiteral.quote("O'Brien") == "'O''Brien'")
        #expect(PostgresLiteral.quote("a\\b'c") == "E'a\\\\b''c'")
        #expect(PostgresLiteral.quote("x'; DROP DATABASE registry; --") == "'x''; DROP DATABASE registry; --'")
    }

    @Test("list settings (search_path …) are given back element by element, as the server split them")
    func settings() {
        #expect(PostgresLiteral.splitList("reports, public, \"$user\"") == ["reports", "public", "$user"])
        #expect(PostgresLiteral.splitList("\"a \"\"b\"\"\",  c ") == ["a \"b\"", "c"])
        #expect(PostgresLiteral.splitList("") == [])
        #expect(PostgresLiteral.setting("search_path=reports, public, \"$user\"")?.value == "'reports', 'public', '$user'")
        #expect(PostgresLiteral.setting("work_mem=64MB")?.value == "'64MB'")
        #expect(PostgresLiteral.setting("application_name=it's")?.value == "'it''s'")
        #expect(PostgresLiteral.setting("novalue") == nil)
        #expect(PostgresStatements.roleSetting("work_mem=64MB", role: "bao \"cáo\"", database: "sổ") == "ALTER ROLE \"bao \"\"cáo\"\"\" IN DATABASE \"sổ\" SET \"work_mem\" TO '64MB'")
        #expect(PostgresStatements.databaseSetting("search_path=registry, public", database: "r") == "ALTER DATABASE \"r\" SET \"search_path\" TO 'registry', 'public'")
    }

    @Test("the statements kho writes: every name quoted, every text a literal")
    func statements() {
        let role = PostgresGlobals.Role(name: "x\"y", superuser: false, inherit: false, createRole: false, createDatabase: true, login: true,
                                        replication: false, bypassRowSecurity: false, connectionLimit: 3, validUntil: "2031-01-01 00:00:00.000000+00",
                                        settings: [], memberOf: [], passwordHash: nil, bootstrap: false)
        #expect(PostgresStatements.createRole(role, name: role.name) == "CREATE ROLE \"x\"\"y\" WITH NOSUPERUSER NOINHERIT NOCREATEROLE CREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 3 VALID UNTIL '2031-01-01 00:00:00.000000+00'")
        let membership = PostgresGlobals.Membership(group: "app_rw", admin: true, inherit: false, set: true, grantor: nil)
        #expect(PostgresStatements.grantMembership(membership, to: "u", version: 150000) == "GRANT \"app_rw\" TO \"u\" WITH ADMIN OPTION")
        #expect(PostgresStatements.grantMembership(membership, to: "u", version: 160000) == "GRANT \"app_rw\" TO \"u\" WITH ADMIN TRUE, INHERIT FALSE, SET TRUE")
        let database = PostgresGlobals.Database(
            name: "registry", owner: "app_owner", encoding: "UTF8", collate: "C", ctype: "C", localeProvider: "icu", locale: "vi-VN", icuRules: nil,
            connectionLimit: 40, isTemplate: false, allowConnections: true, tablespace: "pg_default", comment: "Sổ 'hộ tịch'",
            acl: [.init(grantee: nil, grantor: "app_owner", privilege: "TEMPORARY", grantable: false),
                  .init(grantee: "app_user", grantor: "app_owner", privilege: "CONNECT", grantable: true)],
            settings: [], roleSettings: [])
        #expect(PostgresStatements.createDatabase("new", database, owner: "app_owner", tablespace: "pg_default", version: 150000)
                == "CREATE DATABASE \"new\" WITH TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' LOCALE_PROVIDER \"icu\" ICU_LOCALE 'vi-VN' OWNER \"app_owner\" CONNECTION LIMIT 40 TABLESPACE \"pg_default\"")
        #expect(PostgresStatements.databaseACL(database.acl, database: "new", owner: "app_owner", roleName: { $0 }) == [
            "REVOKE ALL ON DATABASE \"new\" FROM PUBLIC", "REVOKE ALL ON DATABASE \"new\" FROM \"app_owner\"",
            "GRANT TEMPORARY ON DATABASE \"new\" TO PUBLIC", "GRANT CONNECT ON DATABASE \"new\" TO \"app_user\" WITH GRANT OPTION",
        ])
        #expect(PostgresStatements.databaseACL(nil, database: "new", owner: "o", roleName: { $0 }).isEmpty)
        #expect(PostgresStatements.comment(database.comment, database: "new") == "COMMENT ON DATABASE \"new\" IS 'Sổ ''hộ tịch'''")
    }

    @Test("an old snapshot's globals.sql: the roles its CREATE ROLE statements name, quoted names undone")
    func oldGlobals() {
        let script = #"""
            --
            -- PostgreSQL database cluster dump
            --

            SET default_transaction_read_only = off;

            CREATE ROLE app_owner;
            ALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
            CREATE ROLE "Kế toán ""A""";
            ALTER ROLE "Kế toán ""A""" WITH NOLOGIN;
            CREATE ROLE postgres;
            GRANT app_owner TO "Kế toán ""A""" GRANTED BY postgres;

            """#
        #expect(PostgresStatements.rolesCreated(byGlobalsScript: Array(script.utf8)) == ["app_owner", "Kế toán \"A\"", "postgres"])
        #expect(PostgresStatements.parseIdentifier(Array("bad name".utf8)) == nil)
        #expect(PostgresStatements.parseIdentifier(Array("\"unterminated".utf8)) == nil)
    }

    @Test("a manifest of a kho before issue 19 decodes, with no schema and no globals file")
    func oldManifest() throws {
        let json = """
            {"engine":"postgres","serverVersion":"15.4","checksumMethod":"x","databases":[{"name":"shop","file":"shop.sql","sizeBytes":10,"tables":[]}]}
            """
        let manifest = try JSON.decoder.decode(DumpManifest.self, from: Data(json.utf8))
        #expect(manifest.databases.first?.schemaFile == nil && manifest.databases.first?.globalsFile == nil && manifest.databases.first?.schemaDigest == nil)
    }

    @Test("a database called globals would overwrite globals.sql: refused with the way out; a database named twice too")
    func fileNames() throws {
        #expect(throws: Never.self) { try PostgresSource.checkFileNames(databases: ["registry", "shop"], includeGlobals: true, source: "s") }
        #expect(throws: Never.self) { try PostgresSource.checkFileNames(databases: ["globals"], includeGlobals: false, source: "s") }
        do {
            try PostgresSource.checkFileNames(databases: ["registry", "globals"], includeGlobals: true, source: "s")
            Issue.record("a database named globals was accepted beside globals.sql")
        } catch let error as KhoError {
            #expect(error.kind == .usage)
            #expect(error.message.contains("--no-globals"), "\(error.message)")
        }
        #expect(throws: KhoError.self) { try PostgresSource.checkFileNames(databases: ["a", "a"], includeGlobals: false, source: "s") }
    }

    @Test("sequence values come from the dump's setval lines, whatever the chunking, never from COPY data")
    func sequenceScanner() {
        let dump = """
            COPY public.notes (body) FROM stdin;
            SELECT pg_catalog.setval('public.fake', 999, true);
            \\.
            SELECT pg_catalog.setval('public.t_id_seq', 42, true);
            SELECT pg_catalog.setval('public."Số ''đơn''"', 1, false);
            SELECT pg_catalog.setval('public.neg', -5, true);
            """
        let bytes = Array(dump.utf8)
        for size in [1, 2, 7, 64, bytes.count] {
            let scanner = PostgresSequenceScanner()
            var start = 0
            while start < bytes.count {
                let end = min(bytes.count, start + size)
                bytes[start..<end].withUnsafeBytes { scanner.feed($0) }
                start = end
            }
            scanner.finish()
            #expect(scanner.values == ["public.t_id_seq": .init(lastValue: "42", isCalled: true),
                                       "public.\"Số 'đơn'\"": .init(lastValue: "1", isCalled: false),
                                       "public.neg": .init(lastValue: "-5", isCalled: true)], "chunks of \(size)")
        }
    }

    @Test("--map-tablespace rewrites only pg_dump's SET default_tablespace lines of mapped tablespaces, not COPY data, whatever the chunking")
    func tablespaceFilter() throws {
        let long = String(repeating: "x", count: 10_000)
        let dump = #"""
            SET default_tablespace = fast;

            CREATE TABLE public.t (a text);
            SET default_tablespace = "Nhanh ""1""";
            SET default_tablespace = '';
            SET default_tablespace = other;
            COPY public.t (a) FROM stdin;
            SET default_tablespace = fast;
            \#(long)
            \.
            SET default_tablespace = fast;
            """#
        let expected = #"""
            SET default_tablespace = "pg_default";

            CREATE TABLE public.t (a text);
            SET default_tablespace = "chậm";
            SET default_tablespace = '';
            SET default_tablespace = other;
            COPY public.t (a) FROM stdin;
            SET default_tablespace = fast;
            \#(long)
            \.
            SET default_tablespace = "pg_default";
            """#
        let bytes = Array(dump.utf8)
        for size in [1, 5, 333, 4096, bytes.count] {
            let filter = PostgresDumpFilter(tablespaces: ["fast": "pg_default", "Nhanh \"1\"": "chậm"])
            #expect(try filtered(bytes, through: filter, chunks: size) == expected, "chunks of \(size)")
        }
    }

    @Test("extensions are created at their recorded version: pg_dump's CREATE EXTENSION lines get VERSION, quoted names too; COPY data and other lines stay")
    func extensionVersions() throws {
        let dump = #"""
            CREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public;
            CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA "Sổ ""x""";
            CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;
            COPY public.t (a) FROM stdin;
            CREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public;
            \.
            """#
        let expected = #"""
            CREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public VERSION '1.4';
            CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA "Sổ ""x""" VERSION '1.1';
            CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA public;
            COPY public.t (a) FROM stdin;
            CREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public;
            \.
            """#
        let bytes = Array(dump.utf8)
        for size in [1, 7, bytes.count] {
            let filter = PostgresDumpFilter(tablespaces: [:], extensionVersions: ["hstore": "1.4", "uuid-ossp": "1.1"])
            #expect(try filtered(bytes, through: filter, chunks: size) == expected, "chunks of \(size)")
        }
    }

    @Test("the expected fingerprint: mapped roles and tablespaces under their new names, kept roles as they are on the target")
    func mapping() throws {
        func object(_ kind: SchemaObjectKind, _ name: String, _ definition: [String: JSONValue]) throws -> SchemaFingerprint.Object {
            try PostgresFingerprint.object(kind, name: name, definition)
        }
        let recorded = SchemaFingerprint(engine: .postgres, objects: [
            try object(.table, "public.t", ["owner": .string("app_owner"), "tablespace": .string("fast")]),
            try object(.index, "public.t_idx", ["definition": .string("CREATE INDEX …"), "tablespace": .string("slow")]),
            try object(.grant, "on table public.t to reporting", ["on": .string("table public.t"), "grantee": .string("reporting"),
                                                                  "grantors": .array([.string("app_owner")]), "privileges": .string("SELECT")]),
            try object(.grant, "on table public.t to PUBLIC", ["on": .string("table public.t"), "grantee": .string("PUBLIC"),
                                                               "grantors": .array([.string("app_owner")]), "privileges": .string("SELECT")]),
            try object(.policy, "public.t.p", ["roles": .array([.string("reporting"), .string("PUBLIC")])]),
            try object(.databaseProperty, "tablespace", ["value": .string("pg_default")]),
            try object(.databaseProperty, "settings for role reporting", ["role": .string("reporting"), "value": .array([.string("work_mem=1MB")])]),
            try object(.role, "app_owner", ["role": .string("app_owner"), "attributes": .string("NOLOGIN")]),
            try object(.role, "reporting", ["role": .string("reporting"), "attributes": .string("LOGIN"), "memberOf": .array([.string("app_owner")])]),
            try object(.role, "kept", ["role": .string("kept"), "attributes": .string("LOGIN")]),
        ])
        let actual = SchemaFingerprint(engine: .postgres, objects: [
            try object(.role, "kept", ["role": .string("kept"), "attributes": .string("LOGIN SUPERUSER")]),
            try object(.role, "someone_else", ["role": .string("someone_else"), "attributes": .string("LOGIN")]),
        ])
        let mapping = PostgresFingerprintMapping(roleMap: ["app_owner": "owner_2", "reporting": "bao_cao"], tablespaceMap: ["fast": "pg_default"],
                                                 existingTablespaces: ["pg_default", "pg_global"], createdRoles: ["owner_2", "bao_cao"])
        let (expected, adjusted) = try mapping.adjust(expected: recorded, actual: actual)
        let byName = Dictionary(uniqueKeysWithValues: expected.objects.map { ("\($0.kind.rawValue) \($0.name)", $0.definition) })
        #expect(byName["table public.t"] == #"{"owner":"owner_2"}"#, "the default tablespace is not named")
        #expect(byName["index public.t_idx"] == #"{"definition":"CREATE INDEX …"}"#, "a tablespace the target lacks went to pg_default")
        #expect(byName["grant on table public.t to bao_cao"]?.contains(#""grantors":["owner_2"]"#) == true, "\(byName.keys.sorted())")
        #expect(byName["grant on table public.t to PUBLIC"] != nil)
        #expect(byName["policy public.t.p"] == #"{"roles":["bao_cao","PUBLIC"]}"#)
        #expect(byName["database-property settings for role bao_cao"] != nil)
        #expect(byName["role bao_cao"]?.contains(#""memberOf":["owner_2"]"#) == true)
        #expect(byName["role owner_2"] != nil && byName["role app_owner"] == nil)
        #expect(byName["role kept"] == #"{"attributes":"LOGIN SUPERUSER","role":"kept"}"#, "a kept role is compared as it is on the target")
        #expect(!adjusted.objects.contains { $0.name == "someone_else" }, "roles of the target that the snapshot does not name are left out")
    }
}

@Suite("PostgreSQL schema fingerprint against a server", .serialized,
       .enabled(if: ScratchPostgres.isAvailable, Comment(rawValue: ScratchPostgres.unavailableReason ?? "")))
struct PostgresFingerprintTests {
    @Test("a dropped index, a revoked grant, a changed sequence, a disabled trigger and a changed database property are each named; literals made by kho read back as written")
    func reach() throws {
        let server = try TestPostgres(password: "p")
        defer { server.stop() }
        let admin = try server.connect()
        for value in hostile + ["\\", "'", "E'x'"] {
            #expect(try admin.value("SELECT \(PostgresLiteral.quote(value))::text") == value)
            try admin.query("SET standard_conforming_strings = off")
            #expect(try admin.value("SELECT \(PostgresLiteral.quote(value))::text") == value)
            try admin.query("SET standard_conforming_strings = on")
        }
        try server.psql("""
            CREATE ROLE reporting; CREATE ROLE "chủ" NOLOGIN; CREATE DATABASE fp OWNER "chủ" TEMPLATE template0;
            ALTER DATABASE fp SET work_mem = '8MB';
            """)
        try server.psql("""
            CREATE TABLE public.t (id int PRIMARY KEY, v text);
            CREATE INDEX t_v_idx ON public.t (v);
            CREATE SEQUENCE public.s START 10;
            SELECT nextval('public.s');
            GRANT SELECT ON public.t TO reporting;
            CREATE FUNCTION public.f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
            CREATE TRIGGER t_f BEFORE INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f();
            ALTER TABLE public.t OWNER TO "chủ";
            """, database: "fp")
        let before = try PostgresFingerprint.read(try server.connect("fp"), local: false)
        #expect(before.globals.database.owner == "chủ")
        #expect(Set(before.globals.roles.map(\.name)).isSuperset(of: ["chủ", "reporting"]))
        #expect(before.fingerprint.objects.contains { $0.kind == .sequence && $0.name == "public.s" && $0.definition.contains(#""lastValue":"10""#) })
        // The same database read twice: the same fingerprint.
        #expect(try PostgresFingerprint.read(try server.connect("fp"), local: false).fingerprint == before.fingerprint)

        try server.psql("""
            DROP INDEX public.t_v_idx;
            REVOKE SELECT ON public.t FROM reporting;
            SELECT setval('public.s', 500);
            ALTER TABLE public.t DISABLE TRIGGER t_f;
            """, database: "fp")
        try server.psql("ALTER DATABASE fp SET work_mem = '9MB';")
        let recordedRoles = Set(before.globals.roles.map(\.name))
        let after = try PostgresFingerprint.read(try server.connect("fp"), local: false, roles: recordedRoles).fingerprint
        let comparison = SchemaComparison(expected: before.fingerprint, actual: after)
        let sentences = comparison.differences.map(\.sentence)
        #expect(sentences.contains("index public.t_v_idx is missing after the restore"), "\(sentences)")
        #expect(sentences.contains("grant on table public.t to reporting is missing after the restore"), "\(sentences)")
        #expect(sentences.contains { $0.hasPrefix("sequence public.s differs: ") && $0.contains(#""lastValue":"500""#) }, "\(sentences)")
        #expect(sentences.contains { $0.hasPrefix("trigger public.t.t_f differs: ") }, "\(sentences)")
        #expect(sentences.contains { $0.hasPrefix("database property settings differs: ") && $0.contains("work_mem=9MB") }, "\(sentences)")
        #expect(comparison.differences.count == 5, "\(sentences)")
    }
}

/// A storage in memory: enough for a repository that holds one hand-made snapshot.
private final class MemoryStorage: Storage, @unchecked Sendable {
    private let lock = NSLock()
    private var files: [Handle: [UInt8]] = [:]
    var location: String { "memory-\(ObjectIdentifier(self).hashValue)" }
    func save(_ handle: Handle, data: [UInt8]) throws { lock.withLock { files[handle] = data } }
    func load(_ handle: Handle, offset: Int, length: Int?) throws -> [UInt8] {
        guard let bytes = lock.withLock({ files[handle] }) else { throw KhoError.missing(handle, in: location) }
        let count = length ?? max(0, bytes.count - offset)
        return Array(bytes[offset..<(offset + count)])
    }
    func stat(_ handle: Handle) throws -> StoredFile {
        guard let bytes = lock.withLock({ files[handle] }) else { throw KhoError.missing(handle, in: location) }
        return StoredFile(name: handle.name, size: bytes.count)
    }
    func list(_ kind: FileKind) throws -> [StoredFile] {
        lock.withLock { files.filter { $0.key.kind == kind }.map { StoredFile(name: $0.key.name, size: $0.value.count) } }
    }
    func remove(_ handle: Handle) throws { _ = lock.withLock { files.removeValue(forKey: handle) } }
    func isEmpty() throws -> Bool { lock.withLock { files.isEmpty } }
}

@Suite("PostgreSQL: a snapshot of a kho before issue 19", .serialized,
       .enabled(if: ScratchPostgres.isAvailable, Comment(rawValue: ScratchPostgres.unavailableReason ?? "")))
struct PostgresOldSnapshotTests {
    @Test("restores the same way for a drill and an operator: roles its globals.sql names that the target lacks are created NOLOGIN and nothing else; tables compared, with the note that the schema was not")
    func oldSnapshot() throws {
        let server = try TestPostgres(password: "p")
        defer { server.stop() }
        // What an old kho stored: pg_dumpall's globals.sql, the plain dump, a manifest without
        // schemaFile and globalsFile.
        try server.psql("CREATE ROLE old_owner LOGIN; CREATE ROLE \"người đọc\"; CREATE DATABASE shop OWNER old_owner TEMPLATE template0;")
        try server.psql("""
            CREATE TABLE orders (id int PRIMARY KEY, total numeric(10,2));
            INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 50) g;
            ALTER TABLE orders OWNER TO old_owner;
            GRANT SELECT ON orders TO "người đọc";
            """, database: "shop")
        let bin = try #require(ScratchPostgres.binDirectory)
        let socket = ["-h", server.dir, "-p", String(server.port), "-U", "postgres"]
        let dump = try ServerSupport.require(bin + "/pg_dump", socket + ["--format=plain", "shop"], scratch: server.dir)
        let globals = try ServerSupport.require(bin + "/pg_dumpall", socket + ["--globals-only"], scratch: server.dir)
        let tables = try PostgresManifest.tables(try server.connect("shop"))
        try server.psql("DROP DATABASE shop; DROP ROLE old_owner; DROP ROLE \"người đọc\";")

        var options = Repository.CreateOptions()
        options.scrypt = Scrypt.minimum
        let repository = try Repository.create(storage: MemoryStorage(), password: Array("test".utf8), options: options)
        let archiver = try Archiver(repository: repository, index: try repository.loadIndex(), options: BackupOptions()) { _ in }
        let database = DumpManifest.Database(name: "shop", file: "shop.sql", sizeBytes: 1000, tables: tables)
        func stream(_ name: String, _ text: String) -> Archiver.StreamInput {
            Archiver.StreamInput(name: name) {
                var bytes = ArraySlice(Array(text.utf8))
                return ({ buffer in
                    let count = min(buffer.count, bytes.count)
                    for i in 0..<count { buffer[i] = bytes[bytes.startIndex + i] }
                    bytes = bytes.dropFirst(count)
                    return count
                }, {})
            }
        }
        let snapshot = try archiver.backupStreams([stream("globals.sql", globals), stream("shop.sql", dump)], sourceName: "shop") { _ in
            try DumpManifest(engine: "postgres", serverVersion: "15", checksumMethod: PostgresManifest.checksumMethod, databases: [database]).json
        }
        let files = try SnapshotFiles(repository: repository, index: try repository.loadIndex(), snapshot: snapshot)
        // Through the server's socket, where logins are trusted.
        func target(_ name: String) -> DatabaseEndpoint { DatabaseEndpoint(host: server.dir, port: server.port, user: "postgres", database: name) }

        let restore = try DatabaseRestore(engine: .postgres, target: target("shop"), options: DatabaseRestoreOptions(), sourceName: "shop",
                                          dumpFile: "shop.sql", recorded: database, files: files)
        let plan = try restore.plan()
        #expect(plan.refusals.isEmpty, "\(plan.lines)")
        let created = plan.items.filter { $0.action == .create && $0.subject.hasPrefix("role ") }.map(\.subject)
        #expect(Set(created) == ["role old_owner", "role người đọc"], "\(plan.lines)")
        #expect(plan.items.contains { $0.subject == "database properties" && $0.action == .note }, "\(plan.lines)")
        let result = try restore.run(plan)
        #expect(result.comparison?.equal == true)
        #expect(result.schema == nil)
        #expect(result.notes.contains { $0.contains("recorded no schema fingerprint") }, "\(result.notes)")
        #expect(result.notes.contains { $0.hasPrefix("roles named by the old snapshot's globals.sql were created NOLOGIN") }, "\(result.notes)")
        // Created by name only: NOLOGIN, although old_owner could log in at backup.
        #expect(try server.psql("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN ('old_owner', 'người đọc') ORDER BY 1;")
                    .trimmingCharacters(in: .whitespacesAndNewlines) == "người đọc\tf\nold_owner\tf")
        #expect(try server.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'orders';", database: "shop")
                    .trimmingCharacters(in: .whitespacesAndNewlines) == "old_owner")

        // A drill takes the same path: into another database, the roles now exist and are kept.
        var drill = DatabaseRestoreOptions()
        drill.scratch = true
        let again = try DatabaseRestore(engine: .postgres, target: target("shop_drill"), options: drill, sourceName: "shop",
                                        dumpFile: "shop.sql", recorded: database, files: files)
        let drillPlan = try again.plan()
        #expect(!drillPlan.items.contains { $0.action == .create && $0.subject.hasPrefix("role ") }, "\(drillPlan.lines)")
        #expect(try again.run(drillPlan).comparison?.equal == true)
    }
}

/// `bytes` fed to `filter` in chunks of `size`, as the dump streams from the repository.
private func filtered(_ bytes: [UInt8], through filter: PostgresDumpFilter, chunks size: Int) throws -> String {
    var out: [UInt8] = []
    var start = 0
    while start < bytes.count {
        let end = min(bytes.count, start + size)
        try bytes[start..<end].withUnsafeBytes { try filter.feed($0) { out += $0 } }
        start = end
    }
    try filter.finish { out += $0 }
    return String(decoding: out, as: UTF8.self)
}
