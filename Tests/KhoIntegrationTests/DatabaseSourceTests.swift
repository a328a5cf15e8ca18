import Foundation
import KhoTestSupport
import Glibc
import Testing

// Database sources driven through the `kho` binary against real servers (scratch PostgreSQL and
// MariaDB servers from Servers.swift, SQLite files): backups while another process keeps writing,
// manifests, restores into databases and files, the fail-closed rules and restore safety.
//
// The writers keep an invariant in every transaction (two order lines per order whose amounts add up
// to the order's total; transfers between accounts that keep the sum of balances), so a restored
// database that is not one consistent state shows up as a broken invariant.

@Suite("database sources")
struct DatabaseSourceTests {}

// MARK: JSON printed by kho

private struct DBTable: Decodable, Equatable, CustomStringConvertible {
    var schema: String
    var name: String
    var rows: Int64
    var checksum: String
    var qualifiedName: String { schema.isEmpty ? name : "\(schema).\(name)" }
    var description: String { "\(qualifiedName): \(rows) rows, checksum \(checksum)" }
}

private struct DBManifestDatabase: Decodable {
    var name: String
    var file: String
    var sizeBytes: Int64
    var tables: [DBTable]
    var pitrMarker: DBMarker?

    func table(_ qualifiedName: String) -> DBTable? { tables.first { $0.qualifiedName == qualifiedName } }
}

private struct DBMarker: Decodable {
    var name: String
    var lsn: String
    var cluster: String
    var snapshot: String
    var snapshotAfter: String
    var equalAtDump: Bool
    var attempts: Int
}

private struct DBManifest: Decodable {
    var engine: String
    var serverVersion: String
    var checksumMethod: String
    var databases: [DBManifestDatabase]

    func database(_ name: String) -> DBManifestDatabase? { databases.first { $0.name == name } }
}

private struct DBSummary: Decodable {
    var bytesRead: Int64
    var totalSize: Int64
    var bytesAdded: Int64
}

private struct DBSnapshotSource: Decodable {
    var kind: String
    var name: String?
}

private struct DBSnapshot: Decodable {
    var id: String
    var shortID: String
    var paths: [String]
    var source: DBSnapshotSource
    var partial: Bool
    var summary: DBSummary?
    var manifest: DBManifest?
}

private struct DBBackupOutput: Decodable {
    var snapshot: String
    var partial: Bool
    var summary: DBSummary
}

private struct DBLsOutput: Decodable {
    struct Entry: Decodable {
        var path: String
        var kind: String
        var size: UInt64
    }
    var snapshot: DBSnapshot
    var entries: [Entry]
}

private struct DBRestoreOutput: Decodable {
    struct Comparison: Decodable {
        struct Row: Decodable {
            var table: String
            var expectedRows: Int64?
            var actualRows: Int64?
            var outcome: String
        }
        var rows: [Row]
    }
    var engine: String
    var database: String
    var bytesLoaded: Int64
    var replacedDatabaseKeptAs: String?
    var comparison: Comparison?
}

// MARK: helpers

private func decoded<T: Decodable>(_ result: ProcessResult, as type: T.Type, sourceLocation: SourceLocation = #_sourceLocation) throws -> T {
    try #require(result.exitCode == 0, "\(result)", sourceLocation: sourceLocation)
    do {
        return try result.decode(type)
    } catch {
        Issue.record("cannot decode \(type) from \(result): \(error)", sourceLocation: sourceLocation)
        throw error
    }
}

/// `kho backup … --json`, exit 0 required.
private func backup(_ sandbox: Sandbox, _ arguments: [String], env: [String: String?] = [:],
                    sourceLocation: SourceLocation = #_sourceLocation) throws -> DBBackupOutput {
    let result = try sandbox.kho(["backup"] + arguments + ["--json"], env: env)
    return try decoded(result, as: DBBackupOutput.self, sourceLocation: sourceLocation)
}

private func snapshotList(_ sandbox: Sandbox, sourceLocation: SourceLocation = #_sourceLocation) throws -> [DBSnapshot] {
    try decoded(try sandbox.kho("snapshots", "--json"), as: [DBSnapshot].self, sourceLocation: sourceLocation)
}

private func snapshot(_ sandbox: Sandbox, _ id: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> DBSnapshot {
    try #require(try snapshotList(sandbox, sourceLocation: sourceLocation).first { $0.id == id }, "snapshot \(id) is not listed",
                 sourceLocation: sourceLocation)
}

/// A failed run: the exit code, a fragment of the one-sentence error, and no snapshot added.
private func expectFailure(_ result: ProcessResult, code: Int32 = 1, _ fragments: String..., snapshotsBefore: Int? = nil,
                           sandbox: Sandbox? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws {
    #expect(result.exitCode == code, "expected exit \(code): \(result)", sourceLocation: sourceLocation)
    for fragment in fragments {
        #expect(result.err.contains(fragment), "expected «\(fragment)» in the error: \(result)", sourceLocation: sourceLocation)
    }
    if let snapshotsBefore, let sandbox {
        let after = try snapshotList(sandbox, sourceLocation: sourceLocation)
        #expect(after.count == snapshotsBefore, "a failed backup must not add a snapshot; now \(after.count), before \(snapshotsBefore)",
                sourceLocation: sourceLocation)
    }
}

/// Every row of a restore's manifest comparison is `equal`, and there is at least one.
private func expectAllEqual(_ output: DBRestoreOutput, tables: Int? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
    guard let comparison = output.comparison else {
        Issue.record("the restore printed no manifest comparison", sourceLocation: sourceLocation)
        return
    }
    #expect(!comparison.rows.isEmpty, sourceLocation: sourceLocation)
    if let tables { #expect(comparison.rows.count == tables, "\(comparison.rows.map(\.table))", sourceLocation: sourceLocation) }
    for row in comparison.rows {
        #expect(row.outcome == "equal", "\(row.table): \(row.outcome) (\(row.expectedRows.map(String.init) ?? "-") → \(row.actualRows.map(String.init) ?? "-"))",
                sourceLocation: sourceLocation)
    }
}

/// Waits until `count()` has grown by at least `by` past `start` while `writer` runs; returns the count.
@discardableResult
private func waitForWrites(_ writer: BackgroundSQL, past start: Int, by: Int = 10, _ count: () throws -> Int) throws -> Int {
    var now = start
    try ServerSupport.waitUntil("the writer commits \(by) more transactions (past \(start))", timeout: 60) {
        guard writer.isRunning else {
            let ended = writer.stop()
            throw ServerError("the writer stopped on its own (exit \(ended.status.map(String.init) ?? "signal")): \(ended.stdout)")
        }
        now = try count()
        return now >= start + by
    }
    return now
}

private func int(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> Int {
    try #require(Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), "not a number: «\(text)»", sourceLocation: sourceLocation)
}

/// A dump with a line that is not SQL inserted after the end of its first COPY / INSERT block that
/// lies past a quarter of it, so that the load fails half way.
private func breakInTheMiddle(_ dump: [UInt8], after marker: String) throws -> [UInt8] {
    let text = String(decoding: dump, as: UTF8.self)
    var lines = text.components(separatedBy: "\n")
    var offset = 0
    var insertAt: Int?
    for (i, line) in lines.enumerated() {
        offset += line.utf8.count + 1
        if offset > dump.count / 4 && line.hasPrefix(marker) {
            insertAt = i + 1
            break
        }
    }
    let at = try #require(insertAt, "the dump has no \(marker) line past its first quarter")
    let before = lines[..<at].reduce(0) { $0 + $1.utf8.count + 1 }
    #expect(before < dump.count * 3 / 4, "the broken line should sit in the middle of the dump (at \(before) of \(dump.count) bytes)")
    lines.insert("THIS IS NOT SQL AT ALL;", at: at)
    return Array(lines.joined(separator: "\n").utf8)
}

/// The processes whose parent is `parent` and whose name is `name` (from /proc).
private func childProcesses(of parent: pid_t, named name: String) -> [pid_t] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { entry -> pid_t? in
        guard let pid = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
              let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")") else { return nil }
        let comm = stat[stat.index(after: open)..<close]
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 1, comm == name, pid_t(fields[1]) == parent else { return nil }
        return pid
    }
}

private let canUnshareMounts: Bool = {
    guard geteuid() == 0, let unshare = ServerSupport.find("unshare", in: ServerSupport.standardDirectories) else { return false }
    let scratch = NSTemporaryDirectory()
    return (try? ServerSupport.run(unshare, ["--mount", "--", "/bin/true"], scratch: scratch, timeout: 30))?.succeeded == true
}()

// MARK: PostgreSQL

