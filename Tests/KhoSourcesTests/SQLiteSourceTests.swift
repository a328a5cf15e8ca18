import Foundation
import Glibc
import GRDB
import KhoCore
@testable import KhoSources
import KhoSupport
import Testing

@Suite("SQLite source (GRDB)")
struct SQLiteSourceTests {
    func folder() throws -> String {
        var template = Array("/tmp/kho-sources-sqlite-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else { throw KhoError(.failure, "mkdtemp failed") }
        return String(cString: template)
    }

    /// The checksum as the manifest's method describes it, computed here from the values.
    func expectedChecksum(_ rows: [[SQLiteValue]]) throws -> String {
        var low: UInt64 = 0
        var high: UInt64 = 0
        for row in rows {
            var bytes: [UInt8] = []
            for value in row { value.encode(into: &bytes) }
            let (sum, overflow) = low.addingReportingOverflow(try SHA256.hash(bytes).w0)
            low = sum
            if overflow { high += 1 }
        }
        return SQLiteSource.decimal(high: high, low: low)
    }

    @Test("manifest of every value type and a hostile table name; the online copy holds the same; integrity and foreign keys are checked")
    func manifest() throws {
        let dir = try folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/records.db"
        let queue = try DatabaseQueue(path: path)
        let name = "x\"; DROP TABLE owners; --"
        try queue.write { db in
            try db.execute(sql: "CREATE TABLE owners(id INTEGER PRIMARY KEY, name TEXT)")
            try db.execute(sql: "CREATE TABLE \(SQLIdentifier.postgres(name)) (a, b, c, d, e)")
            try db.execute(sql: "INSERT INTO owners VALUES (1, 'Lê Thị Hoa')")
            try db.execute(sql: "INSERT INTO \(SQLIdentifier.postgres(name)) VALUES (?, ?, ?, ?, ?)",
                           arguments: [42, 2.5, "văn bản", Data([0, 1, 255]), nil])
            try db.execute(sql: "INSERT INTO \(SQLIdentifier.postgres(name)) VALUES (?, ?, ?, ?, ?)", arguments: [-1, -0.0, "", Data(), "t"])
        }
        try queue.close()
        let tables = try SQLiteSource.manifestTables(path: path, source: "records")
        #expect(tables.map(\.name) == ["owners", name])
        #expect(tables.map(\.rows) == [1, 2])
        #expect(tables[0].checksum == (try expectedChecksum([[.integer(1), .text("Lê Thị Hoa")]])))
        #expect(tables[1].checksum == (try expectedChecksum([[.integer(42), .real(2.5), .text("văn bản"), .blob([0, 1, 255]), .null],
                                                              [.integer(-1), .real(-0.0), .text(""), .blob([]), .text("t")]])))

        let copy = dir + "/copy.db"
        try SQLiteSource.onlineCopy(from: path, to: copy, source: "records")
        #expect(try SQLiteSource.manifestTables(path: copy, source: "records") == tables)
        #expect(try SQLiteSource.integrityProblems(path: copy, source: "records") == [])

        let broken = dir + "/broken.db"
        let brokenQueue = try DatabaseQueue(path: broken)
        try brokenQueue.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA foreign_keys = OFF")
            try db.execute(sql: "CREATE TABLE parent(id INTEGER PRIMARY KEY); CREATE TABLE child(id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent(id))")
            try db.execute(sql: "INSERT INTO child VALUES (1, 7)")
        }
        try brokenQueue.close()
        #expect(try SQLiteSource.integrityProblems(path: broken, source: "records") == ["foreign key: child 1 parent 0"])
    }

    @Test("a file that cannot be read is refused in one sentence")
    func unreadable() throws {
        #expect {
            try SQLiteSource.onlineCopy(from: "/nonexistent/kho.db", to: "/tmp/never", source: "records")
        } throws: { error in
            (error as? KhoError)?.message.hasPrefix("Source records: the SQLite database /nonexistent/kho.db cannot be read") == true
        }
    }
}
