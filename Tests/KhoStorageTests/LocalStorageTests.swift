import Foundation
import KhoTestSupport
import KhoCore
import KhoSupport
import KhoStorage
import Testing

@Suite struct LocalStorageTests {
    @Test(arguments: StorageConformance.Check.allCases)
    func conformance(_ check: StorageConformance.Check) throws {
        try withTemporaryFolder { (folder: String) throws in
            // Each storage the suite asks for is a new folder that does not exist yet.
            try StorageConformance { LocalStorage(path: folder + "/repo-" + UUID().uuidString) }.run(check)
        }
    }

    @Test func conformanceInAnExistingEmptyFolder() throws {
        try withTemporaryFolder { (folder: String) throws in
            try StorageConformance {
                let path = folder + "/existing-" + UUID().uuidString
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
                return LocalStorage(path: path + "/")
            }.run(.roundTripEveryKind)
        }
    }

    @Test func filesFollowTheRepositoryLayout() throws {
        try withTemporaryFolder { (folder: String) throws in
            let storage = LocalStorage(path: folder + "//")
            #expect(storage.location == folder)
            var rng = SplitMix64(seed: 20)
            let pack = rng.name()
            let names = (key: rng.name(), index: rng.name(), snapshot: rng.name(), lock: rng.name())
            try storage.save(Handle(.data, pack), data: [1])
            try storage.save(Handle(.key, names.key), data: [2])
            try storage.save(Handle(.index, names.index), data: [3])
            try storage.save(Handle(.snapshot, names.snapshot), data: [4])
            try storage.save(Handle(.lock, names.lock), data: [5])
            try storage.save(.config, data: [6])
            let fm = FileManager.default
            #expect(fm.contents(atPath: "\(folder)/data/\(pack.prefix(2))/\(pack)") == Data([1]))
            #expect(fm.contents(atPath: "\(folder)/keys/\(names.key)") == Data([2]))
            #expect(fm.contents(atPath: "\(folder)/index/\(names.index)") == Data([3]))
            #expect(fm.contents(atPath: "\(folder)/snapshots/\(names.snapshot)") == Data([4]))
            #expect(fm.contents(atPath: "\(folder)/locks/\(names.lock)") == Data([5]))
            #expect(fm.contents(atPath: "\(folder)/config") == Data([6]))
            // Nothing but the files themselves: no temporary file is left behind by a save.
            #expect(try storage.leftoverTemporaryFiles().isEmpty)
        }
    }

    @Test func interruptedSaveLeavesOnlyATemporaryFileThatListIgnores() throws {
        try withTemporaryFolder { (folder: String) throws in
            let storage = LocalStorage(path: folder)
            var rng = SplitMix64(seed: 21)
            let pack = rng.name()
            let snapshot = rng.name()
            try storage.save(Handle(.data, pack), data: [1, 2, 3])
            try storage.save(Handle(.snapshot, snapshot), data: [4, 5])
            try storage.save(.config, data: [6])

            // What a crash between create and rename leaves: a `.tmp-` file beside the target.
            let leftovers = [
                "\(folder)/data/\(pack.prefix(2))/.tmp-0011223344556677",
                "\(folder)/snapshots/.tmp-8899aabbccddeeff",
                "\(folder)/index/.tmp-0000000000000001",
                "\(folder)/.tmp-1111111111111111",
            ]
            try FileManager.default.createDirectory(atPath: "\(folder)/index", withIntermediateDirectories: true)
            for path in leftovers {
                #expect(FileManager.default.createFile(atPath: path, contents: Data([9, 9, 9, 9])))
            }

            #expect(try storage.list(.data) == [StoredFile(name: pack, size: 3)])
            #expect(try storage.list(.snapshot) == [StoredFile(name: snapshot, size: 2)])
            #expect(try storage.list(.index).isEmpty)
            #expect(try storage.list(.config) == [StoredFile(name: "config", size: 1)])
            #expect(try storage.load(Handle(.data, pack)) == [1, 2, 3])

            // One of them left two days ago.
            let twoDays: TimeInterval = 2 * 86_400
            try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -twoDays)], ofItemAtPath: leftovers[1])

            let found = try storage.leftoverTemporaryFiles()
            #expect(Set(found.map(\.path)) == Set(leftovers))
            let old = try #require(found.first { $0.path == leftovers[1] })
            #expect(abs(old.age - twoDays) < 600, "age \(old.age) for a file modified two days ago")
            for item in found where item.path != leftovers[1] {
                #expect(item.age < old.age, "\(item.path) has age \(item.age)")
            }

            // Saving beside a leftover works, and removing the leftover is up to the caller.
            try storage.save(Handle(.snapshot, rng.name()), data: [7])
            #expect(try storage.list(.snapshot).count == 2)
            #expect(Set(try storage.leftoverTemporaryFiles().map(\.path)) == Set(leftovers))
        }
    }

    @Test func strayEntriesAreNotListedAsPacks() throws {
        try withTemporaryFolder { (folder: String) throws in
            let storage = LocalStorage(path: folder)
            var rng = SplitMix64(seed: 22)
            let pack = rng.name()
            try storage.save(Handle(.data, pack), data: [1])
            // A file directly under data/ and a folder whose name is not a fan-out prefix.
            try Data([0]).write(to: URL(fileURLWithPath: "\(folder)/data/README"))
            try FileManager.default.createDirectory(atPath: "\(folder)/data/old-packs", withIntermediateDirectories: true)
            try Data([0]).write(to: URL(fileURLWithPath: "\(folder)/data/old-packs/\(rng.name())"))
            #expect(try storage.list(.data) == [StoredFile(name: pack, size: 1)])
        }
    }

    @Test func missingRootIsEmptyAndListsNothing() throws {
        try withTemporaryFolder { (folder: String) throws in
            let storage = LocalStorage(path: folder + "/does/not/exist")
            #expect(try storage.isEmpty())
            for kind in FileKind.allCases {
                #expect(try storage.list(kind).isEmpty)
            }
            #expect(try storage.leftoverTemporaryFiles().isEmpty)
        }
    }

    @Test func aFolderWithAnyFileIsNotEmpty() throws {
        try withTemporaryFolder { (folder: String) throws in
            #expect(try LocalStorage(path: folder).isEmpty())
            try Data().write(to: URL(fileURLWithPath: folder + "/.hidden"))
            #expect(try !LocalStorage(path: folder).isEmpty())
        }
    }
}
