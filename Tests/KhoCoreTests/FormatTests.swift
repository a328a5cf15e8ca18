import Foundation
import Testing
@testable import KhoCore
import KhoSupport

// MARK: - helpers shared by the KhoCore tests

/// Runs `body` and records an issue unless it throws a `KhoError` of `kind`.
func expectKhoError(_ kind: KhoError.Kind, _ comment: String? = nil, sourceLocation: SourceLocation = #_sourceLocation,
                    _ body: () throws -> Void) {
    let what = comment.map { " (\($0))" } ?? ""
    do {
        try body()
        Issue.record("expected a KhoError of kind .\(kind)\(what), nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as KhoError {
        #expect(error.kind == kind, "expected .\(kind)\(what), got .\(error.kind): \(error.message)", sourceLocation: sourceLocation)
        #expect(!error.message.isEmpty, sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a KhoError of kind .\(kind)\(what), got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
    }
}

/// A storage in memory, enough to give the engine tests a Repository.
final class MemoryStorage: Storage, @unchecked Sendable {
    private let lock = NSLock()
    private var files: [Handle: [UInt8]] = [:]

    var location: String { "memory" }

    func save(_ handle: Handle, data: [UInt8]) throws {
        lock.withLock { files[handle] = data }
    }

    func load(_ handle: Handle, offset: Int, length: Int?) throws -> [UInt8] {
        guard let bytes = lock.withLock({ files[handle] }) else { throw KhoError.missing(handle, in: location) }
        let count = length ?? max(0, bytes.count - offset)
        guard offset >= 0, count >= 0, offset + count <= bytes.count else {
            throw KhoError(.integrity, "\(handle.path) is shorter than expected")
        }
        return Array(bytes[offset..<(offset + count)])
    }

    func stat(_ handle: Handle) throws -> StoredFile {
        guard let bytes = lock.withLock({ files[handle] }) else { throw KhoError.missing(handle, in: location) }
        return StoredFile(name: handle.name, size: bytes.count)
    }

    func list(_ kind: FileKind) throws -> [StoredFile] {
        lock.withLock { files.filter { $0.key.kind == kind }.map { StoredFile(name: $0.key.name, size: $0.value.count) } }
    }

    func remove(_ handle: Handle) throws {
        _ = lock.withLock { files.removeValue(forKey: handle) }
    }

    func isEmpty() throws -> Bool { lock.withLock { files.isEmpty } }
}

private func makeRepository() throws -> Repository {
    var options = Repository.CreateOptions()
    options.scrypt = Scrypt.minimum  // the cheapest a key file may ask for in this build
    return try Repository.create(storage: MemoryStorage(), password: Array("test password".utf8), options: options)
}

// MARK: - BlobID and Hex

@Suite struct BlobIDTests {
    @Test func hexRoundTrip() throws {
        var rng = SplitMix64(seed: 3)
        for _ in 0..<200 {
            let bytes = rng.bytes(32)
            let id = try #require(BlobID(bytes: bytes))
            #expect(id.bytes == bytes)
            #expect(id.hex == Hex.encode(bytes))
            #expect(id.hex.count == 64)
            #expect(id.hex == id.hex.lowercased())
            #expect(BlobID(hex: id.hex) == id)
            #expect(BlobID(hex: id.hex.uppercased()) == id)
            #expect(id.shortHex == String(id.hex.prefix(8)))
            #expect(id.description == id.hex)
        }
        #expect(BlobID.zero.hex == String(repeating: "0", count: 64))
        let known = try #require(BlobID(hex: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"))
        #expect(known.bytes == Array(0..<32))
        #expect(known.w0 == 0x0001_0203_0405_0607)
        #expect(known.w3 == 0x1819_1a1b_1c1d_1e1f)
    }

    @Test func invalidHexIsRejected() throws {
        let good = String(repeating: "ab", count: 32)
        #expect(BlobID(hex: good) != nil)
        #expect(BlobID(hex: String(good.dropLast())) == nil)
        #expect(BlobID(hex: good + "a") == nil)
        #expect(BlobID(hex: good + "ab") == nil)
        #expect(BlobID(hex: "g" + good.dropFirst()) == nil)
        #expect(BlobID(hex: " " + good.dropFirst()) == nil)
        #expect(BlobID(hex: "") == nil)
        // 64 UTF-8 bytes but not 64 hex digits.
        #expect(BlobID(hex: "é" + String(good.dropFirst(2))) == nil)
        #expect(BlobID(bytes: [UInt8](repeating: 0, count: 31)) == nil)
        #expect(BlobID(bytes: [UInt8](repeating: 0, count: 33)) == nil)
        #expect(Hex.decode("abc") == nil)
        #expect(Hex.decode("0x") == nil)
        #expect(Hex.decode("") == [])
        #expect(Hex.decode("00fF7a") == [0x00, 0xff, 0x7a])
    }

    @Test func orderingIsByteLexicographic() throws {
        var rng = SplitMix64(seed: 4)
        var ids: [BlobID] = []
        for _ in 0..<500 { ids.append(rng.blobID()) }
        // IDs that share leading words, so that every word of the comparison is exercised, and
        // words whose top bit is set (a signed comparison would get those wrong).
        let base = rng.blobID()
        for word in 0..<4 {
            for value: UInt64 in [0, 1, 0x7fff_ffff_ffff_ffff, 0x8000_0000_0000_0000, .max] {
                var id = base
                switch word {
                case 0: id.w0 = value
                case 1: id.w1 = value
                case 2: id.w2 = value
                default: id.w3 = value
                }
                ids.append(id)
            }
        }
        let byID = ids.sorted()
        let byBytes = ids.sorted { $0.bytes.lexicographicallyPrecedes($1.bytes) }
        #expect(byID == byBytes)
        #expect(byID.map(\.hex) == ids.map(\.hex).sorted())
        for (a, b) in zip(ids, ids.dropFirst()) {
            #expect((a < b) == a.bytes.lexicographicallyPrecedes(b.bytes))
            #expect((a == b) == (a.bytes == b.bytes))
        }
    }

    @Test func hashingDistinguishesIDs() throws {
        var rng = SplitMix64(seed: 8)
        let ids = (0..<1000).map { _ in rng.blobID() }
        #expect(Set(ids).count == 1000)
        // IDs equal except in the middle words still differ as set members.
        var a = BlobID.zero
        var b = BlobID.zero
        a.w1 = 1
        b.w2 = 1
        #expect(Set([a, b, .zero]).count == 3)
    }
}

// MARK: - BinaryReader

@Suite struct BinaryTests {
    @Test func writerReaderRoundTrip() throws {
        var w = BinaryWriter()
        let id = BlobID(w0: 1, w1: 2, w2: 3, w3: .max)
        w.u8(0xab)
        w.u16(0xbeef)
        w.u32(0xdead_beef)
        w.u64(.max - 1)
        w.i64(-42)
        w.id(id)
        w.data(Array("Nguyễn".utf8))
        w.raw([9, 8])
        var r = BinaryReader(w.bytes, what: "test")
        #expect(try r.u8() == 0xab)
        #expect(try r.u16() == 0xbeef)
        #expect(try r.u32() == 0xdead_beef)
        #expect(try r.u64() == .max - 1)
        #expect(try r.i64() == -42)
        #expect(try r.id() == id)
        #expect(try r.data() == Array("Nguyễn".utf8))
        #expect(Array(try r.raw(2)) == [9, 8])
        #expect(r.atEnd)
        // Little-endian on disk.
        #expect(Array(w.bytes[1..<3]) == [0xef, 0xbe])
    }

    @Test func truncatedInputThrowsIntegrity() throws {
        var w = BinaryWriter()
        w.u32(7)
        w.u64(8)
        w.id(.zero)
        w.data([1, 2, 3, 4, 5])
        let full = w.bytes
        for length in 0..<full.count {
            let bytes = Array(full[0..<length])
            expectKhoError(.integrity, "prefix of \(length) bytes") {
                var r = BinaryReader(bytes, what: "test structure")
                _ = try r.u32()
                _ = try r.u64()
                _ = try r.id()
                _ = try r.data()
            }
        }
        var r = BinaryReader([1, 2, 3], what: "short")
        expectKhoError(.integrity) { _ = try r.u32() }
        expectKhoError(.integrity) { _ = try r.raw(4) }
        expectKhoError(.integrity) { _ = try r.raw(-1) }
        #expect(r.offset == 0, "a failed read must not move the reader")
        #expect(try r.u16() == 0x0201)
        expectKhoError(.integrity) { _ = try r.u16() }
    }

    @Test func oversizedFieldsThrowIntegrity() throws {
        var w = BinaryWriter()
        w.u32(UInt32.max)
        w.raw([1, 2, 3])
        var r = BinaryReader(w.bytes, what: "huge length")
        expectKhoError(.integrity) { _ = try r.data() }
        var limited = BinaryWriter()
        limited.data([UInt8](repeating: 1, count: 100))
        var r2 = BinaryReader(limited.bytes, what: "limited")
        expectKhoError(.integrity) { _ = try r2.data(limit: 99) }
        var r3 = BinaryReader(limited.bytes, what: "limited")
        #expect(throws: Never.self) { _ = try r3.data(limit: 100) }
    }
}

// MARK: - Tree

@Suite struct TreeTests {
    static let nfc: [UInt8] = Array("Nguy".utf8) + [0xE1, 0xBB, 0x85] + Array("n".utf8)              // U+1EC5
    static let nfd: [UInt8] = Array("Nguy".utf8) + [0x65, 0xCC, 0x82, 0xCC, 0x83] + Array("n".utf8)  // e + U+0302 + U+0303

    static func awkwardNodes() throws -> [Node] {
        var rng = SplitMix64(seed: 21)
        let names: [[UInt8]] = [
            [0xff, 0xfe, 0x80, 0x2e],                     // not UTF-8
            [0xc3],                                       // a lone lead byte
            nfc,
            nfd,
            Array("line\nbreak".utf8),
            Array("tab\tand\r\ncarriage".utf8),
            [UInt8](repeating: UInt8(ascii: "x"), count: 255),
            Array(String(repeating: "ễ", count: 85).utf8), // 255 bytes of three-byte characters
            Array(" leading space".utf8),
            Array("trailing space ".utf8),
            Array("-".utf8),
            Array("Ä".utf8),
            [0x01],
        ]
        var nodes: [Node] = []
        for (i, name) in names.enumerated() {
            let kinds: [NodeKind] = [.file, .directory, .symlink, .fifo, .characterDevice, .blockDevice, .socket]
            var node = Node(name: name, kind: kinds[i % kinds.count])
            node.mode = [0o644, 0o4755, 0o1777, 0o2750, 0][i % 5]
            node.uid = UInt32(i * 1000)
            node.gid = i % 2 == 0 ? .max : 0
            node.size = i == 0 ? .max : UInt64(i) * 12_345
            node.mtime = Timespec(seconds: i % 3 == 0 ? -86_400 * 365 : 1_714_566_896, nanoseconds: 999_999_999 - UInt32(i))
            node.ctime = Timespec(seconds: Int64.max - Int64(i), nanoseconds: UInt32(i))
            node.inode = rng.next()
            node.device = rng.next()
            node.links = UInt32(i + 1)
            node.rdev = node.kind == .characterDevice || node.kind == .blockDevice ? 0x0801 : 0
            if node.kind == .symlink { node.linkTarget = Array("../../a/ngắn/\u{0}x".utf8) + [0xff] }
            if node.kind == .file { node.content = (0..<(i + 1)).map { _ in rng.blobID() } }
            if node.kind == .directory { node.subtree = rng.blobID() }
            nodes.append(node)
        }
        // A file with no content and a directory whose subtree is the zero ID.
        nodes.append(Node(name: Array("empty".utf8), kind: .file))
        var zeroDir = Node(name: Array("zero".utf8), kind: .directory)
        zeroDir.subtree = .zero
        nodes.append(zeroDir)
        return nodes
    }

    @Test func encodeDecodeRoundTripWithAwkwardNames() throws {
        let nodes = try Self.awkwardNodes()
        let tree = Tree(nodes: nodes)
        #expect(tree.nodes.count == nodes.count)
        let encoded = tree.encoded()
        let decoded = try Tree(decoding: encoded, id: SHA256.hash(encoded))
        #expect(decoded == tree)
        #expect(decoded.nodes.map(\.name) == tree.nodes.map(\.name))
        #expect(decoded.encoded() == encoded)
        // NFC and NFD spellings are different names and both survive.
        #expect(decoded.node(named: Self.nfc)?.name == Self.nfc)
        #expect(decoded.node(named: Self.nfd)?.name == Self.nfd)
        #expect(Self.nfc != Self.nfd)
        for node in nodes {
            #expect(decoded.node(named: node.name) == node, "node \(node.name)")
        }
        #expect(decoded.node(named: Array("missing".utf8)) == nil)
        #expect(decoded.node(named: []) == nil)
    }

    @Test func nodesAreSortedByNameBytes() throws {
        let tree = Tree(nodes: try Self.awkwardNodes())
        for (a, b) in zip(tree.nodes, tree.nodes.dropFirst()) {
            #expect(a.name.lexicographicallyPrecedes(b.name))
        }
    }

    @Test func sameNodesInAnyOrderEncodeIdentically() throws {
        let nodes = try Self.awkwardNodes()
        let reference = Tree(nodes: nodes).encoded()
        var rng = SplitMix64(seed: 99)
        for _ in 0..<10 {
            #expect(Tree(nodes: nodes.shuffled(using: &rng)).encoded() == reference)
        }
        #expect(Tree(nodes: nodes.reversed()).encoded() == reference)
        // A change to one field changes the encoding.
        var changed = nodes
        changed[3].mtime.nanoseconds += 1
        #expect(Tree(nodes: changed).encoded() != reference)
    }

    @Test func emptyTreeRoundTrips() throws {
        let empty = Tree(nodes: [])
        let decoded = try Tree(decoding: empty.encoded(), id: .zero)
        #expect(decoded.nodes.isEmpty)
        #expect(empty.encoded() == Array("KTRE".utf8) + [1, 0, 0, 0, 0])
    }

    @Test func damagedTreesThrowIntegrity() throws {
        let encoded = Tree(nodes: Array(try Self.awkwardNodes().prefix(4))).encoded()
        for length in 0..<encoded.count {
            expectKhoError(.integrity, "prefix of \(length) bytes") {
                _ = try Tree(decoding: Array(encoded[0..<length]), id: .zero)
            }
        }
        expectKhoError(.integrity, "trailing byte") { _ = try Tree(decoding: encoded + [0], id: .zero) }
        var badMagic = encoded
        badMagic[0] = UInt8(ascii: "X")
        expectKhoError(.integrity, "magic") { _ = try Tree(decoding: badMagic, id: .zero) }
        var badVersion = encoded
        badVersion[4] = 2
        expectKhoError(.integrity, "version") { _ = try Tree(decoding: badVersion, id: .zero) }
        // A node count far beyond the data must fail cleanly, not allocate or crash.
        var hugeCount = Array(encoded[0..<5])
        hugeCount += [0xff, 0xff, 0xff, 0xff]
        expectKhoError(.integrity, "huge count") { _ = try Tree(decoding: hugeCount, id: .zero) }
    }
}

// MARK: - IndexFile and MasterIndex

private func randomPacks(_ rng: inout SplitMix64, packs: Int, blobsPerPack: ClosedRange<Int>) throws -> [(pack: BlobID, blobs: [PackedBlob])] {
    (0..<packs).map { _ in
        var offset: UInt32 = 0
        let blobs = (0..<Int.random(in: blobsPerPack, using: &rng)).map { _ -> PackedBlob in
            let length = UInt32.random(in: 29...100_000, using: &rng)
            defer { offset += length }
            return PackedBlob(id: rng.blobID(), kind: Bool.random(using: &rng) ? .data : .tree, compressed: Bool.random(using: &rng),
                              offset: offset, length: length, rawLength: UInt32.random(in: 0...200_000, using: &rng))
        }
        return (rng.blobID(), blobs)
    }
}

private func expectSamePacks(_ a: [(pack: BlobID, blobs: [PackedBlob])], _ b: [(pack: BlobID, blobs: [PackedBlob])],
                             sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.map(\.pack) == b.map(\.pack), sourceLocation: sourceLocation)
    #expect(a.map(\.blobs) == b.map(\.blobs), sourceLocation: sourceLocation)
}

