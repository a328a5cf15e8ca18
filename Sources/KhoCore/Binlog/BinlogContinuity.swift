import Foundation
import KhoSupport

/// The stored files a replay from a dump's binary log position reads, in order, and where the
/// archive stops being continuous after them (docs/FORMAT.md section 22.1).
public struct BinlogChain: Sendable {
    /// From the dump's file on, each following the one before, each but the last whole.
    public var files: [BinlogStoredFile]
    /// Why the chain ends before the newest stored file, or nil when it reaches it: a file never
    /// stored, a hole, a file without its end. A replay that needs events past it cannot be made.
    public var gap: String?

    /// The chain of `inventory` from `file`, byte `position`.
    public static func from(_ inventory: BinlogInventory, file: BinlogFileName, position: UInt64, wholeSize: (BinlogFileName) throws -> UInt64?) throws -> BinlogChain {
        guard let start = inventory.files.firstIndex(where: { $0.name == file }) else {
            let first = inventory.files.first { $0.name.basename == file.basename }
            return BinlogChain(files: [], gap: first.map { "\(file), where the dump's position is, is not in the archive (it starts at \($0.name))" }
                               ?? "\(file), where the dump's position is, is not in the archive, which holds no file of \(file.basename).*")
        }
        var files: [BinlogStoredFile] = []
        var gap: String?
        var index = start
        while index < inventory.files.count {
            let current = inventory.files[index]
            if files.isEmpty && current.contiguous < position {
                gap = "\(current.name) is stored without a hole only to byte \(current.contiguous), before the dump's position \(position)"
                break
            }
            files.append(current)
            if current.holes {
                gap = "\(current.name) has a hole after byte \(current.contiguous)"
                break
            }
            guard index + 1 < inventory.files.count else { break }
            let next = inventory.files[index + 1]
            guard current.name.isFollowed(by: next.name) else {
                gap = "the files after \(current.name) up to \(next.name) are not in the archive"
                break
            }
            guard current.ended, try wholeSize(current.name) == current.contiguous else {
                gap = "\(current.name) is not stored to its end (\(current.contiguous) bytes) although the server went on to \(next.name)"
                break
            }
            index += 1
        }
        return BinlogChain(files: files, gap: gap)
    }
}

extension BinlogEvents {
    /// The time of the last event in `bytes` (whole events from an event boundary, or the file's
    /// start) that is before `bound`, and whether an event at or after `bound` follows.
    public static func lastTime(_ bytes: UnsafeRawBufferPointer, atFileStart: Bool, before bound: UInt32) -> (last: UInt32?, passed: Bool) {
        var at = atFileStart ? 4 : 0
        var last: UInt32?
        while bytes.count - at >= headerSize {
            let size = Int(bytes.loadUnaligned(fromByteOffset: at + 9, as: UInt32.self).littleEndian)
            guard size >= headerSize, at + size <= bytes.count else { break }
            let time = bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self).littleEndian
            if time != 0 {
                if time >= bound { return (last, true) }
                last = time
            }
            at += size
        }
        return (last, false)
    }
}
