import Foundation
import GRDB
import KhoCatalog
import KhoSupport
import Testing

/// A state folder with a catalog as kho before typed runs wrote it: the v1 schema, recorded as
/// applied, and rows with the strings that kho stored.
private struct OldCatalog {
    let folder: String

    init(_ label: String) throws {
        folder = NSTemporaryDirectory() + "kho-catalog-\(label)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    func write(_ rows: [(kind: String, outcome: String, error: String?)]) throws {
        let queue = try DatabaseQueue(path: folder + "/catalog.sqlite")
        var migrator = DatabaseMigrator()
        // The v1 schema exactly as the first catalog created it.
        migrator.registerMigration("v1: runs") { db in
            try db.create(table: "runs") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("kind", .text).notNull()
                t.column("policy", .text).notNull()
                t.column("source", .text).notNull()
                t.column("repository", .text).notNull()
                t.column("planned", .datetime)
                t.column("started", .datetime).notNull()
                t.column("ended", .datetime)
                t.column("outcome", .text).notNull()
                t.column("error", .text)
                t.column("bytesRead", .integer).notNull().defaults(to: 0)
                t.column("bytesAdded", .integer).notNull().defaults(to: 0)
                t.column("snapshot", .text)
                t.column("snapshotTime", .datetime)
                t.column("details", .text)
                t.column("host", .text).notNull()
                t.column("rebuilt", .boolean).notNull().defaults(to: false)
            }
            try db.create(index: "runs_by_source", on: "runs", columns: ["policy", "source", "kind", "started"])
        }
        try migrator.migrate(queue)
        try queue.write { db in
            for (i, row) in rows.enumerated() {
                try db.execute(sql: """
                    INSERT INTO runs (kind, policy, source, repository, started, ended, outcome, error, host)
                    VALUES (?, 'p', 's', '/repo', ?, ?, ?, ?, 'old-host')
                    """, arguments: [row.kind, Date(timeIntervalSince1970: 1_770_000_000 + Double(i) * 60),
                                     Date(timeIntervalSince1970: 1_770_000_030 + Double(i) * 60), row.outcome, row.error])
            }
        }
    }

    func remove() { try? FileManager.default.removeItem(atPath: folder) }
}

@Suite("catalog migration to typed runs")
struct MigrationTests {
    @Test("a catalog of an earlier kho opens, and every kind and outcome it wrote reads as the typed value; retryable is absent")
    func oldStringsRead() throws {
        let old = try OldCatalog("strings")
        defer { old.remove() }
        let written: [(String, String, String?)] = [
            ("backup", "success", nil), ("backup", "failure", "pg_dump: connection refused"), ("backup", "partial", nil),
            ("backup", "running", nil), ("retention", "success", nil), ("drill", "failure", "table t: checksum differs"),
            ("copy", "success", nil), ("notify", "late", nil), ("notify", "missed", nil),
        ]
        try old.write(written.map { (kind: $0.0, outcome: $0.1, error: $0.2) })
        let catalog = try Catalog(stateDirectory: old.folder)
        let runs = try catalog.runs()
        #expect(runs.map(\.kind) == [.backup, .backup, .backup, .backup, .retention, .drill, .copy, .notify, .notify])
        #expect(runs.map(\.outcome) == [.success, .failure, .partial, .running, .success, .failure, .success, .late, .missed])
        #expect(runs.allSatisfy { $0.retryable == nil })
        #expect(runs[1].error == "pg_dump: connection refused")
        // Typed queries find the old rows.
        #expect(try catalog.last(policy: "p", source: "s", kind: .backup, outcome: .partial)?.id == runs[2].id)
        #expect(try catalog.runs(kind: .notify).count == 2)
    }

    @Test("a dump an earlier kho refused as shrunken (named only in its message) reads as errorKind sourceShrank; other failures have none")
    func oldShrinkTyped() throws {
        let old = try OldCatalog("shrink")
        defer { old.remove() }
        try old.write([
            (kind: "backup", outcome: "failure", error: "Source s: the dump is 1200 bytes, 2% of the previous good dump (61000 bytes, snapshot 1a2b3c4d), below the allowed 50%; no snapshot was written: check the database, or lower min-size-ratio if the shrink is expected."),
            (kind: "backup", outcome: "failure", error: "pg_dump: connection refused"),
            (kind: "backup", outcome: "success", error: nil),
        ])
        let runs = try Catalog(stateDirectory: old.folder).runs()
        #expect(runs.map(\.errorKind) == [.sourceShrank, nil, nil])
    }

    @Test("an outcome no kho wrote (a row edited by hand) becomes a failure that keeps the old value in its error")
    func strangeOutcome() throws {
        let old = try OldCatalog("outcome")
        defer { old.remove() }
        try old.write([(kind: "backup", outcome: "ok", error: nil), (kind: "backup", outcome: "aborted", error: "killed")])
        let runs = try Catalog(stateDirectory: old.folder).runs()
        #expect(runs.map(\.outcome) == [.failure, .failure])
        #expect(runs[0].error == "(recorded as \"ok\" by an older kho)")
        #expect(runs[1].error == "(recorded as \"aborted\" by an older kho): killed")
    }

    @Test("a kind no kho wrote is refused with a message that names it and says what to do")
    func strangeKind() throws {
        let old = try OldCatalog("kind")
        defer { old.remove() }
        try old.write([(kind: "backup", outcome: "success", error: nil), (kind: "verify", outcome: "success", error: nil)])
        let error = try #require(throws: KhoError.self) { try Catalog(stateDirectory: old.folder) }
        #expect(error.message.contains("\"verify\" (1 rows)"), "\(error.message)")
        #expect(error.message.contains("kho catalog rebuild"), "\(error.message)")
    }

    @Test("typed records are stored by their raw values, and a failure keeps whether it is retryable")
    func roundTrip() throws {
        let old = try OldCatalog("new")
        defer { old.remove() }
        let catalog = try Catalog(stateDirectory: old.folder)
        var record = try catalog.insert(RunRecord(kind: .copy, policy: "p", source: "s", repository: "/r", planned: nil, started: Date()))
        record.fail(KhoError(.storage, "The server did not answer.", retryable: true), ended: Date())
        try catalog.update(record)
        let queue = try DatabaseQueue(path: old.folder + "/catalog.sqlite")
        let raw = try queue.read { db in try Row.fetchOne(db, sql: "SELECT kind, outcome, retryable FROM runs")! }
        #expect(raw["kind"] as String == "copy" && raw["outcome"] as String == "failure" && raw["retryable"] as Bool == true)
        #expect(try catalog.runs().first?.retryable == true)
    }

    @Test("an update of a run whose insert never happened is an error, not a silent no-op")
    func updateWithoutRow() throws {
        let old = try OldCatalog("orphan")
        defer { old.remove() }
        let catalog = try Catalog(stateDirectory: old.folder)
        let record = RunRecord(kind: .backup, policy: "p", source: "s", repository: "/r", planned: nil, started: Date())
        #expect(throws: KhoError.self) { try catalog.update(record) }
    }
}