@Suite struct IndexTests {
    @Test func indexFileRoundTripWithSupersedes() throws {
        var rng = SplitMix64(seed: 31)
        let packs = try randomPacks(&rng, packs: 40, blobsPerPack: 0...60)
        let supersedes = (0..<5).map { _ in rng.blobID() }
        let file = IndexFile(packs: packs, supersedes: supersedes)
        let encoded = file.encoded()
        let decoded = try IndexFile(decoding: encoded, name: "test")
        expectSamePacks(decoded.packs, packs)
        #expect(decoded.supersedes == supersedes)
        #expect(decoded.encoded() == encoded)

        let plain = try IndexFile(decoding: IndexFile(packs: packs).encoded(), name: "plain")
        #expect(plain.supersedes.isEmpty)
        expectSamePacks(plain.packs, packs)

        let empty = try IndexFile(decoding: IndexFile(packs: []).encoded(), name: "empty")
        #expect(empty.packs.isEmpty && empty.supersedes.isEmpty)
    }

    @Test func packedBlobFieldsSurviveExtremes() throws {
        let blob = PackedBlob(id: BlobID(w0: .max, w1: 0, w2: .max, w3: 1), kind: .tree, compressed: true,
                              offset: .max, length: .max - 1, rawLength: .max)
        let decoded = try IndexFile(decoding: IndexFile(packs: [(.zero, [blob])]).encoded(), name: "x")
        #expect(decoded.packs.first?.blobs == [blob])
    }

