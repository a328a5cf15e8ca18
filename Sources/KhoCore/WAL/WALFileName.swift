import KhoSupport

// Names of archived PostgreSQL WAL files (docs/FORMAT.md section 20, "Archived WAL").
//
// A name arrives from PostgreSQL's `%f` (archive_command, restore_command) or from a listing of
// storage that someone else may write: it is hostile until `WALFileName(parsing:)` accepted it.
// Only the four shapes PostgreSQL writes are accepted, in upper-case hex exactly as it writes
// them, so that a parsed name never holds `/`, `..` or anything else a path could misuse, and
// every accepted name prints back to the same text.

/// A position in the WAL: a byte offset into the cluster's endless log, printed as PostgreSQL
/// prints it (`16/B374D848`: the high and low 32 bits in upper-case hex).
public struct LSN: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var value: UInt64
    public init(_ value: UInt64) { self.value = value }

    public static func < (a: LSN, b: LSN) -> Bool { a.value < b.value }

    public var description: String {
        String(value >> 32, radix: 16, uppercase: true) + "/" + String(value & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }

    /// Parses `X/X` (1 to 8 hex digits on each side, either case, as pg_lsn accepts).
    public init(parsing text: some StringProtocol) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy({ (1...8).contains($0.utf8.count) && $0.utf8.allSatisfy(isHexDigit) }),
              let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16) else {
            throw KhoError(.usage, "\"\(text.prefix(40))\" is not a WAL position (LSN): write it as PostgreSQL prints it, two hex numbers joined by a slash such as 16/B374D848.")
        }
        value = high << 32 | low
    }

    /// The number of the segment holding this position.
    public func segmentNumber(segmentSize: WALSegmentSize) -> UInt64 { value / UInt64(segmentSize.bytes) }

    /// The offset of this position inside its segment.
    public func offsetInSegment(segmentSize: WALSegmentSize) -> UInt32 { UInt32(value % UInt64(segmentSize.bytes)) }
}

/// A cluster's WAL segment size: a power of two from 1 MiB to 1 GiB (`initdb --wal-segsize`).
public struct WALSegmentSize: Hashable, Sendable {
    public let bytes: Int

    public init(bytes: Int) throws {
        guard bytes >= 1 << 20, bytes <= 1 << 30, bytes & (bytes - 1) == 0 else {
            throw KhoError(.source, "\(bytes) bytes is not a WAL segment size PostgreSQL uses (a power of two from 1 MiB to 1 GiB): the file or setting it came from is not from a PostgreSQL cluster; check it.")
        }
        self.bytes = bytes
    }

    private init(checked bytes: Int) { self.bytes = bytes }

    /// PostgreSQL's default, 16 MiB.
    public static let `default` = WALSegmentSize(checked: 16 << 20)

    /// How many segments one 4 GiB "log" (the middle 8 digits of a segment name) holds.
    public var segmentsPerLog: UInt64 { (UInt64(1) << 32) / UInt64(bytes) }
}

/// A cluster's system identifier (`pg_control`, and bytes 24..32 of every segment's first page),
/// printed as 16 lower-case hex digits: the name of the cluster's folder under `wal/`.
public struct SystemIdentifier: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var value: UInt64
    public init(_ value: UInt64) { self.value = value }

    public static func < (a: SystemIdentifier, b: SystemIdentifier) -> Bool { a.value < b.value }

    public var description: String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// Parses the folder name (exactly 16 lower-case hex digits, as kho writes it).
    public init(parsing text: some StringProtocol) throws {
        guard text.utf8.count == 16, text.utf8.allSatisfy({ isLowerHexDigit($0) }), let value = UInt64(text, radix: 16) else {
            throw KhoError(.usage, "\"\(text.prefix(40))\" is not a cluster's system identifier as kho writes it (16 lower-case hex digits): check the name, or list the clusters with `kho status`.")
        }
        self.value = value
    }
}

