import Foundation
import Glibc
import KhoCore
import KhoSupport

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
    /// The ID of the repository whose ledger key made `hash` (HMAC-SHA256 of this entry's JSON
    /// with `hash` empty); "" when the command could not open a repository (then `hash` is a plain
    /// SHA-256); absent in entries an earlier kho wrote (plain SHA-256, the legacy form).
    public var key: String?
    public var hash: String

    public init(sequence: Int, time: Date, user: String, host: String, command: String, arguments: [String], outcome: String,
                previous: String, key: String?, hash: String) {
        self.sequence = sequence
        self.time = time
        self.user = user
        self.host = host
        self.command = command
        self.arguments = arguments
        self.outcome = outcome
        self.previous = previous
        self.key = key
        self.hash = hash
    }

    /// The JSON the hash covers: the entry with `hash` empty.
    func hashedBytes() throws -> [UInt8] {
        var copy = self
        copy.hash = ""
        return Array(try JSON.encoder.encode(copy))
    }

    func computedHash() throws -> String {
        try SHA256.hash(try hashedBytes()).hex
    }

    /// The outcome of a command that finished without error (others record their exit code).
    public static let succeeded = "success"

    /// Whether the entry is in the legacy form (no `key` field).
    public var isLegacy: Bool { key == nil }
    /// Whether `hash` is an HMAC under a repository's ledger key.
    public var isKeyed: Bool { !(key ?? "").isEmpty }
}

/// What a repository offers the ledger: the key of its entries and the ledger heads it keeps.
/// `Repository` is one; tests may supply others.
public protocol LedgerWitness {
    var ledgerKey: DerivedKey { get throws }
    /// Where it is, for messages.
    var witnessName: String { get }
    func ledgerAnchors() throws -> [(name: String, anchor: LedgerAnchor)]
    func saveLedgerAnchor(_ anchor: LedgerAnchor) throws
}

extension Repository: LedgerWitness {
    public var witnessName: String { storage.location }
}

/// What `AuditLedger.check` found.
public struct LedgerCheck: Sendable {
    public var entries = 0
    /// The last entry of the legacy prefix (plain SHA-256, written by an earlier kho), if any.
    public var legacyThrough: Int?
    /// Entries written when the command could not open its repository (not keyed).
    public var unkeyed: [Int] = []
    /// Entries checked against a repository's key, by repository ID.
    public var keyed: [String: Int] = [:]
    /// Repositories whose anchor matched the ledger.
    public var anchored: [String] = []
    /// The first problem: line and reason.
    public var problem: (line: Int, reason: String)?
}

/// The audit ledger: an append-only file of JSON lines in the state folder, each entry carrying
/// the hash of the one before, so that an edited, removed or reordered entry breaks the chain at
/// exactly that place. Each entry's hash is an HMAC under a key derived from the master key of the
/// repository the command used, so that whoever can write the file but holds no repository
/// password cannot recompute the chain; and each privileged command leaves the new head (sequence
/// and hash) sealed in that repository, so that a ledger cut short or replaced as a whole
/// disagrees with what the repository recorded (docs/FORMAT.md, "The audit ledger").
public final class AuditLedger: @unchecked Sendable {
    public let path: String
    public let stateDirectory: String

    public init(stateDirectory: String) throws {
        self.stateDirectory = stateDirectory
        path = stateDirectory + "/audit.log"
    }

    /// `host:path` of the ledger, as its anchors name it; the folder is resolved, so that one
    /// ledger reached by two spellings is one ledger.
    public var identity: String {
        var resolved = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let folder = realpath(stateDirectory, &resolved) != nil
            ? String(decoding: resolved.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : stateDirectory
        return Host.name + ":" + folder + "/audit.log"
    }

    /// Makes sure that an entry can be written (the folder, the ledger and its head), so that a
    /// privileged command is refused before it runs rather than left unrecorded after.
    public func checkWritable() throws {
        try makeFolder()
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw unwritable("open", path, errno) }
        close(fd)
        var info = stat()
        if lstat(path + ".head", &info) == 0 && info.st_mode & S_IFMT != S_IFREG {
            throw KhoError(.failure, "The audit ledger's head \(path).head is not a file: remove it (after checking the ledger with `kho audit verify`) so that privileged commands can be recorded.")
        }
        let probe = path + ".probe-" + Hex.encode(try Random.bytes(6))
        let probeFD = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard probeFD >= 0 else { throw unwritable("open", probe, errno) }
        close(probeFD)
        unlink(probe)
    }

