import Testing
@testable import KhoCore
import KhoSupport

@Suite struct CompressionTests {
    private func compressible(_ count: Int) -> [UInt8] {
        let line = Array("2024-05-01 INSERT INTO cong_dan VALUES (42, 'Nguyễn Văn A', 'Hà Nội');\n".utf8)
        var out = [UInt8]()
        out.reserveCapacity(count)
        var n = 0
        while out.count < count {
            out.append(contentsOf: line.prefix(count - out.count))
            out.append(contentsOf: String(n).utf8.prefix(max(0, count - out.count)))
            n += 1
        }
        return Array(out.prefix(count))
    }

    /// Compresses with the pointer API under `limit`; nil when the compressor declines.
    private func compress(_ compressor: Compressor, _ input: [UInt8], limit: Int) -> [UInt8]? {
        let capacity = Compressor.bound(input.count)
        var out = [UInt8](repeating: 0, count: capacity)
        let written = input.withUnsafeBytes { i in
            out.withUnsafeMutableBytes { compressor.compress(i, into: $0.baseAddress!, capacity: capacity, limit: limit) }
        }
        return written.map { Array(out[0..<$0]) }
    }

    @Test(arguments: [1, 3, 19])
    func compressibleDataRoundTrips(level: Int) throws {
        let input = compressible(1 << 20)
        let compressor = Compressor(level: level)
        let compressed = compressor.compress(input)
        #expect(!compressed.isEmpty)
        #expect(compressed.count * 4 < input.count, "compressed \(input.count) to \(compressed.count)")
        #expect(Decompressor().decompress(compressed) == input)

        // The pointer API with a limit of the input size, as the packer uses it.
        let limited = try #require(compress(compressor, input, limit: input.count))
        var raw = [UInt8](repeating: 0, count: input.count)
        let ok = limited.withUnsafeBytes { c in
            raw.withUnsafeMutableBytes { Decompressor().decompress(c, into: $0.baseAddress!, rawLength: input.count) }
        }
        #expect(ok)
        #expect(raw == input)
    }

    @Test func incompressibleDataIsDeclinedUnderLimit() throws {
        var rng = SplitMix64(seed: 1234)
        let input = rng.bytes(256 << 10)
        let compressor = Compressor(level: 3)
        #expect(compress(compressor, input, limit: input.count) == nil)
        #expect(compress(compressor, input, limit: input.count / 2) == nil)
        // With room for the frame overhead it does produce something that round-trips.
        let loose = try #require(compress(compressor, input, limit: Compressor.bound(input.count) + 1))
        #expect(Decompressor().decompress(loose) == input)
        // A declined call leaves the context usable.
        let text = compressible(100_000)
        let after = try #require(compress(compressor, text, limit: text.count))
        #expect(Decompressor().decompress(after) == text)
    }

    @Test func emptyInput() throws {
        let compressor = Compressor(level: 3)
        let compressed = compressor.compress([])
        #expect(!compressed.isEmpty, "an empty input still gives a zstd frame")
        #expect(Decompressor().decompress(compressed) == [])
        // Nothing can be smaller than nothing: declined under any limit of the input size.
        #expect(compress(compressor, [], limit: 0) == nil)
    }

    @Test func decompressorRejectsGarbageAndWrongLengths() throws {
        let decompressor = Decompressor()
        #expect(decompressor.decompress([]) == nil)
        #expect(decompressor.decompress(Array("not a zstd frame at all".utf8)) == nil)
        let input = compressible(10_000)
        let compressed = Compressor(level: 3).compress(input)
        // Declared size above the caller's maximum.
        #expect(decompressor.decompress(compressed, maxSize: 9_999) == nil)
        // Wrong raw length through the pointer API.
        var out = [UInt8](repeating: 0, count: input.count + 10)
        let tooLong = compressed.withUnsafeBytes { c in
            out.withUnsafeMutableBytes { decompressor.decompress(c, into: $0.baseAddress!, rawLength: input.count + 10) }
        }
        #expect(!tooLong)
        // Truncated frame.
        #expect(decompressor.decompress(Array(compressed.dropLast(5))) == nil)
        // Still works afterwards.
        #expect(decompressor.decompress(compressed) == input)
    }

    /// Compresses `parts` as one frame under `limit`; nil when the compressor declines.
    private func compress(_ compressor: Compressor, parts: [[UInt8]], limit: Int) -> [UInt8]? {
        let total = parts.reduce(0) { $0 + $1.count }
        let capacity = Compressor.bound(total)
        var out = [UInt8](repeating: 0, count: capacity)
        func withParts<R>(_ index: Int, _ pointers: [UnsafeRawBufferPointer], _ body: ([UnsafeRawBufferPointer]) -> R) -> R {
            guard index < parts.count else { return body(pointers) }
            return parts[index].withUnsafeBytes { withParts(index + 1, pointers + [$0], body) }
        }
        let written = withParts(0, []) { pointers in
            out.withUnsafeMutableBytes { compressor.compress(parts: pointers, into: $0.baseAddress!, capacity: capacity, limit: limit) }
        }
        return written.map { Array(out[0..<$0]) }
    }

    /// The WAL object's body is compressed from its meta and its file without joining them, on
    /// zstd's workers: one frame that decompresses to the two one after the other, declined when
    /// not smaller, and the same with or without workers.
    @Test(arguments: [0, 2])
    func partsCompressAsOneFrame(workers: Int) throws {
        let head = Array("{\"name\":\"000000010000000000000003\"}".utf8)
        let file = compressible(9 << 20)
        let compressor = Compressor(level: 1, workers: workers)
        let frame = try #require(compress(compressor, parts: [head, file], limit: head.count + file.count))
        #expect(frame.count * 4 < head.count + file.count)
        #expect(Decompressor().decompress(frame, maxSize: 16 << 20) == head + file)

        var rng = SplitMix64(seed: 99)
        let noise = rng.bytes(3 << 20)
        #expect(compress(compressor, parts: [head, noise], limit: head.count + noise.count) == nil, "random bytes are declined")
        // Declining leaves the context usable, and an empty part is no part.
        let again = try #require(compress(compressor, parts: [[], file, []], limit: file.count))
        #expect(Decompressor().decompress(again, maxSize: 16 << 20) == file)
    }
}
