import KhoSupport

/// The long header at the start of every WAL segment's first page (`XLogLongPageHeaderData` in
/// PostgreSQL's `access/xlog_internal.h`), little-endian on every platform kho supports:
///
/// | offset | size | field |
/// | --- | --- | --- |
/// | 0 | 2 | `xlp_magic`: WAL format version (0xD110 for PostgreSQL 15, 0xD113 for 16, 0xD116 for 17) |
/// | 2 | 2 | `xlp_info`: flags; `XLP_LONG_HEADER` (0x0002) is set on a segment's first page |
/// | 4 | 4 | `xlp_tli`: timeline of the page |
/// | 8 | 8 | `xlp_pageaddr`: WAL position of the page, the segment's start LSN |
/// | 16 | 4 | `xlp_rem_len`: bytes of a record continued from the previous segment |
/// | 20 | 4 | padding |
/// | 24 | 8 | `xlp_sysid`: the cluster's system identifier |
/// | 32 | 4 | `xlp_seg_size`: the cluster's WAL segment size |
/// | 36 | 4 | `xlp_xlog_blcksz`: the WAL page size |
public struct WALSegmentHeader: Hashable, Sendable {
    public var magic: UInt16
    public var info: UInt16
    public var timeline: UInt32
    public var pageAddress: LSN
    public var remainingLength: UInt32
    public var systemIdentifier: SystemIdentifier
    public var segmentSize: UInt32
    public var blockSize: UInt32

    /// The bytes the long header takes.
    public static let size = 40
    static let longHeaderFlag: UInt16 = 0x0002

    /// Reads the long header from the first bytes of a segment. Throws when there are fewer than
    /// 40 bytes or the long-header flag is not set (not the first page of a segment, or not WAL).
    public init(parsing bytes: some Collection<UInt8>, file: String) throws {
        let head = Array(bytes.prefix(Self.size))
        guard head.count == Self.size else {
            throw KhoError(.source, "\(file) is \(head.count) bytes, shorter than a WAL segment's header (\(Self.size) bytes): it is not a WAL segment; check what wrote it.")
        }
        func u16(_ at: Int) -> UInt16 { UInt16(head[at]) | UInt16(head[at + 1]) << 8 }
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(head[at + $1]) << (8 * UInt32($1)) } }
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(head[at + $1]) << (8 * UInt64($1)) } }
        magic = u16(0)
        info = u16(2)
        timeline = u32(4)
        pageAddress = LSN(u64(8))
        remainingLength = u32(16)
        systemIdentifier = SystemIdentifier(u64(24))
        segmentSize = u32(32)
        blockSize = u32(36)
        guard info & Self.longHeaderFlag != 0 else {
            throw KhoError(.source, "\(file) does not start with a WAL segment's long page header (flag 0x0002 missing in xlp_info \(String(info, radix: 16))): it is not the start of a WAL segment; check what wrote it.")
        }
    }

    /// What the archive expects of every segment it accepts.
    public struct Expectation: Sendable {
        public var cluster: SystemIdentifier
        public var segmentSize: WALSegmentSize
        /// The archive's WAL page size (`wal_block_size`, 8192 unless PostgreSQL was built otherwise).
        public var blockSize: UInt32
        /// The archive's server version's `XLOG_PAGE_MAGIC`.
        public var magic: UInt16

        public init(cluster: SystemIdentifier, segmentSize: WALSegmentSize, blockSize: UInt32 = 8192, magic: UInt16) {
            self.cluster = cluster
            self.segmentSize = segmentSize
            self.blockSize = blockSize
            self.magic = magic
        }
    }

    /// Checks the header against the file's name and the archive: same cluster, segment size,
    /// page size and WAL version, the name's timeline, and a page address that is the named
    /// segment's start. The last catches a recycled segment (PostgreSQL renames old segment files
    /// to future names; until rewritten they hold an older segment's header) and a segment saved
    /// under another segment's name.
    public func validate(as name: WALFileName, against expected: Expectation) throws {
        func refuse(_ what: String) -> KhoError {
            KhoError(.source, "\(name) is not a segment of this archive (\(what)): it was refused and nothing was stored; check that archive_command runs on the cluster this archive belongs to, or set up a new archive with `kho wal adopt`.")
        }
        guard name.kind == .segment || name.kind == .partial else { throw refuse("it is a \(name.kind.rawValue) file, not a segment") }
        guard systemIdentifier == expected.cluster else {
            throw refuse("system identifier \(systemIdentifier), the archive's cluster is \(expected.cluster)")
        }
        guard Int(segmentSize) == expected.segmentSize.bytes else {
            throw refuse("segment size \(segmentSize) bytes, the archive's is \(expected.segmentSize.bytes)")
        }
        guard blockSize == expected.blockSize else { throw refuse("WAL page size \(blockSize), the archive's is \(expected.blockSize)") }
        guard magic == expected.magic else {
            throw refuse("WAL format 0x\(String(magic, radix: 16)), the archive's server writes 0x\(String(expected.magic, radix: 16))")
        }
        guard timeline == name.timeline else { throw refuse("its header says timeline \(timeline)") }
        try name.validate(segmentSize: expected.segmentSize)
        let start = name.startLSN(segmentSize: expected.segmentSize)
        guard pageAddress == start else {
            throw refuse("its first page is at \(pageAddress), the segment starts at \(start): a recycled file or another segment's content")
        }
    }
}
