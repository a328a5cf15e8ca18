import Foundation
import Testing
@testable import KhoCore
import KhoSupport
import KhoTestSupport

/// Names, positions, headers and objects of archived WAL (docs/FORMAT.md section 20).
@Suite struct WALFileNameTests {
    @Test func segmentNamesParseAndPrintBack() throws {
        let name = try WALFileName(parsing: "000000030000000700000FF2")
        #expect(name.kind == .segment)
        #expect(name.timeline == 3 && name.log == 7 && name.segmentInLog == 0xFF2)
        #expect(name.description == "000000030000000700000FF2")
        #expect(name.folder == "0000000300000007")
        let cluster = SystemIdentifier(0x6b16_d156_c0f2_5a77)
        #expect(name.storedName(cluster: cluster) == "6b16d156c0f25a77/0000000300000007/000000030000000700000FF2")
        #expect(name.handle(cluster: cluster).path == "wal/6b16d156c0f25a77/0000000300000007/000000030000000700000FF2")
        #expect(try WALFileName(storedName: name.storedName(cluster: cluster)) == name)
    }

    @Test func partialHistoryAndBackupNames() throws {
        let partial = try WALFileName(parsing: "00000001000000000000000A.partial")
        #expect(partial.kind == .partial && partial.segmentName?.description == "00000001000000000000000A")
        #expect(partial.description == "00000001000000000000000A.partial")
        let history = try WALFileName(parsing: "0000000A.history")
        #expect(history.kind == .history && history.timeline == 10 && history.folder == nil && history.segmentName == nil)
        #expect(history.storedName(cluster: SystemIdentifier(1)) == "0000000000000001/0000000A.history")
        #expect(try WALFileName(storedName: "0000000000000001/0000000A.history") == history)
        let backup = try WALFileName(parsing: "000000010000000000000002.00000028.backup")
        #expect(backup.kind == .backup && backup.backupOffset == 0x28)
        #expect(backup.folder == "0000000100000000")
        #expect(backup.startLSN(segmentSize: .default) == LSN(0x0200_0028))
        #expect(backup.description == "000000010000000000000002.00000028.backup")
    }

    /// Names PostgreSQL never gives an archived file: each is refused before it reaches a path.
    @Test(arguments: [
        "", "0", "00000001000000000000000", "0000000100000000000000011", "00000001000000000000000a",
        "000000000000000000000001", "00000000.history", "0000000A.HISTORY", "0000000a.history",
        "../../../../etc/passwd", "000000010000000000000001/", "/000000010000000000000001",
        "00000001000000000000000G", "0000000100000000000000 1", "00000001000000000000000\u{0}",
        "000000010000000000000001.partial2", "000000010000000000000001.PARTIAL", "000000010000000000000001.tmp",
        "000000010000000000000001.0000002.backup", "000000010000000000000001.00000028.backup.", "000000010000000000000001.0000002g.backup",
        "000000010000000000000001.00000028-backup", "0000000100000000000000010000000000000001",
        "０００００００１000000000000001", "00000001.history\n", " 000000010000000000000001",
        String(repeating: "0", count: 10_000),
    ])
    func hostileNamesAreRefused(_ text: String) {
        #expect(throws: KhoError.self, "\(text.prefix(50).debugDescription)") { try WALFileName(parsing: text) }
    }

    @Test func storedNamesInTheWrongFolderAreRefused() {
        for stored in ["6b16d156c0f25a77/0000000300000008/000000030000000700000FF2",
                       "6b16d156c0f25a77/000000030000000700000FF2",
                       "6b16d156c0f25a77/0000000300000007/00000003.history",
                       "6B16D156C0F25A77/0000000300000007/000000030000000700000FF2",
                       "6b16d156c0f25a77/x/0000000300000007/000000030000000700000FF2",
                       "6b16d156c0f25a77/archive", "../0000000300000007/000000030000000700000FF2"] {
            #expect(throws: KhoError.self, "\(stored)") { try WALFileName(storedName: stored) }
        }
    }

