import Testing
@testable import KhoCore
import KhoSupport

// MARK: - deterministic test data

extension SplitMix64 {
    mutating func blobID() -> BlobID {
        BlobID(w0: next(), w1: next(), w2: next(), w3: next())
    }
}

enum TestData {
    /// 64 MiB of seeded pseudo-random bytes, built once and shared by the tests that need it.
    static let stream64MiB: [UInt8] = {
        var rng = SplitMix64(seed: 0x6B68_6F2D_6368_756E)
        return rng.bytes(64 << 20)
    }()
}

// MARK: - helpers

private let smallParameters = ChunkerParameters(minSize: 16 << 10, averageSize: 64 << 10, maxSize: 256 << 10)

private func gear(seed: UInt8) throws -> GearTable {
    try GearTable(seed: SecretBytes([UInt8](repeating: seed, count: 32)))
}

/// Cut points of `data` found by calling `nextCut` on everything that is left, with `final` set.
private func chunkRanges(_ data: [UInt8], _ chunker: Chunker) -> [Range<Int>] {
    var ranges: [Range<Int>] = []
    data.withUnsafeBytes { all in
        var start = 0
        while start < all.count {
            let rest = UnsafeRawBufferPointer(rebasing: all[start...])
            guard let cut = chunker.nextCut(in: rest, final: true), cut > 0 else {
                Issue.record("nextCut returned \(String(describing: chunker.nextCut(in: rest, final: true))) with \(rest.count) bytes left and final set")
                return
            }
            ranges.append(start..<(start + cut))
            start += cut
        }
    }
    return ranges
}

/// The chunks a StreamChunker hands out when `read` gives at most `pieceSize()` bytes per call.
private func streamChunks(_ data: [UInt8], _ chunker: Chunker, pieceSize: @escaping () -> Int) throws -> [[UInt8]] {
    var position = 0
    let stream = StreamChunker(chunker: chunker) { buffer in
        let n = min(buffer.count, data.count - position, pieceSize())
        if n > 0 {
            data.withUnsafeBytes { source in
                buffer.baseAddress!.copyMemory(from: source.baseAddress! + position, byteCount: n)
            }
        }
        position += n
        return n
    }
    var chunks: [[UInt8]] = []
    while try stream.next({ chunks.append(Array($0)) }) {}
    return chunks
}

private func checkBounds(_ ranges: [Range<Int>], total: Int, _ parameters: ChunkerParameters,
                         sourceLocation: SourceLocation = #_sourceLocation) {
    // Contiguous and covering everything.
    var expectedStart = 0
    for range in ranges {
        #expect(range.lowerBound == expectedStart, sourceLocation: sourceLocation)
        expectedStart = range.upperBound
    }
    #expect(expectedStart == total, sourceLocation: sourceLocation)
    for (i, range) in ranges.enumerated() {
        #expect(range.count <= parameters.maxSize, "chunk \(i) is \(range.count) bytes", sourceLocation: sourceLocation)
        #expect(range.count > 0, "chunk \(i) is empty", sourceLocation: sourceLocation)
        if i < ranges.count - 1 {
            #expect(range.count >= parameters.minSize, "chunk \(i) of \(ranges.count) is \(range.count) bytes", sourceLocation: sourceLocation)
        }
    }
}

private func contentHashes(_ data: [UInt8], _ ranges: [Range<Int>]) throws -> [BlobID] {
    try data.withUnsafeBytes { all in try ranges.map { try SHA256.hash(UnsafeRawBufferPointer(rebasing: all[$0])) } }
}

private func inserting(_ bytes: [UInt8], at offset: Int, into data: [UInt8]) -> [UInt8] {
    var modified = [UInt8]()
    modified.reserveCapacity(data.count + bytes.count)
    modified.append(contentsOf: data[..<offset])
    modified.append(contentsOf: bytes)
    modified.append(contentsOf: data[offset...])
    return modified
}

/// Chunks of the shared 64 MiB stream with the small parameters and gear seed 1, computed once.
private enum SmallChunks {
    static let chunker = Chunker(parameters: smallParameters, gear: try! gear(seed: 1))
    static let ranges: [Range<Int>] = chunkRanges(TestData.stream64MiB, chunker)
    static let hashes: [BlobID] = try! contentHashes(TestData.stream64MiB, ranges)
}

// MARK: - tests

@Suite struct ChunkerTests {
    @Test func chunksRespectBoundsAndConcatenateBackToTheInput() throws {
        let data = TestData.stream64MiB
        let ranges = SmallChunks.ranges
        checkBounds(ranges, total: data.count, smallParameters)
        var reassembled = [UInt8]()
        reassembled.reserveCapacity(data.count)
        for range in ranges { reassembled.append(contentsOf: data[range]) }
        #expect(reassembled == data)
    }

