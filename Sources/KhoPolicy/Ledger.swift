import Foundation
import Glibc
import KhoCore

/// One privileged action.
public struct LedgerEntry: Codable, Sendable, Equatable {
    public var sequence: Int
    public var time: Date
    public var user: String
    public var host: String
    public var command: String
    /// The arguments with secrets removed.
    public var arguments: [String]
    public var outcome: String
    /// Hash of the previous entry ("" for the first).
    public var previous: String
    /// SHA-256 of this entry's JSON with this field empty.
    public var hash: String

    func computedHash() throws -> String {
        var copy = self
        copy.hash = ""
        return try SHA256.hash(Array(try JSON.encoder.encode(copy))).hex
    }
}

/// The audit ledger: an append-only file of JSON lines in the state folder, each entry carrying
/// the hash of the one before, so that an edited, removed or reordered entry breaks the chain at
/// exactly that place.
public final class AuditLedger: @unchecked Sendable {
    public let path: String

    public init(stateDirectory: String) throws {
        try? FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
        path = stateDirectory + "/audit.log"
    }

    /// Arguments with the values of secret-looking options replaced.
    public static func redact(_ arguments: [String]) -> [String] {
        var result: [String] = []
        var hideNext = false
        for argument in arguments {
            if hideNext { result.append("[removed]"); hideNext = false; continue }
            let lower = argument.lowercased()
            if lower.contains("password") || lower.contains("secret") || lower.contains("token") {
                if argument.contains("=") {
                    result.append(String(argument.prefix { $0 != "=" }) + "=[removed]")
                } else if !lower.hasSuffix("-file") && !lower.hasSuffix("-env") {
                    result.append(argument)
                    hideNext = true
                } else {
                    result.append(argument)
                }
                continue
            }
            // A URL with credentials: keep the user, drop the password.
            if let at = argument.firstIndex(of: "@"), argument.contains("://"), let colon = argument[argument.range(of: "://")!.upperBound..<at].firstIndex(of: ":") {
                result.append(String(argument[..<colon]) + ":[removed]" + String(argument[at...]))
                continue
            }
            result.append(argument)
        }
        return result
    }

    /// Free text (an outcome, an error message) with the password of any URL in it removed: an
    /// error message may quote the argument that held it.
    public static func redactText(_ text: String) -> String {
        guard text.contains("://"), text.contains("@"),
              let pattern = try? NSRegularExpression(pattern: "([A-Za-z][A-Za-z0-9+.-]*://[^\\s/@:]*):[^\\s/@]*@") else { return text }
        return pattern.stringByReplacingMatches(in: text, range: NSRange(text.startIndex..., in: text), withTemplate: "$1:[removed]@")
    }

    /// The command of the entry written when the ledger was found shorter than its head says.
    public static let truncationCommand = "ledger-truncated"

