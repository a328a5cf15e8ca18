import Foundation
import KhoSupport

/// What a run of binary log events holds, read from their common headers (format v4: timestamp
/// u32, type u8, server_id u32, event_size u32, log_pos u32, flags u16, little-endian).
public struct BinlogEventScan: Sendable, Equatable {
    /// Bytes of whole events (and the file's 4-byte magic when the run starts the file); 0 when
    /// the run holds no whole event.
    public var wholeBytes = 0
    public var events = 0
    /// Seconds since 1970 of the first and last event that carry a time (artificial events carry 0).
    public var firstTime: UInt32?
    public var lastTime: UInt32?
}

public enum BinlogEvents {
    public static let magic: [UInt8] = [0xfe, 0x62, 0x69, 0x6e]
    public static let headerSize = 19

    /// Walks the events in `bytes`, which start at a file offset that is an event boundary, or at
    /// 0 (`atFileStart`, the magic first). Stops before an event that is not whole in `bytes` or
    /// would take the run past `limit` bytes; an event that cannot be one (shorter than its
    /// header) is an integrity error: the spooled file is not a binary log.
    public static func scan(_ bytes: UnsafeRawBufferPointer, atFileStart: Bool, limit: Int, file: String) throws -> BinlogEventScan {
        var scan = BinlogEventScan()
        var at = 0
        if atFileStart {
            guard bytes.count >= 4 else { return scan }
            guard bytes[0] == magic[0], bytes[1] == magic[1], bytes[2] == magic[2], bytes[3] == magic[3] else {
                throw KhoError(.integrity, "\(file) does not start as a binary log (no \\xfebin magic): it was not archived; check what mariadb-binlog wrote into the spool.")
            }
            at = 4
        }
        let end = min(bytes.count, limit)
        while bytes.count - at >= headerSize {
            let size = Int(bytes.loadUnaligned(fromByteOffset: at + 9, as: UInt32.self).littleEndian)
            guard size >= headerSize else {
                throw KhoError(.integrity, "\(file) holds an event of \(size) bytes at offset \(at) of the run, shorter than an event header: it was not archived; the spooled file is damaged or not a binary log.")
            }
            guard at + size <= end else { break }
            let time = bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self).littleEndian
            if time != 0 {
                if scan.firstTime == nil { scan.firstTime = time }
                scan.lastTime = time
            }
            scan.events += 1
            at += size
        }
        scan.wholeBytes = scan.events == 0 ? 0 : at
        return scan
    }
}
