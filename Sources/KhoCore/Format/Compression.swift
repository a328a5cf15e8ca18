import KhoSupport
internal import CZstd

/// zstd compression with a context reused across calls; one instance per thread.
package final class Compressor {
    private let cctx: OpaquePointer
    package let level: Int32

    /// `workers` above 0 compresses one input on that many threads of zstd's own (when the
    /// library was built with them; otherwise on the calling thread, with the same output format).
    package init(level: Int, workers: Int = 0) {
        cctx = ZSTD_createCCtx()
        self.level = Int32(level)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, self.level)
        if workers > 0 { ZSTD_CCtx_setParameter(cctx, ZSTD_c_nbWorkers, Int32(workers)) }
    }

    deinit { ZSTD_freeCCtx(cctx) }

    package static func bound(_ size: Int) -> Int { ZSTD_compressBound(size) }

    /// Compresses into `out` (capacity `outCapacity`); nil when the result would not be smaller
    /// than `limit` bytes, so that the caller stores the blob uncompressed.
    package func compress(_ input: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer, capacity: Int, limit: Int) -> Int? {
        let written = ZSTD_compress2(cctx, out, min(capacity, limit), input.baseAddress, input.count)
        if ZSTD_isError(written) != 0 { return nil }
        return written < limit ? written : nil
    }

    /// Compresses `parts` one after the other into one frame, as if they were one buffer, without
    /// first copying them into one; nil as `compress(_:into:capacity:limit:)`.
    package func compress(parts: [UnsafeRawBufferPointer], into out: UnsafeMutableRawPointer, capacity: Int, limit: Int) -> Int? {
        ZSTD_CCtx_reset(cctx, ZSTD_reset_session_only)
        let total = parts.reduce(0) { $0 + $1.count }
        ZSTD_CCtx_setPledgedSrcSize(cctx, UInt64(total))
        var output = ZSTD_outBuffer(dst: out, size: min(capacity, limit), pos: 0)
        for (index, part) in parts.enumerated() {
            let last = index == parts.count - 1
            var input = ZSTD_inBuffer(src: part.baseAddress, size: part.count, pos: 0)
            while true {
                let remaining = ZSTD_compressStream2(cctx, &output, &input, last ? ZSTD_e_end : ZSTD_e_continue)
                if ZSTD_isError(remaining) != 0 { return nil }
                if last ? remaining == 0 : input.pos == input.size { break }
                // The output is full before the frame ends: not smaller than `limit`.
                if output.pos == output.size { return nil }
            }
        }
        return output.pos < limit ? output.pos : nil
    }

    package func compress(_ input: [UInt8]) -> [UInt8] {
        let capacity = Compressor.bound(input.count)
        return [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
            input.withUnsafeBytes { i in
                count = compress(i, into: UnsafeMutableRawPointer(buffer.baseAddress!), capacity: capacity, limit: capacity + 1) ?? 0
            }
        }
    }
}

final class Decompressor {
    private let dctx: OpaquePointer

    public init() { dctx = ZSTD_createDCtx() }
    deinit { ZSTD_freeDCtx(dctx) }

    /// Decompresses exactly `rawLength` bytes into `out`; false when the input is not a zstd frame of
    /// that length.
    public func decompress(_ input: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer, rawLength: Int) -> Bool {
        let written = ZSTD_decompressDCtx(dctx, out, rawLength, input.baseAddress, input.count)
        return ZSTD_isError(written) == 0 && written == rawLength
    }

    /// Decompresses a frame whose size is recorded in its header.
    public func decompress(_ input: [UInt8], maxSize: Int = 1 << 31) -> [UInt8]? {
        let size = input.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
        guard size != ZSTD_CONTENTSIZE_ERROR, size != ZSTD_CONTENTSIZE_UNKNOWN, size <= UInt64(maxSize) else { return nil }
        var ok = false
        let result = [UInt8](unsafeUninitializedCapacity: Int(size)) { buffer, count in
            input.withUnsafeBytes { i in
                if size == 0 { ok = true; count = 0; return }
                ok = decompress(i, into: UnsafeMutableRawPointer(buffer.baseAddress!), rawLength: Int(size))
            }
            count = ok ? Int(size) : 0
        }
        return ok ? result : nil
    }
}
