import Foundation

/// Rewrites two kinds of line of a dump as it streams to psql, and touches nothing else: not COPY
/// data (a row that reads like such a line stays as it is), not any other statement. A function
/// whose body holds one of those exact lines on a line of its own would be changed too; the schema
/// comparison after the restore would name it.
///
/// - Tablespaces (`--map-tablespace OLD=NEW`): pg_dump names a table's or an index's tablespace in
///   one kind of line only, between objects: `SET default_tablespace = NAME;` (NAME quoted as an
///   identifier when it must be); those whose NAME is mapped are rewritten.
/// - Extension versions: pg_dump writes `CREATE EXTENSION IF NOT EXISTS NAME WITH SCHEMA SCHEMA;`
///   without the version, so a target creates its default one — not the version the database had
///   (an old one kept through pg_upgrade, say). Where the recorded version is available on the
///   target, ` VERSION 'V'` is added.
final class PostgresDumpFilter {
    private let map: [String: String]
    private let extensionVersions: [String: String]
    /// The current line while it is short enough to be one the filter rewrites.
    private var line: [UInt8] = []
    /// The current line is longer than that: it goes through as it comes; its first and last bytes
    /// are kept to follow COPY data.
    private var passing = false
    private var head: [UInt8] = []
    private var tail: [UInt8] = []
    private var inCopyData = false
    private var out: [UInt8] = []
    private static let prefix = Array("SET default_tablespace = ".utf8)
    private static let lineLimit = 4096

    init(tablespaces map: [String: String], extensionVersions: [String: String] = [:]) {
        self.map = map
        self.extensionVersions = extensionVersions
    }

    var changesNothing: Bool { map.allSatisfy { $0.key == $0.value } && extensionVersions.isEmpty }

    /// Filters `bytes` and hands what is ready to `write`.
    func feed(_ bytes: UnsafeRawBufferPointer, _ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        var start = 0
        let count = bytes.count
        while start < count {
            var end = start
            while end < count && bytes[end] != 0x0a { end += 1 }
            let segment = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
            let newline = end < count
            if passing {
                out.append(contentsOf: segment)
                keepTail(segment)
            } else {
                line.append(contentsOf: segment)
                if line.count > Self.lineLimit {
                    out.append(contentsOf: line)
                    head = Array(line.prefix(16))
                    tail = Array(line.suffix(16))
                    line.removeAll(keepingCapacity: true)
                    passing = true
                }
            }
            if newline {
                if passing {
                    out.append(0x0a)
                    follow(head, tail)
                    passing = false
                    head.removeAll(); tail.removeAll()
                } else {
                    endLine()
                    out.append(0x0a)
                }
            }
            start = newline ? end + 1 : end
        }
        if out.count >= 1 << 18 { try drain(write) }
    }

    /// The end of the dump: the last line, and everything held back.
    func finish(_ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        if !passing && !line.isEmpty { endLine() }
        try drain(write)
    }

    private func drain(_ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard !out.isEmpty else { return }
        try out.withUnsafeBytes { try write($0) }
        out.removeAll(keepingCapacity: true)
    }

    private func keepTail(_ segment: UnsafeRawBufferPointer) {
        tail.append(contentsOf: segment.suffix(16))
        if tail.count > 16 { tail.removeFirst(tail.count - 16) }
    }

    /// COPY data starts after `COPY … FROM stdin;` and ends at a line `\.`.
    private func follow(_ head: [UInt8], _ tail: [UInt8]) {
        if inCopyData {
            if head == [0x5c, 0x2e] && tail == [0x5c, 0x2e] { inCopyData = false }
        } else if head.starts(with: Array("COPY ".utf8)), tail.ends(with: Array(" FROM stdin;".utf8)) {
            inCopyData = true
        }
    }

    /// A complete short line (without its newline) goes to the output, rewritten if it is a
    /// mapped tablespace's SET or an extension to create at its recorded version.
    private func endLine() {
        defer { line.removeAll(keepingCapacity: true) }
        if !inCopyData, let rewritten = rewrite(line) {
            out.append(contentsOf: rewritten)
            return
        }
        follow(Array(line.prefix(16)), Array(line.suffix(16)))
        out.append(contentsOf: line)
    }

    /// `SET default_tablespace = OLD;` → `SET default_tablespace = NEW;` when OLD is mapped;
    /// `CREATE EXTENSION IF NOT EXISTS X WITH SCHEMA S;` → `… WITH SCHEMA S VERSION 'V';`.
    func rewrite(_ body: [UInt8]) -> [UInt8]? {
        if body.starts(with: Self.extensionPrefix) { return rewriteExtension(body) }
        guard body.starts(with: Self.prefix), body.last == 0x3b else { return nil }
        let identifier = Array(body[Self.prefix.count..<(body.count - 1)])
        guard let name = PostgresStatements.parseIdentifier(identifier), let mapped = map[name], mapped != name else { return nil }
        return Self.prefix + Array(SQLIdentifier.postgres(mapped).utf8) + [0x3b]
    }

    private static let extensionPrefix = Array("CREATE EXTENSION IF NOT EXISTS ".utf8)
    private static let withSchema = Array(" WITH SCHEMA ".utf8)

    private func rewriteExtension(_ body: [UInt8]) -> [UInt8]? {
        guard !extensionVersions.isEmpty, body.last == 0x3b else { return nil }
        let rest = Array(body[Self.extensionPrefix.count..<(body.count - 1)])
        // The name is one identifier: quoted (quotes doubled inside) or bare; then " WITH SCHEMA ".
        var end = 0
        if rest.first == 0x22 {
            end = 1
            while end < rest.count {
                if rest[end] == 0x22 {
                    if end + 1 < rest.count && rest[end + 1] == 0x22 { end += 2; continue }
                    end += 1
                    break
                }
                end += 1
            }
        } else {
            while end < rest.count && rest[end] != 0x20 { end += 1 }
        }
        guard end <= rest.count, rest[end...].starts(with: Self.withSchema),
              PostgresStatements.parseIdentifier(Array(rest[(end + Self.withSchema.count)...])) != nil,
              let name = PostgresStatements.parseIdentifier(Array(rest[..<end])), let version = extensionVersions[name] else { return nil }
        return Array(body.dropLast()) + Array(" VERSION \(PostgresLiteral.quote(version));".utf8)
    }
}