    @Test func damagedIndexFilesThrowIntegrity() throws {
        var rng = SplitMix64(seed: 32)
        let encoded = IndexFile(packs: try randomPacks(&rng, packs: 2, blobsPerPack: 1...2), supersedes: [rng.blobID()]).encoded()
        for length in 0..<encoded.count {
            expectKhoError(.integrity, "prefix of \(length) bytes") { _ = try IndexFile(decoding: Array(encoded[0..<length]), name: "t") }
        }
        expectKhoError(.integrity, "trailing byte") { _ = try IndexFile(decoding: encoded + [0], name: "t") }
        var badMagic = encoded
        badMagic[1] ^= 0x20
        expectKhoError(.integrity, "magic") { _ = try IndexFile(decoding: badMagic, name: "t") }
        var badKind = encoded
        // First blob's kind byte: magic 4, version 1, supersedes count 4 + 32, pack count 4, pack id 32, blob count 4, blob id 32.
        badKind[4 + 1 + 4 + 32 + 4 + 32 + 4 + 32] = 9
        expectKhoError(.integrity, "unknown blob kind") { _ = try IndexFile(decoding: badKind, name: "t") }
    }

    @Test func masterIndexLookupOverThousandsOfIDs() throws {
        var rng = SplitMix64(seed: 33)
        let packs = try randomPacks(&rng, packs: 100, blobsPerPack: 20...80)
        let index = MasterIndex(packs: packs, files: ["a", "b"])
        let total = packs.reduce(0) { $0 + $1.blobs.count }
        #expect(total > 3000)
        #expect(index.blobCount == total)
        #expect(index.files == ["a", "b"])
        #expect(Set(index.packIDs) == Set(packs.map(\.pack)))
        for (pack, blobs) in packs {
            for blob in blobs {
                #expect(index.contains(blob.id))
                #expect(index.lookup(blob.id) == BlobLocation(pack: pack, blob: blob))
                #expect(index.lookupAll(blob.id) == [BlobLocation(pack: pack, blob: blob)])
            }
        }
        for _ in 0..<2000 {
            let other = rng.blobID()
            #expect(!index.contains(other))
            #expect(index.lookup(other) == nil)
            #expect(index.lookupAll(other).isEmpty)
        }
        // Neighbours of the smallest and largest IDs, and the extremes.
        let sorted = packs.flatMap { $0.blobs.map(\.id) }.sorted()
        var below = sorted[0]
        below.w3 &-= 1
        var above = sorted[sorted.count - 1]
        above.w3 &+= 1
        for id in [below, above, .zero, BlobID(w0: .max, w1: .max, w2: .max, w3: .max)] where !sorted.contains(id) {
            #expect(!index.contains(id))
        }

        var seen: [BlobID] = []
        index.forEach { seen.append($0.blob.id) }
        #expect(seen == sorted)
        let grouped = index.blobsByPack()
        for (pack, blobs) in packs {
            #expect(Set(grouped[pack, default: []].map(\.id)) == Set(blobs.map(\.id)))
        }
    }