    /// Appends an entry under an exclusive file lock, chaining it to the last one. Only the last
    /// line is read, so that appending costs the same however long the ledger has grown. When
    /// the ledger ends before the entry its head names (entries were cut off its end), an entry
    /// saying so is written first: the next append would otherwise overwrite the head, and the
    /// cut would go unnoticed.
    @discardableResult
    public func append(command: String, arguments: [String], outcome: String, time: Date = Clock.now) throws -> LedgerEntry {
        let fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KhoError.posix("open", path, errno: errno) }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else { throw KhoError.posix("flock", path, errno: errno) }
        var (last, damaged, endsWithNewline) = lastEntry(fd)
        if !endsWithNewline {
            // A line cut short by a crash: end it, so that the new entry is a line of its own.
            try [UInt8(ascii: "\n")].withUnsafeBytes { try Syscall.writeAll(fd, $0, path) }
        }
        // Damaged last lines are `verify`'s to name; only a clean end can be compared to the head.
        // The new entry follows the last good one.
        if !damaged, let head = readHead(),
           head.sequence > (last?.sequence ?? 0) || (head.sequence == last?.sequence && head.hash != last?.hash) {
            last = try write(LedgerEntry(sequence: (last?.sequence ?? 0) + 1, time: time, user: Host.user, host: Host.name,
                                         command: AuditLedger.truncationCommand, arguments: [],
                                         outcome: "the ledger ended at entry \(last?.sequence ?? 0) but entry \(head.sequence) had been written: entries were removed from its end",
                                         previous: last?.hash ?? "", hash: ""), to: fd)
        }
        let entry = try write(LedgerEntry(sequence: (last?.sequence ?? 0) + 1, time: time, user: Host.user, host: Host.name,
                                          command: command, arguments: AuditLedger.redact(arguments), outcome: AuditLedger.redactText(outcome),
                                          previous: last?.hash ?? "", hash: ""), to: fd)
        // The head (last sequence and hash) is kept beside the ledger, so that cutting entries off
        // its end is noticed too.
        let head = "\(entry.sequence) \(entry.hash)\n"
        let temporary = path + ".head.tmp"
        if FileManager.default.createFile(atPath: temporary, contents: Data(head.utf8)) { rename(temporary, path + ".head") }
        return entry
    }

    private func write(_ unhashed: LedgerEntry, to fd: Int32) throws -> LedgerEntry {
        var entry = unhashed
        entry.hash = try entry.computedHash()
        let line = String(decoding: try JSON.encoder.encode(entry), as: UTF8.self) + "\n"
        try Array(line.utf8).withUnsafeBytes { try Syscall.writeAll(fd, $0, path) }
        try Syscall.call("fsync", path) { fsync(fd) }
        return entry
    }

    /// The sequence and hash the head file names, if it can be read.
    private func readHead() -> (sequence: Int, hash: String)? {
        guard let text = try? String(contentsOfFile: path + ".head", encoding: .utf8) else { return nil }
        let parts = text.split(separator: " ")
        guard parts.count == 2, let sequence = Int(parts[0]) else { return nil }
        return (sequence, parts[1].trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// The ledger's last good entry, read from the end of the file (nil for an empty ledger);
    /// `damaged` when lines after it are not entries (a crash in the middle of an append, or an
    /// edit: `verify` names them), and whether the file ends with a line break.
    private func lastEntry(_ fd: Int32) -> (entry: LedgerEntry?, damaged: Bool, endsWithNewline: Bool) {
        let size = Int(lseek(fd, 0, SEEK_END))
        guard size > 0 else { return (nil, false, true) }
        let newline = UInt8(ascii: "\n")
        var window = 4096
        while true {
            let start = max(0, size - window)
            var bytes = [UInt8](repeating: 0, count: size - start)
            let read = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(start)) }
            guard read == bytes.count else { return (nil, true, true) }
            let endsWithNewline = bytes.last == newline
            // Whole lines only: the window's first line may begin before the window.
            var lines = bytes.split(separator: newline, omittingEmptySubsequences: true)
            if start > 0 && !lines.isEmpty { lines.removeFirst() }
            for (skipped, line) in lines.reversed().enumerated() {
                if let entry = try? JSON.decoder.decode(LedgerEntry.self, from: Data(line)) {
                    return (entry, skipped > 0, endsWithNewline)
                }
            }
            if start == 0 { return (nil, !lines.isEmpty, endsWithNewline) }
            window *= 4
        }
    }

    static func parse(_ bytes: [UInt8]) throws -> [LedgerEntry] {
        try String(decoding: bytes, as: UTF8.self).split(separator: "\n").map { line in
            try JSON.decoder.decode(LedgerEntry.self, from: Data(line.utf8))
        }
    }

    public func entries() throws -> [LedgerEntry] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        return try AuditLedger.parse(Array(data))
    }

    /// The first entry that breaks the chain (edited, removed, inserted or reordered), with why;
    /// nil when the whole ledger is intact.
    public func verify() throws -> (line: Int, reason: String)? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        var previous = ""
        var expectedSequence = 1
        for (i, line) in lines.enumerated() where !(line.isEmpty && i == lines.count - 1) {
            guard let entry = try? JSON.decoder.decode(LedgerEntry.self, from: Data(line.utf8)) else {
                return (i + 1, "line \(i + 1) is not a ledger entry (edited or damaged)")
            }
            if try entry.computedHash() != entry.hash {
                return (i + 1, "entry \(entry.sequence) (line \(i + 1)) was changed after it was written: its hash does not match its content")
            }
            if entry.previous != previous {
                return (i + 1, "entry \(entry.sequence) (line \(i + 1)) does not follow the entry before it: an entry was removed, inserted or reordered")
            }
            if entry.sequence != expectedSequence {
                return (i + 1, "entry \(entry.sequence) (line \(i + 1)) should be number \(expectedSequence): an entry was removed or reordered")
            }
            if entry.command == AuditLedger.truncationCommand {
                return (i + 1, "entry \(entry.sequence) (line \(i + 1)) records that \(entry.outcome)")
            }
            previous = entry.hash
            expectedSequence += 1
        }
        if let head = try? String(contentsOfFile: path + ".head", encoding: .utf8) {
            let parts = head.split(separator: " ")
            if parts.count == 2, let sequence = Int(parts[0]), sequence != expectedSequence - 1 || String(parts[1].trimmingCharacters(in: .whitespacesAndNewlines)) != previous {
                return (lines.count, "the ledger ends at entry \(expectedSequence - 1) but entry \(sequence) was written: entries were removed from its end")
            }
        }
        return nil
    }
}
