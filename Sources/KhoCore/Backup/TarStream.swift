import Foundation
import KhoSupport

/// One member of a tar stream, as its header describes it.
public struct TarMember: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case file, directory, symlink
    }

    /// The path inside the archive, made of plain components (no `..`, no empty or `.` component,
    /// no leading `/`), joined by `/`, without a trailing slash.
    public var path: String
    /// `path` split at `/`: every element is a plain name (`Node.isPlainName`).
    public var components: [[UInt8]]
    public var kind: Kind
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var mtime: Int64
    /// The content's size; 0 for directories and symlinks.
    public var size: UInt64
    public var linkTarget: [UInt8]
}

/// Reads a tar stream (ustar, with GNU long names and pax `path`/`linkpath`/`size` records
/// tolerated) from a read closure, one member at a time, without a temporary copy: the caller reads
/// each file's content through `readContent` before asking for the next member.
///
/// The stream comes from a process kho does not control (pg_basebackup talking to a server that
/// anyone with the replication privilege can impersonate), so every header is checked: checksums,
/// names that would leave the folder, sizes that do not fit, kinds a data directory never holds.
public final class TarStream {
    public typealias Read = (UnsafeMutableRawBufferPointer) throws -> Int

    static let blockSize = 512
    /// Longest name a GNU long-name member or a pax record may give: PATH_MAX.
    static let maximumNameLength = 4096
    /// Largest pax extended header kho reads into memory.
    static let maximumPaxHeader = 1 << 20
    /// Largest member size: beyond it a size field is hostile or damaged, not a PostgreSQL file.
    static let maximumMemberSize: UInt64 = 1 << 46

    private let read: Read
    private let what: String
    private var buffer: UnsafeMutableRawBufferPointer
    private var start = 0
    private var end = 0
    private var eof = false
    /// Bytes of the current member's content not yet read, and the padding after them.
    private var remaining: UInt64 = 0
    private var padding = 0
    private var finished = false
    /// Bytes consumed from the stream so far (for messages).
    public private(set) var offset: UInt64 = 0
    /// Whether the read closure has reported the end of its input: a stream that failed after
    /// that was cut short by its writer, whose own error says more.
    public var reachedEndOfInput: Bool { eof }

