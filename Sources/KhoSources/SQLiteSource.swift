internal import CSQLite
import Foundation
import Glibc
import KhoCore
import KhoSupport

/// A SQLite database copied with SQLite's online backup API (a consistent copy while other
/// processes keep writing), stored as `<name>.sqlite`, with a manifest computed from the copy:
/// per table the row count and the sum of the first 64 bits of SHA-256 over each row's values.
public struct SQLiteSource: BackupSource {
    public var name: String
    public var path: String
    public var limits: SourceLimits
    public var kind: String { "sqlite" }
    public var summary: String { "sqlite \(path)" }

    public static let checksumMethod = "sqlite: sum over rows of the first 64 bits of SHA-256 of the row's typed values, as a decimal number"

    public init(name: String, path: String, limits: SourceLimits = SourceLimits()) {
        self.name = name
        self.path = path
        self.limits = limits
    }

    public func backup(with archiver: Archiver, repository: Repository) throws -> Snapshot {
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
        defer {
            for suffix in ["", "-wal", "-shm", "-journal"] { unlink(copy + suffix) }
            rmdir(folder)
        }
        let created = open(copy, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard created >= 0 else { throw KhoError.posix("open", copy, errno: errno) }
        close(created)
        try SQLiteSource.onlineCopy(from: path, to: copy, source: name)
        let database = try SQLiteDatabase(path: copy, readOnly: true, source: name)
        let tables = try SQLiteSource.tables(database)
        let version = String(cString: sqlite3_libversion())
        var info = stat()
        _ = stat(copy, &info)
        let size = Int64(info.st_size)
        let file = (path as NSString).lastPathComponent
        let fd = open(copy, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw KhoError.posix("open", copy, errno: errno) }
        defer { close(fd) }
        let input = Archiver.StreamInput(name: file) {
            ({ buffer in try Syscall.call("read", copy) { read(fd, buffer.baseAddress, buffer.count) } }, {})
        }
        return try archiver.backupStreams([input], sourceName: name) { total in
            try SizeGuard.check(source: name, total: total, ratio: limits.minSizeRatio, repository: repository, host: limits.recordedHost)
            return try DumpManifest(engine: "sqlite", serverVersion: version, checksumMethod: SQLiteSource.checksumMethod,
                                    databases: [DumpManifest.Database(name: file, file: file, sizeBytes: size, tables: tables)]).json
        }
    }

    /// Copies the live database at `source` into a new file with the online backup API.
    static func onlineCopy(from sourcePath: String, to destinationPath: String, source: String) throws {
        guard access(sourcePath, R_OK) == 0 else {
            throw KhoError(.source, "Source \(source): the SQLite database \(sourcePath) cannot be read (\(String(cString: strerror(errno)))): check the path.")
        }
        let from = try SQLiteDatabase(path: sourcePath, readOnly: true, source: source)
        let to = try SQLiteDatabase(path: destinationPath, readOnly: false, source: source)
        guard let backup = sqlite3_backup_init(to.handle, "main", from.handle, "main") else {
            throw KhoError(.source, "Source \(source): SQLite cannot start a backup of \(sourcePath): \(to.message).")
        }
        var result: Int32
        var waited = 0
        repeat {
            // All pages in one step: the copy is one consistent read, however busy the writers are.
            result = sqlite3_backup_step(backup, -1)
            if result == SQLITE_BUSY || result == SQLITE_LOCKED {
                waited += 1
                if waited > 600 { break }
                usleep(50_000)
            }
        } while result == SQLITE_OK || result == SQLITE_BUSY || result == SQLITE_LOCKED
        sqlite3_backup_finish(backup)
        guard result == SQLITE_DONE else {
            throw KhoError(.source, "Source \(source): the SQLite online backup of \(sourcePath) failed: \(String(cString: sqlite3_errstr(result))).")
        }
    }

    static func tables(_ database: SQLiteDatabase) throws -> [DumpManifest.Table] {
        let names = try database.rows("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").map { $0[0].text }
        var tables: [DumpManifest.Table] = []
        for table in names {
            var count: Int64 = 0
            var sumLow: UInt64 = 0
            var sumHigh: UInt64 = 0
            try database.each("SELECT * FROM \"\(table.replacingOccurrences(of: "\"", with: "\"\""))\"") { values in
                count += 1
                var bytes: [UInt8] = []
                for value in values { value.encode(into: &bytes) }
                let hash = try SHA256.hash(bytes).w0
                let (low, overflow) = sumLow.addingReportingOverflow(hash)
                sumLow = low
                if overflow { sumHigh += 1 }
            }
            tables.append(DumpManifest.Table(schema: "", name: table, rows: count, checksum: decimal(high: sumHigh, low: sumLow)))
        }
        return tables
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
        try tables(SQLiteDatabase(path: path, readOnly: true, source: source))
    }

    /// `PRAGMA integrity_check` and `foreign_key_check` on a SQLite file: empty when clean.
    public static func integrityProblems(path: String, source: String) throws -> [String] {
        let database = try SQLiteDatabase(path: path, readOnly: true, source: source)
        var problems = try database.rows("PRAGMA integrity_check").map { $0[0].text }.filter { $0 != "ok" }
        problems += try database.rows("PRAGMA foreign_key_check").map { row in "foreign key: " + row.map(\.text).joined(separator: " ") }
        return problems
    }
}