    @Test func masterIndexKeepsDuplicates() throws {
        var rng = SplitMix64(seed: 34)
        var packs = try randomPacks(&rng, packs: 30, blobsPerPack: 10...30)
        let twice = packs[3].blobs[5]
        let thrice = packs[7].blobs[0]
        // The same blobs stored again in later packs, at other offsets.
        var copyA = twice
        copyA.offset = 777
        var copyB = thrice
        copyB.offset = 1
        var copyC = thrice
        copyC.offset = 2
        let extraPackA = rng.blobID()
        let extraPackB = rng.blobID()
        packs.append((extraPackA, [copyA, copyB]))
        packs.append((extraPackB, [copyC]))
        // And the same pack listed by two index files.
        packs.append(packs[10])

        let index = MasterIndex(packs: packs, files: [])
        #expect(index.blobCount == packs.reduce(0) { $0 + $1.blobs.count })

        let all = index.lookupAll(twice.id)
        #expect(all.count == 2)
        #expect(Set(all.map(\.pack)) == [packs[3].pack, extraPackA])
        #expect(index.lookup(twice.id) == BlobLocation(pack: packs[3].pack, blob: twice), "the first listed location wins")

        let three = index.lookupAll(thrice.id)
        #expect(three.count == 3)
        #expect(Set(three.map(\.blob.offset)) == [thrice.offset, 1, 2])
        #expect(index.lookup(thrice.id)?.pack == packs[7].pack, "the first listed location wins")

        for blob in packs[10].blobs {
            let locations = index.lookupAll(blob.id)
            #expect(locations.count == 2)
            #expect(locations.allSatisfy { $0 == BlobLocation(pack: packs[10].pack, blob: blob) })
        }
        // A pack listed twice is one pack.
        #expect(index.packIDs.count == Set(packs.map(\.pack)).count)
    }