    private func unwritable(_ call: String, _ object: String, _ code: Int32) -> KhoError {
        KhoError(.failure, "The audit ledger in \(stateDirectory) cannot be written (\(call) \(object): \(String(cString: strerror(code)))): fix the state folder (or --state-dir, KHO_STATE_DIR); privileged commands are not run unrecorded.")
    }

    private func makeFolder() throws {
        var info = stat()
        if stat(stateDirectory, &info) == 0 { return }
        do {
            try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw KhoError(.failure, "The state folder \(stateDirectory) cannot be created (\(error.localizedDescription)): create it or give another with --state-dir; privileged commands are not run unrecorded.")
        }
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
        // try?: the pattern is a constant that compiles; without it the text is returned as is.
        guard text.contains("://"), text.contains("@"),
              let pattern = try? NSRegularExpression(pattern: "([A-Za-z][A-Za-z0-9+.-]*://[^\\s/@:]*):[^\\s/@]*@") else { return text }
        return pattern.stringByReplacingMatches(in: text, range: NSRange(text.startIndex..., in: text), withTemplate: "$1:[removed]@")
    }

    /// The command of the entry written when the ledger was found shorter than its head says.
    public static let truncationCommand = "ledger-truncated"
    /// The command of the entry written when kho starts keying a ledger that holds legacy entries.
    public static let keyedCommand = "ledger-keyed"

