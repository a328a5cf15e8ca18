import Foundation
import Testing
@testable import KhoCore
import KhoSupport

/// Continuity of archived WAL from a starting segment, across timeline switches, as recovery
/// reads it (docs/design/pitr.md section 7).
@Suite struct WALContinuityTests {
    let cluster = SystemIdentifier(0x6b16_d156_c0f2_5a77)
    let size = WALSegmentSize.default

    func inventory(_ names: [String]) throws -> WALInventory {
        let files = try names.map { text -> StoredFile in
            let name = try WALFileName(parsing: text)
            return StoredFile(name: name.storedName(cluster: cluster), size: 100, modified: Date(timeIntervalSince1970: 1000))
        }
        return WALInventory(cluster: cluster, segmentSize: size, files: files + [StoredFile(name: "\(cluster)/archive", size: 10)])
    }

    func segment(_ timeline: UInt32, _ number: UInt64) -> String {
        WALFileName.segment(timeline: timeline, number: number, segmentSize: size).description
    }

    @Test func continuousRunReachesTheNewestSegment() throws {
        let inv = try inventory((3...9).map { segment(1, $0) })
        #expect(inv.segmentCount == 7 && inv.foreign.isEmpty)
        let walk = WALContinuity.walk(inv, startTimeline: 1, start: 3, histories: [:])
        #expect(walk.isContinuous)
        #expect(walk.reached?.description == segment(1, 9))
        #expect(inv.newest?.name.description == segment(1, 9))
    }

    @Test func aMissingSegmentWithLaterOnesIsAGap() throws {
        let inv = try inventory([3, 4, 6, 7, 8].map { segment(1, $0) })
        let walk = WALContinuity.walk(inv, startTimeline: 1, start: 3, histories: [:])
        #expect(!walk.isContinuous)
        #expect(walk.reached?.description == segment(1, 4))
        #expect(walk.gap?.description == segment(1, 5))
        #expect(walk.stranded == 3)
    }

    @Test func theStartItselfMissingIsAGapWhenLaterOnesExist() throws {
        let inv = try inventory([4, 5].map { segment(1, $0) })
        let walk = WALContinuity.walk(inv, startTimeline: 1, start: 3, histories: [:])
        #expect(walk.reached == nil)
        #expect(walk.gap?.description == segment(1, 3))
    }

    @Test func missingOnlyAtTheEndIsNoGap() throws {
        let inv = try inventory([3, 4].map { segment(1, $0) })
        let walk = WALContinuity.walk(inv, startTimeline: 1, start: 3, histories: [:])
        #expect(walk.isContinuous && walk.reached?.description == segment(1, 4))
    }

    /// Timeline 2 branched from 1 inside segment 6: segment 6 is read from timeline 2, and timeline
    /// 1's later segments (written before the promotion was noticed, or by the old primary) are
    /// not on the followed path.
    @Test func followsTheNewestTimelineThroughItsSwitchSegment() throws {
        let switchPoint = LSN(6 * UInt64(size.bytes) + 0x1000)
        let history = [WALTimelineSwitch(parentTimeline: 1, switchPoint: switchPoint, reason: "no recovery target specified")]
        var names = (3...6).map { segment(1, $0) } + (6...8).map { segment(2, $0) } + ["00000002.history"]
        var inv = try inventory(names)
        var walk = WALContinuity.walk(inv, startTimeline: 1, start: 3, histories: [2: history])
        #expect(walk.timeline == 2)
        #expect(walk.isContinuous && walk.reached?.description == segment(2, 8))
        #expect(inv.histories == [2])

        // Without timeline 2's copy of the switch segment, the walk stops before it: a gap,
        // because timeline 2 goes on after it.
        names.removeAll { $0 == segment(2, 6) }
        inv = try inventory(names)
        walk = WALContinuity.walk(inv, startTimeline: 1, start: 3, histories: [2: history])
        #expect(walk.gap?.description == segment(2, 6))
        #expect(walk.reached?.description == segment(1, 5))
    }

    /// A base backup taken after timeline 2 branched from 1 does not follow timeline 2.
    @Test func aStartPastTheSwitchStaysOnItsTimeline() throws {
        let history = [WALTimelineSwitch(parentTimeline: 1, switchPoint: LSN(4 * UInt64(size.bytes)), reason: "")]
        let inv = try inventory((3...9).map { segment(1, $0) } + (4...5).map { segment(2, $0) })
        let walk = WALContinuity.walk(inv, startTimeline: 1, start: 7, histories: [2: history])
        #expect(walk.timeline == 1 && walk.isContinuous && walk.reached?.description == segment(1, 9))
    }

    @Test func namesThatAreNotKhosAreSetApart() throws {
        var files = [StoredFile(name: "\(cluster)/0000000100000000/not-a-wal-file", size: 1),
                     StoredFile(name: "\(cluster)/0000000100000001/000000010000000000000003", size: 1)]
        files.append(StoredFile(name: "\(cluster)/retired", size: 1))
        let inv = WALInventory(cluster: cluster, segmentSize: size, files: files)
        #expect(inv.foreign.count == 2)
        #expect(inv.segmentCount == 0)
    }
}

/// Which WAL no kept base backup needs: everything positioned before the oldest one's start,
/// oldest first; history files are never among it.
@Suite struct WALRetentionTests {
    @Test func removesOnlyWhatPrecedesTheOldestKeptStart() throws {
        let cluster = SystemIdentifier(0x6b16_d156_c0f2_5a77)
        let size = WALSegmentSize.default
        func name(_ text: String) throws -> StoredFile {
            StoredFile(name: try WALFileName(parsing: text).storedName(cluster: cluster), size: 10)
        }
        let files = try [
            "000000010000000000000001", "000000010000000000000002", "000000010000000000000002.00000028.backup",
            "000000010000000000000003", "000000010000000000000004.partial", "000000020000000000000004",
            "000000020000000000000005", "00000002.history",
        ].map(name)
        let inventory = WALInventory(cluster: cluster, segmentSize: size, files: files)
        let unneeded = WALRetention.unneeded(inventory, cutoff: 4).map(\.description)
        #expect(unneeded == ["000000010000000000000001", "000000010000000000000002", "000000010000000000000002.00000028.backup",
                             "000000010000000000000003"])
        #expect(WALRetention.unneeded(inventory, cutoff: 0).isEmpty)
        #expect(WALRetention.unneeded(inventory, cutoff: 100).count == 7)
    }
}
