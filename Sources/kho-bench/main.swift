import Foundation
import KhoCore
import KhoSupport

// Throughput of each stage of the backup pipeline on one core, on the same buffer: what
// `scripts/bench-core` prints beside the machine's own limits.

let size = (Int(CommandLine.arguments.dropFirst().first ?? "") ?? 256) << 20
let repeats = 3

/// Text that compresses like a database dump: rows of names, dates, numbers and addresses.
func dumpLikeData(_ count: Int) -> [UInt8] {
    var random = SplitMix64(seed: 0x9E37_79B9_7F4A_7C15)
    let names = ["Nguyễn Văn An", "Trần Thị Bình", "Lê Minh Châu", "Phạm Ngọc Dũng", "Huỳnh Quang Hà", "Võ Thanh Lan"]
    let communes = ["Nghĩa Hành", "Sơn Tịnh", "Bình Sơn", "Tư Nghĩa", "Mộ Đức", "Đức Phổ"]
    var out = [UInt8]()
    out.reserveCapacity(count + 256)
    var row = 0
    while out.count < count {
        row += 1
        let r = random.next()
        let line = "\(row)\t\(names[Int(r % 6)])\t19\(40 + r % 60)-0\(1 + r % 9)-1\(r % 9)\t\(100_000_000_000 + (r >> 20) % 899_999_999_999)\t\(communes[Int((r >> 8) % 6)])\tThôn \(1 + (r >> 12) % 20), tỉnh Quảng Ngãi\n"
        out.append(contentsOf: line.utf8)
    }
    out.removeLast(out.count - count)
    return out
}

func measure(_ name: String, bytes: Int, _ body: () -> Void) {
    var best = Double.infinity
    for _ in 0..<repeats {
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        best = min(best, seconds)
    }
    let rate = Double(bytes) / best / 1e6
    print(name.padding(toLength: 28, withPad: " ", startingAt: 0) + String(format: " %10.0f MB/s", rate))
}

let data = dumpLikeData(size)
let chunks: [Range<Int>]
let params = ChunkerParameters.standard
let gear = try GearTable(seed: SecretBytes(try Random.bytes(32)))
let chunker = Chunker(parameters: params, gear: gear)
do {
    var ranges: [Range<Int>] = []
    var offset = 0
    data.withUnsafeBytes { raw in
        while offset < raw.count {
            let cut = chunker.nextCut(in: UnsafeRawBufferPointer(rebasing: raw[offset...]), final: true)!
            ranges.append(offset..<(offset + cut))
            offset += cut
        }
    }
    chunks = ranges
}
print("kho engine stages, one core, \(size >> 20) MiB of dump-like text, \(chunks.count) chunks (best of \(repeats))")

measure("FastCDC chunker", bytes: size) {
    data.withUnsafeBytes { raw in
        var offset = 0
        while offset < raw.count {
            offset += chunker.nextCut(in: UnsafeRawBufferPointer(rebasing: raw[offset...]), final: true)!
        }
    }
}

let hasher = try BlobHasher(key: SecretBytes(try Random.bytes(32)))
measure("HMAC-SHA256 (blob IDs)", bytes: size) {
    data.withUnsafeBytes { raw in
        for range in chunks { _ = try! hasher.id(of: UnsafeRawBufferPointer(rebasing: raw[range])) }
    }
}

let level = Repository.CreateOptions().compressionLevel
let compressor = Compressor(level: level)
var compressedTotal = 0
let scratch = UnsafeMutableRawPointer.allocate(byteCount: Compressor.bound(params.maxSize), alignment: 64)
measure("zstd level \(level) (default)", bytes: size) {
    compressedTotal = 0
    data.withUnsafeBytes { raw in
        for range in chunks {
            compressedTotal += compressor.compress(UnsafeRawBufferPointer(rebasing: raw[range]), into: scratch,
                                                   capacity: Compressor.bound(params.maxSize), limit: Int.max) ?? 0
        }
    }
}
print("  (zstd ratio)".padding(toLength: 28, withPad: " ", startingAt: 0) + String(format: " %10.2f ×", Double(size) / Double(max(1, compressedTotal))))

let sealer = try Sealer(key: SecretBytes(try Random.bytes(32)))
let sealed = UnsafeMutableRawPointer.allocate(byteCount: params.maxSize + Sealer.overhead, alignment: 64)
let context = [UInt8](repeating: 7, count: 32)
measure("AES-256-GCM", bytes: size) {
    data.withUnsafeBytes { raw in
        context.withUnsafeBytes { aad in
            for range in chunks { try! sealer.seal(UnsafeRawBufferPointer(rebasing: raw[range]), context: aad, into: sealed) }
        }
    }
}

measure("SHA-256 (pack names)", bytes: size) {
    _ = try! SHA256.hash(data)
}