    /// Appends an entry under an exclusive file lock, chaining it to the last one. Only the last
    /// line is read, so that appending costs the same however long the ledger has grown. When
    /// the ledger ends before the entry its head or a repository's anchor names (entries were cut
    /// off its end, or the ledger was replaced), an entry saying so is written first: the next
    /// append would otherwise overwrite the head, and the cut would go unnoticed.
    ///
    /// The entry is keyed with the first witness's ledger key (unkeyed without one) and the new
    /// head is anchored in every witness.
    @discardableResult
    public func append(command: String, arguments: [String], outcome: String, time: Date = Clock.now,
                       witnesses: [any LedgerWitness] = []) throws -> LedgerEntry {
        try makeFolder()
        let key = try witnesses.first?.ledgerKey
        let identity = self.identity
        let fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw KhoError.posix("open", path, errno: errno) }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else { throw KhoError.posix("flock", path, errno: errno) }
        var (last, damaged, endsWithNewline) = lastEntry(fd)
        if !endsWithNewline {
            // A line cut short by a crash: end it, so that the new entry is a line of its own.
            try [UInt8(ascii: "\n")].withUnsafeBytes { try Syscall.writeAll(fd, $0, path) }
        }
        func next(_ command: String, _ arguments: [String], _ outcome: String) -> LedgerEntry {
            LedgerEntry(sequence: (last?.sequence ?? 0) + 1, time: time, user: Host.user, host: Host.name, command: command,
                        arguments: arguments, outcome: outcome, previous: last?.hash ?? "", key: key?.repositoryID ?? "", hash: "")
        }
        if let legacy = last, legacy.isLegacy {
            last = try write(next(AuditLedger.keyedCommand, [],
                                  "entries 1 to \(legacy.sequence) were written by an earlier kho and are chained with plain SHA-256 only; from here on each entry is keyed with a repository's ledger key"),
                             key: key, to: fd)
        }
        // Damaged last lines are `verify`'s to name; only a clean end can be compared to the heads.
        // The new entry follows the last good one.
        if !damaged {
            var cuts: [String] = []
            let lastSequence = last?.sequence ?? 0
            if let head = readHead(), head.sequence > lastSequence || (head.sequence == lastSequence && head.hash != last?.hash) {
                cuts.append("the ledger ended at entry \(lastSequence) but entry \(head.sequence) had been written")
            }
            for witness in witnesses {
                let anchor = try witness.ledgerAnchors().map(\.anchor).filter { $0.ledger == identity }.max { $0.sequence < $1.sequence }
                if let anchor, anchor.sequence > lastSequence || (anchor.sequence == lastSequence && !ConstantTime.equal(anchor.hash, last?.hash ?? "")) {
                    cuts.append("the ledger ended at entry \(lastSequence) but the repository at \(witness.witnessName) recorded entry \(anchor.sequence) of \(Timestamp.format(anchor.time))")
                }
            }
            if !cuts.isEmpty {
                last = try write(next(AuditLedger.truncationCommand, [], cuts.joined(separator: "; ") + ": entries were removed from its end or the ledger was replaced"),
                                 key: key, to: fd)
            }
        }
        let entry = try write(next(command, AuditLedger.redact(arguments), AuditLedger.redactText(outcome)), key: key, to: fd)
        // The head (last sequence and hash) is kept beside the ledger, so that cutting entries off
        // its end is noticed even where no repository was opened.
        try writeHead("\(entry.sequence) \(entry.hash)\n")
        for witness in witnesses {
            try witness.saveLedgerAnchor(LedgerAnchor(ledger: identity, sequence: entry.sequence, hash: entry.hash, time: time))
        }
        return entry
    }

    private func write(_ unhashed: LedgerEntry, key: DerivedKey?, to fd: Int32) throws -> LedgerEntry {
        var entry = unhashed
        entry.hash = try key.map { try $0.mac(try entry.hashedBytes()) } ?? entry.computedHash()
        let line = String(decoding: try JSON.encoder.encode(entry), as: UTF8.self) + "\n"
        try Array(line.utf8).withUnsafeBytes { try Syscall.writeAll(fd, $0, path) }
        try Syscall.call("fsync", path) { fsync(fd) }
        return entry
    }

    /// Replaces the head file: a temporary file written and fsynced, renamed over the head, the
    /// folder fsynced; every step checked, so that a head that was not written is an error.
    private func writeHead(_ text: String) throws {
        let head = path + ".head"
        let temporary = head + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw KhoError.posix("open", temporary, errno: errno) }
        do {
            try Array(text.utf8).withUnsafeBytes { try Syscall.writeAll(fd, $0, temporary) }
            try Syscall.call("fsync", temporary) { fsync(fd) }
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, head) == 0 else {
            let code = errno
            unlink(temporary)
            throw KhoError.posix("rename", head, errno: code)
        }
        let folder = open(stateDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard folder >= 0 else { throw KhoError.posix("open", stateDirectory, errno: errno) }
        defer { close(folder) }
        try Syscall.call("fsync", stateDirectory) { fsync(folder) }
    }

    /// The sequence and hash the head file names, if it can be read.
    private func readHead() -> (sequence: Int, hash: String)? {
        // try?: no head (a new ledger, one of an earlier kho) or an unreadable one leaves only the
        // anchors in the repositories to detect a cut; `check` reports a head that disagrees.
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
                // try?: a line that is not an entry is skipped and reported as damage.
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
    /// nil when the chain holds. Without keys: keyed hashes are not checked (see `check`).
    public func verify() throws -> (line: Int, reason: String)? {
        try check(witnesses: []).problem
    }

    /// Checks the chain; with `witnesses`, also each keyed entry's HMAC (an entry keyed by a
    /// repository not among them is a problem: it cannot be told from a forged one) and that the
    /// ledger holds the head each witness recorded, and no other ledger's.
    public func check(witnesses: [any LedgerWitness]) throws -> LedgerCheck {
        var result = LedgerCheck()
        let keys = Dictionary(try witnesses.map { let key = try $0.ledgerKey; return (key.repositoryID, key) }, uniquingKeysWith: { a, _ in a })
        let strict = !witnesses.isEmpty
        guard let data = FileManager.default.contents(atPath: path) else {
            // No ledger: a repository that recorded a head of it says it was removed.
            if strict { result.problem = try anchorProblem(witnesses, hashes: [:], lastSequence: 0, lines: 0, found: &result.anchored) }
            return result
        }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        var previous = ""
        var expectedSequence = 1
        var switched = false
        var hashes: [Int: String] = [:]
        func fail(_ line: Int, _ reason: String) -> LedgerCheck {
            result.problem = (line, reason)
            return result
        }
        for (i, line) in lines.enumerated() where !(line.isEmpty && i == lines.count - 1) {
            let n = i + 1
            // try?: any decoding error is the same finding: the line is not an entry.
            guard let entry = try? JSON.decoder.decode(LedgerEntry.self, from: Data(line.utf8)) else {
                return fail(n, "line \(n) is not a ledger entry (edited or damaged)")
            }
            let name = "entry \(entry.sequence) (line \(n))"
            if entry.isLegacy {
                if switched {
                    return fail(n, "\(name) has the old unkeyed form although the ledger is keyed from entry \(result.legacyThrough.map { $0 + 1 } ?? 1) on: it was written or rewritten without kho's key")
                }
                result.legacyThrough = entry.sequence
            } else {
                if !switched, let legacy = result.legacyThrough, entry.command != AuditLedger.keyedCommand {
                    return fail(n, "\(name) follows the legacy entries 1 to \(legacy) without the entry that records the switch to keyed entries: the ledger was rewritten")
                }
                switched = true
            }
            if let repository = entry.key, !repository.isEmpty {
                if let key = keys[repository] {
                    if try !key.verify(try entry.hashedBytes(), expected: entry.hash) {
                        return fail(n, "\(name) was changed after it was written: its keyed hash does not match its content (rewritten without the key of repository \(repository.prefix(8)))")
                    }
                    result.keyed[repository, default: 0] += 1
                } else if strict {
                    return fail(n, "\(name) is keyed with repository \(repository.prefix(8)), which was not opened: give that repository (--repo, or the policy that uses it) to check it")
                }
            } else if try entry.computedHash() != entry.hash {
                return fail(n, "\(name) was changed after it was written: its hash does not match its content")
            } else if !entry.isLegacy {
                // Only a command that never got into its repository writes an unkeyed entry, and
                // such a command did not succeed.
                if strict && entry.outcome == LedgerEntry.succeeded && entry.command != AuditLedger.keyedCommand {
                    return fail(n, "\(name) records a success but is not keyed: a command that succeeded had its repository's key, so the entry was not written by kho")
                }
                if entry.command != AuditLedger.keyedCommand { result.unkeyed.append(entry.sequence) }
            }
            if entry.previous != previous {
                return fail(n, "\(name) does not follow the entry before it: an entry was removed, inserted or reordered")
            }
            if entry.sequence != expectedSequence {
                return fail(n, "\(name) should be number \(expectedSequence): an entry was removed or reordered")
            }
            if entry.command == AuditLedger.truncationCommand {
                return fail(n, "\(name) records that \(entry.outcome)")
            }
            previous = entry.hash
            hashes[entry.sequence] = entry.hash
            expectedSequence += 1
        }
        result.entries = expectedSequence - 1
        // try?: without a head file there is nothing to compare (a ledger of an earlier kho).
        if let head = try? String(contentsOfFile: path + ".head", encoding: .utf8) {
            let parts = head.split(separator: " ")
            if parts.count == 2, let sequence = Int(parts[0]), sequence != expectedSequence - 1 || String(parts[1].trimmingCharacters(in: .whitespacesAndNewlines)) != previous {
                return fail(lines.count, "the ledger ends at entry \(expectedSequence - 1) but entry \(sequence) was written: entries were removed from its end")
            }
        }
        if strict {
            result.problem = try anchorProblem(witnesses, hashes: hashes, lastSequence: expectedSequence - 1, lines: lines.count, found: &result.anchored)
        }
        return result
    }

    /// Compares the heads the witnesses recorded with the ledger.
    private func anchorProblem(_ witnesses: [any LedgerWitness], hashes: [Int: String], lastSequence: Int, lines: Int,
                               found: inout [String]) throws -> (line: Int, reason: String)? {
        let identity = self.identity
        for witness in witnesses {
            let anchors = try witness.ledgerAnchors().map(\.anchor)
            if let other = anchors.filter({ $0.ledger != identity }).max(by: { $0.sequence < $1.sequence }) {
                let (host, _) = other.ledger.split(separator: ":", maxSplits: 1).map(String.init).splitHostPath()
                return (lines, "the repository at \(witness.witnessName) also recorded entry \(other.sequence) of another audit ledger (\(other.ledger)) on \(Timestamp.format(other.time)): privileged commands ran with another state folder\(host == Host.name ? "" : " or on another host"); check that ledger (`kho audit verify --state-dir …`) and keep one state folder per host")
            }
            guard let anchor = anchors.max(by: { $0.sequence < $1.sequence }) else { continue }
            guard let hash = hashes[anchor.sequence] else {
                return (lines, "the ledger ends at entry \(lastSequence) but the repository at \(witness.witnessName) recorded entry \(anchor.sequence) of \(Timestamp.format(anchor.time)): entries were removed from its end or the ledger was replaced")
            }
            guard ConstantTime.equal(hash, anchor.hash) else {
                return (lines, "entry \(anchor.sequence) is not the entry the repository at \(witness.witnessName) recorded on \(Timestamp.format(anchor.time)): the ledger was rewritten")
            }
            found.append(try witness.ledgerKey.repositoryID)
        }
        return nil
    }
}

private extension Array where Element == String {
    func splitHostPath() -> (String, String) { (first ?? "", count > 1 ? self[1] : "") }
}
