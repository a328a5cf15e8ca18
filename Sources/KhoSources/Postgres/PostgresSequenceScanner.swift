import Foundation
import Glibc

/// Picks the sequence values out of a plain pg_dump as it streams past: the
/// `SELECT pg_catalog.setval('public.s', 42, true);` lines.
///
/// A sequence is not transactional: reading it in the dump's snapshot gives its value now, not the
/// one pg_dump wrote a moment earlier, and an application that keeps calling nextval() would make
/// every restore look wrong. The value the dump sets is the one a restore brings back, so it is the
/// one the fingerprint records. Lines inside COPY data are never taken for statements.
final class PostgresSequenceScanner {
    struct Value: Equatable {
        var lastValue: String
        var isCalled: Bool
    }

    private(set) var values: [String: Value] = [:]
    /// The start of the current line (setval and COPY lines are short; the rest is not kept).
    private var head: [UInt8] = []
    /// The last bytes of the current line, for the ` FROM stdin;` that ends a COPY statement.
    private var tail: [UInt8] = []
    private var inCopyData = false
    private static let tailLimit = 16
    /// A setval line is short (two names of at most 63 bytes, quoted); inside COPY data only the
    /// end marker `\.` matters, so the rows of a large dump are not copied.
    private var headLimit: Int { inCopyData ? 3 : 1024 }

    func feed(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress else { return }
        var start = 0
        let count = bytes.count
        while start < count {
            let end = memchr(base + start, 0x0a, count - start).map { UnsafeRawPointer($0) - base } ?? count
            append(bytes, start, end)
            if end < count {
                endLine()
                start = end + 1
            } else {
                start = end
            }
        }
    }

    /// The last line, when the dump does not end with a newline.
    func finish() {
        if !head.isEmpty || !tail.isEmpty { endLine() }
    }

    private func append(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) {
        guard end > start else { return }
        let room = headLimit - head.count
        if room > 0 { head.append(contentsOf: bytes[start..<min(end, start + room)]) }
        let keep = min(end - start, Self.tailLimit)
        tail.append(contentsOf: bytes[(end - keep)..<end])
        if tail.count > Self.tailLimit { tail.removeFirst(tail.count - Self.tailLimit) }
    }

    private func endLine() {
        defer { head.removeAll(keepingCapacity: true); tail.removeAll(keepingCapacity: true) }
        if inCopyData {
            if head == [0x5c, 0x2e] { inCopyData = false }  // \.
            return
        }
        if head.starts(with: Array("COPY ".utf8)), tail.ends(with: Array(" FROM stdin;".utf8)) {
            inCopyData = true
            return
        }
        if let (name, value) = Self.parseSetval(head) { values[name] = value }
    }

    /// `SELECT pg_catalog.setval('NAME', VALUE, true|false);` → (NAME with quotes undoubled, value).
    static func parseSetval(_ line: [UInt8]) -> (String, Value)? {
        let prefix = Array("SELECT pg_catalog.setval('".utf8)
        guard line.starts(with: prefix) else { return nil }
        var i = prefix.count
        var name: [UInt8] = []
        while i < line.count {
            if line[i] == 0x27 {
                if i + 1 < line.count && line[i + 1] == 0x27 { name.append(0x27); i += 2; continue }
                break
            }
            name.append(line[i])
            i += 1
        }
        guard i < line.count else { return nil }
        let rest = String(decoding: line[(i + 1)...], as: UTF8.self)
        guard rest.hasPrefix(", "), rest.hasSuffix(");") else { return nil }
        let fields = rest.dropFirst(2).dropLast(2).split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard fields.count == 2, Int64(fields[0]) != nil, fields[1] == "true" || fields[1] == "false" else { return nil }
        return (String(decoding: name, as: UTF8.self), Value(lastValue: fields[0], isCalled: fields[1] == "true"))
    }
}

extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool { count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix }
}