/// The shop database: accounts (sum of balances 1 000 000), orders with two lines each, documents
/// of many column types (a few MB), and a table with awkward names in a schema of its own.
private func createPostgresShop(_ pg: ScratchPostgres, _ database: String, documents: Int = 5000) throws {
    try pg.createDatabase(database)
    try pg.psql(#"""
        CREATE TABLE accounts(id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL);
        INSERT INTO accounts SELECT i, 'Chủ tài khoản ' || i, 1000 FROM generate_series(1, 1000) i;
        CREATE TABLE orders(id bigserial PRIMARY KEY, total bigint NOT NULL, note text, created timestamptz DEFAULT now());
        CREATE TABLE order_lines(id bigserial PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders(id), amount bigint NOT NULL);
        INSERT INTO orders(total, note) SELECT 2 * i, 'đơn hàng ' || i FROM generate_series(1, 5000) i;
        INSERT INTO order_lines(order_id, amount) SELECT id, id FROM orders UNION ALL SELECT id, total - id FROM orders;
        CREATE TABLE documents(id int PRIMARY KEY, title text, body text, scan bytea, amount numeric(12,2), signed date,
                               flags boolean[], meta jsonb);
        INSERT INTO documents SELECT i, 'Hồ sơ số ' || i, repeat(md5(i::text), 8), decode(md5(i::text), 'hex'), i * 1.25,
                                     date '2020-01-01' + i, ARRAY[i % 2 = 0, NULL], jsonb_build_object('i', i, 'xã', 'Nghĩa Hành')
        FROM generate_series(1, \#(documents)) i;
        INSERT INTO documents VALUES (0, NULL, E'tab\there\nnew line \\ backslash', '\x00ff', NULL, NULL, NULL, NULL);
        CREATE SCHEMA "Lưu trữ";
        CREATE TABLE "Lưu trữ"."Bảng ""lạ""" (k text PRIMARY KEY, v text);
        INSERT INTO "Lưu trữ"."Bảng ""lạ""" VALUES ('a', 'một'), ('b', NULL), ('c', '');
        """#, database: database)
}

/// One transaction: an order with two lines adding up to its total, a transfer between two
/// accounts, an edit of an older order.
private let postgresWriterBlock = """
    BEGIN;
    WITH v AS (SELECT (random() * 1000)::int + 1 AS a, (random() * 1000)::int + 1 AS b),
         o AS (INSERT INTO orders(total, note) SELECT a + b, 'mới ' || a FROM v RETURNING id)
    INSERT INTO order_lines(order_id, amount) SELECT o.id, v.a FROM o, v UNION ALL SELECT o.id, v.b FROM o, v;
    WITH p AS (SELECT (random() * 998)::int + 1 AS i, (random() * 100)::int AS x)
    UPDATE accounts SET balance = balance + CASE WHEN accounts.id = p.i THEN -p.x ELSE p.x END FROM p WHERE accounts.id IN (p.i, p.i + 1);
    UPDATE orders SET note = 'sửa lúc ' || clock_timestamp() WHERE id = (SELECT max(id) - 7 FROM orders);
    COMMIT;

    """

private func startPostgresWriter(_ pg: ScratchPostgres, database: String, scratch: String) throws -> BackgroundSQL {
    try BackgroundSQL(pg.program("psql"), pg.psqlArguments(database: database), block: postgresWriterBlock, scratch: scratch)
}

/// The invariants of the shop, each "t" when it holds.
private func postgresInvariants(_ pg: ScratchPostgres, _ database: String) throws -> String {
    try pg.value("""
        SELECT (SELECT sum(balance) FROM accounts) = 1000 * 1000,
               (SELECT count(*) FROM order_lines) = 2 * (SELECT count(*) FROM orders),
               NOT EXISTS (SELECT 1 FROM orders o WHERE total <> (SELECT coalesce(sum(amount), 0) FROM order_lines l WHERE l.order_id = o.id));
        """, database: database)
}

/// `SELECT count(*)` of every table named in `tables`.
private func postgresCounts(_ pg: ScratchPostgres, _ database: String, _ tables: [DBTable]) throws -> [String: Int64] {
    var counts: [String: Int64] = [:]
    for table in tables {
        let quoted = "\"\(table.schema.replacingOccurrences(of: "\"", with: "\"\""))\".\"\(table.name.replacingOccurrences(of: "\"", with: "\"\""))\""
        counts[table.qualifiedName] = Int64(try pg.value("SELECT count(*) FROM ONLY \(quoted);", database: database))
    }
    return counts
}

extension DatabaseSourceTests {
    @Suite("PostgreSQL", .serialized, .scratchPostgres,
           .enabled(if: ScratchPostgres.isAvailable, Comment(rawValue: ScratchPostgres.unavailableReason ?? "")))
    struct PostgreSQL {
        @Test("two databases backed up while a writer commits: manifest in snapshots and ls, globals, restores equal and consistent")
        func roundTripWhileWriting() throws {
            let pg = try ScratchPostgres.requireShared()
            let sandbox = try Sandbox("pg-roundtrip")
            try sandbox.initRepository()
            try createPostgresShop(pg, "shop")
            try pg.createDatabase("land")
            try pg.psql("""
                CREATE TABLE parcels(id int PRIMARY KEY, owner text, area double precision, corner point, doc bytea);
                INSERT INTO parcels SELECT i, 'Nguyễn Văn ' || i, i * 1.5, point(i, -i), decode(md5(i::text), 'hex') FROM generate_series(1, 3000) i;
                INSERT INTO parcels VALUES (0, NULL, 'NaN', NULL, '');
                """, database: "land")
            try pg.psql("CREATE ROLE clerk_roundtrip LOGIN;")
            let landBefore = try pg.fingerprint("land")

            let writer = try startPostgresWriter(pg, database: "shop", scratch: sandbox.dir)
            defer { writer.stop() }
            let orders = { try int(try pg.value("SELECT count(*) FROM orders;", database: "shop")) }
            let before = try waitForWrites(writer, past: 5000, orders)
            let made = try backup(sandbox, ["--postgres", pg.url("shop,land"), "--source-name", "city"])
            let afterBackup = try orders()
            try waitForWrites(writer, past: afterBackup, orders)
            let writerEnded = writer.stop()
            #expect(writerEnded.status == 0, "the writer failed: \(writerEnded.stdout)")
            let after = try orders()

            // The manifest, in `kho snapshots --json`.
            let snap = try snapshot(sandbox, made.snapshot)
            #expect(snap.source.kind == "postgres" && snap.source.name == "city")
            #expect(!snap.partial)
            let manifest = try #require(snap.manifest, "the snapshot of a postgres source holds a manifest")
            #expect(manifest.engine == "postgres")
            #expect(manifest.serverVersion.hasPrefix(try pg.value("SHOW server_version;")))
            #expect(Set(manifest.databases.map(\.name)) == ["shop", "land"])
            let shop = try #require(manifest.database("shop"))
            let land = try #require(manifest.database("land"))
            #expect(shop.file == "shop.sql" && land.file == "land.sql")
            #expect(shop.sizeBytes > 0 && land.sizeBytes > 0)
            // A restore point beside each dump's snapshot, in this cluster (PITR drills recover to it).
            let cluster = String(format: "%016llx", UInt64(try pg.value("SELECT system_identifier FROM pg_control_system();")) ?? 0)
            for database in [shop, land] {
                let marker = try #require(database.pitrMarker, "\(database.name) has no restore point")
                #expect(marker.name.hasPrefix("kho-") && marker.name.count == 20 && marker.cluster == cluster)
                #expect(marker.lsn.contains("/") && (1...5).contains(marker.attempts))
                #expect(marker.equalAtDump == (marker.snapshot == marker.snapshotAfter))
            }
            // Every table of each database is in it.
            let tablesQuery = "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1;"
            #expect(Set(shop.tables.map(\.qualifiedName)) == Set(try pg.rows(tablesQuery, database: "shop")))
            #expect(Set(land.tables.map(\.qualifiedName)) == Set(try pg.rows(tablesQuery, database: "land")))
            #expect(shop.table("Lưu trữ.Bảng \"lạ\"")?.rows == 3)
            // Tables nobody wrote to: the manifest matches the server now, by the documented formula.
            for (database, table) in [("land", "public.parcels"), ("shop", "public.documents")] {
                let recorded = try #require(manifest.database(database)?.table(table))
                let now = try pg.value("SELECT count(*) || E'\\t' || coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0) FROM ONLY \(table) AS t;",
                                       database: database)
                #expect(now == "\(recorded.rows)\t\(recorded.checksum)", "\(database) \(table)")
            }
            // The orders table moved while the dump ran: the manifest holds a state between before and after.
            let recordedOrders = try #require(shop.table("public.orders")).rows
            #expect(recordedOrders >= Int64(before) && recordedOrders <= Int64(after), "orders: \(before) ≤ \(recordedOrders) ≤ \(after)")
            #expect(shop.table("public.order_lines")?.rows == 2 * recordedOrders)

            // The same manifest, the dumps and each database's schema fingerprint and globals in `kho ls --json`.
            let ls = try decoded(try sandbox.kho("ls", "latest", "--json"), as: DBLsOutput.self)
            #expect(Set(ls.entries.filter { $0.kind == "file" }.map(\.path)) == ["/globals.sql", "/shop.sql", "/land.sql", "/shop.schema.json", "/shop.globals.json",
                                                                                "/land.schema.json", "/land.globals.json"])
            #expect(ls.snapshot.manifest?.databases.map(\.name) == manifest.databases.map(\.name))
            #expect(ls.snapshot.manifest?.database("shop")?.tables == shop.tables)
            let globals = try sandbox.ok("dump", "latest", "globals.sql")
            #expect(globals.out.contains("CREATE ROLE clerk_roundtrip"), "globals.sql holds the cluster's roles")

            // Two databases in the snapshot: restore needs --database.
            let ambiguous = try sandbox.kho("restore", "--source", "city", "--to-database", pg.url("nowhere"), "--yes")
            try expectFailure(ambiguous, code: 2, "holds several databases (", "--database")
            #expect(!(try pg.databases()).contains("nowhere"))

            // Restore the shop into a new database: equal manifests, the same row counts, a consistent state.
            let restored = try decoded(try sandbox.kho("restore", "--source", "city", "--database", "shop",
                                                       "--to-database", pg.url("shop_restored"), "--yes", "--json"), as: DBRestoreOutput.self)
            #expect(restored.engine == "postgres" && restored.database == "shop_restored")
            #expect(restored.replacedDatabaseKeptAs == nil)
            expectAllEqual(restored, tables: shop.tables.count)
            let counts = try postgresCounts(pg, "shop_restored", shop.tables)
            for table in shop.tables {
                #expect(counts[table.qualifiedName] == table.rows, "\(table.qualifiedName): restored \(counts[table.qualifiedName] ?? -1), manifest \(table.rows)")
            }
            #expect(try postgresInvariants(pg, "shop_restored") == "t\tt\tt", "the restored shop must be one consistent state")

            let restoredLand = try decoded(try sandbox.kho("restore", "--source", "city", "--database", "land",
                                                           "--to-database", pg.url("land_restored"), "--yes", "--json"), as: DBRestoreOutput.self)
            expectAllEqual(restoredLand, tables: land.tables.count)
            #expect(try pg.fingerprint("land_restored") == landBefore)
            #expect(try pg.fingerprint("land") == landBefore)
            // The text summary says the same for an operator.
            let text = try sandbox.ok("restore", "--source", "city", "--database", "land", "--to-database", pg.url("land_text"), "--yes")
            #expect(text.out.contains("every table present, row counts and checksums equal"), "\(text)")
            #expect(text.out.contains("(achieved recovery time)"), "\(text)")
            #expect(text.err.contains("Plan: restore land.sql of snapshot \(snap.shortID)"), "\(text)")
        }

        @Test("a second backup after small changes stores a small fraction of the first")
        func secondBackupStoresAFraction() throws {
            let pg = try ScratchPostgres.requireShared()
            let sandbox = try Sandbox("pg-dedup")
            // 64 KiB chunks: with the default 1 MiB average a few-MB dump is a handful of chunks, and any
            // change touches a large share of them; a production dump of hundreds of MB behaves like this one.
            try sandbox.initRepository("--chunk-average", "65536")
            try pg.createDatabase("registry")
            try pg.psql("""
                CREATE TABLE people(id int PRIMARY KEY, name text, address text, note text);
                INSERT INTO people SELECT i, 'Công dân ' || md5(i::text), 'Thôn ' || (i % 97) || ', xã ' || md5((i * 7)::text), md5((i * 13)::text) || md5((i * 17)::text)
                FROM generate_series(1, 60000) i;
                """, database: "registry")
            let first = try backup(sandbox, ["--postgres", pg.url("registry"), "--source-name", "registry", "--no-globals"])
            #expect(first.summary.bytesRead > 6 << 20, "a few MB of dump: \(first.summary.bytesRead)")
            try pg.psql("""
                UPDATE people SET note = 'đã chuyển hộ khẩu' WHERE id BETWEEN 30000 AND 30009;
                DELETE FROM people WHERE id BETWEEN 45000 AND 45004;
                INSERT INTO people SELECT i, 'Công dân mới ' || i, 'Thôn 1', NULL FROM generate_series(60001, 60020) i;
                """, database: "registry")
            let second = try backup(sandbox, ["--postgres", pg.url("registry"), "--source-name", "registry", "--no-globals"])
            #expect(second.summary.bytesRead > 6 << 20)
            #expect(second.summary.bytesAdded * 8 < first.summary.bytesAdded,
                    "the second backup added \(second.summary.bytesAdded) bytes, the first \(first.summary.bytesAdded)")
            let manifest = try #require(try snapshot(sandbox, second.snapshot).manifest)
            let people = manifest.database("registry")?.table("public.people")?.rows
            #expect(people == 60015, "60000 rows, 5 deleted, 20 added")
            #expect(Set(try snapshotList(sandbox).map(\.id)) == [first.snapshot, second.snapshot])
        }

        @Test("unreachable server, missing database, pg_dump failing, stopped by its timeout, killed, a shrunken dump: exit 1, one sentence, no snapshot")
        func failuresAreClosed() throws {
            let pg = try ScratchPostgres.requireShared()
            let sandbox = try Sandbox("pg-failures")
            try sandbox.initRepository()
            try pg.createDatabase("census")
            try pg.psql("""
                CREATE TABLE households(id int PRIMARY KEY, head text, members int);
                INSERT INTO households SELECT i, 'Chủ hộ ' || md5(i::text), i % 7 + 1 FROM generate_series(1, 20000) i;
                """, database: "census")
            _ = try backup(sandbox, ["--postgres", pg.url("census"), "--source-name", "census"])
            // The same database recorded under another host name (--host), as a backup host may do.
            _ = try backup(sandbox, ["--postgres", pg.url("census"), "--source-name", "census-remote", "--host", "may-chu-csdl"])
            let count = try snapshotList(sandbox).count

            let nobody = try ServerSupport.freeLoopbackPort()
            let unreachable = try sandbox.kho("backup", "--postgres", pg.url("census", port: nobody), "--source-name", "census")
            try expectFailure(unreachable, "Source census: the postgres server cannot be reached", snapshotsBefore: count, sandbox: sandbox)

            let missing = try sandbox.kho("backup", "--postgres", pg.url("census,no_such_db"), "--source-name", "census")
            try expectFailure(missing, "Source census: the database does not exist", "no_such_db", snapshotsBefore: count, sandbox: sandbox)

            // pg_dump itself fails (a table the user may not read): its exit status and its error output.
            try pg.psql("CREATE ROLE limited_reader LOGIN;")
            try pg.psql("CREATE TABLE secret(id int); GRANT SELECT ON households TO limited_reader;", database: "census")
            let denied = try sandbox.kho("backup", "--postgres", pg.url("census", user: "limited_reader"), "--source-name", "census", "--no-globals")
            try expectFailure(denied, "pg_dump census` exited with status 1; no snapshot was written", "permission denied for table secret",
                              snapshotsBefore: count, sandbox: sandbox)
            try pg.psql("DROP TABLE secret;", database: "census")

            // pg_dump waits for a lock another session holds; the timeout stops it.
            let locker = try BackgroundSQL(pg.program("psql"), pg.psqlArguments(database: "census"),
                                           prelude: "BEGIN;\nLOCK TABLE households IN ACCESS EXCLUSIVE MODE;\n",
                                           block: "SELECT pg_sleep(0.05);\n", scratch: sandbox.dir)
            defer { locker.stop() }
            try ServerSupport.waitUntil("the locker holds its lock") {
                try pg.value("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'households' AND l.mode = 'AccessExclusiveLock' AND l.granted;",
                             database: "census") == "1"
            }
            let stuck = try sandbox.kho("backup", "--postgres", pg.url("census"), "--source-name", "census", "--timeout", "1s")
            try expectFailure(stuck, "pg_dump census` was stopped after its timeout of 1 s; no snapshot was written", snapshotsBefore: count, sandbox: sandbox)
            // The same wait, but pg_dump is killed from outside (the OOM killer, an operator).
            let running = try sandbox.start(["backup", "--postgres", pg.url("census"), "--source-name", "census"])
            var dumper: pid_t?
            try ServerSupport.waitUntil("kho starts pg_dump") {
                dumper = childProcesses(of: running.pid, named: "pg_dump").first
                return dumper != nil || !running.isRunning
            }
            if let dumper { kill(dumper, SIGKILL) }
            try expectFailure(running.wait(), "pg_dump census` was killed by signal 9; no snapshot was written", snapshotsBefore: count, sandbox: sandbox)
            locker.stop()

            // Most rows gone: the dump is below half of the previous one.
            try pg.psql("DELETE FROM households WHERE id > 500;", database: "census")
            let shrunk = try sandbox.kho("backup", "--postgres", pg.url("census"), "--source-name", "census")
            try expectFailure(shrunk, "Source census: the dump is", "below the allowed 50%; no snapshot was written", snapshotsBefore: count, sandbox: sandbox)
            let shrunkRemote = try sandbox.kho("backup", "--postgres", pg.url("census"), "--source-name", "census-remote", "--host", "may-chu-csdl")
            try expectFailure(shrunkRemote, "Source census-remote: the dump is", "below the allowed 50%", snapshotsBefore: count, sandbox: sandbox)
            // An operator who expects the shrink says so.
            _ = try backup(sandbox, ["--postgres", pg.url("census"), "--source-name", "census", "--min-size-ratio", "0"])
            #expect(try snapshotList(sandbox).count == count + 1)
            #expect(try sandbox.kho("check").exitCode == 0)
        }

        @Test("pg_dump missing (hidden in a mount namespace): a sentence that names the tool", .enabled(if: canUnshareMounts, "needs root and unshare --mount"))
        func missingDumpTool() throws {
            let pg = try ScratchPostgres.requireShared()
            let sandbox = try Sandbox("pg-no-tool")
            try sandbox.initRepository()
            try pg.createDatabase("notool")
            let empty = sandbox.path("empty-bin")
            try makeDirectories(empty)
            let mount = try #require(ServerSupport.find("mount", in: ServerSupport.standardDirectories))
            let unshare = try #require(ServerSupport.find("unshare", in: ServerSupport.standardDirectories))
            // kho looks on PATH and in /usr/lib/postgresql/*/bin: an empty PATH, and an empty folder over the latter.
            let script = "'\(mount)' --bind '\(empty)' /usr/lib/postgresql && exec '\(Harness.binary)' \"$@\""
            let child = try Child.spawn(unshare, ["--mount", "--", "/bin/sh", "-c", script, "sh",
                                                  "backup", "--postgres", pg.url("notool"), "--source-name", "notool"],
                                        environment: sandbox.environment(["PATH": empty]), scratch: sandbox.dir)
            let result = child.wait()
            try expectFailure(result, "Source notool: pg_dump is not installed or not on PATH", snapshotsBefore: 0, sandbox: sandbox)
        }

        @Test("password logins: a wrong or missing password is refused in one sentence; the right one from a variable or a file works")
        func passwords() throws {
            let server = try ScratchPostgres(label: "pg-password", password: "mật khẩu đúng")
            defer { server.stop() }
            try server.createDatabase("hr")
            try server.psql("CREATE TABLE staff(id int PRIMARY KEY, name text); INSERT INTO staff VALUES (1, 'Lê Thị Hoa');", database: "hr")
            let sandbox = try Sandbox("pg-password")
            try sandbox.initRepository()

            let wrong = try sandbox.kho(["backup", "--postgres", server.url("hr"), "--source-name", "hr", "--password-env", "HR_DB_PASSWORD"],
                                        env: ["HR_DB_PASSWORD": "sai", "PGPASSWORD": nil, "PGPASSFILE": "/nonexistent"])
            try expectFailure(wrong, "Source hr: the server refused the login", "password authentication failed", snapshotsBefore: 0, sandbox: sandbox)
            let none = try sandbox.kho(["backup", "--postgres", server.url("hr"), "--source-name", "hr"],
                                       env: ["PGPASSWORD": nil, "PGPASSFILE": "/nonexistent"])
            try expectFailure(none, "Source hr: the server asks for a password and none was given", snapshotsBefore: 0, sandbox: sandbox)
            // An administrator's PGPASSWORD in kho's environment is not a password the policy gave:
            // neither kho's own connection (libpq inside kho) nor pg_dump logs in with it.
            let ambient = try sandbox.kho(["backup", "--postgres", server.url("hr"), "--source-name", "hr"],
                                          env: ["PGPASSWORD": "mật khẩu đúng", "PGPASSFILE": "/nonexistent"])
            try expectFailure(ambient, "Source hr: the server asks for a password and none was given", snapshotsBefore: 0, sandbox: sandbox)
            // Named with --password-env, the same variable is the password.
            _ = try backup(sandbox, ["--postgres", server.url("hr"), "--source-name", "hr-pgpassword", "--password-env", "PGPASSWORD"],
                           env: ["PGPASSWORD": "mật khẩu đúng"])
            let unset = try sandbox.kho(["backup", "--postgres", server.url("hr"), "--source-name", "hr", "--password-env", "HR_DB_PASSWORD_UNSET"])
            try expectFailure(unset, code: 2, "HR_DB_PASSWORD_UNSET", "is not set", snapshotsBefore: 1, sandbox: sandbox)

            _ = try backup(sandbox, ["--postgres", server.url("hr"), "--source-name", "hr", "--password-env", "HR_DB_PASSWORD"],
                           env: ["HR_DB_PASSWORD": "mật khẩu đúng"])
            let file = sandbox.path("hr-password")
            try writeFile(file, Array("mật khẩu đúng\n".utf8), mode: 0o600)
            _ = try backup(sandbox, ["--postgres", server.url("hr"), "--source-name", "hr", "--password-file", file])
            #expect(try snapshotList(sandbox).count == 3)

            // Restoring needs the target's password too.
            let refused = try sandbox.kho(["restore", "--source", "hr", "--to-database", server.url("hr_copy"), "--password-env", "HR_DB_PASSWORD", "--yes"],
                                          env: ["HR_DB_PASSWORD": "sai"])
            try expectFailure(refused, "the server refused the login")
            let restored = try decoded(try sandbox.kho("restore", "--source", "hr", "--to-database", server.url("hr_copy"), "--password-file", file, "--yes", "--json"),
                                       as: DBRestoreOutput.self)
            expectAllEqual(restored, tables: 1)
        }

        @Test("restore refuses a non-empty database, --replace swaps (even with the application connected) and keeps the old one, a dump that fails half way changes nothing")
        func restoreSafety() throws {
            let pg = try ScratchPostgres.requireShared()
            let sandbox = try Sandbox("pg-safety")
            try sandbox.initRepository()
            try pg.createDatabase("ledger")
            try pg.psql("""
                CREATE TABLE entries(id int PRIMARY KEY, account text, amount numeric(14,2));
                INSERT INTO entries SELECT i, 'TK ' || (i % 50), i * 10.5 FROM generate_series(1, 20000) i;
                CREATE TABLE journal(id int PRIMARY KEY, entry int REFERENCES entries(id), memo text);
                INSERT INTO journal SELECT i, i, 'Chứng từ ' || md5(i::text) FROM generate_series(1, 20000) i;
                """, database: "ledger")
            _ = try backup(sandbox, ["--postgres", pg.url("ledger"), "--source-name", "ledger", "--no-globals"])
            let atBackup = try pg.fingerprint("ledger")

            // An existing database with tables is refused (usage, exit 2) and left alone.
            let refused = try sandbox.kho("restore", "--source", "ledger", "--to-database", pg.url("ledger"), "--yes")
            try expectFailure(refused, code: 2, "The database ledger on 127.0.0.1:\(pg.port) exists and is not empty", "--replace")
            #expect(try pg.fingerprint("ledger") == atBackup)

            // Changes after the backup; --replace brings the snapshot back and keeps the changed one aside.
            try pg.psql("INSERT INTO entries VALUES (0, 'sau sao lưu', 1); UPDATE journal SET memo = 'sửa' WHERE id = 5;", database: "ledger")
            let changed = try pg.fingerprint("ledger")
            let databasesBefore = Set(try pg.databases())
            let replaced = try sandbox.kho("restore", "--source", "ledger", "--to-database", pg.url("ledger"), "--replace", "--yes")
            #expect(replaced.exitCode == 0, "\(replaced)")
            #expect(replaced.err.contains("load into a new database, then swap it in for the existing"), "\(replaced)")
            let kept = try #require(Set(try pg.databases()).subtracting(databasesBefore).first, "a database kept aside")
            #expect(kept.hasPrefix("ledger__kho_replaced_") && Int(kept.dropFirst("ledger__kho_replaced_".count)) != nil, "\(kept)")
            #expect(Set(try pg.databases()) == databasesBefore.union([kept]))
            #expect(replaced.out.contains("the database it replaced is kept as \(kept)"), "\(replaced)")
            #expect(replaced.out.contains("every table present, row counts and checksums equal"), "\(replaced)")
            #expect(try pg.fingerprint("ledger") == atBackup)
            #expect(try pg.fingerprint(kept) == changed)

            // A dump that breaks half way (a line that is not SQL after the first table's data).
            let dump = try sandbox.ok("dump", "latest", "ledger.sql").stdout
            let broken = try breakInTheMiddle(dump, after: "\\.")
            let brokenFile = sandbox.path("ledger-broken.sql")
            try writeFile(brokenFile, broken)
            let brokenSnapshot = try decoded(try sandbox.kho(["backup", "--stdin", "--stdin-name", "ledger.sql", "--json"], input: .file(brokenFile)),
                                             as: DBBackupOutput.self).snapshot
            try #require(sha256(try sandbox.ok("dump", brokenSnapshot, "ledger.sql").stdout) == sha256(broken))
            let current = try pg.fingerprint("ledger")
            let databases = Set(try pg.databases())

            let failed = try sandbox.kho("restore", brokenSnapshot, "--to-database", pg.url("ledger"), "--replace", "--yes")
            #expect(failed.exitCode == 1, "\(failed)")
            #expect(failed.err.contains("loading the dump failed") && failed.err.contains("THIS"), "\(failed)")
            #expect(failed.err.contains("the target was left as it was before"), "\(failed)")
            #expect(try pg.fingerprint("ledger") == current, "the original database must be unchanged")
            #expect(Set(try pg.databases()) == databases, "no scratch database may be left behind")
            #expect(try pg.databases().allSatisfy { !$0.contains("__kho_restore_") })

            // The same into a new name: the half-loaded database is removed.
            let failedNew = try sandbox.kho("restore", brokenSnapshot, "--to-database", pg.url("ledger_new"), "--yes")
            #expect(failedNew.exitCode == 1, "\(failedNew)")
            #expect(Set(try pg.databases()) == databases)
            // Into an existing empty database: it stays empty.
            try pg.createDatabase("ledger_empty")
            let failedEmpty = try sandbox.kho("restore", brokenSnapshot, "--to-database", pg.url("ledger_empty"), "--yes")
            #expect(failedEmpty.exitCode == 1, "\(failedEmpty)")
            #expect(try pg.value("SELECT count(*) FROM pg_tables WHERE schemaname = 'public';", database: "ledger_empty") == "0")

            // --replace while the application is still connected to the database: its sessions are
            // ended, the swap happens, and what it wrote is in the database kept aside.
            try pg.psql("CREATE TABLE app_writes(id serial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp());", database: "ledger")
            let app = try BackgroundSQL(pg.program("psql"), pg.psqlArguments(database: "ledger"),
                                        block: "INSERT INTO app_writes DEFAULT VALUES;\n", scratch: sandbox.dir)
            defer { app.stop() }
            let writes = { try int(try pg.value("SELECT count(*) FROM app_writes;", database: "ledger")) }
            try waitForWrites(app, past: 0, writes)
            let before = Set(try pg.databases())
            let busy = try sandbox.kho("restore", "--source", "ledger", "--to-database", pg.url("ledger"), "--replace", "--yes")
            #expect(busy.exitCode == 0, "\(busy)")
            let aside = try #require(Set(try pg.databases()).subtracting(before).first, "a database kept aside")
            #expect(try pg.fingerprint("ledger") == atBackup)
            #expect(try int(try pg.value("SELECT count(*) FROM app_writes;", database: aside)) > 0)
            let ended = app.stop()
            #expect(ended.status != 0, "the application's session was ended by the swap: \(ended.stdout)")
            #expect(ended.stdout.contains("terminat"), "\(ended.stdout)")
        }

        @Test("--at picks the newest snapshot taken at or before a time")
        func restoreAtTime() throws {
            let pg = try ScratchPostgres.requireShared()
            let sandbox = try Sandbox("pg-at")
            try sandbox.initRepository()
            try pg.createDatabase("regions")
            try pg.psql("CREATE TABLE communes(id int PRIMARY KEY, name text); INSERT INTO communes SELECT i, 'Xã ' || i FROM generate_series(1, 100) i;",
                        database: "regions")
            let url = pg.url("regions")
            let a = try backup(sandbox, ["--postgres", url, "--source-name", "regions", "--no-globals", "--time", "2026-11-01T02:00:00+07:00"])
            try pg.psql("INSERT INTO communes SELECT i, 'Xã ' || i FROM generate_series(101, 200) i;", database: "regions")
            let b = try backup(sandbox, ["--postgres", url, "--source-name", "regions", "--no-globals", "--time", "2026-11-02T02:00:00+07:00"])
            try pg.psql("INSERT INTO communes SELECT i, 'Xã ' || i FROM generate_series(201, 300) i;", database: "regions")
            let c = try backup(sandbox, ["--postgres", url, "--source-name", "regions", "--no-globals"])
            let short = Dictionary(uniqueKeysWithValues: try snapshotList(sandbox).map { ($0.id, $0.shortID) })

            let cases: [(at: String?, snapshot: String, rows: Int)] = [
                ("2026-11-01 23:00", a.snapshot, 100),
                ("2026-11-02T01:59:59+07:00", a.snapshot, 100),
                ("2026-11-02 02:00", b.snapshot, 200),
                ("2026-11-20", b.snapshot, 200),
                (nil, c.snapshot, 300),
            ]
            for (i, item) in cases.enumerated() {
                let target = "regions_at_\(i)"
                var arguments = ["restore", "--source", "regions", "--to-database", pg.url(target), "--yes"]
                if let at = item.at { arguments += ["--at", at] }
                // Local times are read in Asia/Ho_Chi_Minh (by default, whatever TZ says; set here as well).
                let result = try sandbox.kho(arguments, env: ["TZ": "Asia/Ho_Chi_Minh"])
                #expect(result.exitCode == 0, "\(result)")
                #expect(result.err.contains("of snapshot \(short[item.snapshot] ?? "?")"), "--at \(item.at ?? "(none)") should pick \(short[item.snapshot] ?? "?"): \(result)")
                #expect(try pg.value("SELECT count(*) FROM communes;", database: target) == String(item.rows), "--at \(item.at ?? "(none)")")
            }
            let tooEarly = try sandbox.kho(["restore", "--source", "regions", "--at", "2026-10-31 12:00", "--to-database", pg.url("regions_never"), "--yes"],
                                           env: ["TZ": "Asia/Ho_Chi_Minh"])
            try expectFailure(tooEarly, code: 2, "No snapshot of source regions at or before 2026-10-31 12:00:00 +07 (Asia/Ho_Chi_Minh)")
            #expect(!(try pg.databases()).contains("regions_never"))
        }

        @Test("--to-file refuses an existing file without --overwrite; --stdout gives the dump byte for byte")
        func toFileAndStdout() throws {
            let pg = try ScratchPostgres.requireShared()
            let sandbox = try Sandbox("pg-file")
            try sandbox.initRepository()
            try createPostgresShop(pg, "archive", documents: 500)
            _ = try backup(sandbox, ["--postgres", pg.url("archive"), "--source-name", "archive"])
            let dump = try sandbox.ok("dump", "latest", "archive.sql").stdout
            #expect(String(decoding: dump, as: UTF8.self).contains("PostgreSQL database dump complete"))

            let streamed = try sandbox.ok("restore", "--source", "archive", "--stdout", "--yes")
            #expect(streamed.stdout.count == dump.count)
            #expect(sha256(streamed.stdout) == sha256(dump), "--stdout must give the stored dump byte for byte")

            let file = sandbox.path("archive.sql")
            try writeFile(file, Array("giữ nguyên\n".utf8))
            let refused = try sandbox.kho("restore", "--source", "archive", "--to-file", file, "--yes")
            try expectFailure(refused, code: 2, "\(file) exists", "--overwrite")
            #expect(try readFile(file) == Array("giữ nguyên\n".utf8), "a refused restore leaves the file alone")
            let overwritten = try sandbox.kho("restore", "--source", "archive", "--to-file", file, "--overwrite", "--yes")
            #expect(overwritten.exitCode == 0, "\(overwritten)")
            #expect(sha256(try readFile(file)) == sha256(dump))
            let fresh = sandbox.path("fresh.sql")
            _ = try sandbox.ok("restore", "--source", "archive", "--to-file", fresh, "--yes")
            #expect(sha256(try readFile(fresh)) == sha256(dump))
        }
    }
}

// MARK: MariaDB

private func createMariaDBShop(_ db: ScratchMariaDB, _ database: String) throws {
    try db.sql(#"""
        CREATE DATABASE `\#(database)` CHARACTER SET utf8mb4;
        USE `\#(database)`;
        CREATE TABLE accounts(id INT PRIMARY KEY, owner VARCHAR(100) NOT NULL, balance BIGINT NOT NULL) ENGINE=InnoDB;
        INSERT INTO accounts SELECT seq, CONCAT('Chủ tài khoản ', seq), 1000 FROM seq_1_to_1000;
        CREATE TABLE orders(id BIGINT AUTO_INCREMENT PRIMARY KEY, total BIGINT NOT NULL, note VARCHAR(200)) ENGINE=InnoDB;
        CREATE TABLE order_lines(id BIGINT AUTO_INCREMENT PRIMARY KEY, order_id BIGINT NOT NULL, amount BIGINT NOT NULL,
                                 FOREIGN KEY (order_id) REFERENCES orders(id)) ENGINE=InnoDB;
        INSERT INTO orders(id, total, note) SELECT seq, 2 * seq, CONCAT('đơn hàng ', seq) FROM seq_1_to_5000;
        INSERT INTO order_lines(order_id, amount) SELECT seq, seq FROM seq_1_to_5000;
        INSERT INTO order_lines(order_id, amount) SELECT seq, seq FROM seq_1_to_5000;
        CREATE TABLE documents(id INT PRIMARY KEY, title VARCHAR(200), body TEXT, scan BLOB, amount DECIMAL(12,2), signed DATE,
                               meta JSON) ENGINE=InnoDB;
        INSERT INTO documents SELECT seq, CONCAT('Hồ sơ số ', seq), REPEAT(MD5(seq), 8), UNHEX(MD5(seq)), seq * 1.25,
                                     DATE_ADD('2020-01-01', INTERVAL seq DAY), JSON_OBJECT('i', seq, 'xã', 'Nghĩa Hành') FROM seq_1_to_5000;
        INSERT INTO documents VALUES (0, NULL, 'tab\there\nnew line \\ backslash ''quoted''', UNHEX('00FF'), NULL, NULL, NULL);
        CREATE TABLE `bảng lạ` (`khóa` VARCHAR(10) PRIMARY KEY, `giá trị` TEXT) ENGINE=InnoDB;
        INSERT INTO `bảng lạ` VALUES ('a', 'một'), ('b', NULL), ('c', '');
        """#)
}

private let mariadbWriterBlock = """
    START TRANSACTION;
    SET @a = FLOOR(1 + RAND() * 1000), @b = FLOOR(1 + RAND() * 1000), @i = FLOOR(1 + RAND() * 999), @x = FLOOR(RAND() * 100);
    INSERT INTO orders(total, note) VALUES (@a + @b, CONCAT('mới ', @a));
    SET @o = LAST_INSERT_ID();
    INSERT INTO order_lines(order_id, amount) VALUES (@o, @a), (@o, @b);
    UPDATE accounts SET balance = balance + IF(id = @i, -@x, @x) WHERE id IN (@i, @i + 1);
    UPDATE orders SET note = CONCAT('sửa ', @x) WHERE id = @o - 7;
    COMMIT;

    """

private func startMariaDBWriter(_ db: ScratchMariaDB, database: String, scratch: String) throws -> BackgroundSQL {
    try BackgroundSQL(ScratchMariaDB.client!, db.clientArguments(database: database), block: mariadbWriterBlock, scratch: scratch)
}

private func mariadbInvariants(_ db: ScratchMariaDB, _ database: String) throws -> String {
    try db.value("""
        SELECT (SELECT SUM(balance) FROM accounts) = 1000000,
               (SELECT COUNT(*) FROM order_lines) = 2 * (SELECT COUNT(*) FROM orders),
               NOT EXISTS (SELECT 1 FROM orders o WHERE total <> (SELECT COALESCE(SUM(amount), 0) FROM order_lines l WHERE l.order_id = o.id));
        """, database: database)
}

extension DatabaseSourceTests {
    @Suite("MariaDB", .serialized, .scratchMariaDB,
           .enabled(if: ScratchMariaDB.isAvailable, Comment(rawValue: ScratchMariaDB.unavailableReason ?? "")))
    struct MariaDB {
        @Test("two databases backed up while a writer commits: manifest, restores equal and consistent, a second backup stores a fraction")
        func roundTripWhileWriting() throws {
            let db = try ScratchMariaDB.requireShared()
            let sandbox = try Sandbox("mariadb-roundtrip")
            // 64 KiB chunks: with the default 1 MiB average a few-MB dump is a handful of chunks, and any
            // change touches a large share of them; a production dump of hundreds of MB behaves like this one.
            try sandbox.initRepository("--chunk-average", "65536")
            try createMariaDBShop(db, "shop")
            try db.sql("""
                CREATE DATABASE land CHARACTER SET utf8mb4;
                USE land;
                CREATE TABLE land.parcels(id INT PRIMARY KEY, owner VARCHAR(100), area DOUBLE, doc BLOB) ENGINE=InnoDB;
                INSERT INTO land.parcels SELECT seq, CONCAT('Nguyễn Văn ', seq), seq * 1.5, UNHEX(MD5(seq)) FROM seq_1_to_80000;
                """)
            let landBefore = try db.fingerprint("land")

            let writer = try startMariaDBWriter(db, database: "shop", scratch: sandbox.dir)
            defer { writer.stop() }
            let orders = { try int(try db.value("SELECT COUNT(*) FROM orders;", database: "shop")) }
            let before = try waitForWrites(writer, past: 5000, orders)
            let first = try backup(sandbox, ["--mariadb", db.url("shop,land"), "--source-name", "city"])
            let afterBackup = try orders()
            try waitForWrites(writer, past: afterBackup, orders)
            let writerEnded = writer.stop()
            #expect(writerEnded.status == 0, "the writer failed: \(writerEnded.stdout)")
            let after = try orders()

            let snap = try snapshot(sandbox, first.snapshot)
            #expect(snap.source.kind == "mariadb" && snap.source.name == "city")
            let manifest = try #require(snap.manifest)
            #expect(manifest.engine == "mariadb")
            #expect(manifest.serverVersion == (try db.value("SELECT VERSION();")))
            #expect(Set(manifest.databases.map(\.name)) == ["shop", "land"])
            let shop = try #require(manifest.database("shop"))
            let land = try #require(manifest.database("land"))
            #expect(Set(shop.tables.map(\.name)) == Set(try db.rows("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop';")))
            #expect(shop.table("bảng lạ")?.rows == 3)
            #expect(land.table("parcels")?.rows == 80000)
            let recordedOrders = try #require(shop.table("orders")).rows
            #expect(recordedOrders >= Int64(before) && recordedOrders <= Int64(after), "orders: \(before) ≤ \(recordedOrders) ≤ \(after)")
            #expect(shop.table("order_lines")?.rows == 2 * recordedOrders)
            let ls = try decoded(try sandbox.kho("ls", "latest", "--json"), as: DBLsOutput.self)
            #expect(Set(ls.entries.filter { $0.kind == "file" }.map(\.path))
                    == ["/shop.sql", "/land.sql", "/shop.schema.json", "/shop.globals.json", "/land.schema.json", "/land.globals.json"])
            #expect(ls.snapshot.manifest?.database("shop")?.tables == shop.tables)

            let ambiguous = try sandbox.kho("restore", "--source", "city", "--to-database", db.url("nowhere"), "--yes")
            try expectFailure(ambiguous, code: 2, "holds several databases (")

            let restored = try decoded(try sandbox.kho("restore", "--source", "city", "--database", "shop",
                                                       "--to-database", db.url("shop_restored"), "--yes", "--json"), as: DBRestoreOutput.self)
            #expect(restored.engine == "mariadb" && restored.database == "shop_restored")
            expectAllEqual(restored, tables: shop.tables.count)
            for table in shop.tables {
                let count = try db.value("SELECT COUNT(*) FROM shop_restored.`\(table.name)`;")
                #expect(count == String(table.rows), "\(table.name): restored \(count), manifest \(table.rows)")
            }
            #expect(try mariadbInvariants(db, "shop_restored") == "1\t1\t1", "the restored shop must be one consistent state")
            let restoredLand = try decoded(try sandbox.kho("restore", "--source", "city", "--database", "land",
                                                           "--to-database", db.url("land_restored"), "--yes", "--json"), as: DBRestoreOutput.self)
            expectAllEqual(restoredLand, tables: 1)
            #expect(try db.fingerprint("land_restored") == landBefore)

            // Small changes, then a second backup: it stores a small fraction of the first.
            try db.sql("""
                UPDATE parcels SET owner = 'Trần Thị Mới' WHERE id BETWEEN 10000 AND 10009;
                INSERT INTO parcels VALUES (80001, 'Lê Văn Thêm', 1, NULL);
                """, database: "land")
            let second = try backup(sandbox, ["--mariadb", db.url("shop,land"), "--source-name", "city"])
            #expect(second.summary.bytesRead > 6 << 20, "a few MB of dump: \(second.summary.bytesRead)")
            #expect(second.summary.bytesAdded * 8 < first.summary.bytesAdded,
                    "the second backup added \(second.summary.bytesAdded) bytes, the first \(first.summary.bytesAdded)")
        }

        @Test("unreachable server, wrong password, missing privilege, missing database, missing mariadb-dump, a held lock, a shrunken dump: exit 1, one sentence, no snapshot")
        func failuresAreClosed() throws {
            let db = try ScratchMariaDB.requireShared()
            let sandbox = try Sandbox("mariadb-failures")
            try sandbox.initRepository()
            try db.sql("""
                CREATE DATABASE permits;
                USE permits;
                CREATE TABLE permits.permits(id INT PRIMARY KEY, holder VARCHAR(100));
                INSERT INTO permits.permits SELECT seq, CONCAT('Giấy phép ', MD5(seq)) FROM seq_1_to_20000;
                CREATE USER 'clerk'@'127.0.0.1' IDENTIFIED BY 'đúng';
                GRANT ALL PRIVILEGES ON *.* TO 'clerk'@'127.0.0.1';
                """)

            let nobody = try ServerSupport.freeLoopbackPort()
            let unreachable = try sandbox.kho("backup", "--mariadb", db.url("permits", port: nobody), "--source-name", "permits")
            try expectFailure(unreachable, "Source permits: the mariadb server cannot be reached", snapshotsBefore: 0, sandbox: sandbox)

            let wrong = try sandbox.kho(["backup", "--mariadb", db.url("permits", user: "clerk"), "--source-name", "permits", "--password-env", "PERMITS_PASSWORD"],
                                        env: ["PERMITS_PASSWORD": "sai"])
            try expectFailure(wrong, "Source permits: the server refused the login", "Access denied", snapshotsBefore: 0, sandbox: sandbox)

            let missing = try sandbox.kho("backup", "--mariadb", db.url("no_such_db"), "--source-name", "permits")
            try expectFailure(missing, "Source permits: the database does not exist", "no_such_db", snapshotsBefore: 0, sandbox: sandbox)

            let empty = sandbox.path("empty-bin")
            try makeDirectories(empty)
            let noTool = try sandbox.kho(["backup", "--mariadb", db.url("permits"), "--source-name", "permits"], env: ["PATH": empty])
            try expectFailure(noTool, "Source permits: mariadb-dump is not installed or not on PATH", snapshotsBefore: 0, sandbox: sandbox)

            // A user that may read but not take the brief global read lock the manifest needs.
            try db.sql("CREATE USER 'reader'@'127.0.0.1'; GRANT SELECT, SHOW VIEW, LOCK TABLES ON permits.* TO 'reader'@'127.0.0.1';")
            let unprivileged = try sandbox.kho("backup", "--mariadb", db.url("permits", user: "reader"), "--source-name", "permits")
            try expectFailure(unprivileged, "Source permits: the user reader cannot read mysql.global_priv", "GRANT SELECT ON mysql.*", snapshotsBefore: 0, sandbox: sandbox)
            try db.sql("GRANT SELECT ON mysql.* TO 'reader'@'127.0.0.1';")
            let noLock = try sandbox.kho("backup", "--mariadb", db.url("permits", user: "reader"), "--source-name", "permits")
            try expectFailure(noLock, "Source permits: the mariadb user lacks a privilege", "RELOAD", snapshotsBefore: 0, sandbox: sandbox)

            // Another session holds a table: the brief global read lock is not waited for beyond the timeout
            // (while it waits, every write on the server waits too).
            let locker = try BackgroundSQL(ScratchMariaDB.client!, db.clientArguments(database: "permits"),
                                           prelude: "LOCK TABLES permits WRITE;\n", block: "SELECT SLEEP(0.05);\n", scratch: sandbox.dir)
            defer { locker.stop() }
            try ServerSupport.waitUntil("the locker holds its lock") {
                // It runs the statements after LOCK TABLES, so it holds the lock.
                try db.value("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(0.05)';") != "0"
            }
            let stuck = try sandbox.kho("backup", "--mariadb", db.url("permits"), "--source-name", "permits", "--timeout", "2s")
            try expectFailure(stuck, "Source permits: mariadb gave up waiting for a lock", "Lock wait timeout exceeded", snapshotsBefore: 0, sandbox: sandbox)
            locker.stop()

            // The right password works; then most rows go and the shrunken dump is refused.
            _ = try backup(sandbox, ["--mariadb", db.url("permits", user: "clerk"), "--source-name", "permits", "--password-env", "PERMITS_PASSWORD"],
                           env: ["PERMITS_PASSWORD": "đúng"])
            try db.sql("DELETE FROM permits.permits WHERE id > 100;")
            let shrunk = try sandbox.kho("backup", "--mariadb", db.url("permits"), "--source-name", "permits")
            try expectFailure(shrunk, "Source permits: the dump is", "below the allowed 50%", snapshotsBefore: 1, sandbox: sandbox)
        }

        @Test("restore refuses a non-empty database, --replace swaps and keeps the old one, a dump that fails half way changes nothing")
        func restoreSafety() throws {
            let db = try ScratchMariaDB.requireShared()
            let sandbox = try Sandbox("mariadb-safety")
            try sandbox.initRepository()
            try db.sql("""
                CREATE DATABASE ledger;
                USE ledger;
                CREATE TABLE ledger.entries(id INT PRIMARY KEY, account VARCHAR(20), amount DECIMAL(14,2)) ENGINE=InnoDB;
                INSERT INTO ledger.entries SELECT seq, CONCAT('TK ', seq % 50), seq * 10.5 FROM seq_1_to_20000;
                CREATE TABLE ledger.journal(id INT PRIMARY KEY, memo VARCHAR(100)) ENGINE=InnoDB;
                INSERT INTO ledger.journal SELECT seq, CONCAT('Chứng từ ', MD5(seq)) FROM seq_1_to_20000;
                """)
            _ = try backup(sandbox, ["--mariadb", db.url("ledger"), "--source-name", "ledger"])
            let atBackup = try db.fingerprint("ledger")

            let refused = try sandbox.kho("restore", "--source", "ledger", "--to-database", db.url("ledger"), "--yes")
            try expectFailure(refused, code: 2, "The database ledger on 127.0.0.1:\(db.port) exists and is not empty")
            #expect(try db.fingerprint("ledger") == atBackup)

            try db.sql("INSERT INTO ledger.entries VALUES (0, 'sau sao lưu', 1);")
            let changed = try db.fingerprint("ledger")
            let databasesBefore = Set(try db.databases())
            let replaced = try sandbox.kho("restore", "--source", "ledger", "--to-database", db.url("ledger"), "--replace", "--yes")
            #expect(replaced.exitCode == 0, "\(replaced)")
            let kept = try #require(Set(try db.databases()).subtracting(databasesBefore).first, "a database kept aside")
            #expect(kept.hasPrefix("ledger__kho_replaced_"), "\(kept)")
            #expect(Set(try db.databases()) == databasesBefore.union([kept]))
            #expect(replaced.out.contains("the database it replaced is kept as \(kept)"), "\(replaced)")
            #expect(replaced.out.contains("every table present, row counts and checksums equal"), "\(replaced)")
            #expect(try db.fingerprint("ledger") == atBackup)
            #expect(try db.fingerprint(kept) == changed)

            let dump = try sandbox.ok("dump", "latest", "ledger.sql").stdout
            let broken = try breakInTheMiddle(dump, after: "UNLOCK TABLES;")
            let brokenFile = sandbox.path("ledger-broken.sql")
            try writeFile(brokenFile, broken)
            let brokenSnapshot = try decoded(try sandbox.kho(["backup", "--stdin", "--stdin-name", "ledger.sql", "--json"], input: .file(brokenFile)),
                                             as: DBBackupOutput.self).snapshot
            let current = try db.fingerprint("ledger")
            let databases = Set(try db.databases())
            let failed = try sandbox.kho("restore", brokenSnapshot, "--to-database", db.url("ledger"), "--replace", "--yes")
            #expect(failed.exitCode == 1, "\(failed)")
            #expect(failed.err.contains("loading the dump failed") && failed.err.contains("THIS"), "\(failed)")
            #expect(failed.err.contains("the target was left as it was before"), "\(failed)")
            #expect(try db.fingerprint("ledger") == current, "the original database must be unchanged")
            #expect(Set(try db.databases()) == databases, "no scratch database may be left behind")

            let failedNew = try sandbox.kho("restore", brokenSnapshot, "--to-database", db.url("ledger_new"), "--yes")
            #expect(failedNew.exitCode == 1, "\(failedNew)")
            #expect(Set(try db.databases()) == databases)
            // Into an existing empty database (MariaDB cannot roll back DDL): it is empty again afterwards.
            try db.sql("CREATE DATABASE ledger_empty;")
            let failedEmpty = try sandbox.kho("restore", brokenSnapshot, "--to-database", db.url("ledger_empty"), "--yes")
            #expect(failedEmpty.exitCode == 1, "\(failedEmpty)")
            #expect(failedEmpty.err.contains("the target was left as it was before"), "\(failedEmpty)")
            #expect(try db.value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'ledger_empty';") == "0")
        }

        @Test("--replace of a database with views, triggers or routines is refused before the load, leaving the original and no scratch databases")
        func replaceWithUnmovableObjects() throws {
            let db = try ScratchMariaDB.requireShared()
            let sandbox = try Sandbox("mariadb-unmovable")
            try sandbox.initRepository()
            try db.sql("""
                CREATE DATABASE council;
                USE council;
                CREATE TABLE motions(id INT PRIMARY KEY, title VARCHAR(100), votes INT) ENGINE=InnoDB;
                INSERT INTO motions SELECT seq, CONCAT('Nghị quyết ', seq), seq % 30 FROM seq_1_to_1000;
                CREATE TABLE motion_log(id INT, at TIMESTAMP DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB;
                CREATE VIEW passed AS SELECT id, title FROM motions WHERE votes > 15;
                CREATE TRIGGER log_motion AFTER INSERT ON motions FOR EACH ROW INSERT INTO motion_log(id) VALUES (NEW.id);
                CREATE PROCEDURE count_passed() SELECT COUNT(*) FROM passed;
                """)
            _ = try backup(sandbox, ["--mariadb", db.url("council"), "--source-name", "council"])
            // The live database's view changes after the backup; restoring elsewhere must not touch it.
            try db.sql("CREATE OR REPLACE VIEW council.passed AS SELECT id, title FROM council.motions WHERE votes > 25;")
            let liveView = try db.value("SELECT VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'council' AND TABLE_NAME = 'passed';")

            // Into a new name, everything comes back.
            let copy = try decoded(try sandbox.kho("restore", "--source", "council", "--to-database", db.url("council_copy"), "--yes", "--json"),
                                   as: DBRestoreOutput.self)
            expectAllEqual(copy, tables: 2)
            #expect(try db.value("SELECT COUNT(*) FROM council_copy.passed;") == (try db.value("SELECT COUNT(*) FROM council.motions WHERE votes > 15;")),
                    "the restored view is the snapshot's view over the restored table")
            #expect(try db.value("SELECT VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'council' AND TABLE_NAME = 'passed';") == liveView,
                    "restoring into another name must not touch the live database")
            #expect(try db.value("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'council_copy';") == "1")
            #expect(try db.value("SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'council_copy';") == "1")

            try db.sql("INSERT INTO council.motions VALUES (0, 'sau sao lưu', 20);")
            let current = try db.fingerprint("council")
            let databases = Set(try db.databases())
            let replaced = try sandbox.kho("restore", "--source", "council", "--to-database", db.url("council"), "--replace", "--yes")
            try expectFailure(replaced, code: 2, "MariaDB cannot move views, triggers, routines or events between databases",
                              "nothing was changed")
            #expect(try db.fingerprint("council") == current, "the original database must be unchanged")
            #expect(Set(try db.databases()) == databases, "no scratch or aside database may be left behind")
            #expect(try db.value("SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'council';") == "1")
            #expect(try db.value("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'council';") == "1")

            // The incident: the database is gone; restoring it under its own name brings everything back.
            try db.sql("DROP DATABASE council;")
            let back = try decoded(try sandbox.kho("restore", "--source", "council", "--to-database", db.url("council"), "--yes", "--json"),
                                   as: DBRestoreOutput.self)
            expectAllEqual(back, tables: 2)
            #expect(try db.value("SELECT COUNT(*) FROM council.passed;") == (try db.value("SELECT COUNT(*) FROM council.motions WHERE votes > 15;")))
            #expect(try db.value("SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'council';") == "1")
        }
    }
}

// MARK: SQLite

private let sqliteSchema = """
    PRAGMA foreign_keys = ON;
    CREATE TABLE accounts(id INTEGER PRIMARY KEY, owner TEXT NOT NULL, balance INTEGER NOT NULL);
    CREATE TABLE orders(id INTEGER PRIMARY KEY, total INTEGER NOT NULL, note TEXT);
    CREATE TABLE order_lines(id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id), amount INTEGER NOT NULL);
    CREATE TABLE documents(id INTEGER PRIMARY KEY, title TEXT, body TEXT, scan BLOB, amount REAL);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
    INSERT INTO orders(id, total, note) SELECT i, 2 * i, 'đơn hàng ' || i FROM n;
    INSERT INTO order_lines(order_id, amount) SELECT id, id FROM orders;
    INSERT INTO order_lines(order_id, amount) SELECT id, id FROM orders;
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
    INSERT INTO accounts SELECT i, 'Chủ tài khoản ' || i, 1000 FROM n;
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
    INSERT INTO documents SELECT i, 'Hồ sơ số ' || i, replace(hex(zeroblob(100)), '0', 'x') || hex(randomblob(40)), randomblob(64), i * 1.25 FROM n;
    INSERT INTO documents VALUES (0, NULL, 'tab' || char(9) || 'here', x'00ff', NULL);
    """

private let sqliteWriterBlock = """
    BEGIN IMMEDIATE;
    INSERT INTO orders(total, note) VALUES (0, 'mới');
    INSERT INTO order_lines(order_id, amount) SELECT max(id), abs(random()) % 1000 + 1 FROM orders;
    INSERT INTO order_lines(order_id, amount) SELECT max(id), abs(random()) % 1000 + 1 FROM orders;
    UPDATE orders SET total = (SELECT sum(amount) FROM order_lines WHERE order_id = orders.id) WHERE id = (SELECT max(id) FROM orders);
    DELETE FROM pick;
    INSERT INTO pick SELECT abs(random()) % 999 + 1, abs(random()) % 100;
    UPDATE accounts SET balance = balance + CASE WHEN id = (SELECT i FROM pick) THEN -(SELECT x FROM pick) ELSE (SELECT x FROM pick) END
    WHERE id IN ((SELECT i FROM pick), (SELECT i FROM pick) + 1);
    COMMIT;

    """

extension DatabaseSourceTests {
    @Suite("SQLite", .serialized, .enabled(if: ScratchSQLite.isAvailable, Comment(rawValue: ScratchSQLite.unavailableReason)))
    struct SQLite {
        @Test("online copy while a writer commits, --to-file restore with equal manifest and integrity, a second backup stores a fraction",
              arguments: ["wal", "delete"])
        func roundTripWhileWriting(journalMode: String) throws {
            let sandbox = try Sandbox("sqlite-\(journalMode)")
            // 64 KiB chunks: with the default 1 MiB average a few-MB dump is a handful of chunks, and any
            // change touches a large share of them; a production dump of hundreds of MB behaves like this one.
            try sandbox.initRepository("--chunk-average", "65536")
            let path = sandbox.path("records.db")
            let mode = try ScratchSQLite.value("PRAGMA journal_mode = \(journalMode);", path: path, scratch: sandbox.dir)
            #expect(mode == journalMode)
            try ScratchSQLite.sql(sqliteSchema, path: path, scratch: sandbox.dir)
            let count = { try int(try ScratchSQLite.value("SELECT count(*) FROM orders;", path: path, scratch: sandbox.dir)) }

            let writer = try BackgroundSQL(ScratchSQLite.cli!, ["-bail", "-batch", "-cmd", ".timeout 20000", "-cmd", "PRAGMA foreign_keys = ON;",
                                                                "-cmd", "CREATE TEMP TABLE pick(i, x);", path],
                                           block: sqliteWriterBlock, scratch: sandbox.dir)
            defer { writer.stop() }
            // kho's temporary copy goes to TMPDIR; nothing of it may stay behind.
            let temporary = sandbox.path("tmp")
            try makeDirectories(temporary)
            let before = try waitForWrites(writer, past: 5000, count)
            let first = try backup(sandbox, ["--sqlite", path, "--source-name", "records"], env: ["TMPDIR": temporary])
            let afterBackup = try count()
            try waitForWrites(writer, past: afterBackup, count)
            let writerEnded = writer.stop()
            #expect(writerEnded.status == 0, "the writer failed: \(writerEnded.stdout)")
            let after = try count()

            let snap = try snapshot(sandbox, first.snapshot)
            #expect(snap.source.kind == "sqlite" && snap.source.name == "records")
            let manifest = try #require(snap.manifest)
            #expect(manifest.engine == "sqlite")
            let database = try #require(manifest.databases.first)
            #expect(manifest.databases.count == 1 && database.file == "records.db")
            #expect(Set(database.tables.map(\.name)) == ["accounts", "orders", "order_lines", "documents"])
            let recordedOrders = try #require(database.table("orders")).rows
            #expect(recordedOrders >= Int64(before) && recordedOrders <= Int64(after), "orders: \(before) ≤ \(recordedOrders) ≤ \(after)")
            #expect(database.table("documents")?.rows == 20001)

            let copy = sandbox.path("restored.db")
            let restored = try sandbox.kho("restore", "--source", "records", "--to-file", copy, "--yes")
            #expect(restored.exitCode == 0, "\(restored)")
            #expect(restored.out.contains("every table present, row counts and checksums equal"), "\(restored)")
            #expect(try ScratchSQLite.value("PRAGMA integrity_check;", path: copy, scratch: sandbox.dir) == "ok")
            #expect(try ScratchSQLite.value("PRAGMA foreign_key_check;", path: copy, scratch: sandbox.dir) == "")
            for table in database.tables {
                #expect(try ScratchSQLite.value("SELECT count(*) FROM \(table.name);", path: copy, scratch: sandbox.dir) == String(table.rows), "\(table.name)")
            }
            let invariants = try ScratchSQLite.value("""
                SELECT (SELECT sum(balance) FROM accounts) = 1000 * 1000,
                       (SELECT count(*) FROM order_lines) = 2 * (SELECT count(*) FROM orders),
                       NOT EXISTS (SELECT 1 FROM orders o WHERE total <> (SELECT coalesce(sum(amount), 0) FROM order_lines l WHERE l.order_id = o.id));
                """, path: copy, scratch: sandbox.dir)
            #expect(invariants == "1\t1\t1", "the copy must be one consistent state")

            // A few more orders: the second copy stores a fraction of the first.
            try ScratchSQLite.sql("INSERT INTO orders(total, note) VALUES (0, 'một'), (0, 'hai'); UPDATE documents SET title = 'sửa' WHERE id = 77;",
                                  path: path, scratch: sandbox.dir)
            let second = try backup(sandbox, ["--sqlite", path, "--source-name", "records"], env: ["TMPDIR": temporary])
            #expect(second.summary.bytesAdded * 8 < first.summary.bytesAdded,
                    "the second backup added \(second.summary.bytesAdded) bytes, the first \(first.summary.bytesAdded)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: temporary) == [], "temporary files left behind")
        }

        @Test("a copy that shrank below min-size-ratio is refused, also under another --host name")
        func shrunkenCopy() throws {
            let sandbox = try Sandbox("sqlite-shrink")
            try sandbox.initRepository()
            let path = sandbox.path("records.db")
            try ScratchSQLite.sql(sqliteSchema, path: path, scratch: sandbox.dir)
            _ = try backup(sandbox, ["--sqlite", path, "--source-name", "records"])
            _ = try backup(sandbox, ["--sqlite", path, "--source-name", "records-remote", "--host", "may-chu-luu-tru"])
            try ScratchSQLite.sql("DELETE FROM documents WHERE id > 100; VACUUM;", path: path, scratch: sandbox.dir)
            let shrunk = try sandbox.kho("backup", "--sqlite", path, "--source-name", "records")
            try expectFailure(shrunk, "Source records: the dump is", "below the allowed 50%", snapshotsBefore: 2, sandbox: sandbox)
            let shrunkRemote = try sandbox.kho("backup", "--sqlite", path, "--source-name", "records-remote", "--host", "may-chu-luu-tru")
            try expectFailure(shrunkRemote, "Source records-remote: the dump is", "below the allowed 50%", snapshotsBefore: 2, sandbox: sandbox)
        }

        @Test("a SQLite path that cannot be read fails in one sentence without a snapshot")
        func missingFile() throws {
            let sandbox = try Sandbox("sqlite-missing")
            try sandbox.initRepository()
            let result = try sandbox.kho("backup", "--sqlite", sandbox.path("nope.db"), "--source-name", "records")
            try expectFailure(result, "Source records: the SQLite database \(sandbox.path("nope.db")) cannot be read", snapshotsBefore: 0, sandbox: sandbox)
        }
    }
}

// MARK: command sources

extension DatabaseSourceTests {
    @Suite("command sources")
    struct Commands {
        @Test("a command stopped by --timeout, one that exits non-zero half way, one killed: exit 1, no snapshot, the repository stays sound")
        func commandFailures() throws {
            let sandbox = try Sandbox("command-failures")
            try sandbox.initRepository()
            let payload = sandbox.path("payload.sql")
            try writeFile(payload, dumpText(3 << 20, seed: 5))

            let slow = try sandbox.kho("backup", "--command", "sleep 5", "--stdin-name", "x", "--timeout", "1s")
            try expectFailure(slow, "`sleep 5` was stopped after its timeout of 1 s; no snapshot was written", snapshotsBefore: 0, sandbox: sandbox)

            let halfWay = try sandbox.kho("backup", "--command", "cat '\(payload)'; echo 'the dump broke half way' >&2; exit 3", "--stdin-name", "x")
            try expectFailure(halfWay, "exited with status 3; no snapshot was written", "the dump broke half way", snapshotsBefore: 0, sandbox: sandbox)

            let killed = try sandbox.kho("backup", "--command", "head -c 1000000 '\(payload)'; kill -9 $$", "--stdin-name", "x")
            try expectFailure(killed, "was killed by signal 9; no snapshot was written", snapshotsBefore: 0, sandbox: sandbox)

            #expect(try sandbox.kho("check").exitCode == 0)
            // The same command that finishes is stored.
            let good = try sandbox.ok("backup", "--command", "cat '\(payload)'", "--stdin-name", "x", "--timeout", "1m")
            _ = good
            #expect(sha256(try sandbox.ok("dump", "latest", "x").stdout) == sha256(try readFile(payload)))
        }
    }
}