    @Test func segmentsMustFitTheSegmentSize() throws {
        let last16 = try WALFileName(parsing: "0000000100000000000000FF")
        try last16.validate(segmentSize: .default)
        #expect(throws: KhoError.self) { try WALFileName(parsing: "000000010000000000000100").validate(segmentSize: .default) }
        // 1 MiB segments: 4096 per log.
        let small = try WALSegmentSize(bytes: 1 << 20)
        try WALFileName(parsing: "000000010000000000000FFF").validate(segmentSize: small)
        #expect(throws: KhoError.self) { try WALFileName(parsing: "000000010000000000001000").validate(segmentSize: small) }
        // A backup offset past its segment's end.
        #expect(throws: KhoError.self) { try WALFileName(parsing: "000000010000000000000001.01000000.backup").validate(segmentSize: .default) }
        for bad in [0, 1 << 19, 3 << 20, 2 << 30, -16 << 20] {
            #expect(throws: KhoError.self, "\(bad)") { try WALSegmentSize(bytes: bad) }
        }
    }
}

@Suite struct LSNTests {
    @Test func printsAndParsesAsPostgreSQL() throws {
        #expect(LSN(0x16_B374_D848).description == "16/B374D848")
        #expect(LSN(0).description == "0/0")
        #expect(try LSN(parsing: "16/B374D848") == LSN(0x16_B374_D848))
        #expect(try LSN(parsing: "0/1") == LSN(1))
        #expect(try LSN(parsing: "ffffffff/ffffffff") == LSN(UInt64.max))
        for bad in ["", "/", "1/", "/1", "1/2/3", "123456789/0", "G/0", "-1/0", " 1/0", "1/0 "] {
            #expect(throws: KhoError.self, "\(bad)") { try LSN(parsing: bad) }
        }
    }

    @Test func segmentMath() throws {
        let size16 = WALSegmentSize.default
        let lsn = LSN(0x16_B374_D848)
        // 0x16B374D848 / 16 MiB = 0x16B3 → log 0x16, segment 0xB3.
        #expect(lsn.segmentNumber(segmentSize: size16) == 0x16B3)
        #expect(lsn.offsetInSegment(segmentSize: size16) == 0x74D848)
        let name = WALFileName.segment(timeline: 1, containing: lsn, segmentSize: size16)
        #expect(name.description == "0000000100000016000000B3")
        #expect(name.startLSN(segmentSize: size16) == LSN(0x16_B300_0000))
        #expect(name.segmentNumber(segmentSize: size16) == 0x16B3)
        // 64 MiB segments: 64 per log; number 0x80 is log 2, segment 0.
        let size64 = try WALSegmentSize(bytes: 64 << 20)
        #expect(WALFileName.segment(timeline: 2, number: 0x80, segmentSize: size64).description == "000000020000000200000000")
        #expect(try WALFileName(parsing: "00000002000000010000003F").startLSN(segmentSize: size64) == LSN(0x1_FC00_0000))
        // 1 GiB segments: 4 per log.
        let size1G = try WALSegmentSize(bytes: 1 << 30)
        #expect(WALFileName.segment(timeline: 1, containing: LSN(0x5_C000_0000), segmentSize: size1G).description == "000000010000000500000003")
        // Every segment name round-trips through its number.
        for size in [WALSegmentSize.default, size64, size1G, try WALSegmentSize(bytes: 1 << 20)] {
            for number: UInt64 in [0, 1, 255, 256, 4095, 4096, 123_456, (1 << 32) - 1] {
                let name = WALFileName.segment(timeline: 7, number: number, segmentSize: size)
                #expect(try WALFileName(parsing: name.description) == name)
                #expect(name.segmentNumber(segmentSize: size) == number)
                #expect(name.startLSN(segmentSize: size).segmentNumber(segmentSize: size) == number)
            }
        }
    }

    @Test func systemIdentifiers() throws {
        #expect(SystemIdentifier(0x6b16_d153_5049_2971).description == "6b16d15350492971")
        #expect(SystemIdentifier(1).description == "0000000000000001")
        #expect(try SystemIdentifier(parsing: "6b16d15350492971") == SystemIdentifier(0x6b16_d153_5049_2971))
        for bad in ["6B16D15350492971", "6b16d1535049297", "6b16d153504929711", "../../../etc/pas", ""] {
            #expect(throws: KhoError.self, "\(bad)") { try SystemIdentifier(parsing: bad) }
        }
    }
}