    /// `what` names the stream in messages ("the stream of pg_basebackup").
    public init(what: String, bufferSize: Int = 1 << 20, read: @escaping Read) {
        self.read = read
        self.what = what
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bufferSize, 4 * TarStream.blockSize), alignment: 64)
    }

    deinit { buffer.deallocate() }

    private func damaged(_ text: String) -> KhoError {
        KhoError(.source, "\(what) is not a valid tar stream at byte \(offset): \(text); no snapshot was written.")
    }

    /// Makes at least `count` bytes available in the buffer; false when the stream ended first.
    private func fill(_ count: Int) throws -> Bool {
        if end - start >= count { return true }
        if start > 0 {
            let kept = end - start
            if kept > 0 { buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + start, byteCount: kept) }
            start = 0
            end = kept
        }
        while end - start < count && !eof {
            let n = try read(UnsafeMutableRawBufferPointer(rebasing: buffer[end...]))
            if n == 0 { eof = true } else { end += n }
        }
        return end - start >= count
    }

    private func consume(_ count: Int) {
        start += count
        offset += UInt64(count)
    }

    /// Reads the next 512-byte block; nil at the end of the stream.
    private func nextBlock() throws -> UnsafeRawBufferPointer? {
        guard try fill(TarStream.blockSize) else {
            if end - start > 0 { throw damaged("the stream ends inside a header (\(end - start) bytes of 512)") }
            return nil
        }
        let block = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[start..<start + TarStream.blockSize])
        consume(TarStream.blockSize)
        return block
    }

    /// Reads the current member's content into `out`; 0 once it is all read. Unread content is
    /// skipped by `next()`.
    public func readContent(_ out: UnsafeMutableRawBufferPointer) throws -> Int {
        guard remaining > 0, out.count > 0 else { return 0 }
        if start == end {
            guard try fill(1) else { throw damaged("the stream ends inside a member, \(remaining) bytes short") }
        }
        let count = min(out.count, end - start, Int(clamping: remaining))
        out.baseAddress!.copyMemory(from: buffer.baseAddress! + start, byteCount: count)
        consume(count)
        remaining -= UInt64(count)
        return count
    }

    /// Skips what is left of the current member and its padding.
    private func skipContent() throws {
        var total = remaining + UInt64(padding)
        remaining = 0
        padding = 0
        while total > 0 {
            if start == end {
                guard try fill(1) else { throw damaged("the stream ends inside a member") }
            }
            let count = min(end - start, Int(clamping: total))
            consume(count)
            total -= UInt64(count)
        }
    }

    /// Reads a whole member's content of `size` bytes into memory (pax headers, long names).
    private func readSmall(_ size: UInt64, limit: Int, kind: String) throws -> [UInt8] {
        guard size <= UInt64(limit) else { throw damaged("a \(kind) of \(size) bytes (at most \(limit))") }
        var bytes = [UInt8](repeating: 0, count: Int(size))
        remaining = size
        padding = TarStream.padding(for: size)
        var filled = 0
        while filled < bytes.count {
            let n = try bytes.withUnsafeMutableBytes { try readContent(UnsafeMutableRawBufferPointer(rebasing: $0[filled...])) }
            filled += n
        }
        try skipContent()
        return bytes
    }

    static func padding(for size: UInt64) -> Int {
        Int((UInt64(blockSize) - size % UInt64(blockSize)) % UInt64(blockSize))
    }

    /// The next member, or nil after the end-of-archive marker. Content left unread of the
    /// previous member is skipped.
    public func next() throws -> TarMember? {
        guard !finished else { return nil }
        try skipContent()
        var longName: [UInt8]?
        var longLink: [UInt8]?
        var pax: [String: [UInt8]] = [:]
        while true {
            guard let block = try nextBlock() else {
                throw damaged("the stream ends without the end-of-archive marker (pg_basebackup stopped early?)")
            }
            if block.allSatisfy({ $0 == 0 }) {
                // Two zero blocks end the archive; one alone is tolerated as GNU tar does, but a
                // header must not follow it.
                guard let second = try nextBlock() else { return finish() }
                guard second.allSatisfy({ $0 == 0 }) else { throw damaged("a header follows an end-of-archive block") }
                return finish()
            }
            try TarStream.checkChecksum(block, damaged: damaged)
            let typeFlag = block[156]
            let size = try TarStream.number(UnsafeRawBufferPointer(rebasing: block[124..<136]), field: "size", damaged: damaged)
            guard size <= TarStream.maximumMemberSize else { throw damaged("a member of \(size) bytes") }
            switch typeFlag {
            case UInt8(ascii: "L"):
                longName = TarStream.trimmedAtNUL(try readSmall(size, limit: TarStream.maximumNameLength + 1, kind: "GNU long name"))
                continue
            case UInt8(ascii: "K"):
                longLink = TarStream.trimmedAtNUL(try readSmall(size, limit: TarStream.maximumNameLength + 1, kind: "GNU long link"))
                continue
            case UInt8(ascii: "x"):
                pax = try TarStream.paxRecords(try readSmall(size, limit: TarStream.maximumPaxHeader, kind: "pax header"), damaged: damaged)
                continue
            case UInt8(ascii: "g"):
                // Global pax records describe the archive, not a file: nothing kho stores.
                _ = try readSmall(size, limit: TarStream.maximumPaxHeader, kind: "pax global header")
                continue
            default:
                break
            }
            let kind: TarMember.Kind
            switch typeFlag {
            case 0, UInt8(ascii: "0"), UInt8(ascii: "7"): kind = .file
            case UInt8(ascii: "5"): kind = .directory
            case UInt8(ascii: "2"): kind = .symlink
            case UInt8(ascii: "1"):
                throw damaged("a hard link member (a data directory has none)")
            default:
                throw damaged("a member of type \(String(UnicodeScalar(typeFlag)).debugDescription) (only files, folders and symlinks are expected)")
            }
            var name = pax["path"] ?? longName ?? TarStream.headerName(block)
            guard !name.contains(0) else { throw damaged("a member name containing NUL") }
            guard name.count <= TarStream.maximumNameLength else { throw damaged("a member name of \(name.count) bytes") }
            // A trailing slash marks folders (and, in PostgreSQL's tar, symlinks to folders).
            while name.last == UInt8(ascii: "/") && name.count > 1 { name.removeLast() }
            let components = try TarStream.components(name, damaged: damaged)
            var linkTarget: [UInt8] = []
            if kind == .symlink {
                linkTarget = pax["linkpath"] ?? longLink ?? TarStream.trimmedAtNUL(Array(block[157..<257]))
                guard !linkTarget.isEmpty, !linkTarget.contains(0) else { throw damaged("the symlink \(TarStream.shown(name)) has no target or one containing NUL") }
            }
            var memberSize = size
            if let paxSize = pax["size"] {
                guard let text = String(bytes: paxSize, encoding: .ascii), let value = UInt64(text), value <= TarStream.maximumMemberSize else {
                    throw damaged("a pax size that is not a number")
                }
                memberSize = value
            }
            if kind != .file && memberSize != 0 {
                throw damaged("the \(kind == .directory ? "folder" : "symlink") \(TarStream.shown(name)) has content (\(memberSize) bytes)")
            }
            let mode = try TarStream.number(UnsafeRawBufferPointer(rebasing: block[100..<108]), field: "mode", damaged: damaged)
            let uid = try TarStream.number(UnsafeRawBufferPointer(rebasing: block[108..<116]), field: "uid", damaged: damaged)
            let gid = try TarStream.number(UnsafeRawBufferPointer(rebasing: block[116..<124]), field: "gid", damaged: damaged)
            let mtime = try TarStream.number(UnsafeRawBufferPointer(rebasing: block[136..<148]), field: "mtime", damaged: damaged)
            guard uid <= UInt64(UInt32.max), gid <= UInt64(UInt32.max), mtime <= UInt64(Int64.max) else {
                throw damaged("an owner or time out of range for \(TarStream.shown(name))")
            }
            remaining = memberSize
            padding = TarStream.padding(for: memberSize)
            return TarMember(path: components.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/"), components: components,
                             kind: kind, mode: UInt32(mode & 0o7777), uid: UInt32(uid), gid: UInt32(gid), mtime: Int64(mtime),
                             size: memberSize, linkTarget: linkTarget)
        }
    }

    /// Marks the end-of-archive marker as seen: later calls to `next()` return nil.
    private func finish() -> TarMember? {
        finished = true
        return nil
    }

    /// Reads and discards whatever follows the end-of-archive marker (tar pads to a record size),
    /// so that the writer ends normally rather than on a closed pipe.
    public func drain() throws {
        start = end
        while !eof {
            let n = try read(UnsafeMutableRawBufferPointer(rebasing: buffer[0...]))
            if n == 0 { eof = true }
            offset += UInt64(n)
        }
    }

    // MARK: header fields

    static func shown(_ name: [UInt8]) -> String { String(decoding: name, as: UTF8.self).debugDescription }

    static func trimmedAtNUL(_ bytes: [UInt8]) -> [UInt8] {
        if let nul = bytes.firstIndex(of: 0) { return Array(bytes[..<nul]) }
        return bytes
    }

    /// name (0..<100), with the ustar prefix (345..<500) when the magic says ustar.
    static func headerName(_ block: UnsafeRawBufferPointer) -> [UInt8] {
        let name = trimmedAtNUL(Array(block[0..<100]))
        let magic = Array(block[257..<262])
        if magic == Array("ustar".utf8) {
            let prefix = trimmedAtNUL(Array(block[345..<500]))
            if !prefix.isEmpty { return prefix + [UInt8(ascii: "/")] + name }
        }
        return name
    }

    /// The components of a member's name; refuses absolute names and `..`.
    static func components(_ name: [UInt8], damaged: (String) -> KhoError) throws -> [[UInt8]] {
        guard !name.isEmpty else { throw damaged("a member without a name") }
        guard name.first != UInt8(ascii: "/") else { throw damaged("the absolute member name \(shown(name))") }
        var parts: [[UInt8]] = []
        for part in name.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            if part.elementsEqual([UInt8(ascii: ".")]) { continue }
            if part.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
                throw damaged("the member name \(shown(name)), which leaves its folder (`..`)")
            }
            parts.append(Array(part))
        }
        guard !parts.isEmpty else { throw damaged("the member name \(shown(name)), which names no file") }
        return parts
    }

    /// The header checksum: the sum of the header's bytes with the checksum field read as spaces.
    static func checkChecksum(_ block: UnsafeRawBufferPointer, damaged: (String) -> KhoError) throws {
        var sum: UInt64 = 0
        for i in 0..<blockSize {
            sum += (148..<156).contains(i) ? 32 : UInt64(block[i])
        }
        let stored = try number(UnsafeRawBufferPointer(rebasing: block[148..<156]), field: "checksum", damaged: damaged)
        guard stored == sum else { throw damaged("a header whose checksum does not match (damaged or not tar)") }
    }

    /// A numeric field: octal digits (spaces and NULs around them), or base-256 when the first
    /// byte has its high bit set (GNU, and PostgreSQL for sizes of 8 GiB and more).
    static func number(_ field: UnsafeRawBufferPointer, field name: String, damaged: (String) -> KhoError) throws -> UInt64 {
        guard let first = field.first else { return 0 }
        if first & 0x80 != 0 {
            guard first == 0x80 else { throw damaged("a negative or oversized \(name) field") }
            var value: UInt64 = 0
            for byte in field.dropFirst() {
                guard value >> 56 == 0 else { throw damaged("an oversized \(name) field") }
                value = value << 8 | UInt64(byte)
            }
            return value
        }
        var value: UInt64 = 0
        var seenDigit = false
        var ended = false
        for byte in field {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                guard !ended else { throw damaged("a \(name) field with text after its number") }
                guard value >> 60 == 0 else { throw damaged("an oversized \(name) field") }
                value = value << 3 | UInt64(byte - UInt8(ascii: "0"))
                seenDigit = true
            case UInt8(ascii: " "), 0:
                if seenDigit { ended = true }
            default:
                throw damaged("a \(name) field that is not an octal number")
            }
        }
        return value
    }

    /// `length key=value\n` records of a pax extended header.
    static func paxRecords(_ bytes: [UInt8], damaged: (String) -> KhoError) throws -> [String: [UInt8]] {
        var records: [String: [UInt8]] = [:]
        var i = 0
        while i < bytes.count {
            guard let space = bytes[i...].firstIndex(of: UInt8(ascii: " ")),
                  let length = Int(String(decoding: bytes[i..<space], as: UTF8.self)), length > space - i + 1,
                  i + length <= bytes.count, bytes[i + length - 1] == UInt8(ascii: "\n") else {
                throw damaged("a pax header that is not `length key=value` records")
            }
            let record = bytes[(space + 1)..<(i + length - 1)]
            guard let equals = record.firstIndex(of: UInt8(ascii: "=")) else { throw damaged("a pax record without `=`") }
            records[String(decoding: record[..<equals], as: UTF8.self)] = Array(record[(equals + 1)...])
            i += length
        }
        return records
    }
}
