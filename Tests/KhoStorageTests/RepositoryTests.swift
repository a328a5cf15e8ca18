import Foundation
import KhoTestSupport
import KhoCore
import KhoSupport
import KhoStorage
import Testing

private let fastScrypt = Scrypt.minimum
private let password = Array("mật khẩu đêm".utf8)

private func createOptions() -> Repository.CreateOptions {
    var options = Repository.CreateOptions()
    options.scrypt = fastScrypt
    options.chunker = ChunkerParameters(minSize: 16 << 10, averageSize: 64 << 10, maxSize: 256 << 10)
    return options
}

private func expectSameKey(_ a: MasterKey, _ b: MasterKey, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.encryption.bytes == b.encryption.bytes, sourceLocation: sourceLocation)
    #expect(a.mac.bytes == b.mac.bytes, sourceLocation: sourceLocation)
    #expect(a.chunkerSeed.bytes == b.chunkerSeed.bytes, sourceLocation: sourceLocation)
}

private func snapshot(time: Date, tree: BlobID = BlobID(w0: 1, w1: 2, w2: 3, w3: 4), tags: [String] = []) -> Snapshot {
    Snapshot(time: time, tree: tree, paths: ["/srv/data"], hostname: "host", username: "kho", tags: tags,
             parent: nil, source: SnapshotSource(kind: "files"), partial: false, summary: nil, manifest: nil)
}

private func samplePacks(seed: UInt64, packs: Int, blobs: Int) -> [(pack: BlobID, blobs: [PackedBlob])] {
    var rng = SplitMix64(seed: seed)
    var result: [(pack: BlobID, blobs: [PackedBlob])] = []
    for _ in 0..<packs {
        let pack = BlobID(w0: rng.next(), w1: rng.next(), w2: rng.next(), w3: rng.next())
        var list: [PackedBlob] = []
        for i in 0..<blobs {
            let id = BlobID(w0: rng.next(), w1: rng.next(), w2: rng.next(), w3: rng.next())
            let kind: BlobKind = i % 4 == 0 ? .tree : .data
            list.append(PackedBlob(id: id, kind: kind, compressed: i % 2 == 0, offset: UInt32(i * 1000), length: 1000, rawLength: 2000))
        }
        result.append((pack, list))
    }
    return result
}

@Suite struct RepositoryTests {
    // MARK: create and open

    @Test func createThenOpenWithTheRightPassword() throws {
        try withTemporaryFolder { (folder: String) throws in
            let storage = LocalStorage(path: folder + "/repo")
            let created = try Repository.create(storage: storage, password: password, options: createOptions())
            let opened = try Repository.open(storage: LocalStorage(path: folder + "/repo"), password: password)
            // The whole config, `created` included, reads back as written.
            #expect(opened.config == created.config)
            #expect(opened.keyID == created.keyID)
            expectSameKey(opened.key, created.key)
            #expect(opened.config.chunker == createOptions().chunker)
            #expect(opened.config.compressionLevel == 1)
            #expect(opened.config.version == 1)
            #expect(opened.config.format == "kho-repository")
            #expect(opened.gear.values == created.gear.values)
            // Layout: one key file named by the SHA-256 of its bytes, and a config.
            let keys = try storage.list(.key)
            #expect(keys.map(\.name) == [created.keyID])
            #expect(try SHA256.hash(try storage.load(Handle(.key, created.keyID))).hex == created.keyID)
            #expect(storage.exists(.config))
            // Two repositories never share keys.
            let other = try Repository.create(storage: LocalStorage(path: folder + "/other"), password: password, options: createOptions())
            #expect(other.key.encryption.bytes != created.key.encryption.bytes)
            #expect(other.key.mac.bytes != created.key.mac.bytes)
            #expect(other.key.chunkerSeed.bytes != created.key.chunkerSeed.bytes)
            #expect(other.config.id != created.config.id)
        }
    }