/// First pages of segments a real PostgreSQL 15 wrote (Tests/Fixtures/postgres/wal, made by its
/// make-fixtures.sh): 16 MiB segments on timeline 1, 1 MiB segments on timeline 3 from log 7 and
/// 64 MiB segments on timeline 2 across a log boundary (pg_resetwal -l chose where each began).
@Suite struct WALSegmentHeaderTests {
    struct Fixture {
        var sysid: SystemIdentifier
        var segmentSize: WALSegmentSize
        var name: WALFileName
        var page: [UInt8]
    }

    static func fixtures() throws -> [Fixture] {
        let folder = TestPaths.packageRoot + "/Tests/Fixtures/postgres/wal"
        return try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".page") }.sorted().map { file in
            let parts = file.dropLast(5).split(separator: "-")
            let megabytes = try #require(Int(parts[1].dropLast()))
            return Fixture(sysid: try SystemIdentifier(parsing: parts[2]), segmentSize: try WALSegmentSize(bytes: megabytes << 20),
                           name: try WALFileName(parsing: parts[3]), page: Array(try Data(contentsOf: URL(fileURLWithPath: folder + "/" + file))))
        }
    }

    @Test func realFirstPagesParseAndValidate() throws {
        let fixtures = try Self.fixtures()
        #expect(fixtures.count >= 9)
        var accepted: Set<SystemIdentifier> = []
        for fixture in fixtures {
            let header = try WALSegmentHeader(parsing: fixture.page, file: fixture.name.description)
            #expect(header.systemIdentifier == fixture.sysid, "\(fixture.name)")
            #expect(Int(header.segmentSize) == fixture.segmentSize.bytes, "\(fixture.name)")
            #expect(header.blockSize == 8192)
            #expect(header.magic == 0xD110, "PostgreSQL 15's XLOG_PAGE_MAGIC")
            #expect(header.timeline == fixture.name.timeline)
            let expected = WALSegmentHeader.Expectation(cluster: fixture.sysid, segmentSize: fixture.segmentSize, magic: 0xD110)
            let start = fixture.name.startLSN(segmentSize: fixture.segmentSize)
            if header.pageAddress == start {
                try header.validate(as: fixture.name, against: expected)
                accepted.insert(fixture.sysid)
            } else {
                // PostgreSQL renamed an old segment to a future name (recycling): its header is
                // still the old segment's, and such a file must never be archived under the name.
                #expect(header.pageAddress < start, "\(fixture.name)")
                #expect(throws: KhoError.self, "recycled \(fixture.name)") { try header.validate(as: fixture.name, against: expected) }
            }
        }
        #expect(accepted.count == 3, "each fixture cluster has a current segment whose header matches its name")
    }

    @Test func mismatchesAreRefused() throws {
        let fixture = try #require(try Self.fixtures().first {
            (try? WALSegmentHeader(parsing: $0.page, file: "").pageAddress) == $0.name.startLSN(segmentSize: $0.segmentSize)
        })
        let header = try WALSegmentHeader(parsing: fixture.page, file: "x")
        let good = WALSegmentHeader.Expectation(cluster: fixture.sysid, segmentSize: fixture.segmentSize, magic: 0xD110)
        try header.validate(as: fixture.name, against: good)
        var otherCluster = good; otherCluster.cluster = SystemIdentifier(fixture.sysid.value ^ 1)
        var otherSize = good; otherSize.segmentSize = try WALSegmentSize(bytes: fixture.segmentSize.bytes == 1 << 20 ? 2 << 20 : 1 << 20)
        var otherVersion = good; otherVersion.magic = 0xD113
        var otherBlock = good; otherBlock.blockSize = 16384
        for (what, expectation) in [("cluster", otherCluster), ("segment size", otherSize), ("version", otherVersion), ("block size", otherBlock)] {
            #expect(throws: KhoError.self, "\(what)") { try header.validate(as: fixture.name, against: expectation) }
        }
        // The same bytes under the next segment's name, another timeline's, or as a history file.
        let number = fixture.name.segmentNumber(segmentSize: fixture.segmentSize)
        for name in [WALFileName.segment(timeline: fixture.name.timeline, number: number + 1, segmentSize: fixture.segmentSize),
                     WALFileName.segment(timeline: fixture.name.timeline + 1, number: number, segmentSize: fixture.segmentSize),
                     WALFileName.history(timeline: 2)] {
            #expect(throws: KhoError.self, "\(name)") { try header.validate(as: name, against: good) }
        }
        // Not a first page: the long-header flag cleared; and too short.
        var page = fixture.page
        page[2] &= ~0x02
        #expect(throws: KhoError.self) { try WALSegmentHeader(parsing: page, file: "x") }
        #expect(throws: KhoError.self) { try WALSegmentHeader(parsing: fixture.page.prefix(39), file: "x") }
    }
}

