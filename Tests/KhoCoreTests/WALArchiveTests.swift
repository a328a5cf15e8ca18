import Foundation
import Glibc
import Testing
@testable import KhoCore
import KhoSupport
import KhoTestSupport

/// Pushing into and fetching from a source's WAL archive without a server: whole segments built
/// from the first page of a real PostgreSQL 15 segment (Tests/Fixtures/postgres/wal, 1 MiB
/// segments), with the page address (and for a second cluster the system identifier) rewritten.
@Suite struct WALArchiveTests {
    static let folder = TestPaths.packageRoot + "/Tests/Fixtures/postgres/wal"
    static let cluster = SystemIdentifier(0x6b16_d156_c0f2_5a77)
    static let identity = WALClusterIdentity(cluster: cluster, serverVersion: 15)
    static let segmentSize = 1 << 20

    /// The fixture page whose header matches its name (the others are recycled files).
    static func page() throws -> [UInt8] {
        let name = "15-1m-6b16d156c0f25a77-000000030000000700000FF4.page"
        let page = Array(try Data(contentsOf: URL(fileURLWithPath: folder + "/" + name)))
        _ = try WALSegmentHeader(parsing: page, file: name)
        return page
    }

    /// A whole 1 MiB segment `number` on timeline 3 of `cluster`, with `fill` after the first page.
    static func segment(_ number: UInt64, cluster: SystemIdentifier = WALArchiveTests.cluster, fill: UInt8 = 0) throws -> (WALFileName, [UInt8]) {
        var bytes = try page()
        bytes += [UInt8](repeating: fill, count: segmentSize - bytes.count)
        let start = number * UInt64(segmentSize)
        for i in 0..<8 { bytes[8 + i] = UInt8(truncatingIfNeeded: start >> (8 * UInt64(i))) }
        for i in 0..<8 { bytes[24 + i] = UInt8(truncatingIfNeeded: cluster.value >> (8 * UInt64(i))) }
        return (WALFileName.segment(timeline: 3, number: number, segmentSize: try WALSegmentSize(bytes: segmentSize)), bytes)
    }

    static let base: UInt64 = 7 * 4096 + 0xFF4

    static func repository() throws -> (Repository, MemoryStorage) {
        var options = Repository.CreateOptions()
        options.scrypt = Scrypt.minimum
        let storage = MemoryStorage()
        return (try Repository.create(storage: storage, password: Array("test password".utf8), options: options), storage)
    }

    static func walFiles(_ storage: MemoryStorage) throws -> [String] {
        try storage.list(.wal).map(\.name).sorted()
    }

