import Foundation
import KhoSupport

/// One stored binary log file as `kho binlog ls` shows it.
public struct BinlogFileSummary: Codable, Sendable {
    public var file: String
    /// Bytes of the file stored without a hole from its start.
    public var bytes: UInt64
    public var pieces: Int
    public var storedBytes: Int
    /// The server moved on to the next file and the whole file is stored.
    public var whole: Bool
    public var firstEvent: String?
    public var lastEvent: String?
}

/// A source's binary log archive: its server, its files, and what is missing between them.
public struct BinlogArchiveSummary: Codable, Sendable {
    public var source: String
    public var archive: String
    public var record: BinlogArchiveRecord?
    public var files: [BinlogFileSummary]
    /// Each a sentence naming what is missing (a file, bytes of a file, an end).
    public var gaps: [String]
    public var strays: [String]
}

extension BinlogArchive {
    /// The archive as stored; `times` opens each file's first and last piece for its event times.
    public func summary(times: Bool) throws -> BinlogArchiveSummary {
        let inventory = try self.inventory()
        var files: [BinlogFileSummary] = []
        for file in inventory.files {
            var entry = BinlogFileSummary(file: file.name.description, bytes: file.contiguous, pieces: file.pieces.count,
                                          storedBytes: file.storedBytes, whole: false)
            if file.ended, !file.holes {
                entry.whole = try fileEnd(file.name).size == file.contiguous
            }
            if times, let first = file.pieces.first, let last = file.pieces.last {
                entry.firstEvent = try load(first).meta.firstEvent
                entry.lastEvent = try load(last).meta.lastEvent
            }
            files.append(entry)
        }
        return BinlogArchiveSummary(source: source, archive: id.description, record: try record(), files: files,
                                    gaps: BinlogArchive.gaps(inventory.files, whole: files.map(\.whole)), strays: inventory.strays)
    }

    /// What is missing between the first stored file and the last: files never stored, holes in
    /// a file, a file the server left that has no whole end stored.
    public static func gaps(_ files: [BinlogStoredFile], whole: [Bool]) -> [String] {
        var gaps: [String] = []
        for (i, file) in files.enumerated() {
            // The oldest file without its beginning is one retention was removing: no replay
            // reads it (a replay needs a file from its start), so only what follows it counts.
            let retiring = i == 0 && file.pieces.first?.offset != 0
            if file.holes && !retiring { gaps.append("\(file.name) has a hole after byte \(file.contiguous)") }
            guard i + 1 < files.count else { break }
            let next = files[i + 1].name
            if !file.name.isFollowed(by: next) {
                gaps.append(file.name.basename == next.basename
                    ? "the files between \(file.name) and \(next) are missing" : "\(file.name) is followed by \(next), another server's file stem")
            } else if !whole[i] && !file.holes && !retiring {
                gaps.append("\(file.name) is not stored to its end (\(file.contiguous) bytes) although the server went on to \(next)")
            }
        }
        return gaps
    }
}