    @Test func averageChunkSizeIsNearTheConfiguredAverage() throws {
        let ranges = SmallChunks.ranges
        try #require(ranges.count > 2)
        let mean = Double(TestData.stream64MiB.count) / Double(ranges.count)
        let average = Double(smallParameters.averageSize)
        #expect(mean >= average / 2 && mean <= average * 2, "mean chunk size \(mean) for a configured average of \(average)")
        // Normalized chunking: most chunks end between min and max, not at the hard limit.
        let atMax = ranges.filter { $0.count == smallParameters.maxSize }.count
        #expect(atMax * 20 < ranges.count, "\(atMax) of \(ranges.count) chunks were cut at the maximum size")
    }

    @Test(arguments: [(offset: 100_000, bytes: [UInt8]([1, 2, 3, 4, 5, 6, 7])),
                      (offset: 3, bytes: [UInt8]([0xAA])),
                      (offset: 32 << 20, bytes: [UInt8](repeating: 0x5A, count: 100))])
    func insertingAFewBytesChangesOnlyAFewChunks(offset: Int, bytes: [UInt8]) throws {
        let original = Set(SmallChunks.hashes)
        let modified = inserting(bytes, at: offset, into: TestData.stream64MiB)
        let ranges = chunkRanges(modified, SmallChunks.chunker)
        checkBounds(ranges, total: modified.count, smallParameters)
        let hashes = try contentHashes(modified, ranges)
        let new = hashes.filter { !original.contains($0) }.count
        #expect(new >= 1, "the chunk holding the inserted bytes must be new")
        #expect(new <= 3, "\(new) of \(hashes.count) chunks changed after inserting \(bytes.count) bytes at \(offset)")
    }

    @Test func deletingAFewBytesChangesOnlyAFewChunks() throws {
        let original = Set(SmallChunks.hashes)
        var modified = TestData.stream64MiB
        modified.removeSubrange(200_000..<200_013)
        let ranges = chunkRanges(modified, SmallChunks.chunker)
        let new = try contentHashes(modified, ranges).filter { !original.contains($0) }.count
        #expect(new >= 1 && new <= 3, "\(new) chunks changed after deleting 13 bytes")
    }

    @Test func standardParametersOnSixtyFourMiB() throws {
        let data = TestData.stream64MiB
        let chunker = Chunker(parameters: .standard, gear: try gear(seed: 7))
        let ranges = chunkRanges(data, chunker)
        checkBounds(ranges, total: data.count, .standard)
        let mean = Double(data.count) / Double(ranges.count)
        #expect(mean >= Double(ChunkerParameters.standard.averageSize) / 2 && mean <= Double(ChunkerParameters.standard.averageSize) * 2,
                "mean chunk size \(mean) over \(ranges.count) chunks")
        var reassembled = [UInt8]()
        reassembled.reserveCapacity(data.count)
        for range in ranges { reassembled.append(contentsOf: data[range]) }
        #expect(reassembled == data)