    func expectRefused(_ comment: String, kind: KhoError.Kind = .integrity, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("not refused: \(comment)")
        } catch let error as KhoError {
            #expect(error.kind == kind, "\(comment): \(error.message)")
        } catch {
            Issue.record("\(comment): \(error)")
        }
    }

    @Test func firstSegmentCreatesTheRecordThenRepeatsSucceedAndOtherBytesAreRefused() throws {
        let (repository, storage) = try Self.repository()
        let archive = try WALArchive(repository: repository, source: "db1", host: "db-host")
        let (name, file) = try Self.segment(Self.base)
        #expect(try archive.push(name: name, file: file, identity: Self.identity) == .stored)
        let record = try #require(try WALArchive.currentRecord(source: "db1", in: repository))
        #expect(record.cluster == Self.cluster.description && record.serverVersion == 15 && record.segmentSize == Self.segmentSize && record.previous == nil)
        // A fresh process (no remembered record) repeating the same bytes: success, nothing new.
        let again = try WALArchive(repository: repository, source: "db1")
        #expect(try again.push(name: name, file: file, identity: Self.identity) == .repeated)
        let (_, other) = try Self.segment(Self.base, fill: 7)
        let before = try storage.load(name.handle(cluster: Self.cluster))
        expectRefused("other bytes under a stored name") { _ = try again.push(name: name, file: other, identity: Self.identity) }
        #expect(try storage.load(name.handle(cluster: Self.cluster)) == before, "nothing replaced")
        #expect(try WALArchive.fetch(name: name, cluster: Self.cluster, record: record, from: repository) == file)
    }

    @Test func anotherClusterAnotherSourceOrAnotherVersionIsRefused() throws {
        let (repository, storage) = try Self.repository()
        let (name, file) = try Self.segment(Self.base)
        _ = try WALArchive(repository: repository, source: "db1").push(name: name, file: file, identity: Self.identity)
        let stored = try Self.walFiles(storage)
        let otherCluster = SystemIdentifier(Self.cluster.value ^ 0xFFFF)
        let (_, foreign) = try Self.segment(Self.base + 1, cluster: otherCluster)
        let next = WALFileName.segment(timeline: 3, number: Self.base + 1, segmentSize: try WALSegmentSize(bytes: Self.segmentSize))
        expectRefused("a second cluster for the same source") {
            _ = try WALArchive(repository: repository, source: "db1").push(name: next, file: foreign, identity: WALClusterIdentity(cluster: otherCluster, serverVersion: 15))
        }
        let (_, mine) = try Self.segment(Self.base + 1)
        expectRefused("the cluster under another source") {
            _ = try WALArchive(repository: repository, source: "db2").push(name: next, file: mine, identity: Self.identity)
        }
        expectRefused("another server version (pg_upgrade keeps no sysid, but a faked PG_VERSION)") {
            _ = try WALArchive(repository: repository, source: "db1").push(name: next, file: mine, identity: WALClusterIdentity(cluster: Self.cluster, serverVersion: 16))
        }
        expectRefused("a segment whose header names another cluster than the data directory") {
            _ = try WALArchive(repository: repository, source: "db1").push(name: next, file: foreign, identity: Self.identity)
        }
        #expect(try Self.walFiles(storage) == stored, "nothing of theirs was stored")
    }

    @Test func invalidFilesAreRefusedAndNothingIsStored() throws {
        let (repository, storage) = try Self.repository()
        let archive = try WALArchive(repository: repository, source: "db1")
        let history = try WALFileName(parsing: "00000003.history")
        // Before any segment the archive's segment size is unknown: retry later, not refuse.
        expectRefused("a history file before the first segment", kind: .source) {
            _ = try archive.push(name: history, file: Array("1\t0/7000000\tno reason\n2\t0/7FF40000\tx\n".utf8), identity: Self.identity)
        }
        #expect(try Self.walFiles(storage).isEmpty)
        let (name, file) = try Self.segment(Self.base)
        _ = try archive.push(name: name, file: file, identity: Self.identity)
        let stored = try Self.walFiles(storage)
        let next = WALFileName.segment(timeline: 3, number: Self.base + 1, segmentSize: try WALSegmentSize(bytes: Self.segmentSize))
        expectRefused("a recycled file: its header is another segment's") { _ = try archive.push(name: next, file: file, identity: Self.identity) }
        let (_, short) = try Self.segment(Self.base + 1)
        expectRefused("a segment shorter than the segment size") { _ = try archive.push(name: next, file: Array(short.prefix(8192)), identity: Self.identity) }
        expectRefused("not WAL at all") { _ = try archive.push(name: next, file: [UInt8](repeating: 0x41, count: Self.segmentSize), identity: Self.identity) }
        expectRefused("a history file that is not one") { _ = try archive.push(name: history, file: Array("garbage".utf8), identity: Self.identity) }
        #expect(try Self.walFiles(storage) == stored)
        #expect(try archive.push(name: history, file: Array("1\t0/7000000\tno recovery target specified\n2\t7/FF500000\tx\n".utf8), identity: Self.identity) == .stored)
    }

    @Test func adoptRetiresTheOldClusterAndTheNextOneTakesOver() throws {
        let (repository, storage) = try Self.repository()
        let (name, file) = try Self.segment(Self.base)
        _ = try WALArchive(repository: repository, source: "db1").push(name: name, file: file, identity: Self.identity)
        expectRefused("retiring from another source", kind: .usage) { _ = try WALArchive(repository: repository, source: "db2").retire(cluster: Self.cluster) }
        expectRefused("retiring a cluster that was never archived", kind: .usage) { _ = try WALArchive(repository: repository, source: "db1").retire(cluster: SystemIdentifier(5)) }
        #expect(try WALArchive(repository: repository, source: "db1").retire(cluster: Self.cluster) == .retired)
        #expect(try WALArchive(repository: repository, source: "db1").retire(cluster: Self.cluster) == .alreadyRetired)
        #expect(try WALArchive.currentRecord(source: "db1", in: repository) == nil)
        let (next, more) = try Self.segment(Self.base + 1)
        expectRefused("the retired cluster") { _ = try WALArchive(repository: repository, source: "db1").push(name: next, file: more, identity: Self.identity) }
        let newCluster = SystemIdentifier(0x7000_0000_0000_0001)
        let (_, fresh) = try Self.segment(Self.base + 1, cluster: newCluster)
        #expect(try WALArchive(repository: repository, source: "db1").push(name: next, file: fresh, identity: WALClusterIdentity(cluster: newCluster, serverVersion: 15)) == .stored)
        let current = try #require(try WALArchive.currentRecord(source: "db1", in: repository))
        #expect(current.cluster == newCluster.description && current.previous == Self.cluster.description)
        // The marker is a sealed object: check's nonce census reads it, and it opens.
        let lock = try RepositoryLock.acquire(storage: storage, exclusive: false, command: "check")
        defer { lock.release() }
        let report = try Checker(repository: repository, options: CheckOptions()).run()
        #expect(report.ok, "\(report.errors)")
        #expect(report.noncesCompared == 5, "two records, one marker, two segments")
        // A planted marker (not sealed by the repository's key) is an error of check, and still stops pushes.
        try storage.save(WALRetirement.handle(cluster: newCluster), data: [UInt8](repeating: 1, count: 64))
        let planted = try Checker(repository: repository, options: CheckOptions()).run()
        #expect(planted.errors.contains { $0.contains("wal/\(newCluster)/retired") }, "\(planted.errors)")
    }

    @Test func recoveryFetchWritesWholeFilesAndTellsTheEndFromAGap() throws {
        let (repository, storage) = try Self.repository()
        let archive = try WALArchive(repository: repository, source: "db1")
        var files: [WALFileName: [UInt8]] = [:]
        for n in 0..<4 {
            let (name, file) = try Self.segment(Self.base + UInt64(n), fill: UInt8(n))
            _ = try archive.push(name: name, file: file, identity: Self.identity)
            files[name] = file
        }
        let record = try WALRecoveryFetch.record(source: "db1", cluster: nil, in: repository)
        expectRefused("--cluster of another source's archive") { _ = try WALRecoveryFetch.record(source: "db2", cluster: Self.cluster, in: repository) }
        let folder = try TemporaryFolder()
        let names = files.keys.sorted { $0.description < $1.description }
        let target = folder.path + "/RECOVERYXLOG"
        #expect(try WALRecoveryFetch.run(name: names[1], destination: target, record: record, repository: repository) == .written(Self.segmentSize))
        #expect(Array(try Data(contentsOf: URL(fileURLWithPath: target))) == files[names[1]])
        #expect(access(target + ".kho-tmp", F_OK) != 0)
        // Past the end, and a timeline that does not exist: "not archived".
        unlink(target)
        let past = WALFileName.segment(timeline: 3, number: Self.base + 4, segmentSize: try WALSegmentSize(bytes: Self.segmentSize))
        #expect(try WALRecoveryFetch.run(name: past, destination: target, record: record, repository: repository) == .notArchived)
        #expect(try WALRecoveryFetch.run(name: try WALFileName(parsing: "00000004.history"), destination: target, record: record, repository: repository) == .notArchived)
        #expect(access(target, F_OK) != 0, "no file for a missing one")
        // A gap: a later segment of the timeline exists.
        try storage.remove(names[2].handle(cluster: Self.cluster))
        expectRefused("a gap") { _ = try WALRecoveryFetch.run(name: names[2], destination: target, record: record, repository: repository) }
        #expect(access(target, F_OK) != 0)
        // Damage: one byte changed.
        var sealed = try storage.load(names[3].handle(cluster: Self.cluster))
        sealed[sealed.count / 2] ^= 1
        try storage.save(names[3].handle(cluster: Self.cluster), data: sealed)
        expectRefused("a damaged object") { _ = try WALRecoveryFetch.run(name: names[3], destination: target, record: record, repository: repository) }
        #expect(access(target, F_OK) != 0)
        // What ls sees: the gap, named.
        let summary = try #require(try WALClusterSummary.list(source: "db1", in: repository).first)
        #expect(summary.timelines.count == 1 && summary.timelines[0].segments == 3)
        #expect(summary.timelines[0].gaps == [WALClusterSummary.Gap(first: names[2].description, last: names[2].description, count: 1)])
    }
}