    @Test func emptyMasterIndex() throws {
        let index = MasterIndex()
        #expect(index.blobCount == 0)
        #expect(!index.contains(.zero))
        #expect(index.lookup(.zero) == nil)
        #expect(index.lookupAll(.zero).isEmpty)
        #expect(index.blobsByPack().isEmpty)
    }
}

// MARK: - packs

@Suite struct PackFormatTests {
    /// Builds a pack of `count` blobs (some compressible) through the repository's blob codec;
    /// returns the plaintexts too.
    private func buildPack(_ repository: Repository, builder: PackBuilder, count: Int, seed: UInt64) throws
        -> (bytes: [UInt8], blobs: [PackedBlob], plaintexts: [BlobID: [UInt8]]) {
        var rng = SplitMix64(seed: seed)
        let codec = try BlobCodec(repository: repository)
        var plaintexts: [BlobID: [UInt8]] = [:]
        for i in 0..<count {
            var plaintext = rng.bytes(i == 0 ? 0 : Int.random(in: 1...50_000, using: &rng))
            if i % 2 == 1 { plaintext = [UInt8](repeating: UInt8(i), count: plaintext.count * 2) }
            let id = try codec.hasher.id(of: plaintext)
            plaintexts[id] = plaintext
            let sealed = try plaintext.withUnsafeBytes { try codec.seal($0, id: id, kind: i % 3 == 0 ? .tree : .data) }
            builder.append(sealed)
        }
        let (bytes, blobs) = try builder.finish(sealer: try Sealer(key: repository.key.encryption))
        return (bytes, blobs, plaintexts)
    }