    @Test func wrongPasswordIsRefused() throws {
        try withTemporaryFolder { (folder: String) throws in
            let storage = LocalStorage(path: folder)
            _ = try Repository.create(storage: storage, password: password, options: createOptions())
            for wrong in [Array("mật khẩu đêm ".utf8), Array("mat khau dem".utf8), [0], []] {
                expectKhoError(.wrongPassword, "\(wrong)") { _ = try Repository.open(storage: storage, password: wrong) }
            }
            // NFD spelling of the same password is other bytes, so another password.
            let nfd = Array("mật khẩu đêm".decomposedStringWithCanonicalMapping.utf8)
            if nfd != password {
                expectKhoError(.wrongPassword, "NFD spelling") { _ = try Repository.open(storage: storage, password: nfd) }
            }
        }
    }

    @Test func openingAnEmptyOrMissingFolderIsNotARepository() throws {
        try withTemporaryFolder { (folder: String) throws in
            expectKhoError(.notARepository, "empty folder") { _ = try Repository.open(storage: LocalStorage(path: folder), password: password) }
            expectKhoError(.notARepository, "missing folder") {
                _ = try Repository.open(storage: LocalStorage(path: folder + "/nothing/here"), password: password)
            }
        }
    }

    @Test func openingAFolderWithABadConfigIsNotARepository() throws {
        try withTemporaryFolder { (folder: String) throws in
            let cases: [(String, String)] = [
                ("garbage", "not json at all"),
                ("other format", #"{"format":"restic","version":1}"#),
            ]
            for (what, text) in cases {
                let storage = LocalStorage(path: folder + "/" + what)
                try storage.save(.config, data: Array(text.utf8))
                expectKhoError(.notARepository, what) { _ = try Repository.open(storage: storage, password: password) }
            }
            // A config from a newer kho.
            let newer = LocalStorage(path: folder + "/newer")
            let repository = try Repository.create(storage: newer, password: password, options: createOptions())
            var config = repository.config
            config.version = 2
            try newer.save(.config, data: Array(try JSON.encoder.encode(config)))
            expectKhoError(.notARepository, "newer version") { _ = try Repository.open(storage: newer, password: password) }
        }
    }

    @Test func createRefusesANonEmptyFolder() throws {
        try withTemporaryFolder { (folder: String) throws in
            try Data("precious".utf8).write(to: URL(fileURLWithPath: folder + "/thesis.docx"))
            let storage = LocalStorage(path: folder)
            expectKhoError(.usage, "folder with a file") { _ = try Repository.create(storage: storage, password: password, options: createOptions()) }
            #expect(try storage.list(.key).isEmpty, "nothing was written")
            #expect(!storage.exists(.config))
            #expect(try Data(contentsOf: URL(fileURLWithPath: folder + "/thesis.docx")) == Data("precious".utf8))

            let repo = LocalStorage(path: folder + "/repo")
            let first = try Repository.create(storage: repo, password: password, options: createOptions())
            expectKhoError(.usage, "existing repository") { _ = try Repository.create(storage: repo, password: password, options: createOptions()) }
            // The first repository is untouched.
            #expect(try Repository.open(storage: repo, password: password).config.id == first.config.id)
        }
    }

    @Test func createRefusesBadOptions() throws {
        try withTemporaryFolder { (folder: String) throws in
            let storage = LocalStorage(path: folder)
            expectKhoError(.usage, "empty password") { _ = try Repository.create(storage: storage, password: [], options: createOptions()) }
            var badLevel = createOptions()
            badLevel.compressionLevel = 23
            expectKhoError(.usage, "compression level") { _ = try Repository.create(storage: storage, password: password, options: badLevel) }
            var badChunker = createOptions()
            badChunker.chunker = ChunkerParameters(minSize: 1000, averageSize: 3000, maxSize: 9000)
            expectKhoError(.usage, "chunker") { _ = try Repository.create(storage: storage, password: password, options: badChunker) }
            #expect(try storage.isEmpty(), "a refused create writes nothing")
        }
    }

    @Test func copyChunkerFromSharesOnlyTheChunkerSeed() throws {
        try withTemporaryFolder { (folder: String) throws in
            let source = try Repository.create(storage: LocalStorage(path: folder + "/a"), password: password, options: createOptions())
            var options = createOptions()
            options.chunker = .standard
            options.copyChunkerFrom = source
            let copy = try Repository.create(storage: LocalStorage(path: folder + "/b"), password: Array("other".utf8), options: options)
            #expect(copy.config.chunker == source.config.chunker)
            #expect(copy.key.chunkerSeed.bytes == source.key.chunkerSeed.bytes)
            #expect(copy.gear.values == source.gear.values)
            #expect(copy.key.encryption.bytes != source.key.encryption.bytes)
            #expect(copy.key.mac.bytes != source.key.mac.bytes)
            let reopened = try Repository.open(storage: LocalStorage(path: folder + "/b"), password: Array("other".utf8))
            #expect(reopened.key.chunkerSeed.bytes == source.key.chunkerSeed.bytes)
        }
    }

    // MARK: keys

    @Test func addKeyThenOpenWithTheSecondPassword() throws {
        try withTemporaryFolder { (folder: String) throws in
            let storage = LocalStorage(path: folder)
            let repository = try Repository.create(storage: storage, password: password, options: createOptions())
            let second = Array("night jobs".utf8)
            let secondID = try repository.addKey(password: second, label: "night", parameters: fastScrypt)
            #expect(secondID != repository.keyID)
            #expect(try SHA256.hash(try storage.load(Handle(.key, secondID))).hex == secondID)

            let viaSecond = try Repository.open(storage: storage, password: second)
            #expect(viaSecond.keyID == secondID)
            expectSameKey(viaSecond.key, repository.key)
            let viaFirst = try Repository.open(storage: storage, password: password)
            #expect(viaFirst.keyID == repository.keyID)
            expectSameKey(viaFirst.key, repository.key)

            let keys = try repository.listKeys()
            #expect(Set(keys.map(\.id)) == [repository.keyID, secondID])
            #expect(keys.first { $0.id == secondID }?.file.label == "night")
            #expect(keys.first { $0.id == secondID }?.file.scrypt == fastScrypt)
            expectKhoError(.wrongPassword) { _ = try Repository.open(storage: storage, password: Array("neither".utf8)) }
            expectKhoError(.usage, "empty new password") { _ = try repository.addKey(password: [], label: "x", parameters: fastScrypt) }
        }
    }

    @Test func removeKeyRefusesTheLastKey() throws {
        try withTemporaryFolder { (folder: String) throws in
            let storage = LocalStorage(path: folder)
            let repository = try Repository.create(storage: storage, password: password, options: createOptions())
            expectKhoError(.usage, "last key") { try repository.removeKey(id: repository.keyID) }
            expectKhoError(.usage, "last key by prefix") { try repository.removeKey(id: String(repository.keyID.prefix(8))) }
            #expect(try storage.list(.key).count == 1)
            #expect(try Repository.open(storage: storage, password: password).keyID == repository.keyID)

            let second = Array("second".utf8)
            let secondID = try repository.addKey(password: second, label: "second", parameters: fastScrypt)
            expectKhoError(.usage, "unknown ID") { try repository.removeKey(id: String(repeating: "z", count: 8)) }
            try repository.removeKey(id: String(repository.keyID.prefix(12)))
            #expect(try storage.list(.key).map(\.name) == [secondID])
            expectKhoError(.wrongPassword, "removed key") { _ = try Repository.open(storage: storage, password: password) }
            #expect(try Repository.open(storage: storage, password: second).keyID == secondID)
            expectKhoError(.usage, "now the last key") { try repository.removeKey(id: secondID) }
        }
    }

    @Test func openSkipsAnUnreadableKeyFile() throws {
        try withTemporaryFolder { (folder: String) throws in
            let storage = LocalStorage(path: folder)
            let repository = try Repository.create(storage: storage, password: password, options: createOptions())
            // A damaged key file sorted before the good one.
            try storage.save(Handle(.key, String(repeating: "0", count: 64)), data: Array("{ not a key".utf8))
            #expect(try Repository.open(storage: storage, password: password).keyID == repository.keyID)
            // With every key file gone the repository cannot be opened, and says so.
            try storage.remove(Handle(.key, repository.keyID))
            try storage.remove(Handle(.key, String(repeating: "0", count: 64)))
            expectKhoError(.integrity, "no keys") { _ = try Repository.open(storage: storage, password: password) }
        }
    }

    // MARK: snapshots

    @Test func saveLoadAndFindSnapshots() throws {
        try withTemporaryFolder { (folder: String) throws in
            let storage = LocalStorage(path: folder)
            let repository = try Repository.create(storage: storage, password: password, options: createOptions())
            expectKhoError(.usage, "latest of none") { _ = try repository.findSnapshot("latest") }

            var full = snapshot(time: Date(timeIntervalSince1970: 1_714_566_896.25), tags: ["daily", "sở-tư-pháp"])
            full.parent = String(repeating: "ab", count: 32)
            full.partial = true
            full.source = SnapshotSource(kind: "postgresql", name: "hộ tịch")
            full.keyID = repository.keyID
            var summary = BackupSummary()
            summary.filesNew = 3
            summary.bytesAdded = 1 << 40
            summary.start = Date(timeIntervalSince1970: 1_714_566_800.5)
            summary.end = Date(timeIntervalSince1970: 1_714_566_896)
            full.summary = summary
            full.manifest = .object([
                "server": .string("PostgreSQL 16.3"),
                "tables": .array([.object(["name": .string("công_dân"), "rows": .number(1234), "checksum": .string("9f00")])]),
                "size": .number(123_456_789),
                "ok": .bool(true),
                "none": .null,
            ])
            let fullID = try repository.saveSnapshot(full)
            let older = try repository.saveSnapshot(snapshot(time: Date(timeIntervalSince1970: 1_600_000_000)))
            let newest = try repository.saveSnapshot(snapshot(time: Date(timeIntervalSince1970: 1_800_000_000), tags: ["weekly"]))
            // Saved in a different order than their times, named by the hash of the stored bytes.
            #expect(try SHA256.hash(try storage.load(Handle(.snapshot, fullID.hex))) == fullID)

            let loaded = try repository.loadSnapshot(id: fullID.hex)
            #expect(loaded.id == fullID.hex)
            #expect(loaded.time == full.time)
            #expect(loaded.tree == full.tree)
            #expect(loaded.treeID == BlobID(w0: 1, w1: 2, w2: 3, w3: 4))
            #expect(loaded.paths == full.paths)
            #expect(loaded.hostname == full.hostname)
            #expect(loaded.username == full.username)
            #expect(loaded.tags == full.tags)
            #expect(loaded.parent == full.parent)
            #expect(loaded.source == full.source)
            #expect(loaded.partial)
            #expect(loaded.keyID == repository.keyID)
            #expect(loaded.manifest == full.manifest)
            #expect(loaded.summary?.filesNew == 3)
            #expect(loaded.summary?.bytesAdded == 1 << 40)
            #expect(loaded.summary?.start == summary.start)
            #expect(loaded.summary?.end == summary.end)

            #expect(try repository.findSnapshot("latest").id == newest.hex)
            #expect(try repository.findSnapshot("latest", filter: { $0.tags.contains("daily") }).id == fullID.hex)
            #expect(try repository.findSnapshot("latest", filter: { $0.time < Date(timeIntervalSince1970: 1_700_000_000) }).id == older.hex)
            expectKhoError(.usage, "latest with a filter nothing matches") { _ = try repository.findSnapshot("latest", filter: { _ in false }) }

            for id in [fullID, older, newest] {
                #expect(try repository.findSnapshot(id.hex).id == id.hex)
                // The shortest prefix that no other snapshot shares, in both cases.
                let others = [fullID, older, newest].filter { $0 != id }.map(\.hex)
                var length = 1
                while others.contains(where: { $0.hasPrefix(id.hex.prefix(length)) }) { length += 1 }
                let prefix = String(id.hex.prefix(max(length, 4)))
                #expect(try repository.findSnapshot(prefix).id == id.hex)
                #expect(try repository.findSnapshot(prefix.uppercased()).id == id.hex)
            }
            expectKhoError(.usage, "not hex") { _ = try repository.findSnapshot("latest!") }
            expectKhoError(.usage, "empty") { _ = try repository.findSnapshot("") }
            let absent = (0..<16).map { String($0, radix: 16) }.first { c in ![fullID, older, newest].contains { $0.hex.hasPrefix(c) } }!
            expectKhoError(.usage, "unknown prefix") { _ = try repository.findSnapshot(absent) }

            let all = try repository.listSnapshots()
            #expect(all.map(\.id) == [older.hex, fullID.hex, newest.hex], "oldest first")

            // Another process with the same password sees the same snapshots.
            let reopened = try Repository.open(storage: LocalStorage(path: folder), password: password)
            #expect(try reopened.findSnapshot("latest").id == newest.hex)
            expectKhoError(.integrity, "missing snapshot") { _ = try repository.loadSnapshot(id: String(repeating: "0", count: 64)) }
        }
    }

    @Test func damagedSnapshotIsReportedAndSkipped() throws {
        try withTemporaryFolder { (folder: String) throws in
            let storage = LocalStorage(path: folder)
            let repository = try Repository.create(storage: storage, password: password, options: createOptions())
            let good = try repository.saveSnapshot(snapshot(time: Date(timeIntervalSince1970: 1_700_000_000)))
            let bad = try repository.saveSnapshot(snapshot(time: Date(timeIntervalSince1970: 1_700_000_001)))
            var bytes = try storage.load(Handle(.snapshot, bad.hex))
            bytes[bytes.count / 2] ^= 0x40
            try storage.save(Handle(.snapshot, bad.hex), data: bytes)

            var damaged: [(String, KhoError)] = []
            let listed = try repository.listSnapshots { damaged.append(($0, $1)) }
            #expect(listed.map(\.id) == [good.hex])
            #expect(damaged.map(\.0) == [bad.hex])
            #expect(damaged.first?.1.kind == .integrity)
            expectKhoError(.integrity, "load the damaged one") { _ = try repository.loadSnapshot(id: bad.hex) }
            // Another repository's snapshot does not open under this key.
            let other = try Repository.create(storage: LocalStorage(path: folder + "/other"), password: password, options: createOptions())
            let foreign = try other.saveSnapshot(snapshot(time: Date()))
            try storage.save(Handle(.snapshot, foreign.hex), data: try other.storage.load(Handle(.snapshot, foreign.hex)))
            expectKhoError(.integrity, "foreign snapshot") { _ = try repository.loadSnapshot(id: foreign.hex) }
        }
    }

    // MARK: index

    @Test func saveIndexFilesAndLoadTheIndex() throws {
        try withTemporaryFolder { (folder: String) throws in
            let storage = LocalStorage(path: folder)
            let repository = try Repository.create(storage: storage, password: password, options: createOptions())
            #expect(try repository.loadIndex().blobCount == 0)

            let first = samplePacks(seed: 1, packs: 3, blobs: 50)
            let second = samplePacks(seed: 2, packs: 2, blobs: 40)
            let firstID = try repository.saveIndexFile(IndexFile(packs: first))
            let secondID = try repository.saveIndexFile(IndexFile(packs: second))
            #expect(try SHA256.hash(try storage.load(Handle(.index, firstID.hex))) == firstID)

            let reread = try repository.loadIndexFile(name: firstID.hex)
            #expect(reread.packs.map(\.pack) == first.map(\.pack))
            #expect(reread.packs.map(\.blobs) == first.map(\.blobs))

            var damaged: [String] = []
            let index = try Repository.open(storage: storage, password: password).loadIndex { name, _ in damaged.append(name) }
            #expect(damaged.isEmpty)
            #expect(index.blobCount == 3 * 50 + 2 * 40)
            #expect(Set(index.files) == [firstID.hex, secondID.hex])
            for (pack, blobs) in first + second {
                for blob in blobs {
                    let location = index.lookup(blob.id)
                    #expect(location?.pack == pack)
                    #expect(location?.blob == blob)
                }
            }

            // An index file that supersedes the first one: the first one's entries disappear.
            let replacement = samplePacks(seed: 3, packs: 1, blobs: 10)
            let thirdID = try repository.saveIndexFile(IndexFile(packs: replacement, supersedes: [firstID]))
            let afterPrune = try repository.loadIndex()
            #expect(Set(afterPrune.files) == [secondID.hex, thirdID.hex])
            #expect(afterPrune.blobCount == 2 * 40 + 10)
            #expect(!afterPrune.contains(first[0].blobs[0].id))
            #expect(afterPrune.contains(replacement[0].blobs[0].id))
            #expect(afterPrune.contains(second[1].blobs[39].id))
        }
    }

    @Test func damagedIndexFileIsReportedAndSkipped() throws {
        try withTemporaryFolder { (folder: String) throws in
            let storage = LocalStorage(path: folder)
            let repository = try Repository.create(storage: storage, password: password, options: createOptions())
            let good = samplePacks(seed: 4, packs: 2, blobs: 30)
            let bad = samplePacks(seed: 5, packs: 2, blobs: 30)
            let goodID = try repository.saveIndexFile(IndexFile(packs: good))
            let badID = try repository.saveIndexFile(IndexFile(packs: bad))

            var bytes = try storage.load(Handle(.index, badID.hex))
            bytes[bytes.count / 3] ^= 0x01
            try storage.save(Handle(.index, badID.hex), data: bytes)
            // And one that is only a few bytes long.
            let stubName = String(repeating: "e", count: 64)
            try storage.save(Handle(.index, stubName), data: [1, 2, 3])

            var damaged: [String: KhoError] = [:]
            let index = try repository.loadIndex { name, error in damaged[name] = error }
            #expect(Set(damaged.keys) == [badID.hex, stubName])
            #expect(damaged.values.allSatisfy { $0.kind == .integrity })
            #expect(index.files == [goodID.hex])
            #expect(index.blobCount == 60)
            #expect(index.contains(good[1].blobs[29].id))
            #expect(!index.contains(bad[0].blobs[0].id))
            expectKhoError(.integrity, "load the damaged file directly") { _ = try repository.loadIndexFile(name: badID.hex) }
            expectKhoError(.integrity, "missing index file") { _ = try repository.loadIndexFile(name: String(repeating: "1", count: 64)) }

            // Without a callback the damage is logged and loading still succeeds.
            #expect(try repository.loadIndex().blobCount == 60)
        }
    }

    @Test func aSnapshotFileIsNotAnIndexFile() throws {
        try withTemporaryFolder { (folder: String) throws in
            // Files are sealed with their kind as context: moving one to another folder is detected.
            let storage = LocalStorage(path: folder)
            let repository = try Repository.create(storage: storage, password: password, options: createOptions())
            let id = try repository.saveSnapshot(snapshot(time: Date()))
            try storage.save(Handle(.index, id.hex), data: try storage.load(Handle(.snapshot, id.hex)))
            var damaged: [String] = []
            _ = try repository.loadIndex { name, _ in damaged.append(name) }
            #expect(damaged == [id.hex])
        }
    }
}
