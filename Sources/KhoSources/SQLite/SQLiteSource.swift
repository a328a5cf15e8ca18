import Foundation
import Glibc
internal import GRDB
import KhoCore
import KhoSupport

/// A SQLite database copied with SQLite's online backup API (through GRDB) (a consistent copy while other
/// processes keep writing), stored as `<name>.sqlite`, with a manifest computed from the copy:
/// per table the row count and the sum of the first 64 bits of SHA-256 over each row's values.
public struct SQLiteSource: BackupSource {
    public var name: String
    public var path: String
    public var limits: SourceLimits
    public var kind: SourceKind { .sqlite }
    public var summary: String { "sqlite \(path)" }

    public static let checksumMethod = "sqlite: sum over rows of the first 64 bits of SHA-256 of the row's typed values, as a decimal number"

    public init(name: String, path: String, limits: SourceLimits = SourceLimits()) {
        self.name = name
        self.path = path
        self.limits = limits
    }

    public func dumpPlan() throws -> DumpPlan {
        // The copy holds everything the database holds: it lives in a folder only kho can enter,
        // is created 0600 before SQLite opens it (SQLite would create it 0644), and SQLite's
        // -wal, -shm and -journal files beside it take its mode.
        var template = Array((NSTemporaryDirectory() + "kho-sqlite-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw KhoError(.failure, "Cannot create a private folder for the copy of \(path) in \(NSTemporaryDirectory()): \(String(cString: strerror(errno))); check TMPDIR.")
        }
        let folder = String(cString: made)
        let copy = folder + "/copy.sqlite"
        // A copy of a database in WAL mode is in WAL mode too: reading it leaves -wal and -shm beside it.
        let removeCopy = {
            for suffix in ["", "-wal", "-shm", "-journal"] { unlink(copy + suffix) }
            rmdir(folder)
        }
        let tables: [DumpManifest.Table], version: String, size: Int64, fd: Int32
        do {
            let created = open(copy, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard created >= 0 else { throw KhoError.posix("open", copy, errno: errno) }
            close(created)
            try SQLiteSource.onlineCopy(from: path, to: copy, source: name)
            let database = try SQLiteSource.openDatabase(copy, readOnly: true, source: name)
            tables = try SQLiteSource.tables(database, source: name)
            version = try SQLiteSource.reading(database, source: name) { try String.fetchOne($0, sql: "SELECT sqlite_version()") } ?? ""
            try database.close()
            var info = stat()
            _ = stat(copy, &info)
            size = Int64(info.st_size)
            fd = open(copy, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw KhoError.posix("open", copy, errno: errno) }
        } catch {
            removeCopy()
            throw error
        }
        let file = (path as NSString).lastPathComponent
        let input = Archiver.StreamInput(name: file) {
            ({ buffer in try Syscall.call("read", copy) { read(fd, buffer.baseAddress, buffer.count) } }, {})
        }
        // The copy is read by the pipeline after this returns: it goes when the backup is done.
        return DumpPlan(streams: [input], manifest: {
            try DumpManifest(engine: .sqlite, serverVersion: version, checksumMethod: SQLiteSource.checksumMethod,
                             databases: [DumpManifest.Database(name: file, file: file, sizeBytes: size, tables: tables)]).json
        }, cleanup: {
            close(fd)
            removeCopy()
        })
    }

    /// Opens a SQLite file through GRDB, waiting up to 30 s for another process's lock.
    static func openDatabase(_ path: String, readOnly: Bool, source: String) throws -> DatabaseQueue {
        var configuration = Configuration()
        configuration.readonly = readOnly
        configuration.busyMode = .timeout(30)
        configuration.label = "kho-sqlite"
        do {
            return try DatabaseQueue(path: path, configuration: configuration)
        } catch let error as DatabaseError {
            throw KhoError(.source, "Source \(source): cannot open the SQLite database \(path): \(error.message ?? error.resultCode.description).")
        }
    }

    /// Runs `body` on `database`, turning SQLite's errors into the source's.
    static func reading<T>(_ database: DatabaseQueue, source: String, _ body: (Database) throws -> T) throws -> T {
        do {
            return try database.read(body)
        } catch let error as DatabaseError {
            throw KhoError(.source, "Source \(source): SQLite failed on `\(error.sql ?? "a query")`: \(error.message ?? error.resultCode.description).")
        }
    }

    /// Copies the live database at `source` into a new file with the online backup API.
    static func onlineCopy(from sourcePath: String, to destinationPath: String, source: String) throws {
        guard access(sourcePath, R_OK) == 0 else {
            throw KhoError(.source, "Source \(source): the SQLite database \(sourcePath) cannot be read (\(String(cString: strerror(errno)))): check the path.")
        }
        let from = try openDatabase(sourcePath, readOnly: true, source: source)
        let to = try openDatabase(destinationPath, readOnly: false, source: source)
        var waited = 0
        while true {
            do {
                // All pages in one step: the copy is one consistent read, however busy the writers are.
                try from.backup(to: to, pagesPerStep: -1)
                return
            } catch let error as DatabaseError where [.SQLITE_BUSY, .SQLITE_LOCKED].contains(error.resultCode.primaryResultCode) && waited < 600 {
                waited += 1
                usleep(50_000)
            } catch let error as DatabaseError {
                throw KhoError(.source, "Source \(source): the SQLite online backup of \(sourcePath) failed: \(error.message ?? error.resultCode.description).")
            }
        }
    }

    static func tables(_ database: DatabaseQueue, source: String) throws -> [DumpManifest.Table] {
        try reading(database, source: source) { db in
            let names = try String.fetchAll(db, sql: "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            var tables: [DumpManifest.Table] = []
            for table in names {
                var count: Int64 = 0
                var sumLow: UInt64 = 0
                var sumHigh: UInt64 = 0
                let rows = try Row.fetchCursor(db, sql: "SELECT * FROM \(SQLIdentifier.postgres(table))")
                while let row = try rows.next() {
                    count += 1
                    var bytes: [UInt8] = []
                    for value in row.databaseValues { SQLiteValue(value).encode(into: &bytes) }
                    let hash = try SHA256.hash(bytes).w0
                    let (low, overflow) = sumLow.addingReportingOverflow(hash)
                    sumLow = low
                    if overflow { sumHigh += 1 }
                }
                tables.append(DumpManifest.Table(schema: "", name: table, rows: count, checksum: decimal(high: sumHigh, low: sumLow)))
            }
            return tables
        }
    }

    /// A 128-bit number as decimal text.
    static func decimal(high: UInt64, low: UInt64) -> String {
        if high == 0 { return String(low) }
        var digits: [UInt8] = []
        var (h, l) = (high, low)
        while h != 0 || l != 0 {
            let (qh, rh) = h.quotientAndRemainder(dividingBy: 10)
            let (ql, rl) = UInt64(10).dividingFullWidth((high: rh, low: l))
            h = qh
            l = ql
            digits.append(UInt8(rl))
        }
        return String(digits.reversed().map { Character(String($0)) })
    }

    /// Recomputes the manifest of a SQLite file (after a restore).
    public static func manifestTables(path: String, source: String) throws -> [DumpManifest.Table] {
        try tables(openDatabase(path, readOnly: true, source: source), source: source)
    }

    /// `PRAGMA integrity_check` and `foreign_key_check` on a SQLite file: empty when clean.
    public static func integrityProblems(path: String, source: String) throws -> [String] {
        try reading(openDatabase(path, readOnly: true, source: source), source: source) { db in
            var problems = try Row.fetchAll(db, sql: "PRAGMA integrity_check").map { SQLiteValue($0.databaseValues.first ?? .null).text }.filter { $0 != "ok" }
            problems += try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").map { row in
                "foreign key: " + row.databaseValues.map { SQLiteValue($0).text }.joined(separator: " ")
            }
            return problems
        }
    }
}

/// A value of one column, as SQLite stores it.
enum SQLiteValue {
    case null, integer(Int64), real(Double), text(String), blob([UInt8])

    init(_ value: DatabaseValue) {
        switch value.storage {
        case .null: self = .null
        case .int64(let v): self = .integer(v)
        case .double(let v): self = .real(v)
        case .string(let v): self = .text(v)
        case .blob(let v): self = .blob(Array(v))
        }
    }

    var text: String {
        switch self {
        case .null: return ""
        case .integer(let v): return String(v)
        case .real(let v): return String(v)
        case .text(let v): return v
        case .blob(let v): return Hex.encode(v)
        }
    }

    /// Type tag, length and bytes: distinct values never encode the same.
    func encode(into bytes: inout [UInt8]) {
        switch self {
        case .null: bytes.append(0)
        case .integer(let v): bytes.append(1); withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
        case .real(let v): bytes.append(2); withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
        case .text(let v):
            bytes.append(3)
            withUnsafeBytes(of: UInt64(v.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
            bytes.append(contentsOf: v.utf8)
        case .blob(let v):
            bytes.append(4)
            withUnsafeBytes(of: UInt64(v.count).littleEndian) { bytes.append(contentsOf: $0) }
            bytes.append(contentsOf: v)
        }
    }
}