/// A value of one column, as SQLite stores it.
enum SQLiteValue {
    case null, integer(Int64), real(Double), text(String), blob([UInt8])

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

/// A SQLite connection owned by one thread, closed when released.
final class SQLiteDatabase {
    let handle: OpaquePointer
    let source: String

    init(path: String, readOnly: Bool, source: String) throws {
        self.source = source
        var db: OpaquePointer?
        let flags = readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
        let result = sqlite3_open_v2(path, &db, flags, nil)
        guard result == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(result))
            if let db { sqlite3_close(db) }
            throw KhoError(.source, "Source \(source): cannot open the SQLite database \(path): \(message).")
        }
        handle = db
        sqlite3_busy_timeout(db, 30_000)
    }

    deinit { sqlite3_close(handle) }

    var message: String { String(cString: sqlite3_errmsg(handle)) }

    func each(_ sql: String, _ body: ([SQLiteValue]) throws -> Void) throws {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(handle, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
            throw KhoError(.source, "Source \(source): SQLite refused `\(sql)`: \(message).")
        }
        defer { sqlite3_finalize(statement) }
        let columns = sqlite3_column_count(statement)
        while true {
            let step = sqlite3_step(statement)
            if step == SQLITE_DONE { return }
            guard step == SQLITE_ROW else {
                throw KhoError(.source, "Source \(source): SQLite failed on `\(sql)`: \(message).")
            }
            var row: [SQLiteValue] = []
            row.reserveCapacity(Int(columns))
            for i in 0..<columns {
                switch sqlite3_column_type(statement, i) {
                case SQLITE_INTEGER: row.append(.integer(sqlite3_column_int64(statement, i)))
                case SQLITE_FLOAT: row.append(.real(sqlite3_column_double(statement, i)))
                case SQLITE_TEXT: row.append(.text(String(cString: sqlite3_column_text(statement, i))))
                case SQLITE_BLOB:
                    let count = Int(sqlite3_column_bytes(statement, i))
                    if count > 0, let pointer = sqlite3_column_blob(statement, i) {
                        row.append(.blob(Array(UnsafeRawBufferPointer(start: pointer, count: count))))
                    } else {
                        row.append(.blob([]))
                    }
                default: row.append(.null)
                }
            }
            try body(row)
        }
    }

    func rows(_ sql: String) throws -> [[SQLiteValue]] {
        var result: [[SQLiteValue]] = []
        try each(sql) { result.append($0) }
        return result
    }
}
