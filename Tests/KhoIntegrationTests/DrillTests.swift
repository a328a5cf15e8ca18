import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoTestSupport
import Testing

// Restore drills (`kho verify`, drills in `kho run`) and the audit ledger, driven through the `kho`
// binary. Each test has its own sandbox: a repository whose password is in a file, a policy folder
// it writes, a state folder (KHO_STATE_DIR: catalog and ledger) and a TMPDIR for kho, so that the
// scratch servers and folders a drill makes (kho-drill-*) can be looked for afterwards. The
// database tests share one scratch PostgreSQL and one MariaDB server (Servers.swift) and use their
// own databases on them.

// MARK: JSON printed by kho

struct DrillEvidenceJSON: Decodable, CustomStringConvertible {
    struct Check: Decodable {
        var name: String
        var outcome: String
        var output: String
    }
    struct Row: Decodable {
        var table: String
        var outcome: String
        var expectedRows: Int64?
        var actualRows: Int64?
        var expectedChecksum: String?
        var actualChecksum: String?
    }
    struct Comparison: Decodable {
        var rows: [Row]
    }
    var drillID: String
    var policy: String
    var source: String
    var sourceKind: String
    var snapshot: String
    var scratch: String
    var checks: [Check]
    var comparison: Comparison?
    var rtoSeconds: Double?
    var rtoObjectiveSeconds: Double
    var passed: Bool
    var failureReasons: [String]
    var khoVersion: String
    var host: String
    var evidenceSHA256: String

    func check(_ name: String) -> Check? { checks.first { $0.name == name } }
    func row(_ table: String) -> Row? { comparison?.rows.first { $0.table == table } }

    var description: String {
        var lines = ["\(passed ? "PASS" : "FAIL") \(policy)/\(source) (\(sourceKind)) snapshot \(snapshot.prefix(8)), scratch \(scratch)"]
        for c in checks { lines.append("  \(c.outcome) \(c.name): \(c.output.prefix(300))") }
        for r in comparison?.rows ?? [] { lines.append("  \(r.table): \(r.expectedRows ?? -1) → \(r.actualRows ?? -1) \(r.outcome)") }
        for reason in failureReasons { lines.append("  reason: \(reason)") }
        return lines.joined(separator: "\n")
    }
}

struct DrillSourceStatusJSON: Decodable {
    var policy: String
    var source: String
    var lastDrill: String?
    var lastDrillOutcome: String?
    var untested: Bool
}

private struct JobResultJSON: Decodable {
    var kind: String
    var policy: String
    var source: String
    var outcome: String
    var error: String?
}

private struct LedgerEntryJSON: Decodable {
    var sequence: Int
    var command: String
    var arguments: [String]
    var outcome: String
    var user: String
    var host: String
    var previous: String
    var hash: String
}

// MARK: the sandbox for drills

/// A sandbox with a repository (password in a file), a policy folder, a state folder and a TMPDIR
/// for kho.
final class DrillBench: @unchecked Sendable {
    let box: Sandbox
    var policies: String { box.path("policies") }
    var state: String { box.path("state") }
    var tmp: String { box.path("tmp") }
    var passwordFile: String { box.path("repository.pass") }

    init(_ label: String) throws {
        box = try Sandbox(label)
        for folder in [policies, state, tmp] {
            try makeDirectories(folder)
            chmod(folder, 0o755)
        }
        try writeFile(passwordFile, Array("drill repository password\n".utf8), mode: 0o600)
        let made = try run(["init"])
        try #require(made.exitCode == 0, "\(made)")
    }

    /// The environment: the password from a file, the catalog and ledger in `state`, scratch
    /// targets in `tmp`.
    func environment(_ extra: [String: String?]) -> [String: String?] {
        var env: [String: String?] = ["KHO_PASSWORD": nil, "KHO_PASSWORD_FILE": passwordFile, "KHO_STATE_DIR": state,
                                      "KHO_POLICIES": policies, "TMPDIR": tmp]
        for (key, value) in extra { env[key] = value }
        return env
    }

    func run(_ arguments: [String], env extra: [String: String?] = [:]) throws -> ProcessResult {
        try box.kho(arguments, env: environment(extra))
    }

    func start(_ arguments: [String], env extra: [String: String?] = [:]) throws -> Child {
        try box.start(arguments, env: environment(extra))
    }

    /// Runs kho and requires exit 0.
    @discardableResult
    func ok(_ arguments: [String], env extra: [String: String?] = [:], sourceLocation: SourceLocation = #_sourceLocation) throws -> ProcessResult {
        let result = try run(arguments, env: extra)
        try #require(result.exitCode == 0, "\(result)", sourceLocation: sourceLocation)
        return result
    }

    /// Writes policies/NAME.yaml: the fixed head (agency, schedule, this repository), then `body`
    /// (sources, objectives, drills …) as given.
    func writePolicy(_ name: String, schedule: String = "0 2 * * *", _ body: String) throws {
        let text = """
            name: \(name)
            agency: Sở Thông tin và Truyền thông (kiểm thử)
            system: Diễn tập khôi phục
            security-level: 3
            schedule: "\(schedule)"
            repository:
              path: \(box.repo)
              password-file: \(passwordFile)

            """ + body
        try writeFile(policies + "/\(name).yaml", Array(text.utf8))
    }

    /// `kho verify … --json`, decoded; the exit code is the caller's to check.
    func verify(_ arguments: [String], env extra: [String: String?] = [:]) throws -> (ProcessResult, [DrillEvidenceJSON]) {
        let result = try run(["verify", "--json"] + arguments, env: extra)
        let evidence = try #require(try? result.decode([DrillEvidenceJSON].self), "\(result)")
        return (result, evidence)
    }

