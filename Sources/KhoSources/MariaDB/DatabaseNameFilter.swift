import Foundation

/// Rewrites the `CREATE DATABASE` / `USE` lines that `mariadb-dump --databases` writes, so that a
/// dump of one database loads into another name. Such lines appear in the header and again near the
/// end (before the final structure of views), so the whole stream is filtered: a line is held back
/// only while its start could be one of them; everything else passes through in place.
final class DatabaseNameFilter {
    let from: String
    let to: String
    /// The start of the current line, held back while it may be a line to rewrite.
    private var line: [UInt8] = []
    /// Whether the current line began at a line start and may still be a line to rewrite.
    private var holding = true
    private static let prefixes: [[UInt8]] = [Array("CREATE DATABASE".utf8), Array("USE ".utf8)]

    init(from: String, to: String) {
        self.from = from
        self.to = to
    }

    func process(_ chunk: UnsafeRawBufferPointer, _ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        var i = 0
        var passFrom = 0
        while i < chunk.count {
            if holding {
                let byte = chunk[i]
                line.append(byte)
                i += 1
                passFrom = i
                if byte == 0x0a {
                    try rewrite(line).withUnsafeBytes { try write($0) }
                    line.removeAll(keepingCapacity: true)
                } else if !DatabaseNameFilter.mayMatch(line) {
                    try line.withUnsafeBytes { try write($0) }
                    line.removeAll(keepingCapacity: true)
                    holding = false
                }
                continue
            }
            // Inside a line that stays as it is: pass everything up to its end through.
            if let newline = chunk[i...].firstIndex(of: 0x0a) {
                i = newline + 1
                holding = true
            } else {
                i = chunk.count
            }
            try write(UnsafeRawBufferPointer(rebasing: chunk[passFrom..<i]))
            passFrom = i
        }
    }

    func flush(_ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        try rewrite(line).withUnsafeBytes { try write($0) }
        line.removeAll()
        holding = true
    }

    /// Whether `start` is the beginning of a line that starts with one of the prefixes (or of a prefix).
    private static func mayMatch(_ start: [UInt8]) -> Bool {
        prefixes.contains { prefix in
            start.count <= prefix.count ? prefix.starts(with: start) : start.starts(with: prefix)
        }
    }

    private func rewrite(_ line: [UInt8]) -> [UInt8] {
        if line.starts(with: DatabaseNameFilter.prefixes[0]) { return [] }
        if line.starts(with: DatabaseNameFilter.prefixes[1]) {
            return Array("USE \(SQLIdentifier.mariadb(to));".utf8) + (line.last == 0x0a ? [0x0a] : [])
        }
        return line
    }
}