/// The name of one WAL file PostgreSQL archives.
public struct WALFileName: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, Codable {
        /// `TTTTTTTTXXXXXXXXYYYYYYYY`: timeline, log, segment within the log.
        case segment
        /// `<segment>.partial`: the last, incomplete segment of a timeline, archived at promotion.
        case partial
        /// `TTTTTTTT.history`: the timeline's ancestry.
        case history
        /// `<segment>.OOOOOOOO.backup`: a base backup's history file; O is the start offset.
        case backup
    }

    public let kind: Kind
    public let timeline: UInt32
    /// The middle 8 digits of a segment name (0 for history files).
    public let log: UInt32
    /// The last 8 digits of a segment name (0 for history files).
    public let segmentInLog: UInt32
    /// The backup's start offset inside its segment (backup history files only).
    public let backupOffset: UInt32?

    private init(kind: Kind, timeline: UInt32, log: UInt32, segmentInLog: UInt32, backupOffset: UInt32?) {
        self.kind = kind
        self.timeline = timeline
        self.log = log
        self.segmentInLog = segmentInLog
        self.backupOffset = backupOffset
    }

    /// The longest name PostgreSQL archives (`<24>.<8>.backup`), checked before anything else.
    static let longestName = 40

    /// Accepts exactly the names PostgreSQL gives archived files; anything else is refused with
    /// a usage error, before it reaches a path or a message unquoted.
    public init(parsing name: some StringProtocol) throws {
        let bytes = Array(name.utf8.prefix(Self.longestName + 1))
        func refuse() -> KhoError {
            let shown = String(decoding: bytes.prefix(Self.longestName).map { (0x20...0x7e).contains($0) ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
            return KhoError(.usage, "\"\(shown)\" is not the name of a WAL file PostgreSQL archives (a 24-digit upper-case hex segment, optionally .partial, TTTTTTTT.history, or <segment>.XXXXXXXX.backup): pass PostgreSQL's %f unchanged.")
        }
        guard bytes.count <= Self.longestName else { throw refuse() }
        func hex(_ range: Range<Int>) -> UInt32? {
            guard range.upperBound <= bytes.count, bytes[range].allSatisfy(isUpperHexDigit) else { return nil }
            return UInt32(String(decoding: bytes[range], as: UTF8.self), radix: 16)
        }
        func suffix(_ at: Int, _ text: String) -> Bool { Array(bytes[at...]) == Array(text.utf8) }
        guard let timeline = hex(0..<8), timeline != 0 else { throw refuse() }
        if bytes.count == 16, suffix(8, ".history") {
            self.init(kind: .history, timeline: timeline, log: 0, segmentInLog: 0, backupOffset: nil)
            return
        }
        guard let log = hex(8..<16), let segment = hex(16..<24) else { throw refuse() }
        switch bytes.count {
        case 24:
            self.init(kind: .segment, timeline: timeline, log: log, segmentInLog: segment, backupOffset: nil)
        case 32 where suffix(24, ".partial"):
            self.init(kind: .partial, timeline: timeline, log: log, segmentInLog: segment, backupOffset: nil)
        case 40 where bytes[24] == UInt8(ascii: ".") && suffix(33, ".backup"):
            guard let offset = hex(25..<33) else { throw refuse() }
            self.init(kind: .backup, timeline: timeline, log: log, segmentInLog: segment, backupOffset: offset)
        default:
            throw refuse()
        }
    }

    /// The segment that holds `lsn` on `timeline`.
    public static func segment(timeline: UInt32, containing lsn: LSN, segmentSize: WALSegmentSize) -> WALFileName {
        segment(timeline: timeline, number: lsn.segmentNumber(segmentSize: segmentSize), segmentSize: segmentSize)
    }

    /// Segment number `number` (counted from the start of the WAL) on `timeline`.
    public static func segment(timeline: UInt32, number: UInt64, segmentSize: WALSegmentSize) -> WALFileName {
        WALFileName(kind: .segment, timeline: timeline, log: UInt32(truncatingIfNeeded: number / segmentSize.segmentsPerLog),
                    segmentInLog: UInt32(truncatingIfNeeded: number % segmentSize.segmentsPerLog), backupOffset: nil)
    }

    public static func history(timeline: UInt32) -> WALFileName {
        WALFileName(kind: .history, timeline: timeline, log: 0, segmentInLog: 0, backupOffset: nil)
    }

    /// The segment this file belongs to (itself for a segment; nil for a history file).
    public var segmentName: WALFileName? {
        kind == .history ? nil : WALFileName(kind: .segment, timeline: timeline, log: log, segmentInLog: segmentInLog, backupOffset: nil)
    }

    /// Checks what the name alone cannot: that the segment fits the cluster's segment size
    /// (a 16 MiB cluster has 256 segments per log, so `…000000FF` is its last), and that a backup
    /// offset lies inside its segment.
    public func validate(segmentSize: WALSegmentSize) throws {
        guard kind != .history else { return }
        guard UInt64(segmentInLog) < segmentSize.segmentsPerLog, (backupOffset.map { Int($0) < segmentSize.bytes } ?? true) else {
            throw KhoError(.usage, "\(self) cannot exist in a cluster whose WAL segments are \(segmentSize.bytes >> 20) MiB (segment or offset past the end of its log): pass PostgreSQL's %f unchanged, and check that the archive belongs to this cluster.")
        }
    }

    /// The segment's number counted from the start of the WAL.
    public func segmentNumber(segmentSize: WALSegmentSize) -> UInt64 {
        UInt64(log) * segmentSize.segmentsPerLog + UInt64(segmentInLog)
    }

    /// Where the segment starts in the WAL (for a backup file: where the backup started).
    public func startLSN(segmentSize: WALSegmentSize) -> LSN {
        LSN(segmentNumber(segmentSize: segmentSize) * UInt64(segmentSize.bytes) + UInt64(backupOffset ?? 0))
    }

    /// The name as PostgreSQL writes it.
    public var description: String {
        let t = hex8(timeline)
        let segment = t + hex8(log) + hex8(segmentInLog)
        switch kind {
        case .segment: return segment
        case .partial: return segment + ".partial"
        case .history: return t + ".history"
        case .backup: return segment + "." + hex8(backupOffset ?? 0) + ".backup"
        }
    }

    /// The timeline-and-log folder (`TTTTTTTTXXXXXXXX`, one per 4 GiB of WAL) that keeps
    /// listings short; history files sit in the cluster's folder itself.
    public var folder: String? {
        kind == .history ? nil : hex8(timeline) + hex8(log)
    }

    /// The file's name under `wal/`: `<sysid>/<folder>/<name>`, or `<sysid>/<name>` for history.
    public func storedName(cluster: SystemIdentifier) -> String {
        if let folder { return "\(cluster)/\(folder)/\(self)" }
        return "\(cluster)/\(self)"
    }

    public func handle(cluster: SystemIdentifier) -> Handle { Handle(.wal, storedName(cluster: cluster)) }

    /// Parses a stored name (`<sysid>/<folder>/<name>` or `<sysid>/<name>`), checking that the
    /// folder is the one this name belongs in: a file listed from storage is hostile as well.
    /// The archive record (`<sysid>/archive`, `WALArchiveRecord.handle`) is not a WAL file and
    /// is refused here: listings set it apart first.
    public init(storedName: String) throws {
        let parts = storedName.split(separator: "/", omittingEmptySubsequences: false)
        guard (2...3).contains(parts.count) else {
            throw KhoError(.integrity, "wal/\(storedName.prefix(80)) is not where kho stores a WAL file: something other than kho wrote it; remove it after checking what put it there.")
        }
        _ = try SystemIdentifier(parsing: parts[0])
        let name = try WALFileName(parsing: parts[parts.count - 1])
        guard parts.count == 3 ? name.folder == String(parts[1]) : name.folder == nil else {
            throw KhoError(.integrity, "wal/\(storedName.prefix(80)) is in the wrong folder for its name: something other than kho moved or wrote it; remove it after checking what put it there.")
        }
        self = name
    }
}

private func hex8(_ value: UInt32) -> String {
    let digits = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: 8 - digits.count) + digits
}

private func isUpperHexDigit(_ byte: UInt8) -> Bool { (48...57).contains(byte) || (65...70).contains(byte) }
private func isLowerHexDigit(_ byte: UInt8) -> Bool { (48...57).contains(byte) || (97...102).contains(byte) }
private func isHexDigit(_ byte: UInt8) -> Bool { isUpperHexDigit(byte) || isLowerHexDigit(byte) }