@Suite struct WALObjectTests {
    let sealer: Sealer
    init() throws { sealer = try Sealer(key: SecretBytes((0..<32).map { UInt8($0 * 7 & 0xff) })) }

    func object(_ file: [UInt8], _ name: WALFileName, _ cluster: SystemIdentifier, level: Int = 3) throws -> [UInt8] {
        let meta = WALObjectMeta(cluster: cluster, name: name, size: file.count, sha256: try SHA256.hash(file).hex,
                                 segmentSize: .default, pageMagic: name.kind == .segment ? 0xD110 : nil,
                                 pushed: Date(timeIntervalSince1970: 1_800_000_000), host: "db1", key: "k")
        return try WALObject.seal(file: file, meta: meta, cluster: cluster, name: name, sealer: sealer, compressionLevel: level)
    }

    @Test func roundTripCompressedAndNot() throws {
        let cluster = SystemIdentifier(0x6b16_d153_5049_2971)
        let name = try WALFileName(parsing: "000000010000000000000003")
        var rng = SplitMix64(seed: 3)
        // A segment closed early: some WAL, then zeros, which compress away.
        let file = rng.bytes(100_000) + [UInt8](repeating: 0, count: (16 << 20) - 100_000)
        for level in [0, 3] {
            let sealed = try object(file, name, cluster, level: level)
            if level > 0 { #expect(sealed.count < 1 << 20) } else { #expect(sealed.count > 16 << 20) }
            let opened = try WALObject.open(sealed, cluster: cluster, name: name, sealer: sealer)
            #expect(opened.file == file)
            #expect(opened.meta.name == "000000010000000000000003" && opened.meta.cluster == "6b16d15350492971")
            #expect(opened.meta.kind == .segment && opened.meta.pageMagic == "d110" && opened.meta.timeline == 1)
            #expect(opened.meta.pushed == "2027-01-15T08:00:00.000000000Z")
        }
        #expect(WALObject.context(cluster: cluster, name: name) == Array("kho/wal:6b16d15350492971/000000010000000000000003".utf8))
        #expect(WALObject.recordContext(cluster: cluster).count != 32)
        #expect(WALObject.context(cluster: cluster, name: .history(timeline: 2)).count == 41)
    }

    /// An authentic object saved under another file's name, or another cluster's, does not open.
    @Test func anAuthenticObjectUnderAnotherNameIsRefused() throws {
        let cluster = SystemIdentifier(0x6b16_d153_5049_2971)
        let name = try WALFileName(parsing: "000000010000000000000003")
        let sealed = try object([1, 2, 3, 4], name, cluster)
        for (otherCluster, otherName) in [(cluster, try WALFileName(parsing: "000000010000000000000004")),
                                          (cluster, try WALFileName(parsing: "000000020000000000000003")),
                                          (cluster, try WALFileName(parsing: "000000010000000000000003.partial")),
                                          (SystemIdentifier(cluster.value + 1), name)] {
            do {
                _ = try WALObject.open(sealed, cluster: otherCluster, name: otherName, sealer: sealer)
                Issue.record("\(otherCluster)/\(otherName) opened another file's object")
            } catch let error as KhoError {
                #expect(error.kind == .integrity)
                #expect(error.message.contains("does not authenticate"))
            }
        }
        // A flipped bit anywhere is refused too.
        var damaged = sealed
        damaged[damaged.count / 2] ^= 1
        #expect(throws: KhoError.self) { try WALObject.open(damaged, cluster: cluster, name: name, sealer: sealer) }
    }

    @Test func metaThatDoesNotMatchTheFileIsNotSealed() throws {
        let cluster = SystemIdentifier(5)
        let name = try WALFileName(parsing: "000000010000000000000003")
        let meta = WALObjectMeta(cluster: cluster, name: name, size: 3, sha256: "", segmentSize: .default, pageMagic: nil,
                                 pushed: Date(), host: "h", key: "k")
        #expect(throws: KhoError.self) { try WALObject.seal(file: [1, 2], meta: meta, cluster: cluster, name: name, sealer: sealer, compressionLevel: 0) }
        #expect(throws: KhoError.self) {
            try WALObject.seal(file: [1, 2, 3], meta: meta, cluster: cluster, name: try WALFileName(parsing: "000000010000000000000004"), sealer: sealer, compressionLevel: 0)
        }
        // Sealed with a wrong hash (by a faulty writer): authenticates, then is refused.
        let sealed = try WALObject.seal(file: [1, 2, 3], meta: meta, cluster: cluster, name: name, sealer: sealer, compressionLevel: 0)
        #expect(throws: KhoError.self) { try WALObject.open(sealed, cluster: cluster, name: name, sealer: sealer) }
    }

