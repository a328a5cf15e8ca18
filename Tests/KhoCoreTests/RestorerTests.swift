import Foundation
import Glibc
import Testing
@testable import KhoCore
import KhoSupport

/// A memory storage that says its reads are requests (as S3 does) or not, and counts the reads
/// of each pack.
private final class CountingStorage: Storage, @unchecked Sendable {
    let inner = MemoryStorage()
    let readsAreRequests: Bool
    let packReads = Locked<[String: Int]>([:])

    init(readsAreRequests: Bool) { self.readsAreRequests = readsAreRequests }

    var location: String { "counting memory" }
    func save(_ handle: Handle, data: [UInt8]) throws { try inner.save(handle, data: data) }
    func load(_ handle: Handle, offset: Int, length: Int?) throws -> [UInt8] {
        if handle.kind == .data { packReads.withLock { $0[handle.name, default: 0] += 1 } }
        return try inner.load(handle, offset: offset, length: length)
    }
    func stat(_ handle: Handle) throws -> StoredFile { try inner.stat(handle) }
    func list(_ kind: FileKind) throws -> [StoredFile] { try inner.list(kind) }
    func remove(_ handle: Handle) throws { try inner.remove(handle) }
    func isEmpty() throws -> Bool { try inner.isEmpty() }
}

/// Many small files in many folders (the case where per-blob reads cost one request each), two
/// files of several blobs, an empty file and a pair of hard links, in 1 MiB packs.
private struct RestoreFixture {
    let root: URL
    let source: String
    let storage: CountingStorage
    let repository: Repository
    let snapshot: Snapshot

    init(readsAreRequests: Bool) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("kho-restorer-\(UUID().uuidString)")
        source = root.appendingPathComponent("source").path
        var rng = SplitMix64(seed: 11)
        for folder in 0..<24 {
            let path = "\(source)/folder-\(folder)"
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            for file in 0..<30 {
                let size = Int(rng.next() % 12_000) + 1
                try Data(rng.bytes(size)).write(to: URL(fileURLWithPath: "\(path)/file-\(file)"))
                chmod("\(path)/file-\(file)", file % 2 == 0 ? 0o644 : 0o600)
            }
        }
        try Data(rng.bytes(3 << 20)).write(to: URL(fileURLWithPath: "\(source)/large-1"))
        try Data(rng.bytes(5 << 20)).write(to: URL(fileURLWithPath: "\(source)/folder-3/large-2"))
        FileManager.default.createFile(atPath: "\(source)/empty", contents: nil)
        try Data(rng.bytes(7000)).write(to: URL(fileURLWithPath: "\(source)/folder-5/linked"))
        link("\(source)/folder-5/linked", "\(source)/folder-9/linked-too")

