import Foundation

/// Reads mariadb-binlog's text line by line for statements that name `database` explicitly
/// (`` `db`.`` or `db.` after a non-identifier byte). Comment lines (`#`, where mariadb-binlog
/// prints event headers and table maps) are skipped; row events are base64 lines, which hold
/// neither `.` nor a backtick, so only statements can match. A match counts when the replay
/// renames the database, or when the statement runs from another default database (`use`).
struct BinlogStatementScanner {
    let quoted: [UInt8]
    let plain: [UInt8]
    let name: [UInt8]
    let renamed: Bool
    private var line: [UInt8] = []
    private var current: [UInt8] = []
    /// The previous statement ended (mariadb-binlog ends each with `/*!*/;`): a line now starts one.
    private var atStatement = true
    enum Finding: Equatable {
        /// A statement names the database explicitly, or runs from another database.
        case namesDatabase
        /// A row change logged as a statement (binlog_format STATEMENT or MIXED at the time):
        /// replayed for one database it would depend on the state of others and on the session.
        case statementChange
    }
    /// The first offending line, and why.
    private(set) var found: [UInt8]?
    private(set) var finding: Finding?
    /// Lines longer than this are scanned in parts (a statement's parts still hold its names).
    static let longestLine = 1 << 20

    init(database: String, renamed: Bool) {
        name = Array(database.utf8)
        quoted = Array("`\(database.replacingOccurrences(of: "`", with: "``"))`.".utf8)
        plain = Array("\(database).".utf8)
        self.renamed = renamed
    }

    mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        var start = 0
        for i in 0..<bytes.count where bytes[i] == 0x0a {
            line.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<i]))
            examine()
            line.removeAll(keepingCapacity: true)
            start = i + 1
            if found != nil { return }
        }
        line.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start...]))
        if line.count > BinlogStatementScanner.longestLine {
            examine()
            line.removeAll(keepingCapacity: true)
        }
    }

    mutating func finish() {
        if !line.isEmpty { examine() }
        line.removeAll()
    }

    private mutating func examine() {
        guard found == nil, let first = line.first, first != UInt8(ascii: "#") else { return }
        let starts = atStatement
        atStatement = line.count >= BinlogStatementScanner.delimiter.count && line.suffix(BinlogStatementScanner.delimiter.count).elementsEqual(BinlogStatementScanner.delimiter)
        let use = Array("use `".utf8)
        if line.starts(with: use) {
            let rest = line[use.count...]
            current = Array(rest.prefix { $0 != UInt8(ascii: "`") })
            return
        }
        if starts && current == name && BinlogStatementScanner.changesRows(line) {
            found = line
            finding = .statementChange
            return
        }
        guard names() else { return }
        if renamed || current != name {
            found = line
            finding = .namesDatabase
        }
    }

    static let delimiter = Array("/*!*/;".utf8)
    static let changes = ["INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD"].map { Array($0.utf8) }

    /// Whether the statement starting on `line` changes rows (its first word, in any case).
    static func changesRows(_ line: [UInt8]) -> Bool {
        let word = line.drop { $0 == 0x20 || $0 == 0x09 }.prefix { (65...90).contains($0) || (97...122).contains($0) }.map { $0 & 0xdf }
        return changes.contains { $0.elementsEqual(word) }
    }

    private func names() -> Bool {
        if line.firstRange(of: quoted) != nil { return true }
        var from = line.startIndex
        while let range = line[from...].firstRange(of: plain) {
            if range.lowerBound == line.startIndex || !BinlogStatementScanner.identifier(line[range.lowerBound - 1]) { return true }
            from = range.lowerBound + 1
        }
        return false
    }

    static func identifier(_ byte: UInt8) -> Bool {
        (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte) || byte == UInt8(ascii: "_")
            || byte == UInt8(ascii: "$") || byte >= 0x80
    }
}