    @Test func builtPackParsesBack() throws {
        let repository = try makeRepository()
        let builder = PackBuilder(targetSize: 1 << 20)
        #expect(builder.isEmpty)
        let (bytes, blobs, plaintexts) = try buildPack(repository, builder: builder, count: 25, seed: 41)
        #expect(blobs.count == 25)
        #expect(blobs.contains { $0.compressed } && blobs.contains { !$0.compressed })
        let name = try SHA256.hash(bytes).hex
        let header = try repository.packHeader(of: bytes, name: name)
        #expect(header == blobs)

        // Blobs are laid out one after another from offset 0, and each one opens where the header says.
        var expectedOffset: UInt32 = 0
        let codec = try BlobCodec(repository: repository)
        for blob in header {
            #expect(blob.offset == expectedOffset)
            expectedOffset += blob.length
            #expect(Int(blob.rawLength) == plaintexts[blob.id]?.count)
            let sealed = Array(bytes[Int(blob.offset)..<Int(blob.offset + blob.length)])
            var plain: [UInt8] = []
            try sealed.withUnsafeBytes { try codec.open($0, blob: blob) { plain = Array($0) } }
            #expect(plain == plaintexts[blob.id])
        }
        // Then the sealed header and its length.
        let headerLength = Int(bytes.suffix(4).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        #expect(Int(expectedOffset) + headerLength + 4 == bytes.count)

        // The same through storage, reading only the end of the pack, then single blobs.
        try repository.storage.save(Handle(.data, name), data: bytes)
        #expect(try repository.loadPackHeader(name: name) == blobs)
        let packID = try #require(BlobID(hex: name))
        for blob in blobs {
            #expect(try codec.loadBytes(BlobLocation(pack: packID, blob: blob), from: repository) == plaintexts[blob.id])
        }
    }

    @Test func builderStartsAfreshAfterFinish() throws {
        let repository = try makeRepository()
        let builder = PackBuilder(targetSize: 100_000)
        _ = try buildPack(repository, builder: builder, count: 3, seed: 1)
        #expect(builder.isEmpty)
        #expect(!builder.isFull)
        let (bytes, blobs, _) = try buildPack(repository, builder: builder, count: 2, seed: 2)
        #expect(blobs.first?.offset == 0)
        #expect(try repository.packHeader(of: bytes, name: "second") == blobs)

        let full = PackBuilder(targetSize: 10)
        full.append(SealedBlob(id: .zero, kind: .data, compressed: false, rawLength: 0, bytes: [UInt8](repeating: 0, count: 28)))
        #expect(full.isFull)
        #expect(!full.isEmpty)
    }

    @Test func damagedBlobsDoNotOpen() throws {
        let repository = try makeRepository()
        let (bytes, blobs, _) = try buildPack(repository, builder: PackBuilder(targetSize: 1 << 20), count: 6, seed: 44)
        let codec = try BlobCodec(repository: repository)
        for blob in blobs {
            var sealed = Array(bytes[Int(blob.offset)..<Int(blob.offset + blob.length)])
            sealed[sealed.count / 2] ^= 0x10
            expectKhoError(.integrity, "flipped byte in blob \(blob.id.shortHex)") {
                try sealed.withUnsafeBytes { try codec.open($0, blob: blob) { _ in } }
            }
            // A header entry naming another blob's ID: the ID is authenticated with the blob.
            let good = Array(bytes[Int(blob.offset)..<Int(blob.offset + blob.length)])
            var renamed = blob
            renamed.id.w3 ^= 1
            expectKhoError(.integrity, "renamed blob \(blob.id.shortHex)") {
                try good.withUnsafeBytes { try codec.open($0, blob: renamed) { _ in } }
            }
            // A wrong raw length.
            var longer = blob
            longer.rawLength += 1
            expectKhoError(.integrity, "wrong raw length \(blob.id.shortHex)") {
                try good.withUnsafeBytes { try codec.open($0, blob: longer) { _ in } }
            }
        }
    }

    @Test func emptyPackParses() throws {
        let repository = try makeRepository()
        let (bytes, blobs) = try PackBuilder(targetSize: 1000).finish(sealer: try Sealer(key: repository.key.encryption))
        #expect(blobs.isEmpty)
        #expect(try repository.packHeader(of: bytes, name: "empty").isEmpty)
    }

    @Test func damagedPacksThrowIntegrity() throws {
        let repository = try makeRepository()
        let (bytes, blobs, _) = try buildPack(repository, builder: PackBuilder(targetSize: 1 << 20), count: 4, seed: 43)
        let headerStart = Int(blobs.last!.offset + blobs.last!.length)

        for length in [0, 1, 3, 4, 20, bytes.count - 1] {
            expectKhoError(.integrity, "truncated to \(length) bytes") {
                _ = try repository.packHeader(of: Array(bytes[0..<length]), name: "t")
            }
        }
        // Any flipped byte in the sealed header or in its length.
        for index in [headerStart, headerStart + 5, bytes.count - 5, bytes.count - 4, bytes.count - 1] {
            var damaged = bytes
            damaged[index] ^= 0x01
            expectKhoError(.integrity, "byte \(index) flipped") { _ = try repository.packHeader(of: damaged, name: "t") }
        }
        // A header length larger than the pack.
        var huge = bytes
        huge.replaceSubrange((huge.count - 4)..., with: [0xff, 0xff, 0xff, 0x7f])
        expectKhoError(.integrity, "huge header length") { _ = try repository.packHeader(of: huge, name: "t") }
        // A pack of another repository.
        let other = try makeRepository()
        expectKhoError(.integrity, "other repository") { _ = try other.packHeader(of: bytes, name: "t") }
        // Through storage: truncated pack.
        let name = try SHA256.hash(bytes).hex
        try repository.storage.save(Handle(.data, name), data: Array(bytes.dropLast()))
        expectKhoError(.integrity, "truncated in storage") { _ = try repository.loadPackHeader(name: name) }
        try repository.storage.save(Handle(.data, name), data: [1, 2, 3])
        expectKhoError(.integrity, "tiny in storage") { _ = try repository.loadPackHeader(name: name) }
    }
}

// MARK: - Timestamp

@Suite struct TimestampTests {
    private static var pattern: Regex<Substring> { #/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$/# }

    @Test(arguments: [
        "1970-01-01T00:00:00.000000000Z",
        "2001-01-01T00:00:00.000000000Z",
        "2024-05-01T12:34:56.500000000Z",
        "2024-02-29T23:59:59.250000000Z",
        "1969-12-31T23:59:59.500000000Z",
        "2099-12-31T23:59:59.875000000Z",
        "1900-03-01T00:00:00.125000000Z",
    ])
    func exactlyRepresentableTimesRoundTripAsText(text: String) throws {
        let date = try #require(Timestamp.parse(text))
        #expect(Timestamp.format(date) == text)
    }

    @Test func knownValues() throws {
        #expect(Timestamp.format(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000000000Z")
        #expect(Timestamp.format(Date(timeIntervalSince1970: 1_700_000_000)) == "2023-11-14T22:13:20.000000000Z")
        #expect(Timestamp.format(Date(timeIntervalSince1970: -1.5)) == "1969-12-31T23:59:58.500000000Z")
        #expect(Timestamp.parse("2023-11-14T22:13:20Z") == Date(timeIntervalSince1970: 1_700_000_000))
        let parsed = try #require(Timestamp.parse("2001-01-01T00:00:00.123456789Z"))
        #expect(abs(parsed.timeIntervalSinceReferenceDate - 0.123456789) < 1e-12, "nanoseconds near the reference date")
    }

    @Test func nanosecondsSurviveAsFarAsDateCanHoldThem() throws {
        // A Date is a Double of seconds since 2001: for present-day times it holds about 0.1 µs, so a
        // round trip must agree to well under a microsecond and keep nine fraction digits.
        var rng = SplitMix64(seed: 51)
        for _ in 0..<500 {
            let seconds = Double(Int64.random(in: -2_000_000_000...4_000_000_000, using: &rng))
            let nanos = Double(Int.random(in: 0..<1_000_000_000, using: &rng))
            let date = Date(timeIntervalSince1970: seconds + nanos / 1e9)
            let text = Timestamp.format(date)
            #expect(text.wholeMatch(of: Self.pattern) != nil, "\(text)")
            let back = try #require(Timestamp.parse(text))
            #expect(abs(back.timeIntervalSince(date)) < 1e-6, "\(text): off by \(back.timeIntervalSince(date)) s")
        }
        // Digits after the point are read as a fraction, however many there are.
        let a = try #require(Timestamp.parse("2024-05-01T12:34:56.1Z"))
        let b = try #require(Timestamp.parse("2024-05-01T12:34:56.100000000Z"))
        let c = try #require(Timestamp.parse("2024-05-01T12:34:56.000000001Z"))
        let d = try #require(Timestamp.parse("2024-05-01T12:34:56Z"))
        #expect(a == b)
        #expect(abs(a.timeIntervalSince(d) - 0.1) < 1e-6)
        #expect(abs(c.timeIntervalSince(d)) < 1e-6)
        #expect(c >= d)
    }

    @Test func everyDateRoundTripsExactly() throws {
        // Nine fraction digits are finer than a Date's resolution (about 0.12 µs today), so a Date
        // written and read back must be the very same Date. Times within about 100 days of
        // 2001-01-01, where a Date is finer than a nanosecond, are left out.
        var rng = SplitMix64(seed: 52)
        var mismatches: [String] = []
        for i in 0..<2000 {
            let magnitude = Double.random(in: 1e7...3.1e9, using: &rng)
            let sinceReference = i % 3 == 0 ? -min(magnitude, 9e8) : magnitude
            let date = Date(timeIntervalSinceReferenceDate: sinceReference)
            let text = Timestamp.format(date)
            guard let back = Timestamp.parse(text) else {
                Issue.record("\(text) does not parse")
                continue
            }
            if back != date { mismatches.append("\(text): off by \(back.timeIntervalSince(date)) s") }
        }
        #expect(mismatches.count == 0, "\(mismatches.count) of 2000 dates change when written and read back, e.g. \(mismatches.prefix(3))")
    }

    @Test func offsetsAreHonoured() throws {
        let utc = try #require(Timestamp.parse("2024-05-01T12:34:56.25Z"))
        #expect(Timestamp.parse("2024-05-01T19:34:56.25+07:00") == utc)
        #expect(Timestamp.parse("2024-05-01T07:34:56.25-05:00") == utc)
        #expect(Timestamp.parse("2024-05-01T19:34:56+07:00") == Timestamp.parse("2024-05-01T12:34:56Z"))
    }

    @Test(arguments: ["", "yesterday", "2024-05-01", "2024-05-01T12:34:56", "2024-13-01T00:00:00Z", "2024-05-01T12:34:56.5"])
    func garbageIsRejected(text: String) {
        #expect(Timestamp.parse(text) == nil)
    }

    @Test func jsonUsesTimestamps() throws {
        struct Box: Codable, Equatable { var when: Date }
        let box = Box(when: Date(timeIntervalSince1970: 1_714_566_896.75))
        let json = String(decoding: try JSON.encoder.encode(box), as: UTF8.self)
        #expect(json == #"{"when":"2024-05-01T12:34:56.750000000Z"}"#)
        #expect(try JSON.decoder.decode(Box.self, from: Data(json.utf8)) == box)
        #expect(throws: DecodingError.self) { try JSON.decoder.decode(Box.self, from: Data(#"{"when":"soon"}"#.utf8)) }
    }
}
