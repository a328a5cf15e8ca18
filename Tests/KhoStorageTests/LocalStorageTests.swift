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

    /// Separate processes racing to store the same names (as two `kho wal push` of one segment
    /// would): for each name exactly one stores, and the stored file is that one's. The racers
    /// are this test binary run again with `saveIfAbsentRacer` selected.
    @Test func saveIfAbsentRaceBetweenProcesses() throws {
        let racers = 6
        let names = (0..<4).map { "00000000000000aa/0000000100000000/00000001000000000000000\($0)" }
        try withTemporaryFolder { (folder: String) throws in
            let root = folder + "/repo"
            try FileManager.default.createDirectory(atPath: folder + "/results", withIntermediateDirectories: true)
            let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
            var processes: [Process] = []
            for index in 0..<racers {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: executable)
                process.arguments = ["--testing-library", "swift-testing", "--filter", "saveIfAbsentRacer"]
                process.environment = ProcessInfo.processInfo.environment.merging(
                    ["KHO_TEST_SAVE_IF_ABSENT_RACE": "\(folder)|\(index)|\(names.joined(separator: ","))"]) { $1 }
                process.standardOutput = FileHandle.nullDevice
                process.standardError = FileHandle.nullDevice
                try process.run()
                processes.append(process)
            }
            // Start them together once every racer is waiting.
            let deadline = Date().addingTimeInterval(60)
            while try FileManager.default.contentsOfDirectory(atPath: folder + "/results").filter({ $0.hasSuffix(".ready") }).count < racers {
                guard Date() < deadline else { Issue.record("the racers did not start within 60 s"); break }
                usleep(5_000)
            }
            try Data().write(to: URL(fileURLWithPath: folder + "/go"))
            for process in processes { process.waitUntilExit() }
            let storage = LocalStorage(path: root)
            for name in names {
                var winners: [Int] = []
                for index in 0..<racers {
                    let result = try String(contentsOfFile: "\(folder)/results/\(index)-\(name.suffix(24))", encoding: .utf8)
                    if result == "stored" { winners.append(index) } else { #expect(result == "taken", "racer \(index): \(result)") }
                }
                #expect(winners.count == 1, "\(name): \(winners.count) processes stored it")
                if let winner = winners.first {
                    #expect(try storage.load(Handle(.wal, name)) == Self.racerData(winner, name))
                }
            }
            #expect(try storage.leftoverTemporaryFiles().isEmpty)
        }
    }

    static func racerData(_ index: Int, _ name: String) -> [UInt8] {
        var rng = SplitMix64(seed: UInt64(index) &* 1_000_003 &+ UInt64(name.utf8.reduce(0) { $0 &* 31 &+ Int($1) } & 0xffff))
        return rng.bytes(50_000 + index)
    }

    /// One racer of `saveIfAbsentRaceBetweenProcesses`; does nothing unless that test started it.
    @Test func saveIfAbsentRacer() throws {
        guard let job = ProcessInfo.processInfo.environment["KHO_TEST_SAVE_IF_ABSENT_RACE"] else { return }
        let parts = job.split(separator: "|").map(String.init)
        try #require(parts.count == 3, "KHO_TEST_SAVE_IF_ABSENT_RACE is folder|index|names")
        let (folder, index, names) = (parts[0], try #require(Int(parts[1])), parts[2].split(separator: ",").map(String.init))
        let storage = LocalStorage(path: folder + "/repo")
        try Data().write(to: URL(fileURLWithPath: "\(folder)/results/\(index).ready"))
        while !FileManager.default.fileExists(atPath: folder + "/go") { usleep(200) }
        for name in names {
            let result: String
            do {
                result = try storage.saveIfAbsent(Handle(.wal, name), data: Self.racerData(index, name)) ? "stored" : "taken"
            } catch {
                result = "error: \(error)"
            }
            try Data(result.utf8).write(to: URL(fileURLWithPath: "\(folder)/results/\(index)-\(name.suffix(24))"))
        }
    }
}
