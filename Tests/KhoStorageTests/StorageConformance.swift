import Dispatch
import Foundation
import KhoTestSupport
import KhoCore
import KhoStorage
import KhoSupport
import Testing

/// The contract every `Storage` implementation must meet, as a reusable suite.
///
/// Give it a factory that returns a new, empty storage on every call. To run it on another
/// implementation, add one parameterized test:
///
///     @Test(arguments: StorageConformance.Check.allCases)
///     func conformance(_ check: StorageConformance.Check) throws {
///         try StorageConformance { try makeEmptyS3Storage() }.run(check)
///     }
///
/// or call `try StorageConformance(factory).runAll()` from a single test.
struct StorageConformance {
    enum Check: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case roundTripEveryKind
        case loadRange
        case loadPastEndThrowsIntegrity
        case missingFileThrows
        case listReturnsExactlyWhatWasSaved
        case listOfEmptyStorage
        case saveAgainReplaces
        case removeThenList
        case removeMissingDoesNotThrow
        case isEmptyBeforeAndAfter
        case largeFile
        case zeroLengthFile
        case concurrentSaves
        case concurrentSavesOfOneName
        case oversizedFileIsRefused
        case streamWriterRoundTrip
        case streamWriterAbortLeavesNothing
        case streamWriterOversizedIsRefused
        case saveIfAbsentNeverReplaces
        case saveIfAbsentRaceHasOneWinner
        case listUnderNestedFolders
        case listUnderRefusesFoldersOutsideTheKind

