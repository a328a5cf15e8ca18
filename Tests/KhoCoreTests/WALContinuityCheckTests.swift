import Foundation
import Testing
@testable import KhoCore
import KhoSupport

/// Continuity judged from the kept base backups, and what retention may remove
/// (docs/design/pitr.md section 7).
@Suite struct WALContinuityCheckTests {
    let cluster = SystemIdentifier(0x6b16_d156_c0f2_5a77)
    let size = WALSegmentSize.default

    func segment(_ number: UInt64) -> String {
        WALFileName.segment(timeline: 1, number: number, segmentSize: size).description
    }

    func inventory(_ numbers: [UInt64], extra: [String] = []) throws -> WALInventory {
        let files = try (numbers.map(segment) + extra).map { text -> StoredFile in
            let name = try WALFileName(parsing: text)
            return StoredFile(name: name.storedName(cluster: cluster), size: 100, modified: Date(timeIntervalSince1970: 1000 + Double(name.segmentNumber(segmentSize: size))))
        }
        return WALInventory(cluster: cluster, segmentSize: size, files: files)
    }

    func base(_ id: String, start: UInt64, end: UInt64, partial: Bool = false) throws -> Snapshot {
        let manifest = PhysicalBackupManifest(
            engine: "postgres", serverVersion: "16.4", majorVersion: 16, cluster: cluster.description, timeline: 1,
            startLSN: "0/0", endLSN: "0/0", startSegment: segment(start), endSegment: segment(end), segmentSize: size.bytes,
            blockSize: 8192, pageSize: 8192, dataChecksums: true,
            settings: .init(maxConnections: 100, maxWorkerProcesses: 8, maxWalSenders: 10, maxPreparedTransactions: 0, maxLocksPerTransaction: 64),
            superuser: "postgres", stopTime: Date(timeIntervalSince1970: 1000 + Double(end)), label: "kho", backupManifestSHA256: "", files: 1, bytes: 1)
        var s = Snapshot(time: Date(timeIntervalSince1970: 1000 + Double(start)), tree: BlobID(w0: 0, w1: 0, w2: 0, w3: 0), paths: ["/"],
                         hostname: "kho-1", username: "root", tags: ["base"], parent: nil,
                         source: SnapshotSource(kind: "postgres-base", name: "db1"), partial: partial, summary: nil, manifest: try manifest.json)
        s.id = id + String(repeating: "0", count: 64 - id.count)
        return s
    }

    @Test func holesBelowTheOldestBaseBackupAreNotGaps() throws {
        let bases = try WALBaseBackup.kept(in: [try base("aa", start: 10, end: 11)])[cluster.description] ?? []
        let inv = try inventory([3, 4, 6] + Array(10...14))
        #expect(WALContinuityCheck.gaps(inv, histories: [:], bases: bases).isEmpty)
        // Without a base backup, the walk starts at the oldest segment and the hole counts.
        #expect(WALContinuityCheck.gaps(inv, histories: [:], bases: []).first?.gap.description == segment(5))
    }

    @Test func aGapNamesTheBaseBackupsItCuts() throws {
        let kept = try WALBaseBackup.kept(in: [try base("aa", start: 10, end: 11), try base("bb", start: 20, end: 21),
                                                try base("cc", start: 15, end: 15, partial: true)])
        let bases = kept[cluster.description] ?? []
        #expect(bases.map(\.snapshot.shortID) == ["aa000000", "bb000000"])
        // 13 missing: cuts the first base backup only; 23 missing: cuts both.
        let between = WALContinuityCheck.gaps(try inventory(Array(10...12) + Array(14...25)), histories: [:], bases: bases)
        #expect(between.count == 1 && between[0].gap.description == segment(13))
        #expect(between[0].cuts.map(\.snapshot.shortID) == ["aa000000"])
        #expect(between[0].reached?.description == segment(12) && between[0].reachedStored == Date(timeIntervalSince1970: 1012))
        let after = WALContinuityCheck.gaps(try inventory(Array(10...22) + [24, 25]), histories: [:], bases: bases)
        #expect(after.count == 1 && after[0].cuts.map(\.snapshot.shortID) == ["aa000000", "bb000000"] && after[0].stranded == 2)
        let problems = WALContinuityCheck.problems(try inventory(Array(10...22) + [24, 25]), histories: [:], bases: bases)
        #expect(problems.count == 1 && problems[0].contains("cuts base backups aa000000, bb000000"))
    }

    @Test func aBaseBackupWithoutItsOwnWALIsReported() throws {
        let bases = try WALBaseBackup.kept(in: [try base("aa", start: 10, end: 12)])[cluster.description] ?? []
        let problems = WALContinuityCheck.problems(try inventory([10, 11]), histories: [:], bases: bases)
        #expect(problems.count == 1 && problems[0].contains("needs to become consistent"))
    }

    @Test func retentionRemovesOnlyBelowTheOldestKeptStart() throws {
        let backup = segment(4) + ".00000028.backup"
        let inv = try inventory(Array(3...12), extra: [backup, "00000002.history"])
        let removed = WALRetention.unneeded(inv, cutoff: 8).map(\.description)
        #expect(removed == [segment(3), segment(4), backup, segment(5), segment(6), segment(7)])
    }
}
