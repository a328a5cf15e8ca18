import KhoSupport
/// Content-defined chunking with FastCDC and normalized chunking (level 2).
///
/// The gear table is derived from the repository's chunker seed, so cut points (and therefore chunk
/// sizes) reveal nothing to someone who does not hold the key. Boundaries depend only on the last 64
/// bytes before them, which is what makes an insertion near the start of a stream change only the
/// chunks around it.
public struct ChunkerParameters: Codable, Sendable, Equatable {
    public var minSize: Int
    public var averageSize: Int
    public var maxSize: Int

    public init(minSize: Int, averageSize: Int, maxSize: Int) {
        self.minSize = minSize
        self.averageSize = averageSize
        self.maxSize = maxSize
    }

    /// 512 KiB / 1 MiB / 8 MiB.
    public static let standard = ChunkerParameters(minSize: 512 << 10, averageSize: 1 << 20, maxSize: 8 << 20)

    public func validate() throws {
        guard minSize >= 64, averageSize > minSize, maxSize > averageSize, maxSize <= 64 << 20,
              averageSize.nonzeroBitCount == 1 else {
            throw KhoError(.usage, "Chunker sizes must satisfy 64 ≤ min < average < max ≤ 64 MiB with the average a power of two; got min \(minSize), average \(averageSize), max \(maxSize).")
        }
    }
}

package struct GearTable: Sendable {
    package let values: [UInt64]

    /// Entry i is the first 8 bytes (big-endian) of HMAC-SHA256(seed, "kho-gear" ‖ i as one byte).
    package init(seed: SecretBytes) throws {
        let hasher = try BlobHasher(key: seed)
        var values = [UInt64]()
        values.reserveCapacity(256)
        for i in 0..<256 {
            let id = try hasher.id(of: Array("kho-gear".utf8) + [UInt8(i)])
            values.append(id.w0)
        }
        self.values = values
    }

    package init(values: [UInt64]) {
        precondition(values.count == 256)
        self.values = values
    }
}

/// Finds cut points in memory; holds no buffer of its own.
public struct Chunker: Sendable {
    public let parameters: ChunkerParameters
    private let gear: [UInt64]
    private let maskSmall: UInt64
    private let maskLarge: UInt64

    package init(parameters: ChunkerParameters, gear: GearTable) {
        self.parameters = parameters
        self.gear = gear.values
        let bits = parameters.averageSize.trailingZeroBitCount
        // Masks use the top bits: after the left shifts of the gear hash they mix the last 64 bytes.
        maskSmall = ~UInt64(0) << UInt64(64 - (bits + 2))
        maskLarge = ~UInt64(0) << UInt64(64 - (bits - 2))
    }

    /// Length of the next chunk at the start of `data`. When `data` is shorter than the maximum and
    /// more input may follow (`final` false), returns nil if no cut point was found yet.
    public func nextCut(in data: UnsafeRawBufferPointer, final: Bool) -> Int? {
        let count = data.count
        if count <= parameters.minSize {
            return final ? count : nil
        }
        let limit = min(count, parameters.maxSize)
        let normal = min(limit, parameters.averageSize)
        let bytes = data.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var hash: UInt64 = 0
        var i = parameters.minSize
        let maskS = maskSmall
        let maskL = maskLarge
        return gear.withUnsafeBufferPointer { table -> Int? in
            let g = table.baseAddress!
            while i < normal {
                hash = (hash &<< 1) &+ g[Int(bytes[i])]
                i &+= 1
                if hash & maskS == 0 { return i }
            }
            while i < limit {
                hash = (hash &<< 1) &+ g[Int(bytes[i])]
                i &+= 1
                if hash & maskL == 0 { return i }
            }
            if limit == parameters.maxSize || final { return limit }
            return nil
        }
    }
}

/// Reads a stream in large blocks and hands out chunks without copying them. One buffer serves
/// many streams in turn: call `reset()` between them.
public final class StreamChunker {
    public typealias Read = (UnsafeMutableRawBufferPointer) throws -> Int
    private let chunker: Chunker
    private var buffer: UnsafeMutableRawBufferPointer
    private var start = 0
    private var end = 0
    private var eof = false

    public init(chunker: Chunker) {
        self.chunker = chunker
        // Room for the longest chunk and a megabyte more: every byte of this buffer is resident
        // for the whole backup, and a larger one only saves a few short memmoves.
        let capacity = chunker.parameters.maxSize + (1 << 20)
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64)
    }

    /// Convenience for one stream: `read` fills the buffer it is given and returns the count,
    /// 0 at end of input.
    public convenience init(chunker: Chunker, read: @escaping Read) {
        self.init(chunker: chunker)
        self.boundRead = read
    }

    private var boundRead: Read?

    deinit { buffer.deallocate() }

    public func reset() {
        start = 0
        end = 0
        eof = false
    }

    /// Calls `body` with the next chunk (valid only during the call); false at end of input.
    public func next(_ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Bool {
        guard let boundRead else { preconditionFailure("StreamChunker.next without a bound reader") }
        return try next(read: boundRead, body)
    }

    public func next(read: Read, _ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Bool {
        while true {
            let available = UnsafeRawBufferPointer(rebasing: buffer[start..<end])
            if available.isEmpty && eof { return false }
            if let cut = chunker.nextCut(in: available, final: eof) {
                try body(UnsafeRawBufferPointer(rebasing: available[0..<cut]))
                start += cut
                return true
            }
            try refill(read)
        }
    }

    private func refill(_ read: Read) throws {
        if start > 0 {
            let remaining = end - start
            if remaining > 0 {
                buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + start, byteCount: remaining)
            }
            start = 0
            end = remaining
        }
        while end < buffer.count {
            let n = try read(UnsafeMutableRawBufferPointer(rebasing: buffer[end...]))
            if n == 0 { eof = true; return }
            end += n
            if end - start >= chunker.parameters.maxSize { return }
        }
    }
}
