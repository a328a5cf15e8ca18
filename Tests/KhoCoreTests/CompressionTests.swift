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
}