    func status(env extra: [String: String?] = [:]) throws -> [DrillSourceStatusJSON] {
        let result = try ok(["status", "--json"], env: extra)
        return try result.decode([DrillSourceStatusJSON].self)
    }

    /// The evidence JSON the catalog holds for a drill.
    func storedEvidence(drillID: String) throws -> String {
        let text = try ScratchSQLite.sql("SELECT details FROM runs WHERE kind = 'drill' AND details LIKE '%\(drillID)%';",
                                         path: state + "/catalog.sqlite", scratch: box.dir)
        return try #require(text.split(separator: "\n").count == 1 ? text : nil, "expected one drill record \(drillID) in the catalog, got:\n\(text)")
    }

    /// `kho snapshots --json`, decoded loosely.
    func snapshots() throws -> [[String: Any]] {
        let result = try ok(["snapshots", "--json"])
        return try #require(try result.json() as? [[String: Any]], "\(result)")
    }

    /// The packs (data files) of the repository, with their sizes.
    func packs() throws -> [String: Int] { try box.repositoryFiles("data") }
}

// MARK: what a drill may leave behind

/// Processes (other than this one) whose command line mentions `path`.
func processesMentioning(_ path: String) -> [String] {
    let needle = Array(path.utf8)
    let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return names.compactMap { name -> String? in
        guard let pid = Int32(name), pid != getpid(),
              let data = FileManager.default.contents(atPath: "/proc/\(name)/cmdline"), data.count >= needle.count else { return nil }
        let bytes = Array(data)
        for start in 0...(bytes.count - needle.count) where bytes[start] == needle[0] && Array(bytes[start..<start + needle.count]) == needle {
            return "\(pid): " + String(decoding: bytes.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
        }
        return nil
    }
}

/// Requires that no scratch folder (kho-drill-*) is left in the bench's TMPDIR and that no process
/// (postgres, mariadbd, initdb …) started from one still runs.
func expectNothingLeft(_ bench: DrillBench, after what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let left = try FileManager.default.contentsOfDirectory(atPath: bench.tmp).filter { $0.hasPrefix("kho-drill") }
    #expect(left.isEmpty, "\(what): scratch left in TMPDIR: \(left)", sourceLocation: sourceLocation)
    let running = processesMentioning(bench.tmp)
    #expect(running.isEmpty, "\(what): processes from the scratch folder still run:\n\(running.joined(separator: "\n"))", sourceLocation: sourceLocation)
}

/// Flips one byte in the middle of each pack that is in `after` but not in `before`.
private func damageNewPacks(before: [String: Int], after: [String: Int]) throws -> [String] {
    let new = after.keys.filter { before[$0] == nil }.sorted()
    for pack in new {
        chmod(pack, 0o600)
        var bytes = try readFile(pack)
        bytes[bytes.count / 2] ^= 0x5a
        try writeFile(pack, bytes, mode: 0o400)
    }
    return new
}

// MARK: data

/// A shop database on the shared PostgreSQL server: customers, orders (a foreign key and an
/// index), Vietnamese text. Dropped first if it exists.
private func makeShop(_ server: ScratchPostgres, _ database: String, customers: Int = 1000, orders: Int = 2000) throws {
    try server.psql("DROP DATABASE IF EXISTS \(database);")
    try server.createDatabase(database)
    try server.psql("""
        CREATE TABLE customers (id int PRIMARY KEY, full_name text NOT NULL, commune text NOT NULL);
        CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id), total numeric(12,2) NOT NULL);
        CREATE INDEX orders_customer ON orders (customer_id);
        INSERT INTO customers SELECT i, 'Nguyễn Văn ' || i, (ARRAY['Nghĩa Hành','Sơn Tịnh','Bình Sơn'])[1 + i % 3] FROM generate_series(1, \(customers)) i;
        INSERT INTO orders SELECT i, 1 + i % \(customers), (i * 1.25)::numeric(12,2) FROM generate_series(1, \(orders)) i;
        """, database: database)
}

/// A land-records database on the shared MariaDB server. Dropped first if it exists.
private func makeLandRecords(_ server: ScratchMariaDB, _ database: String) throws {
    try server.sql("""
        DROP DATABASE IF EXISTS \(database);
        CREATE DATABASE \(database) CHARACTER SET utf8mb4;
        USE \(database);
        CREATE TABLE thua_dat (id INT PRIMARY KEY, so_to INT NOT NULL, dien_tich DECIMAL(12,2) NOT NULL,
                               chu_su_dung VARCHAR(120) NOT NULL, KEY (so_to)) ENGINE=InnoDB;
        CREATE TABLE bien_dong (id INT PRIMARY KEY, thua_dat_id INT NOT NULL, noi_dung VARCHAR(200),
                                FOREIGN KEY (thua_dat_id) REFERENCES thua_dat(id)) ENGINE=InnoDB;
        INSERT INTO thua_dat SELECT seq, seq % 300, 50 + (seq * 7 % 2000), CONCAT('Hộ ông/bà ', seq) FROM seq_1_to_1500;
        INSERT INTO bien_dong SELECT seq, 1 + seq % 1500, CONCAT('Chuyển nhượng lần ', seq) FROM seq_1_to_700;
        """)
}

/// A small document database in SQLite (WAL, a foreign key, an index).
private func makeDocuments(_ path: String, scratch: String) throws {
    try ScratchSQLite.sql("""
        PRAGMA journal_mode=WAL;
        CREATE TABLE co_quan (id INTEGER PRIMARY KEY, ten TEXT NOT NULL);
        CREATE TABLE van_ban (id INTEGER PRIMARY KEY, co_quan_id INTEGER NOT NULL REFERENCES co_quan(id), so_hieu TEXT, trich_yeu TEXT);
        CREATE INDEX van_ban_co_quan ON van_ban (co_quan_id);
        INSERT INTO co_quan VALUES (1, 'Văn phòng UBND tỉnh'), (2, 'Sở Tư pháp'), (3, 'Sở Tài nguyên và Môi trường');
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
        INSERT INTO van_ban SELECT i, 1 + i % 3, i || '/UBND-VX', 'Về việc số hóa hồ sơ, văn bản số ' || i FROM n;
        """, path: path, scratch: scratch)
}

/// A folder of scanned files: a large random one, small ones, an empty one, a subfolder, a symlink.
/// Returns the number of regular files.
@discardableResult
private func makeScans(_ root: String, seed: UInt64 = 1) throws -> Int {
    try makeDirectories(root + "/2026/11")
    try writeFile(root + "/2026/11/Hồ sơ số 1.pdf", randomBytes(1_500_000))
    for i in 1...5 { try writeFile(root + "/2026/11/phieu-\(i).txt", dumpText(3000 + i * 100, seed: seed + UInt64(i))) }
    try writeFile(root + "/trong.txt", [])
    symlink("2026/11/phieu-1.txt", root + "/moi-nhat.txt")
    return 7
}

// MARK: drills against real servers

@Suite("restore drills", .serialized, .scratchPostgres, .scratchMariaDB,
       .enabled(if: ScratchPostgres.isAvailable, Comment(rawValue: ScratchPostgres.unavailableReason ?? "")),
       .enabled(if: ScratchMariaDB.isAvailable, Comment(rawValue: ScratchMariaDB.unavailableReason ?? "")),
       .enabled(if: ScratchSQLite.isAvailable, Comment(rawValue: ScratchSQLite.unavailableReason)))
struct DrillTests {
    @Test("a drill of good PostgreSQL, MariaDB, SQLite and files snapshots passes, with every check, the manifest table, the RTO and sealed evidence; status shows it")
    func goodDrills() throws {
        let pg = try ScratchPostgres.requireShared()
        let maria = try ScratchMariaDB.requireShared()
        let bench = try DrillBench("drill-good")
        try makeShop(pg, "drill_good")
        try makeLandRecords(maria, "drill_good")
        let sqlitePath = bench.box.path("van-ban.sqlite")
        try makeDocuments(sqlitePath, scratch: bench.box.dir)
        let scans = bench.box.path("ho-so-scan")
        let fileCount = try makeScans(scans)
        let sources = """
            sources:
              - name: shop-db
                kind: postgres
                host: 127.0.0.1
                port: \(pg.port)
                databases: [drill_good]
              - name: land-db
                kind: mariadb
                host: 127.0.0.1
                port: \(maria.port)
                databases: [drill_good]
              - name: documents-db
                kind: sqlite
                path: \(sqlitePath)
              - name: scans
                kind: files
                paths: [\(scans)]
            objectives:
              rpo: 24h
              rto: 1h

            """
        let spare = """
            sources:
              - name: spare-scans
                kind: files
                paths: [\(scans)]
            objectives:
              rpo: 24h
              rto: 1h

            """
        // Backups first, without drills (kho run would drill one source of each policy).
        try bench.writePolicy("good", sources)
        try bench.writePolicy("spare", spare)
        try bench.ok(["run", "--all"])
        try bench.writePolicy("good", sources + "drills:\n  every: 7d\n  checks: [integrity, manifest, rto]\n")
        try bench.writePolicy("spare", spare + "drills:\n  every: 7d\n")

        let (result, drills) = try bench.verify(["--policy", "good"])
        #expect(result.exitCode == 0, "\(result)")
        try expectNothingLeft(bench, after: "passing drills")
        #expect(drills.map(\.source) == ["shop-db", "land-db", "documents-db", "scans"])
        let snapshots = try bench.snapshots()

        for drill in drills {
            #expect(drill.passed, "\(drill)")
            #expect(drill.failureReasons.isEmpty, "\(drill)")
            #expect(drill.policy == "good")
            #expect(drill.khoVersion.isEmpty == false && drill.host.isEmpty == false)
            // The newest snapshot of the source was drilled.
            let newest = snapshots.filter { ($0["source"] as? [String: Any])?["name"] as? String == drill.source }.last?["id"] as? String
            #expect(drill.snapshot == newest, "\(drill.source): drilled \(drill.snapshot), newest is \(newest ?? "none")")
            // Every check passed; the RTO was measured against the objective.
            for check in drill.checks { #expect(check.outcome == "pass", "\(drill.source) \(check.name): \(check.output)") }
            let rto = try #require(drill.check("rto"), "\(drill)")
            #expect(rto.output.contains("objective 3600 s"), "\(rto.output)")
            #expect(drill.rtoObjectiveSeconds == 3600)
            let measured = try #require(drill.rtoSeconds, "\(drill)")
            #expect(measured >= 0 && measured <= 3600)
            // The sealed evidence: 64 hex digits, equal to the SHA-256 of the record the catalog
            // keeps (sorted keys, compact) with the seal field blank.
            #expect(drill.evidenceSHA256.count == 64 && drill.evidenceSHA256.allSatisfy(\.isHexDigit), "\(drill.evidenceSHA256)")
            let stored = try bench.storedEvidence(drillID: drill.drillID)
            let sealField = "\"evidenceSHA256\":\"\(drill.evidenceSHA256)\""
            #expect(stored.contains(sealField))
            let blank = stored.replacingOccurrences(of: sealField, with: "\"evidenceSHA256\":\"\"")
            #expect(sha256(Array(blank.utf8)) == drill.evidenceSHA256, "the seal does not match the stored evidence of \(drill.source)")
            // A changed record no longer matches its seal.
            let edited = blank.replacingOccurrences(of: "\"passed\":true", with: "\"passed\":false")
            #expect(edited != blank && sha256(Array(edited.utf8)) != drill.evidenceSHA256)
        }

        // PostgreSQL: roles, pg_amcheck (tables and B-tree indexes), both tables compared.
        let shop = try #require(drills.first { $0.source == "shop-db" })
        #expect(shop.sourceKind == "postgres")
        #expect(shop.scratch.contains("postgres cluster on socket ") && shop.scratch.contains(bench.tmp + "/kho-drill-pg-"), "\(shop.scratch)")
        #expect(shop.checks.map(\.name) == ["globals", "manifest", "schema", "pg_amcheck drill_good", "rto"], "\(shop)")
        #expect(shop.comparison?.rows.map(\.table) == ["public.customers", "public.orders"], "\(shop)")
        #expect(shop.row("public.customers")?.actualRows == 1000 && shop.row("public.orders")?.actualRows == 2000, "\(shop)")

        // MariaDB: CHECK TABLE on each table.
        let land = try #require(drills.first { $0.source == "land-db" })
        #expect(land.sourceKind == "mariadb")
        #expect(land.scratch.contains("mariadb server on socket ") && land.scratch.contains(bench.tmp + "/kho-drill-mariadb-"), "\(land.scratch)")
        #expect(land.checks.map(\.name) == ["CHECK TABLE drill_good", "manifest", "schema", "rto"], "\(land)")
        let checkTable = try #require(land.check("CHECK TABLE drill_good")).output
        #expect(checkTable.contains("drill_good.thua_dat") && checkTable.contains("drill_good.bien_dong") && checkTable.contains("OK"), "\(checkTable)")
        #expect(Set(land.comparison?.rows.map(\.table) ?? []) == ["bien_dong", "thua_dat"], "\(land)")
        #expect(land.row("thua_dat")?.actualRows == 1500 && land.row("bien_dong")?.actualRows == 700, "\(land)")

        // SQLite: integrity_check and foreign_key_check.
        let documents = try #require(drills.first { $0.source == "documents-db" })
        #expect(documents.sourceKind == "sqlite")
        #expect(documents.checks.map(\.name) == ["PRAGMA integrity_check, foreign_key_check", "manifest", "rto"], "\(documents)")
        #expect(documents.check("PRAGMA integrity_check, foreign_key_check")?.output == "ok")
        #expect(Set(documents.comparison?.rows.map(\.table) ?? []) == ["co_quan", "van_ban"], "\(documents)")
        #expect(documents.row("van_ban")?.actualRows == 3000 && documents.row("co_quan")?.actualRows == 3, "\(documents)")

        // Files: every file's size and content.
        let files = try #require(drills.first { $0.source == "scans" })
        #expect(files.sourceKind == "files")
        #expect(files.checks.map(\.name) == ["file contents and sizes", "file modes", "rto"], "\(files)")
        #expect(files.check("file contents and sizes")?.output.hasPrefix("\(fileCount) files:") == true, "\(files)")
        #expect(files.comparison == nil)

        // Every database table: present, row counts and checksums equal.
        for drill in [shop, land, documents] {
            let rows = drill.comparison?.rows ?? []
            #expect(!rows.isEmpty)
            for row in rows {
                #expect(row.outcome == "equal" && row.expectedRows == row.actualRows && row.expectedChecksum == row.actualChecksum
                        && row.actualChecksum?.isEmpty == false, "\(drill.source) \(row.table)")
            }
        }

        // kho status: the last drill and its outcome; the source never drilled is untested.
        let statuses = try bench.status()
        for source in ["shop-db", "land-db", "documents-db", "scans"] {
            let status = try #require(statuses.first { $0.source == source })
            #expect(status.lastDrill != nil && status.lastDrillOutcome == "success" && !status.untested, "\(source): \(status)")
        }
        let never = try #require(statuses.first { $0.source == "spare-scans" })
        #expect(never.lastDrill == nil && never.lastDrillOutcome == nil && never.untested)

        // The human-readable form lists the checks and the comparison table too.
        let text = try bench.ok(["verify", "--policy", "good", "--source", "shop-db"])
        #expect(text.out.contains("PASS good/shop-db") && text.out.contains("pg_amcheck drill_good") && text.out.contains("public.orders")
                && text.out.contains("evidence SHA-256"), "\(text)")
        try expectNothingLeft(bench, after: "a second passing drill")
    }

    @Test("a drill fails, naming the reason: a dump cut off in the middle of a table (row counts differ), a changed value (checksum differs)")
    func damagedDumps() throws {
        let pg = try ScratchPostgres.requireShared()
        let bench = try DrillBench("drill-dump")
        try makeShop(pg, "drill_cut")
        try makeShop(pg, "drill_altered")
        // pg_dump as a dump tool that silently lost data: kho finds the first pg_dump on PATH.
        // The real one runs; for drill_cut the output stops after the 500th row of orders, for
        // drill_altered one total is changed; the wrapper exits 0 either way.
        let wrappers = bench.box.path("bin")
        try makeDirectories(wrappers)
        try writeFile(wrappers + "/pg_dump", Array(#"""
            #!/bin/sh
            database="$PGDATABASE"
            "\#(pg.program("pg_dump"))" "$@" | awk -v db="$database" '
                /^COPY public\.orders / { copying = 1; print; next }
                copying && /^\\\.$/ { copying = 0 }
                db == "drill_cut" && stop { next }
                db == "drill_cut" && copying && ++rows > 500 { stop = 1; next }
                db == "drill_altered" && copying && ++rows == 7 { sub(/\t[^\t]*$/, "\t999999.99") }
                { print }'
            exit 0

            """#.utf8), mode: 0o755)
        try bench.writePolicy("broken", """
            sources:
              - name: cut-db
                kind: postgres
                port: \(pg.port)
                databases: [drill_cut]
                globals: false
              - name: altered-db
                kind: postgres
                port: \(pg.port)
                databases: [drill_altered]
                globals: false
            objectives:
              rpo: 24h
              rto: 1h

            """)
        let path = wrappers + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let backed = try bench.run(["run", "--all", "--json"], env: ["PATH": path])
        #expect(backed.exitCode == 0, "the damaged dumps are backed up as good (the wrapper exits 0): \(backed)")

        let (cutResult, cutDrills) = try bench.verify(["--policy", "broken", "--source", "cut-db"])
        #expect(cutResult.exitCode == 12, "\(cutResult)")
        let cut = try #require(cutDrills.first)
        #expect(!cut.passed)
        #expect(cut.row("public.orders")?.outcome == "rows-differ" && cut.row("public.orders")?.expectedRows == 2000
                && cut.row("public.orders")?.actualRows == 500, "\(cut)")
        #expect(cut.row("public.customers")?.outcome == "equal", "\(cut)")
        #expect(cut.check("manifest")?.outcome == "fail", "\(cut)")
        #expect(cut.failureReasons.contains { $0.contains("public.orders") && $0.contains("row counts differ") && $0.contains("2000") && $0.contains("500") },
                "\(cut)")
        try expectNothingLeft(bench, after: "a drill that found missing rows")

        let (alteredResult, alteredDrills) = try bench.verify(["--policy", "broken", "--source", "altered-db"])
        #expect(alteredResult.exitCode == 12, "\(alteredResult)")
        let altered = try #require(alteredDrills.first)
        #expect(!altered.passed)
        let orders = try #require(altered.row("public.orders"), "\(altered)")
        #expect(orders.outcome == "checksum-differs" && orders.expectedRows == 2000 && orders.actualRows == 2000
                && orders.expectedChecksum != orders.actualChecksum, "\(altered)")
        #expect(altered.failureReasons == ["table public.orders: checksum differs"], "\(altered)")
        // The restored database itself is sound: only the comparison with the manifest fails.
        #expect(altered.check("pg_amcheck drill_altered")?.outcome == "pass", "\(altered)")
        #expect(altered.check("rto")?.outcome == "pass", "\(altered)")
        try expectNothingLeft(bench, after: "a drill that found a changed value")
    }

    @Test("a drill fails with an integrity error when a pack the snapshot needs is damaged (PostgreSQL and files)")
    func damagedPack() throws {
        let pg = try ScratchPostgres.requireShared()
        let bench = try DrillBench("drill-pack")
        try makeShop(pg, "drill_pack", customers: 3000, orders: 20000)
        let scans = bench.box.path("scans")
        try makeScans(scans, seed: 7)
        try bench.writePolicy("packs", """
            sources:
              - name: shop-db
                kind: postgres
                port: \(pg.port)
                databases: [drill_pack]
                globals: false
            objectives:
              rpo: 24h
              rto: 1h

            """)
        try bench.writePolicy("scans", """
            sources:
              - name: scans
                kind: files
                paths: [\(scans)]
            objectives:
              rpo: 24h
              rto: 1h

            """)
        // Each backup in turn, so that the packs each one wrote are known.
        var before = try bench.packs()
        try bench.ok(["run", "--all", "--policy", "packs"])
        let pgPacks = try bench.packs()
        try bench.ok(["run", "--all", "--policy", "scans"])
        let allPacks = try bench.packs()
        let good = try bench.verify([])
        #expect(good.0.exitCode == 0 && good.1.allSatisfy(\.passed), "\(good.0)")

        #expect(try !damageNewPacks(before: before, after: pgPacks).isEmpty)
        let (pgResult, pgDrills) = try bench.verify(["--policy", "packs"])
        #expect(pgResult.exitCode == 12, "\(pgResult)")
        let shop = try #require(pgDrills.first)
        #expect(!shop.passed)
        #expect(shop.check("restore")?.outcome == "fail", "\(shop)")
        #expect(shop.failureReasons.contains { $0.hasPrefix("restore failed:") && ($0.contains("damaged") || $0.contains("authenticate")) }, "\(shop)")
        // Nothing usable came back: no RTO was achieved.
        #expect(shop.rtoSeconds == nil && shop.check("rto") == nil, "\(shop)")
        try expectNothingLeft(bench, after: "a PostgreSQL drill of a damaged pack")

        before = pgPacks
        #expect(try !damageNewPacks(before: before, after: allPacks).isEmpty)
        let (filesResult, filesDrills) = try bench.verify(["--policy", "scans"])
        #expect(filesResult.exitCode == 12, "\(filesResult)")
        let files = try #require(filesDrills.first)
        #expect(!files.passed)
        #expect(files.check("restore")?.outcome == "fail", "\(files)")
        #expect(files.failureReasons.contains { $0.hasPrefix("restore failed:") && ($0.contains("damaged") || $0.contains("authenticate")) }, "\(files)")
        #expect(files.rtoSeconds == nil && files.check("rto") == nil, "\(files)")
        try expectNothingLeft(bench, after: "a files drill of a damaged pack")
    }

    @Test("a drill whose restore takes longer than the RTO fails the RTO check only (exit 1, not 12)")
    func rtoMissed() throws {
        let pg = try ScratchPostgres.requireShared()
        let bench = try DrillBench("drill-rto")
        try makeShop(pg, "drill_rto")
        // No cluster starts and loads in 50 ms: the objective is missed whatever the machine.
        try bench.writePolicy("slow", """
            sources:
              - name: shop-db
                kind: postgres
                port: \(pg.port)
                databases: [drill_rto]
            objectives:
              rpo: 24h
              rto: 0.05s

            """)
        try bench.ok(["run", "--all"])
        let (result, drills) = try bench.verify([])
        #expect(result.exitCode == 1, "\(result)")
        let drill = try #require(drills.first)
        #expect(!drill.passed)
        #expect(drill.rtoObjectiveSeconds == 0.05)
        let measured = try #require(drill.rtoSeconds)
        #expect(measured > 0.05)
        for check in drill.checks where check.name != "rto" { #expect(check.outcome == "pass", "\(check.name): \(check.output)") }
        #expect(drill.check("rto")?.outcome == "fail" && drill.check("rto")?.output.contains("objective 0.05 s") == true, "\(drill)")
        #expect(drill.comparison?.rows.allSatisfy { $0.outcome == "equal" } == true, "\(drill)")
        #expect(drill.failureReasons.count == 1 && drill.failureReasons[0].contains("more than the RTO of 0.05 s"), "\(drill)")
        try expectNothingLeft(bench, after: "a drill that missed its RTO")
        let statuses = try bench.status()
        #expect(statuses.first?.lastDrillOutcome == "failure")
    }

    @Test("a scratch server that does not start: the drill could not run (exit 1, not an integrity error), nothing left behind")
    func scratchDoesNotStart() throws {
        let maria = try ScratchMariaDB.requireShared()
        let bench = try DrillBench("drill-nostart")
        try makeLandRecords(maria, "drill_nostart")
        try bench.writePolicy("land", """
            sources:
              - name: land-db
                kind: mariadb
                port: \(maria.port)
                databases: [drill_nostart]
            objectives:
              rpo: 24h
              rto: 1h

            """)
        try bench.ok(["run", "--all"])
        // kho looks for mariadb-install-db on PATH first: this one fails as a full disk would.
        let wrappers = bench.box.path("bin")
        try makeDirectories(wrappers)
        try writeFile(wrappers + "/mariadb-install-db", Array("#!/bin/sh\necho 'mariadb-install-db: cannot create the system tables (simulated)' >&2\nexit 1\n".utf8), mode: 0o755)
        let path = wrappers + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let (result, drills) = try bench.verify([], env: ["PATH": path])
        #expect(result.exitCode == 1, "\(result)")
        let drill = try #require(drills.first)
        #expect(!drill.passed)
        #expect(drill.check("restore")?.outcome == "error", "\(drill)")
        #expect(drill.failureReasons.count == 1 && drill.failureReasons[0].contains("could not run") && drill.failureReasons[0].contains("simulated"),
                "\(drill)")
        try expectNothingLeft(bench, after: "a scratch server that did not start")
    }

    @Test("an interrupted drill (SIGTERM, SIGINT) leaves no scratch cluster, server or folder behind")
    func interruptedDrills() throws {
        let pg = try ScratchPostgres.requireShared()
        let maria = try ScratchMariaDB.requireShared()
        let bench = try DrillBench("drill-signal")
        try makeShop(pg, "drill_signal", customers: 5000, orders: 50000)
        try makeLandRecords(maria, "drill_signal")
        try bench.writePolicy("signals", """
            sources:
              - name: shop-db
                kind: postgres
                port: \(pg.port)
                databases: [drill_signal]
              - name: land-db
                kind: mariadb
                port: \(maria.port)
                databases: [drill_signal]
            objectives:
              rpo: 24h
              rto: 1h

            """)
        try bench.ok(["run", "--all"])

        /// Starts a drill of `source`, waits until `ready` holds for its scratch folder, sends `signal`.
        func interrupt(_ source: String, prefix: String, with signal: Int32, when what: String, _ ready: (String) -> Bool) throws {
            let child = try bench.start(["verify", "--source", source])
            var scratch: String?
            try ServerSupport.waitUntil("the drill of \(source) has \(what)", timeout: 120) {
                let name = try FileManager.default.contentsOfDirectory(atPath: bench.tmp).first { $0.hasPrefix(prefix) }
                if let name, ready(bench.tmp + "/" + name) { scratch = bench.tmp + "/" + name; return true }
                if !child.isRunning { throw ServerError("kho ended before the drill of \(source) had \(what): \(child.wait())") }
                return false
            }
            child.send(signal)
            let ended = child.wait()
            #expect(ended.exitCode == 128 + signal, "\(ended)")
            #expect(ended.err.contains("interrupted"), "\(ended)")
            #expect(access(scratch!, F_OK) != 0, "\(scratch!) is still there")
            try expectNothingLeft(bench, after: "\(source) interrupted with signal \(signal) once it had \(what)")
            // The shared lock on the repository was released too.
            #expect(try FileManager.default.contentsOfDirectory(atPath: bench.box.repo + "/locks").isEmpty)
            // The catalog says the drill was interrupted (not "running" for ever, not passed).
            let record = try ScratchSQLite.value("SELECT outcome || ': ' || coalesce(error, '') FROM runs WHERE kind = 'drill' AND source = '\(source)' ORDER BY id DESC LIMIT 1;",
                                                 path: bench.state + "/catalog.sqlite", scratch: bench.box.dir)
            #expect(record == "failure: interrupted before the drill completed", "\(record)")
            #expect(try bench.status().first { $0.source == source }?.lastDrillOutcome == "failure")
        }

        // As soon as the scratch folder exists (initdb runs in it).
        try interrupt("shop-db", prefix: "kho-drill-pg-", with: SIGTERM, when: "a scratch folder") { _ in true }
        // Once the scratch cluster runs (it is being loaded or checked): its System V shared
        // memory segment (named in postmaster.pid) goes too.
        var segment: (key: key_t, id: Int32)?
        try interrupt("shop-db", prefix: "kho-drill-pg-", with: SIGINT, when: "a running cluster") { folder in
            guard let text = try? String(contentsOfFile: folder + "/data/postmaster.pid", encoding: .utf8) else { return false }
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            guard lines.count >= 7, case let fields = lines[6].split(separator: " "), fields.count == 2,
                  let key = key_t(fields[0]), let id = Int32(fields[1]) else { return false }
            segment = (key, id)
            return true
        }
        if let segment {
            var info = shmid_ds()
            let left = shmctl(segment.id, IPC_STAT, &info) == 0 && info.shm_perm.__key == segment.key
            #expect(!left, "the scratch cluster's shared memory segment \(segment.id) is still there")
        }
        // A scratch MariaDB server, once it runs.
        try interrupt("land-db", prefix: "kho-drill-mariadb-", with: SIGTERM, when: "a running server") { access($0 + "/pid", F_OK) == 0 }

        // The interrupted drills did not leave the next one anything in its way.
        let (result, drills) = try bench.verify([])
        #expect(result.exitCode == 0 && drills.count == 2 && drills.allSatisfy(\.passed), "\(result)")
        try expectNothingLeft(bench, after: "drills after the interrupted ones")
    }
}

// MARK: rotation and the audit ledger (files only)

@Suite("drill rotation and the audit ledger", .serialized)
struct DrillScheduleTests {
    @Test("kho run --due drills per the policy's period, one source per run, so that every source is drilled within every period")
    func rotation() throws {
        let bench = try DrillBench("drill-rotation")
        let first = bench.box.path("scans-a")
        let second = bench.box.path("scans-b")
        try makeScans(first, seed: 11)
        try makeScans(second, seed: 22)
        try bench.writePolicy("rotation", schedule: "30 2 * * *", """
            sources:
              - name: scans-a
                kind: files
                paths: [\(first)]
              - name: scans-b
                kind: files
                paths: [\(second)]
            objectives:
              rpo: 24h
              rto: 1h
            drills:
              every: 7d

            """)
        let formatter = ISO8601DateFormatter()
        // 02:45 in Asia/Ho_Chi_Minh (UTC+7), every day for three weeks.
        let start = try #require(formatter.date(from: "2026-12-01T19:45:00Z"))
        var drilledOn: [String: [Int]] = [:]
        for day in 1...21 {
            let now = formatter.string(from: start.addingTimeInterval(Double(day - 1) * 86400))
            let run = try bench.run(["run", "--due", "--json"], env: ["KHO_TEST_NOW": now])
            try #require(run.exitCode == 0, "day \(day): \(run)")
            let results = try run.decode([JobResultJSON].self)
            #expect(results.filter { $0.kind == "backup" }.count == 2, "day \(day): both sources are backed up every night: \(run)")
            let drills = results.filter { $0.kind == "drill" }
            #expect(drills.count <= 1, "day \(day): one drill per policy per run: \(run)")
            for drill in drills {
                #expect(drill.outcome == "success", "day \(day): \(drill)")
                drilledOn[drill.source, default: []].append(day)
            }
            if day >= 2 {
                for status in try bench.status(env: ["KHO_TEST_NOW": now]) {
                    #expect(!status.untested && status.lastDrillOutcome == "success", "day \(day): \(status.source) is untested")
                }
            }
        }
        // Every 7-day period holds a drill of every source.
        for source in ["scans-a", "scans-b"] {
            let days = drilledOn[source] ?? []
            #expect(!days.isEmpty, "\(source) was never drilled")
            for periodStart in 1...15 {
                #expect(days.contains { $0 >= periodStart && $0 < periodStart + 7 },
                        "\(source) was not drilled in days \(periodStart)–\(periodStart + 6): drilled on \(days)")
            }
        }
        // Not every night: the drills rotate, each source about once a period.
        let total = drilledOn.values.map(\.count).reduce(0, +)
        #expect(total <= 8, "drills on \(drilledOn)")
        // The catalog holds them all (the drill records of `kho run`).
        let count = try ScratchSQLite.value("SELECT count(*) FROM runs WHERE kind = 'drill' AND outcome = 'success';",
                                            path: bench.state + "/catalog.sqlite", scratch: bench.box.dir)
        #expect(Int(count) == total)
        try expectNothingLeft(bench, after: "three weeks of drills")
    }

    @Test("the audit ledger records restore, drill, verify, forget, prune, key add and policy changes without secrets; an edited, removed or reordered entry is detected")
    func auditLedger() throws {
        let bench = try DrillBench("drill-audit")
        let scans = bench.box.path("scans")
        try makeScans(scans, seed: 33)
        let policy = { (rto: String) in
            """
            sources:
              - name: scans
                kind: files
                paths: [\(scans)]
            objectives:
              rpo: 24h
              rto: \(rto)
            drills:
              every: 7d

            """
        }
        try bench.writePolicy("audit", policy("1h"))
        try bench.ok(["run", "--all"])
        try writeFile(scans + "/2026/11/phieu-moi.txt", Array("Phiếu mới\n".utf8))
        try bench.writePolicy("audit", policy("2h"))
        try bench.ok(["run", "--all"])
        let snapshots = try bench.snapshots()
        try #require(snapshots.count == 2)
        let older = try #require(snapshots.first?["id"] as? String)

        try bench.ok(["restore", "latest", "--target", bench.box.path("restored"), "--yes"])
        // A dump, so that the restore below gets as far as reading the URL (and quoting it).
        let dump = bench.box.path("ho_tich.sql")
        try writeFile(dump, dumpText(20_000, seed: 5))
        let stdinBackup = try bench.box.kho(["backup", "--stdin", "--stdin-name", "ho_tich.sql"], input: .file(dump), env: bench.environment([:]))
        try #require(stdinBackup.exitCode == 0, "\(stdinBackup)")
        let secret = "hunter2-Bí-mật"
        let refused = try bench.run(["restore", "--source", "ho_tich.sql", "--to-database", "postgres://postgres:\(secret)@127.0.0.1:5432/ho_tich", "--yes"])
        #expect(refused.exitCode == 2 && refused.err.contains("contains a password"), "a URL with a password is refused: \(refused)")
        try bench.ok(["verify", "--policy", "audit"])
        try bench.ok(["forget", older])
        try bench.ok(["prune"])
        let newPassword = "second operator password"
        try bench.ok(["key", "add", "--label", "second operator"], env: ["KHO_NEW_PASSWORD": newPassword])

        let log = try bench.ok(["audit", "log", "--json"])
        let entries = try log.decode([LedgerEntryJSON].self)
        #expect(entries.map(\.command) == ["policy change", "drill", "policy change", "drill", "restore", "restore", "verify", "forget", "prune", "key add"],
                "\(log)")
        #expect(entries.map(\.sequence) == Array(1...entries.count))
        #expect(entries.allSatisfy { !$0.user.isEmpty && !$0.host.isEmpty && $0.hash.count == 64 })
        #expect(zip(entries.dropFirst(), entries).allSatisfy { $0.previous == $1.hash } && entries.first?.previous == "")
        #expect(entries[0].arguments.first == bench.policies + "/audit.yaml" && entries[0].arguments.contains("new"), "\(entries[0])")
        #expect(entries[2].arguments.first == bench.policies + "/audit.yaml" && entries[2].arguments.contains { $0.hasPrefix("from ") }, "\(entries[2])")
        #expect(entries[1].arguments == ["--policy", "audit", "--source", "scans"] && entries[1].outcome == "success", "\(entries[1])")
        #expect(entries[4].arguments == ["restore", "latest", "--target", bench.box.path("restored"), "--yes"] && entries[4].outcome == "success", "\(entries[4])")
        #expect(entries[5].arguments.contains("postgres://postgres:[removed]@127.0.0.1:5432/ho_tich"), "\(entries[5])")
        // The refusal quotes the URL: without its password.
        #expect(entries[5].outcome.hasPrefix("exit 2") && entries[5].outcome.contains("postgres://postgres:[removed]@127.0.0.1:5432/ho_tich"), "\(entries[5])")
        #expect(entries[6].arguments == ["verify", "--policy", "audit"] && entries[6].outcome == "success", "\(entries[6])")
        #expect(entries[7].arguments == ["forget", older] && entries[7].outcome == "success", "\(entries[7])")
        #expect(entries[9].arguments == ["key", "add", "--label", "second operator"] && entries[9].outcome == "success", "\(entries[9])")
        // No secret anywhere: not in the arguments, not in an outcome that quotes them, not in the text form.
        let ledgerPath = bench.state + "/audit.log"
        let ledgerText = String(decoding: try readFile(ledgerPath), as: UTF8.self)
        let human = try bench.ok(["audit", "log"])
        for text in [ledgerText, log.out, human.out] {
            #expect(!text.contains("hunter2") && !text.contains(newPassword) && !text.contains("drill repository password"), "a secret is in the ledger:\n\(text)")
        }

        let intact = try bench.run(["audit", "verify"])
        #expect(intact.exitCode == 0 && intact.out.contains("\(entries.count) entries, chain intact"), "\(intact)")

        // Tampering, each case on the original ledger.
        let original = try readFile(ledgerPath)
        let lines = String(decoding: original, as: UTF8.self).split(separator: "\n").map(String.init)
        func tampered(_ what: String, _ edit: ([String]) -> [String], names expected: [String]) throws {
            try writeFile(ledgerPath, Array((edit(lines).joined(separator: "\n") + "\n").utf8), mode: 0o600)
            let result = try bench.run(["audit", "verify"])
            #expect(result.exitCode == 12, "\(what) was not detected: \(result)")
            for part in expected { #expect(result.out.contains(part), "\(what): expected \"\(part)\" in \(result)") }
            try writeFile(ledgerPath, original, mode: 0o600)
            let restored = try bench.run(["audit", "verify"])
            #expect(restored.exitCode == 0, "after restoring the ledger: \(restored)")
        }
        // Entry 5 (the restore) edited: its outcome says it failed.
        try tampered("an edited entry", { lines in
            var copy = lines
            copy[4] = copy[4].replacingOccurrences(of: "\"outcome\":\"success\"", with: "\"outcome\":\"exit 1\"")
            precondition(copy[4] != lines[4])
            return copy
        }, names: ["entry 5 (line 5)", "changed"])
        // Entry 6 (the refused restore) removed.
        try tampered("a removed middle entry", { lines in
            var copy = lines
            copy.remove(at: 5)
            return copy
        }, names: ["entry 7 (line 6)", "removed"])
        // Entries 8 and 9 (forget, prune) swapped.
        try tampered("two swapped entries", { lines in
            var copy = lines
            copy.swapAt(7, 8)
            return copy
        }, names: ["entry 9 (line 8)", "reordered"])
        // The last entry (key add) removed.
        try tampered("a removed last entry", { Array($0.dropLast()) }, names: ["entry \(entries.count)", "removed from its end"])
    }
}