        let original = Set(try contentHashes(data, ranges))
        let modified = inserting([9, 8, 7], at: 1000, into: data)
        let modifiedRanges = chunkRanges(modified, chunker)
        let new = try contentHashes(modified, modifiedRanges).filter { !original.contains($0) }.count
        #expect(new >= 1 && new <= 3, "\(new) of \(modifiedRanges.count) chunks changed")
    }

    @Test func sameSeedGivesSameCutsAndDifferentSeedGivesDifferentCuts() throws {
        let data = Array(TestData.stream64MiB[0..<(8 << 20)])
        let a = chunkRanges(data, Chunker(parameters: smallParameters, gear: try gear(seed: 1)))
        let again = chunkRanges(data, Chunker(parameters: smallParameters, gear: try gear(seed: 1)))
        let b = chunkRanges(data, Chunker(parameters: smallParameters, gear: try gear(seed: 2)))
        #expect(a == again)
        #expect(a != b)
        // Not just shifted a little: most cut points differ.
        let shared = Set(a.map(\.upperBound)).intersection(b.map(\.upperBound)).count
        #expect(shared * 2 < a.count, "\(shared) of \(a.count) cut points are the same under another seed")
        checkBounds(b, total: data.count, smallParameters)
    }

    @Test func gearTableFollowsTheDocumentedDerivation() throws {
        // Entry i is the first 8 bytes (big-endian) of HMAC-SHA256(seed, "kho-gear" ‖ i).
        let seedBytes = (0..<32).map { UInt8($0 * 7 & 0xff) }
        let table = try GearTable(seed: SecretBytes(seedBytes))
        #expect(table.values.count == 256)
        for i in [0, 1, 127, 255] {
            let mac = try referenceHMACSHA256(key: seedBytes, message: Array("kho-gear".utf8) + [UInt8(i)])
            let expected = mac[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            #expect(table.values[i] == expected, "gear entry \(i)")
        }
        #expect(Set(table.values).count == 256)
    }

    @Test func streamChunkerWithSmallOddReadsMatchesOneGo() throws {
        let data = TestData.stream64MiB
        let chunker = SmallChunks.chunker
        var rng = SplitMix64(seed: 42)
        let small = try streamChunks(data, chunker) { Int.random(in: 1...7919, using: &rng) }
        let large = try streamChunks(data, chunker) { Int.max }
        let expected = SmallChunks.ranges
        #expect(small.count == expected.count)
        #expect(large.count == expected.count)
        #expect(small.map(\.count) == expected.map(\.count))
        #expect(large.map(\.count) == expected.map(\.count))
        // Same content, not just the same lengths.
        #expect(try small.map { try SHA256.hash($0) } == SmallChunks.hashes)
        #expect(try large.map { try SHA256.hash($0) } == SmallChunks.hashes)
    }

    @Test func streamChunkerOnStandardParametersWithOddReads() throws {
        let data = Array(TestData.stream64MiB[0..<(24 << 20)])
        let chunker = Chunker(parameters: .standard, gear: try gear(seed: 3))
        var rng = SplitMix64(seed: 99)
        let pieces = try streamChunks(data, chunker) { Int.random(in: 1...7919, using: &rng) }
        let expected = chunkRanges(data, chunker)
        #expect(pieces.map(\.count) == expected.map(\.count))
        #expect(try pieces.map { try SHA256.hash($0) } == contentHashes(data, expected))
    }

    @Test func oneStreamChunkerServesSeveralStreamsWithReset() throws {
        let chunker = SmallChunks.chunker
        var rng = SplitMix64(seed: 123)
        let streams = [Array(TestData.stream64MiB[0..<(3 << 20)]), rng.bytes(5_000), [], rng.bytes(2 << 20)]
        let shared = StreamChunker(chunker: chunker)
        func reader(_ data: [UInt8]) -> StreamChunker.Read {
            var position = 0
            return { buffer in
                let n = min(buffer.count, data.count - position, 7919)
                data.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + position, byteCount: n) }
                position += n
                return n
            }
        }
        // The first stream is abandoned half way, as after a failed source.
        var abandoned = 0
        let read = reader(TestData.stream64MiB)
        while abandoned < 5, try shared.next(read: read, { _ in }) { abandoned += 1 }
        for data in streams {
            shared.reset()
            let read = reader(data)
            var chunks: [[UInt8]] = []
            while try shared.next(read: read, { chunks.append(Array($0)) }) {}
            let expected = chunkRanges(data, chunker).map { Array(data[$0]) }
            #expect(chunks == expected, "stream of \(data.count) bytes")
        }
    }

    @Test func emptyInputYieldsNoChunks() throws {
        let chunker = SmallChunks.chunker
        #expect(try streamChunks([], chunker) { 4096 }.isEmpty)
        #expect(chunkRanges([], chunker).isEmpty)
    }

    @Test(arguments: [1, 100, smallParameters.minSize - 1, smallParameters.minSize])
    func inputNoLargerThanMinimumYieldsOneChunk(size: Int) throws {
        var rng = SplitMix64(seed: UInt64(size))
        let data = rng.bytes(size)
        let chunks = try streamChunks(data, SmallChunks.chunker) { 1000 }
        #expect(chunks == [data])
        data.withUnsafeBytes { buffer in
            #expect(SmallChunks.chunker.nextCut(in: buffer, final: false) == nil, "more input may follow: no cut yet")
            #expect(SmallChunks.chunker.nextCut(in: buffer, final: true) == size)
        }
    }

    @Test func lowEntropyInputRespectsBounds() throws {
        let zeros = [UInt8](repeating: 0, count: 3 << 20)
        let ranges = chunkRanges(zeros, SmallChunks.chunker)
        checkBounds(ranges, total: zeros.count, smallParameters)
        let streamed = try streamChunks(zeros, SmallChunks.chunker) { 5003 }
        #expect(streamed.map(\.count) == ranges.map(\.count))
    }

    @Test func readErrorsPropagate() throws {
        struct Boom: Error {}
        var calls = 0
        let stream = StreamChunker(chunker: SmallChunks.chunker) { buffer in
            calls += 1
            if calls > 3 { throw Boom() }
            let n = min(buffer.count, 1000)
            buffer.baseAddress!.initializeMemory(as: UInt8.self, repeating: 1, count: n)
            return n
        }
        #expect(throws: Boom.self) {
            while try stream.next({ _ in }) {}
        }
    }

    @Test func parameterValidation() throws {
        try ChunkerParameters.standard.validate()
        try smallParameters.validate()
        let bad = [
            ChunkerParameters(minSize: 32, averageSize: 1024, maxSize: 4096),          // min below 64
            ChunkerParameters(minSize: 1024, averageSize: 1024, maxSize: 4096),        // average not above min
            ChunkerParameters(minSize: 1024, averageSize: 3000, maxSize: 8192),        // average not a power of two
            ChunkerParameters(minSize: 1024, averageSize: 4096, maxSize: 4096),        // max not above average
            ChunkerParameters(minSize: 1 << 20, averageSize: 4 << 20, maxSize: 65 << 20), // max above 64 MiB
        ]
        for parameters in bad {
            expectKhoError(.usage, "\(parameters)") { try parameters.validate() }
        }
    }
}
