import Foundation
import KhoSupport

/// What is archived of one cluster: the files under `wal/<sysid>/`, by kind, read from one
/// listing. Names that are not kho's (a file someone else put there) are kept apart as `foreign`
/// so that the caller can report them instead of them vanishing from view.
public struct WALInventory: Sendable {
    public var cluster: SystemIdentifier
    /// Segments by timeline, then by segment number, with when the storage last modified each
    /// (`distantPast` where the storage does not say).
    public var segments: [UInt32: [UInt64: Date]] = [:]
    public var histories: Set<UInt32> = []
    public var backups: [WALFileName] = []
    public var partials: [WALFileName] = []
    public var bytes: Int64 = 0
    public var foreign: [String] = []
    public let segmentSize: WALSegmentSize

    public init(cluster: SystemIdentifier, segmentSize: WALSegmentSize, files: [StoredFile]) {
        self.cluster = cluster
        self.segmentSize = segmentSize
        let prefix = "\(cluster)/"
        for file in files where file.name.hasPrefix(prefix) {
            let rest = file.name.dropFirst(prefix.count)
            if rest == "archive" || rest == "retired" { continue }
            guard let name = try? WALFileName(storedName: file.name) else {
                foreign.append(file.name)
                continue
            }
            bytes += Int64(file.size)
            switch name.kind {
            case .segment: segments[name.timeline, default: [:]][name.segmentNumber(segmentSize: segmentSize)] = file.modified ?? .distantPast
            case .history: histories.insert(name.timeline)
            case .backup: backups.append(name)
            case .partial: partials.append(name)
            }
        }
    }

    public var segmentCount: Int { segments.values.reduce(0) { $0 + $1.count } }

    /// The newest segment of all timelines (by position in the WAL, then timeline).
    public var newest: (name: WALFileName, modified: Date)? {
        var best: (UInt64, UInt32, Date)?
        for (timeline, numbers) in segments {
            for (number, modified) in numbers where best.map({ ($0.0, $0.1) < (number, timeline) }) ?? true {
                best = (number, timeline, modified)
            }
        }
        return best.map { (WALFileName.segment(timeline: $0.1, number: $0.0, segmentSize: segmentSize), $0.2) }
    }
}

/// Whether the WAL from a starting point is archived without a hole, following timeline switches
/// as recovery would (docs/design/pitr.md section 7): the file recovery reads for segment `s` is
/// on the newest timeline of the followed history that began at or before `s` (PostgreSQL reads
/// the segment holding a switch point from the new timeline).
public struct WALContinuity: Sendable, Equatable {
    /// The timeline whose history was followed.
    public var timeline: UInt32
    /// The first segment walked.
    public var first: WALFileName
    /// The last segment reached without a hole from `first`; nil when `first` itself is missing.
    public var reached: WALFileName?
    /// The first missing segment that has archived segments after it: a recovery through it
    /// stops there. Nil when what is missing is only the end (WAL not yet written or archived).
    public var gap: WALFileName?
    /// Segments archived after the gap (what a recovery could not use).
    public var stranded: Int

    public var isContinuous: Bool { gap == nil }

    /// The timeline's ancestry as `(timeline, begin segment)` pairs, oldest first, ending with
    /// `timeline` itself: where each ancestor takes over in the WAL.
    public static func ancestry(of timeline: UInt32, history: [WALTimelineSwitch], segmentSize: WALSegmentSize) -> [(timeline: UInt32, begin: UInt64)] {
        var result: [(UInt32, UInt64)] = []
        var begin: UInt64 = 0
        for entry in history {
            result.append((entry.parentTimeline, begin))
            begin = entry.switchPoint.segmentNumber(segmentSize: segmentSize)
        }
        result.append((timeline, begin))
        return result
    }

    /// Walks from segment `start` on `startTimeline`. `histories` holds the parsed history file of
    /// every timeline above 1 that the archive has; the followed timeline is the newest one whose
    /// ancestry passes through `startTimeline` after `start` (as `recovery_target_timeline =
    /// latest` would pick), or `startTimeline` when none does.
    public static func walk(_ inventory: WALInventory, startTimeline: UInt32, start: UInt64,
                            histories: [UInt32: [WALTimelineSwitch]]) -> WALContinuity {
        let size = inventory.segmentSize
        var followed = startTimeline
        var path = [(timeline: startTimeline, begin: UInt64(0))]
        for (timeline, history) in histories.sorted(by: { $0.key > $1.key }) where timeline > startTimeline {
            let candidate = ancestry(of: timeline, history: history, segmentSize: size)
            // The start timeline must be an ancestor that was still current at `start`.
            guard let index = candidate.firstIndex(where: { $0.timeline == startTimeline }) else { continue }
            let end = index + 1 < candidate.count ? candidate[index + 1].begin : UInt64.max
            guard start <= end else { continue }
            followed = timeline
            path = candidate
            break
        }
        func timeline(of segment: UInt64) -> UInt32 {
            var chosen = path[0].timeline
            for step in path where step.begin <= segment { chosen = step.timeline }
            return chosen
        }
        var reached: WALFileName?
        var number = start
        while true {
            let tli = timeline(of: number)
            guard inventory.segments[tli]?[number] != nil else { break }
            reached = .segment(timeline: tli, number: number, segmentSize: size)
            number += 1
        }
        let first = WALFileName.segment(timeline: timeline(of: start), number: start, segmentSize: size)
        guard path.contains(where: { (inventory.segments[$0.timeline]?.keys.contains { $0 > number }) ?? false }) else {
            return WALContinuity(timeline: followed, first: first, reached: reached, gap: nil, stranded: 0)
        }
        var stranded = 0
        for step in path {
            stranded += inventory.segments[step.timeline]?.keys.filter { $0 > number && timeline(of: $0) == step.timeline }.count ?? 0
        }
        return WALContinuity(timeline: followed, first: first, reached: reached,
                             gap: .segment(timeline: timeline(of: number), number: number, segmentSize: size), stranded: stranded)
    }
}

extension WALArchive {
    /// One listing of `cluster`'s archive.
    public static func inventory(of record: WALArchiveRecord, in repository: Repository) throws -> WALInventory {
        let cluster = try SystemIdentifier(parsing: record.cluster)
        let files = try repository.storage.list(.wal, under: cluster.description)
        return WALInventory(cluster: cluster, segmentSize: try WALSegmentSize(bytes: record.segmentSize), files: files)
    }

    /// The parsed history files the inventory lists (each fetched, opened and checked).
    public static func histories(of inventory: WALInventory, record: WALArchiveRecord, in repository: Repository) throws -> [UInt32: [WALTimelineSwitch]] {
        var result: [UInt32: [WALTimelineSwitch]] = [:]
        for timeline in inventory.histories.sorted() {
            let name = WALFileName.history(timeline: timeline)
            guard let bytes = try fetch(name: name, cluster: inventory.cluster, record: record, from: repository) else { continue }
            result[timeline] = try WALTextFile.history(bytes, name: name)
        }
        return result
    }
}
