import Foundation
import KhoSupport

/// What `kho wal ls` shows of the archived clusters: per cluster and timeline, the first and last
/// segment, how many and how many stored bytes, and the holes between first and last. A simple walk
/// over one listing: which segments a base backup needs is the continuity check's business.
public struct WALClusterSummary: Codable, Sendable {
    public struct Gap: Codable, Sendable, Equatable {
        /// The first and last missing segment.
        public var first: String
        public var last: String
        public var count: UInt64
    }

    public struct Timeline: Codable, Sendable {
        public var timeline: UInt32
        public var first: String
        public var last: String
        public var segments: Int
        /// Bytes as stored (sealed, compressed), segments and every other file of the timeline.
        public var storedBytes: Int64
        public var gaps: [Gap]
        public var partials: [String]
        public var backups: [String]
        /// Whether `TTTTTTTT.history` is archived (timeline 1 has none).
        public var history: Bool
    }

    public var record: WALArchiveRecord
    /// The marker `kho wal adopt` wrote, when the cluster is retired.
    public var retired: WALRetirement?
    public var timelines: [Timeline]
    /// Files under the cluster's folder that are not where kho stores a WAL file.
    public var unexpected: [String]

    /// Every cluster archived for `source` (all clusters when nil), oldest first.
    public static func list(source: String?, in repository: Repository) throws -> [WALClusterSummary] {
        let inventory = try WALArchive.inventory(in: repository, openingRetirements: true)
        var byCluster: [String: [StoredFile]] = [:]
        for file in inventory.files {
            guard let slash = file.name.firstIndex(of: "/") else { continue }
            byCluster[String(file.name[..<slash]), default: []].append(file)
        }
        return try inventory.records.filter { source == nil || $0.source == source }.map { record in
            try summarize(record: record, retired: inventory.retirements[record.cluster], files: byCluster[record.cluster] ?? [])
        }
    }

    static func summarize(record: WALArchiveRecord, retired: WALRetirement?, files: [StoredFile]) throws -> WALClusterSummary {
        let segmentSize = try WALSegmentSize(bytes: record.segmentSize)
        struct Collect { var numbers: [UInt64] = []; var bytes: Int64 = 0; var partials: [String] = []; var backups: [String] = []; var history = false }
        var timelines: [UInt32: Collect] = [:]
        var unexpected: [String] = []
        for file in files {
            let leaf = file.name.split(separator: "/").last.map(String.init) ?? ""
            if file.name == "\(record.cluster)/archive" || file.name == "\(record.cluster)/retired" { continue }
            guard let name = try? WALFileName(storedName: file.name) else {
                unexpected.append(file.name)
                continue
            }
            var entry = timelines[name.timeline, default: Collect()]
            entry.bytes += Int64(file.size)
            switch name.kind {
            case .segment: entry.numbers.append(name.segmentNumber(segmentSize: segmentSize))
            case .partial: entry.partials.append(leaf)
            case .backup: entry.backups.append(leaf)
            case .history: entry.history = true
            }
            timelines[name.timeline] = entry
        }
        var result: [Timeline] = []
        for (timeline, entry) in timelines.sorted(by: { $0.key < $1.key }) {
            let numbers = entry.numbers.sorted()
            var gaps: [Gap] = []
            for (a, b) in zip(numbers, numbers.dropFirst()) where b > a + 1 {
                gaps.append(Gap(first: WALFileName.segment(timeline: timeline, number: a + 1, segmentSize: segmentSize).description,
                                last: WALFileName.segment(timeline: timeline, number: b - 1, segmentSize: segmentSize).description,
                                count: b - a - 1))
            }
            let name = { (n: UInt64) in WALFileName.segment(timeline: timeline, number: n, segmentSize: segmentSize).description }
            result.append(Timeline(timeline: timeline, first: numbers.first.map(name) ?? "", last: numbers.last.map(name) ?? "",
                                   segments: numbers.count, storedBytes: entry.bytes, gaps: gaps,
                                   partials: entry.partials.sorted(), backups: entry.backups.sorted(), history: entry.history))
        }
        return WALClusterSummary(record: record, retired: retired, timelines: result, unexpected: unexpected.sorted())
    }
}