    @Test func archiveRecordRoundTripAndSwap() throws {
        let cluster = SystemIdentifier(0x6b16_d153_5049_2971)
        let record = WALArchiveRecord(source: "billing", cluster: cluster, serverVersion: 15, segmentSize: .default, walBlockSize: 8192,
                                      pageMagic: 0xD110, created: Date(timeIntervalSince1970: 1_800_000_000), host: "db1")
        #expect(WALArchiveRecord.handle(cluster: cluster).path == "wal/6b16d15350492971/archive")
        let sealed = try record.seal(sealer: sealer)
        #expect(try WALArchiveRecord.open(sealed, cluster: cluster, sealer: sealer) == record)
        let expectation = try record.expectation()
        #expect(expectation.cluster == cluster && expectation.magic == 0xD110 && expectation.blockSize == 8192 && expectation.segmentSize == .default)
        // Another cluster's record under this cluster's path does not open.
        #expect(throws: KhoError.self) { try WALArchiveRecord.open(sealed, cluster: SystemIdentifier(cluster.value + 1), sealer: self.sealer) }
        // Neither a record as a WAL file nor a WAL file as a record.
        #expect(throws: KhoError.self) { try WALObject.open(sealed, cluster: cluster, name: .history(timeline: 2), sealer: self.sealer) }
        let history = try object(Array("1\t0/3000000\tno recovery target specified\n".utf8), .history(timeline: 2), cluster)
        #expect(throws: KhoError.self) { try WALArchiveRecord.open(history, cluster: cluster, sealer: self.sealer) }
    }
}

