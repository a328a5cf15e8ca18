import Foundation
import KhoCore
import KhoSupport
/// Loads a script into PostgreSQL without stopping at errors (for globals.sql, whose CREATE ROLE
/// of existing roles fails harmlessly).
enum ClientFeederAccess {
    static func loadIgnoringErrors(endpoint: DatabaseEndpoint, produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws -> Int64 {
        guard let psql = findProgram("psql") else { throw KhoError(.failure, "psql is not installed: install Debian's postgresql-client.") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: psql)
        process.arguments = ["-X", "-q", "-w", "-o", "/dev/null"]
        process.environment = ChildEnvironment.minimal(endpoint.libpqEnvironment(database: endpoint.database))
        let input = Pipe()
        process.standardInput = input
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        var total: Int64 = 0
        let fd = input.fileHandleForWriting.fileDescriptor
        try produce { chunk in
            try Syscall.writeAll(fd, chunk, "psql")
            total += Int64(chunk.count)
        }
        // try?: closing the pipe only tells psql the script ended; the psql exit is waited for below.
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        return total
    }
}

/// Takes the password hashes out of a `pg_dumpall --globals-only` script before a scratch cluster
/// loads it: `[ENCRYPTED] PASSWORD '…'` clauses go, outside quoted names, literals and comments.
enum GlobalsFilter {
    static let limit = 64 << 20

    static func withoutPasswords(_ script: [UInt8]) -> (bytes: [UInt8], removed: Int) {
        var out: [UInt8] = []
        out.reserveCapacity(script.count)
        var removed = 0
        var i = 0
        let n = script.count
        func isWord(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c | 0x20 >= 0x61 && c | 0x20 <= 0x7a) || c == 0x5f || c == 0x24 || c >= 0x80 }
        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d }
        /// The end of a quoted run starting at `start` (the quote), with doubled quotes inside;
        /// `backslashes` for E'' strings.
        func quotedEnd(_ start: Int, _ quote: UInt8, backslashes: Bool) -> Int {
            var j = start + 1
            while j < n {
                if backslashes && script[j] == 0x5c { j += 2; continue }
                if script[j] == quote {
                    if j + 1 < n && script[j + 1] == quote { j += 2; continue }
                    return j + 1
                }
                j += 1
            }
            return n
        }
        while i < n {
            let c = script[i]
            if c == 0x27 || c == 0x22 {  // ' or "
                let escaped = c == 0x27 && i > 0 && (script[i - 1] | 0x20) == 0x65 && (i < 2 || !isWord(script[i - 2]))
                let end = quotedEnd(i, c, backslashes: escaped)
                out += script[i..<end]
                i = end
            } else if c == 0x2d && i + 1 < n && script[i + 1] == 0x2d {  // -- comment
                var end = i
                while end < n && script[end] != 0x0a { end += 1 }
                out += script[i..<end]
                i = end
            } else if c == 0x2f && i + 1 < n && script[i + 1] == 0x2a {  // /* comment */
                var end = i + 2
                while end + 1 < n && !(script[end] == 0x2a && script[end + 1] == 0x2f) { end += 1 }
                end = min(n, end + 2)
                out += script[i..<end]
                i = end
            } else if isWord(c) {
                var end = i
                while end < n && isWord(script[end]) { end += 1 }
                let word = String(decoding: script[i..<end], as: UTF8.self).uppercased()
                if word == "PASSWORD" {
                    var j = end
                    while j < n && isSpace(script[j]) { j += 1 }
                    if j < n && script[j] == 0x27 {
                        // Drop the clause (and an ENCRYPTED before it); PASSWORD NULL stays.
                        var kept = out.count
                        while kept > 0 && isSpace(out[kept - 1]) { kept -= 1 }
                        if kept >= 9, String(decoding: out[(kept - 9)..<kept], as: UTF8.self).uppercased() == "ENCRYPTED",
                           kept == 9 || !isWord(out[kept - 10]) {
                            out.removeSubrange((kept - 9)...)
                        }
                        i = quotedEnd(j, 0x27, backslashes: false)
                        removed += 1
                        continue
                    }
                }
                out += script[i..<end]
                i = end
            } else {
                out.append(c)
                i += 1
            }
        }
        return (out, removed)
    }
}
