import KhoSupport
internal import CZstd

/// zstd compression with a context reused across calls; one instance per thread.
package final class Compressor {
    private let cctx: OpaquePointer
    package let level: Int32

    package init(level: Int) {
        cctx = ZSTD_createCCtx()
        self.level = Int32(level)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, self.level)
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