/// The text files a real PostgreSQL 15 archived beside segments (made by
/// Tests/Fixtures/postgres/wal/make-history-fixtures.sh): a base backup's history file and the
/// timeline history a promoted standby wrote.
@Suite struct WALTextFileTests {
    let folder = TestPaths.packageRoot + "/Tests/Fixtures/postgres/wal"
    func fixture(_ name: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: folder + "/" + name))) }

    @Test func realTimelineHistory() throws {
        let name = try WALFileName(parsing: "00000002.history")
        let switches = try WALTextFile.history(try fixture("00000002.history"), name: name)
        #expect(switches == [WALTimelineSwitch(parentTimeline: 1, switchPoint: LSN(0x300_0000), reason: "no recovery target specified")])
        // Longer ancestries, comments and blank lines as PostgreSQL's reader allows them.
        let three = Array("# comment\n1\t0/3000000\tno recovery target specified\n\n2\t0/50000A0\tat restore point \"x\"\n".utf8)
        #expect(try WALTextFile.history(three, name: try WALFileName(parsing: "00000003.history")).count == 2)
        for (bad, why) in [("2\t0/3000000\tx\n", "parent not below the file's timeline"),
                           ("1\t0/3000000\n0\t0/1\tx\n", "parent 0 and out of order"),
                           ("1 0/3000000 x\n", "spaces, not tabs"),
                           ("1\t0/30000G0\tx\n", "not an LSN"),
                           ("", "empty"),
                           ("# only a comment\n", "no parent")] {
            #expect(throws: KhoError.self, "\(why)") { try WALTextFile.history(Array(bad.utf8), name: name) }
        }
        #expect(throws: KhoError.self, "not UTF-8") { try WALTextFile.history([0x31, 0x09, 0xff, 0xfe], name: name) }
        #expect(throws: KhoError.self, "too large") {
            try WALTextFile.history(Array(repeating: UInt8(ascii: "#"), count: WALTextFile.largestHistory + 1), name: name)
        }
        #expect(throws: KhoError.self, "a segment's name") { try WALTextFile.history(try fixture("00000002.history"), name: try WALFileName(parsing: "000000020000000000000003")) }
    }

    @Test func realBackupHistory() throws {
        let file = "000000010000000000000002.00000028.backup"
        let bytes = try fixture(file)
        #expect(try WALTextFile.backup(bytes, name: try WALFileName(parsing: file), segmentSize: .default) == LSN(0x200_0028))
        // The same content under another offset's or segment's name is refused.
        for other in ["000000010000000000000002.00000030.backup", "000000010000000000000003.00000028.backup", "000000020000000000000002.00000028.backup"] {
            #expect(throws: KhoError.self, "\(other)") { try WALTextFile.backup(bytes, name: try WALFileName(parsing: other), segmentSize: .default) }
        }
        #expect(throws: KhoError.self, "no start line") {
            try WALTextFile.backup(Array("LABEL: x\n".utf8), name: try WALFileName(parsing: file), segmentSize: .default)
        }
        #expect(throws: KhoError.self, "too large") {
            try WALTextFile.backup(bytes + Array(repeating: UInt8(ascii: "x"), count: WALTextFile.largestBackup), name: try WALFileName(parsing: file), segmentSize: .default)
        }
    }
}

/// `kho check` counts the nonces of archived WAL objects with every other sealed object's.
@Suite struct WALNonceCensusTests {
    @Test func repeatedNoncesAcrossWALObjectsAreFound() throws {
        var options = Repository.CreateOptions()
        options.scrypt = Scrypt.minimum
        let storage = MemoryStorage()
        let repository = try Repository.create(storage: storage, password: Array("test password".utf8), options: options)
        let cluster = SystemIdentifier(0xabc)
        func store(_ name: WALFileName, _ file: [UInt8], sealer: Sealer) throws {
            let meta = WALObjectMeta(cluster: cluster, name: name, size: file.count, sha256: try SHA256.hash(file).hex, segmentSize: .default,
                                     pageMagic: nil, pushed: Date(), host: "h", key: repository.keyID)
            #expect(try storage.saveIfAbsent(name.handle(cluster: cluster), data: try WALObject.seal(file: file, meta: meta, cluster: cluster, name: name, sealer: sealer, compressionLevel: 0)))
        }
        let lock = try RepositoryLock.acquire(storage: storage, exclusive: false, command: "check")
        defer { lock.release() }
        // Sealed as kho seals them: every nonce fresh.
        let fresh = try repository.makeSealer()
        try store(try WALFileName(parsing: "000000010000000000000001"), [1], sealer: fresh)
        try store(try WALFileName(parsing: "000000010000000000000002"), [2], sealer: fresh)
        let clean = try Checker(repository: repository, options: CheckOptions()).run()
        #expect(clean.ok, "\(clean.errors)")
        #expect(clean.noncesCompared == 2)
        // Two more sealed by a faulty writer that repeats its nonce.
        let repeating = try Sealer(key: repository.key.encryption, nonces: .repeatedForTesting)
        try store(try WALFileName(parsing: "000000010000000000000003"), [3], sealer: repeating)
        try store(try WALFileName(parsing: "00000002.history"), Array("1\t0/3000000\tx\n".utf8), sealer: repeating)
        let report = try Checker(repository: repository, options: CheckOptions()).run()
        #expect(report.noncesCompared == 4)
        #expect(report.errors.contains { $0.contains("wal/0000000000000abc/0000000100000000/000000010000000000000003") && $0.contains("wal/0000000000000abc/00000002.history") },
                "\(report.errors)")
    }
}