        storage = CountingStorage(readsAreRequests: readsAreRequests)
        var options = Repository.CreateOptions()
        options.scrypt = Scrypt.minimum  // the cheapest a key file may ask for in this build
        options.packSize = 1 << 20
        repository = try Repository.create(storage: storage, password: Array("test password".utf8), options: options)
        let archiver = try Archiver(repository: repository, index: try repository.loadIndex(), options: BackupOptions()) { _ in }
        snapshot = try archiver.backup(paths: [source])
    }

    func restore(limits: Restorer.RunLimits? = nil, into name: String) throws -> (summary: RestoreSummary, target: String) {
        let target = root.appendingPathComponent(name).path
        let index = try repository.loadIndex()
        var options = RestoreOptions()
        options.workers = 4
        let restorer = try Restorer(repository: repository, index: index, options: options, progress: ProgressCounter(),
                                limits: limits ?? .forStorage(remote: storage.readsAreRequests, workers: options.workers,
                                                              openFileLimit: DescriptorLimit.current)) { warning in
            Issue.record("restore warned: \(warning)")
        }
        storage.packReads.withLock { $0 = [:] }
        return (try restorer.restore(snapshot: snapshot, target: target), target)
    }

    /// Differences between the source and its restored copy: content, mode and mtime of every
    /// file, and the one inode of the hard-linked pair.
    func differences(restoredAt target: String) throws -> [String] {
        var found: [String] = []
        let enumerator = FileManager.default.enumerator(atPath: source)!
        var files = 0
        while let relative = enumerator.nextObject() as? String {
            let original = source + "/" + relative
            let copy = target + source + "/" + relative
            var a = Glibc.stat(), b = Glibc.stat()
            guard lstat(original, &a) == 0, lstat(copy, &b) == 0 else { found.append("\(relative): missing"); continue }
            guard a.st_mode & S_IFMT == S_IFREG else { continue }
            files += 1
            if a.st_mode != b.st_mode { found.append("\(relative): mode \(String(b.st_mode, radix: 8)) instead of \(String(a.st_mode, radix: 8))") }
            if a.st_mtim.tv_sec != b.st_mtim.tv_sec || a.st_mtim.tv_nsec != b.st_mtim.tv_nsec { found.append("\(relative): mtime differs") }
            if FileManager.default.contents(atPath: original) != FileManager.default.contents(atPath: copy) {
                found.append("\(relative): content differs")
            }
        }
        if files != 24 * 30 + 5 { found.append("\(files) files in the source, expected \(24 * 30 + 5)") }
        var first = Glibc.stat(), second = Glibc.stat()
        if lstat(target + source + "/folder-5/linked", &first) != 0 || lstat(target + source + "/folder-9/linked-too", &second) != 0
            || first.st_ino != second.st_ino {
            found.append("the hard links came back as separate files")
        }
        return found
    }

    func remove() { try? FileManager.default.removeItem(at: root) }
}

@Suite("restorer: reads gathered per pack, files created by the workers")
struct RestorerTests {
    @Test("on storage where each read is a request, every pack is read exactly once")
    func onePackOneRead() throws {
        let fixture = try RestoreFixture(readsAreRequests: true)
        defer { fixture.remove() }
        let (summary, target) = try fixture.restore(into: "restored")
        #expect(summary.files == 24 * 30 + 5 && summary.errors == 0)
        #expect(try fixture.differences(restoredAt: target) == [])
        let reads = fixture.storage.packReads.current
        let packs = try fixture.storage.list(.data).count
        #expect(packs >= 6, "the fixture should fill several 1 MiB packs, got \(packs)")
        #expect(reads.count == packs && reads.values.allSatisfy { $0 == 1 },
                "each of \(packs) packs should be read once, reads were \(reads.values.sorted())")
    }

    @Test("on a local disk reads stay small: more reads than packs, same result")
    func localReadsStaySmall() throws {
        let fixture = try RestoreFixture(readsAreRequests: false)
        defer { fixture.remove() }
        let (summary, target) = try fixture.restore(into: "restored")
        #expect(summary.files == 24 * 30 + 5 && summary.errors == 0)
        #expect(try fixture.differences(restoredAt: target) == [])
        // 725 files of up to 64 blobs a read: at least 12 reads, over a handful of packs.
        let reads = fixture.storage.packReads.current.values.reduce(0, +)
        let packs = try fixture.storage.list(.data).count
        #expect(reads >= 12 && reads > packs, "\(reads) reads of \(packs) packs")
    }

    @Test("with a budget of one open folder the walker waits for the workers and the restore completes",
          .timeLimit(.minutes(1)))
    func folderBudgetOfOne() throws {
        let fixture = try RestoreFixture(readsAreRequests: true)
        defer { fixture.remove() }
        var limits = Restorer.RunLimits.forStorage(remote: true, workers: 4, openFileLimit: DescriptorLimit.current)
        limits.folders = 1
        let (summary, target) = try fixture.restore(limits: limits, into: "restored")
        #expect(summary.files == 24 * 30 + 5 && summary.errors == 0)
        #expect(try fixture.differences(restoredAt: target) == [])
    }
}