        var testDescription: String { rawValue }
    }

    let makeStorage: () throws -> any Storage

    init(_ makeStorage: @escaping () throws -> any Storage) {
        self.makeStorage = makeStorage
    }

    func runAll() throws {
        for check in Check.allCases { try run(check) }
    }

    func run(_ check: Check) throws {
        let storage = try makeStorage()
        #expect(try storage.isEmpty(), "the factory must return an empty storage")
        switch check {
        case .roundTripEveryKind: try roundTripEveryKind(storage)
        case .loadRange: try loadRange(storage)
        case .loadPastEndThrowsIntegrity: try loadPastEndThrowsIntegrity(storage)
        case .missingFileThrows: try missingFileThrows(storage)
        case .listReturnsExactlyWhatWasSaved: try listReturnsExactlyWhatWasSaved(storage)
        case .listOfEmptyStorage: try listOfEmptyStorage(storage)
        case .saveAgainReplaces: try saveAgainReplaces(storage)
        case .removeThenList: try removeThenList(storage)
        case .removeMissingDoesNotThrow: try removeMissingDoesNotThrow(storage)
        case .isEmptyBeforeAndAfter: try isEmptyBeforeAndAfter(storage)
        case .largeFile: try largeFile(storage)
        case .zeroLengthFile: try zeroLengthFile(storage)
        case .concurrentSaves: try concurrentSaves(storage)
        case .concurrentSavesOfOneName: try concurrentSavesOfOneName(storage)
        case .oversizedFileIsRefused: try oversizedFileIsRefused(storage)
        case .streamWriterRoundTrip: try streamWriterRoundTrip(storage)
        case .streamWriterAbortLeavesNothing: try streamWriterAbortLeavesNothing(storage)
        case .streamWriterOversizedIsRefused: try streamWriterOversizedIsRefused(storage)
        case .saveIfAbsentNeverReplaces: try saveIfAbsentNeverReplaces(storage)
        case .saveIfAbsentRaceHasOneWinner: try saveIfAbsentRaceHasOneWinner(storage)
        case .listUnderNestedFolders: try listUnderNestedFolders(storage)
        case .listUnderRefusesFoldersOutsideTheKind: try listUnderRefusesFoldersOutsideTheKind(storage)
        }
    }

    // MARK: checks

    /// A name that is taken stays as it is, whoever took it (saveIfAbsent or save); a removed
    /// name can be taken again.
    func saveIfAbsentNeverReplaces(_ storage: any Storage) throws {
        var rng = SplitMix64(seed: 31)
        for handle in [Handle(.wal, "6b16d15350492971/0000000100000000/000000010000000000000003"),
                       Handle(.wal, "6b16d15350492971/00000002.history"), Handle(.lock, rng.name())] {
            let first = rng.bytes(5000)
            #expect(try storage.saveIfAbsent(handle, data: first), "\(handle)")
            #expect(try !storage.saveIfAbsent(handle, data: rng.bytes(100)), "\(handle)")
            #expect(try !storage.saveIfAbsent(handle, data: first), "\(handle): the same bytes again still find the name taken")
            #expect(try storage.load(handle) == first, "\(handle)")
            try storage.remove(handle)
            let second = rng.bytes(7)
            #expect(try storage.saveIfAbsent(handle, data: second), "\(handle)")
            #expect(try storage.load(handle) == second, "\(handle)")
        }
        let saved = Handle(.wal, "0000000000000001/0000000100000000/000000010000000000000001")
        try storage.save(saved, data: [1, 2, 3])
        #expect(try !storage.saveIfAbsent(saved, data: [4]))
        #expect(try storage.load(saved) == [1, 2, 3])
        // Zero-length files are files too.
        let empty = Handle(.wal, "0000000000000001/0000000100000000/000000010000000000000002")
        #expect(try storage.saveIfAbsent(empty, data: []))
        #expect(try !storage.saveIfAbsent(empty, data: [9]))
        #expect(try storage.load(empty) == [])
        if let local = storage as? LocalStorage { #expect(try local.leftoverTemporaryFiles().isEmpty) }
    }

    /// Writers racing for one name: exactly one stores, and what is stored is the winner's.
    func saveIfAbsentRaceHasOneWinner(_ storage: any Storage) throws {
        var rng = SplitMix64(seed: 32)
        for round in 0..<6 {
            let handle = Handle(.wal, "00000000000000ff/0000000100000000/0000000100000000000000\(round < 10 ? "0" : "")\(round)")
            let versions = (0..<8).map { _ in rng.bytes(Int.random(in: 1...200_000, using: &rng)) }
            let winners = Failures()
            let failures = Failures()
            DispatchQueue.concurrentPerform(iterations: versions.count) { i in
                do {
                    if try storage.saveIfAbsent(handle, data: versions[i]) { winners.append(String(i)) }
                } catch {
                    failures.append("\(error)")
                }
            }
            #expect(failures.all.isEmpty, "\(failures.all)")
            #expect(winners.all.count == 1, "round \(round): \(winners.all.count) writers stored \(handle)")
            if let winner = winners.all.first.flatMap(Int.init) {
                #expect(try storage.load(handle) == versions[winner], "round \(round): the stored file is not the winner's")
            }
        }
        if let local = storage as? LocalStorage { #expect(try local.leftoverTemporaryFiles().isEmpty) }
    }

    func listUnderNestedFolders(_ storage: any Storage) throws {
        var rng = SplitMix64(seed: 33)
        let names = ["aa/bb/c1", "aa/bb/c2", "aa/dd/e", "aa/f", "ff/g/h", "top"]
        var expected: Set<StoredFile> = []
        for name in names {
            let data = rng.bytes(Int.random(in: 0...300, using: &rng))
            #expect(try storage.saveIfAbsent(Handle(.wal, name), data: data))
            expected.insert(StoredFile(name: name, size: data.count))
        }
        try storage.save(Handle(.lock, rng.name()), data: [1])
        #expect(Set(try storage.list(.wal)) == expected)
        #expect(Set(try storage.list(.wal, under: "")) == expected)
        #expect(Set(try storage.list(.wal, under: "aa").map(\.name)) == ["aa/bb/c1", "aa/bb/c2", "aa/dd/e", "aa/f"])
        #expect(Set(try storage.list(.wal, under: "aa/bb").map(\.name)) == ["aa/bb/c1", "aa/bb/c2"])
        #expect(try storage.list(.wal, under: "ff/g").map(\.name) == ["ff/g/h"])
        // A prefix of a folder's name is not the folder.
        #expect(try storage.list(.wal, under: "a").isEmpty)
        #expect(try storage.list(.wal, under: "zz").isEmpty)
        #expect(try storage.list(.wal, under: "aa/zz").isEmpty)
        for file in try storage.list(.wal, under: "aa") { #expect(try storage.stat(Handle(.wal, file.name)).size == file.size) }
        #expect(try storage.list(.lock).count == 1, "wal files are not listed as another kind")
        #expect(try storage.list(.lock, under: "").count == 1)
        try storage.remove(Handle(.wal, "aa/bb/c1"))
        #expect(try storage.list(.wal, under: "aa/bb").map(\.name) == ["aa/bb/c2"])
    }

    func listUnderRefusesFoldersOutsideTheKind(_ storage: any Storage) throws {
        try storage.save(Handle(.wal, "aa/b"), data: [1])
        for folder in ["..", "../data", "aa/..", "/aa", "aa/", "aa//b", ".", "./aa", ".tmp", "a a", "aa\\b", "\u{0}"] {
            expectKhoError(.usage, "under \(folder.debugDescription)") { _ = try storage.list(.wal, under: folder) }
        }
        expectKhoError(.usage, "only wal files have subfolders") { _ = try storage.list(.data, under: "ab") }
    }

    // Stream writers (packs written as they fill, named once complete) are optional: a storage
    // that offers none passes these checks; one that does must keep save's promises.

    /// Writes `data` through a new stream writer in pieces of uneven sizes (some empty).
    private func stream(_ data: [UInt8], to writer: any StorageStreamWriter, rng: inout SplitMix64) throws {
        var at = 0
        while at < data.count {
            let n = min(data.count - at, [0, 1, 4095, 4096, 65_537, 1 << 20][Int(rng.next() % 6)])
            try data[at..<(at + n)].withUnsafeBytes { try writer.write($0) }
            at += n
        }
    }

    func streamWriterRoundTrip(_ storage: any Storage) throws {
        guard try storage.makeStreamWriter(for: .data) != nil else { return }
        var rng = SplitMix64(seed: 21)
        var saved: [Handle: [UInt8]] = [:]
        for (kind, size) in [(FileKind.data, 3 << 20), (.data, 1), (.data, 0), (.index, 70_001)] {
            let writer = try #require(try storage.makeStreamWriter(for: kind))
            let data = rng.bytes(size)
            try stream(data, to: writer, rng: &rng)
            let handle = Handle(kind, rng.name())
            try writer.commit(as: handle)
            saved[handle] = data
        }
        for (handle, data) in saved {
            #expect(try storage.load(handle) == data, "\(handle)")
            #expect(try storage.stat(handle).size == data.count, "\(handle)")
            if data.count > 10 { #expect(try storage.load(handle, offset: 5, length: 5) == Array(data[5..<10])) }
        }
        #expect(Set(try storage.list(.data).map(\.name)) == Set(saved.keys.filter { $0.kind == .data }.map(\.name)))
        #expect(Set(try storage.list(.index).map(\.name)) == Set(saved.keys.filter { $0.kind == .index }.map(\.name)))
    }

    func streamWriterAbortLeavesNothing(_ storage: any Storage) throws {
        guard try storage.makeStreamWriter(for: .data) != nil else { return }
        var rng = SplitMix64(seed: 22)
        let kept = Handle(.data, rng.name())
        try storage.save(kept, data: rng.bytes(100))
        // Aborted after writing, before writing anything, and never finished (released).
        let written = try #require(try storage.makeStreamWriter(for: .data))
        try stream(rng.bytes(2 << 20), to: written, rng: &rng)
        written.abort()
        try #require(try storage.makeStreamWriter(for: .data)).abort()
        do {
            let dropped = try #require(try storage.makeStreamWriter(for: .data))
            try stream(rng.bytes(10_000), to: dropped, rng: &rng)
        }
        #expect(try storage.list(.data).map(\.name) == [kept.name])
        try storage.remove(kept)
        #expect(try storage.list(.data).isEmpty)
        // Listings skip the temporary files a local writer uses: they are looked for directly.
        if let local = storage as? LocalStorage { #expect(try local.leftoverTemporaryFiles().isEmpty) }
    }

    /// A streamed file larger than its kind allows is refused when read, as a saved one is.
    func streamWriterOversizedIsRefused(_ storage: any Storage) throws {
        guard try storage.makeStreamWriter(for: .lock) != nil else { return }
        var rng = SplitMix64(seed: 23)
        let writer = try #require(try storage.makeStreamWriter(for: .lock))
        let size = FileKind.lock.maximumSize + 10
        try stream(rng.bytes(size), to: writer, rng: &rng)
        let handle = Handle(.lock, rng.name())
        try writer.commit(as: handle)
        expectKhoError(.integrity, "a streamed lock file of \(size) bytes") { _ = try storage.load(handle) }
        #expect(try storage.load(handle, offset: 0, length: 100).count == 100)
    }

    func roundTripEveryKind(_ storage: any Storage) throws {
        var rng = SplitMix64(seed: 1)
        var saved: [Handle: [UInt8]] = [:]
        for (i, kind) in FileKind.allCases.enumerated() {
            let handle = kind == .config ? Handle.config : Handle(kind, rng.name())
            let data = rng.bytes(1 + i * 1000)
            try storage.save(handle, data: data)
            saved[handle] = data
        }
        for (handle, data) in saved {
            #expect(try storage.load(handle) == data, "\(handle)")
            #expect(try storage.load(handle, offset: 0, length: nil) == data, "\(handle)")
            #expect(try storage.load(handle, offset: 0, length: data.count) == data, "\(handle)")
            #expect(try storage.stat(handle) == StoredFile(name: handle.name, size: data.count), "\(handle)")
            #expect(try storage.exists(handle), "\(handle)")
        }
        // Same name under another kind is another file.
        let name = rng.name()
        try storage.save(Handle(.index, name), data: [1])
        try storage.save(Handle(.snapshot, name), data: [2, 2])
        #expect(try storage.load(Handle(.index, name)) == [1])
        #expect(try storage.load(Handle(.snapshot, name)) == [2, 2])
        #expect(try !storage.exists(Handle(.key, name)))
    }

    func loadRange(_ storage: any Storage) throws {
        var rng = SplitMix64(seed: 2)
        let data = rng.bytes(10_000)
        let handle = Handle(.data, rng.name())
        try storage.save(handle, data: data)
        for (offset, length) in [(0, 10), (1, 1), (1234, 5000), (9_990, 10), (0, 10_000), (5_000, 0), (10_000, 0)] {
            #expect(try storage.load(handle, offset: offset, length: length) == Array(data[offset..<(offset + length)]),
                    "offset \(offset) length \(length)")
        }
        #expect(try storage.load(handle, offset: 7_777, length: nil) == Array(data[7_777...]), "offset with no length reads to the end")
    }

    /// A file larger than its kind allows (planted by whoever can write the storage) is refused
    /// with an integrity error instead of being read into memory; ranges within it still read.
    func oversizedFileIsRefused(_ storage: any Storage) throws {
        var rng = SplitMix64(seed: 9)
        let lock = Handle(.lock, rng.name())
        let size = FileKind.lock.maximumSize + 1
        try storage.save(lock, data: rng.bytes(size))
        expectKhoError(.integrity, "a lock file of \(size) bytes") { _ = try storage.load(lock) }
        expectKhoError(.integrity, "a range longer than a lock file can be") { _ = try storage.load(lock, offset: 0, length: size) }
        #expect(try storage.load(lock, offset: 0, length: 100).count == 100)
        let config = Handle.config
        try storage.save(config, data: rng.bytes(FileKind.config.maximumSize + 10))
        expectKhoError(.integrity, "a config of more than 64 KiB") { _ = try storage.load(config) }
    }

    func loadPastEndThrowsIntegrity(_ storage: any Storage) throws {
        var rng = SplitMix64(seed: 3)
        let handle = Handle(.data, rng.name())
        try storage.save(handle, data: rng.bytes(1000))
        for (offset, length) in [(990, 11), (0, 1001), (1000, 1), (5000, 10)] {
            expectKhoError(.integrity, "offset \(offset) length \(length) of 1000 bytes") {
                _ = try storage.load(handle, offset: offset, length: length)
            }
        }
    }

    /// A missing file is reported as `.integrity` (`KhoError.missing`): the engine tells "missing"
    /// from "storage unreachable" (`.storage`) by the kind.
    func missingFileThrows(_ storage: any Storage) throws {
        var rng = SplitMix64(seed: 4)
        try storage.save(Handle(.snapshot, rng.name()), data: [1, 2, 3])
        for kind in FileKind.allCases {
            let handle = kind == .config ? Handle.config : Handle(kind, rng.name())
            expectKhoError(.integrity, "load \(handle)") { _ = try storage.load(handle) }
            expectKhoError(.integrity, "ranged load \(handle)") { _ = try storage.load(handle, offset: 0, length: 1) }
            expectKhoError(.integrity, "stat \(handle)") { _ = try storage.stat(handle) }
            #expect(try !storage.exists(handle))
        }
    }

    func listReturnsExactlyWhatWasSaved(_ storage: any Storage) throws {
        var rng = SplitMix64(seed: 5)
        var expected: [FileKind: Set<StoredFile>] = [:]
        for kind in FileKind.allCases where kind != .config {
            for i in 0..<(kind == .data ? 40 : 5) {
                var name = rng.name()
                if kind == .data && i < 8 {
                    // Several packs in one fan-out folder.
                    name = "ab" + name.dropFirst(2)
                }
                let data = rng.bytes(Int.random(in: 0...3000, using: &rng))
                try storage.save(Handle(kind, name), data: data)
                expected[kind, default: []].insert(StoredFile(name: name, size: data.count))
            }
        }
        try storage.save(.config, data: [UInt8]("{}".utf8))
        expected[.config] = [StoredFile(name: "config", size: 2)]

        let dataPrefixes = Set(expected[.data]!.map { $0.name.prefix(2) })
        #expect(dataPrefixes.count > 10, "data files must span several fan-out folders")
        for kind in FileKind.allCases {
            let listed = try storage.list(kind)
            #expect(listed.count == expected[kind]!.count, "\(kind) listed \(listed.count) files")
            #expect(Set(listed) == expected[kind]!, "\(kind)")
        }
    }

    func listOfEmptyStorage(_ storage: any Storage) throws {
        for kind in FileKind.allCases {
            #expect(try storage.list(kind).isEmpty, "\(kind)")
        }
        // Files of one kind do not make the other kinds' lists fail or fill.
        var rng = SplitMix64(seed: 6)
        try storage.save(Handle(.lock, rng.name()), data: [1])
        for kind in FileKind.allCases where kind != .lock {
            #expect(try storage.list(kind).isEmpty, "\(kind)")
        }
    }

    func saveAgainReplaces(_ storage: any Storage) throws {
        var rng = SplitMix64(seed: 7)
        for handle in [Handle(.lock, rng.name()), Handle(.data, rng.name()), Handle.config] {
            let first = rng.bytes(5000)
            let second = rng.bytes(100)
            let third = rng.bytes(7000)
            try storage.save(handle, data: first)
            try storage.save(handle, data: second)
            #expect(try storage.load(handle) == second, "\(handle)")
            #expect(try storage.stat(handle).size == 100, "\(handle)")
            try storage.save(handle, data: third)
            #expect(try storage.load(handle) == third, "\(handle)")
            #expect(try storage.list(handle.kind) == [StoredFile(name: handle.name, size: 7000)], "\(handle)")
        }
    }

    func removeThenList(_ storage: any Storage) throws {
        var rng = SplitMix64(seed: 8)
        for kind in FileKind.allCases {
            let handles = kind == .config ? [Handle.config] : (0..<4).map { _ in Handle(kind, rng.name()) }
            for handle in handles { try storage.save(handle, data: rng.bytes(64)) }
            let removed = handles[0]
            try storage.remove(removed)
            #expect(try !storage.exists(removed), "\(removed)")
            expectKhoError(.integrity, "load after remove") { _ = try storage.load(removed) }
            #expect(Set(try storage.list(kind).map(\.name)) == Set(handles.dropFirst().map(\.name)), "\(kind)")
            for handle in handles.dropFirst() {
                #expect(try storage.exists(handle), "\(handle)")
                try storage.remove(handle)
            }
            #expect(try storage.list(kind).isEmpty, "\(kind)")
            // A removed name can be saved again.
            try storage.save(removed, data: [42])
            #expect(try storage.load(removed) == [42])
        }
    }

    func removeMissingDoesNotThrow(_ storage: any Storage) throws {
        var rng = SplitMix64(seed: 9)
        // Nothing at all stored yet, so not even the folders exist.
        for kind in FileKind.allCases {
            let handle = kind == .config ? Handle.config : Handle(kind, rng.name())
            #expect(throws: Never.self, "\(handle)") { try storage.remove(handle) }
        }
        let handle = Handle(.index, rng.name())
        try storage.save(handle, data: [1])
        try storage.remove(handle)
        #expect(throws: Never.self) { try storage.remove(handle) }
    }

    func isEmptyBeforeAndAfter(_ storage: any Storage) throws {
        #expect(try storage.isEmpty())
        var rng = SplitMix64(seed: 10)
        try storage.save(Handle(.key, rng.name()), data: [1, 2, 3])
        #expect(try !storage.isEmpty())
        // Saving a zero-length file also makes a storage non-empty.
        let other = try makeStorage()
        #expect(try other.isEmpty())
        try other.save(Handle(.lock, rng.name()), data: [])
        #expect(try !other.isEmpty())
    }

    func largeFile(_ storage: any Storage) throws {
        var rng = SplitMix64(seed: 11)
        let data = rng.bytes(20 << 20)
        let handle = Handle(.data, rng.name())
        try storage.save(handle, data: data)
        #expect(try storage.stat(handle).size == data.count)
        let loaded = try storage.load(handle)
        #expect(loaded.count == data.count)
        #expect(loaded == data)
        let offset = (20 << 20) - 3_000_000 - 17
        #expect(try storage.load(handle, offset: offset, length: 3_000_000) == Array(data[offset..<(offset + 3_000_000)]))
        #expect(try storage.list(.data) == [StoredFile(name: handle.name, size: data.count)])
    }

    func zeroLengthFile(_ storage: any Storage) throws {
        var rng = SplitMix64(seed: 12)
        for kind in FileKind.allCases {
            let handle = kind == .config ? Handle.config : Handle(kind, rng.name())
            try storage.save(handle, data: [])
            #expect(try storage.load(handle) == [], "\(handle)")
            #expect(try storage.load(handle, offset: 0, length: 0) == [], "\(handle)")
            #expect(try storage.stat(handle) == StoredFile(name: handle.name, size: 0), "\(handle)")
            #expect(try storage.list(kind) == [StoredFile(name: handle.name, size: 0)], "\(handle)")
            expectKhoError(.integrity, "one byte from an empty \(handle)") { _ = try storage.load(handle, offset: 0, length: 1) }
        }
    }

    func concurrentSaves(_ storage: any Storage) throws {
        let count = 48
        var rng = SplitMix64(seed: 13)
        // Half the data files share one fan-out folder that does not exist yet, so that folder
        // creation races too.
        let kinds: [FileKind] = [.data, .data, .index, .snapshot, .key, .lock]
        let jobs: [(Handle, [UInt8])] = (0..<count).map { i in
            var name = rng.name()
            if i % 2 == 0 { name = "7e" + name.dropFirst(2) }
            let kind = kinds[i % kinds.count]
            return (Handle(kind, name), rng.bytes(min(Int.random(in: 0...200_000, using: &rng), kind.maximumSize)))
        }
        let failures = Failures()
        DispatchQueue.concurrentPerform(iterations: count) { i in
            do {
                try storage.save(jobs[i].0, data: jobs[i].1)
            } catch {
                failures.append("\(jobs[i].0): \(error)")
            }
        }
        #expect(failures.all.isEmpty, "\(failures.all)")
        for (handle, data) in jobs {
            #expect(try storage.load(handle) == data, "\(handle)")
        }
        for kind in Set(kinds) {
            let expected = Set(jobs.filter { $0.0.kind == kind }.map { StoredFile(name: $0.0.name, size: $0.1.count) })
            #expect(Set(try storage.list(kind)) == expected, "\(kind)")
        }
    }

    func concurrentSavesOfOneName(_ storage: any Storage) throws {
        var rng = SplitMix64(seed: 14)
        let handle = Handle(.lock, rng.name())
        let versions = (0..<16).map { _ in rng.bytes(Int.random(in: 1000...FileKind.lock.maximumSize, using: &rng)) }
        let failures = Failures()
        DispatchQueue.concurrentPerform(iterations: versions.count) { i in
            do { try storage.save(handle, data: versions[i]) } catch { failures.append("\(error)") }
        }
        #expect(failures.all.isEmpty, "\(failures.all)")
        // Saves are atomic: the survivor is one whole version, never a mixture.
        let loaded = try storage.load(handle)
        #expect(versions.contains(loaded))
        #expect(try storage.list(.lock) == [StoredFile(name: handle.name, size: loaded.count)])
    }
}

// MARK: - helpers shared by the storage tests

/// Errors collected from several threads.
final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func append(_ item: String) { lock.lock(); items.append(item); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return items }
}


/// Runs `body` and records an issue unless it throws a `KhoError` of `kind`.
func expectKhoError(_ kind: KhoError.Kind, _ comment: String? = nil, sourceLocation: SourceLocation = #_sourceLocation,
                    _ body: () throws -> Void) {
    let what = comment.map { " (\($0))" } ?? ""
    do {
        try body()
        Issue.record("expected a KhoError of kind .\(kind)\(what), nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as KhoError {
        #expect(error.kind == kind, "expected .\(kind)\(what), got .\(error.kind): \(error.message)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a KhoError of kind .\(kind)\(what), got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
    }
}

/// A fresh folder under the system's temporary directory, removed when `body` returns.
func withTemporaryFolder<T>(_ body: (String) throws -> T) throws -> T {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("kho-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: url) }
    return try body(url.path)
}

extension SplitMix64 {
    /// A file name as the repository uses them: 64 lowercase hex digits.
    mutating func name() -> String { Hex.encode(bytes(32)) }
}
