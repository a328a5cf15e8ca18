import Foundation
import KhoSupport

/// The per-thread tools to turn plaintext into a stored blob and back: keyed hash, cipher and zstd
/// contexts. Not shareable; every pipeline thread makes its own.
package final class BlobCodec {
    package let hasher: BlobHasher
    let sealer: Sealer
    let compressor: Compressor?
    let decompressor = Decompressor()
    private var scratch: UnsafeMutableRawBufferPointer

    package init(repository: Repository, compressionLevel: Int? = nil) throws {
        hasher = try BlobHasher(key: repository.key.mac)
        sealer = try repository.makeSealer()
        let level = compressionLevel ?? repository.config.compressionLevel
        compressor = level > 0 ? Compressor(level: level) : nil
        scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
    }

    deinit {
        scratch.deallocate()
        sealedScratch.deallocate()
    }

    private func ensureScratch(_ size: Int) {
        if scratch.count < size {
            scratch.deallocate()
            scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
        }
    }

    private var sealedScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)

    /// Compresses (when it saves at least 1/32 of the size) and seals `plain` into a buffer the
    /// codec owns (valid until its next call): no allocation per blob on the backup path.
    func sealInPlace(_ plain: UnsafeRawBufferPointer, id: BlobID) throws -> (compressed: Bool, sealed: UnsafeRawBufferPointer) {
        var payload = plain
        var compressed = false
        if let compressor, plain.count >= 64 {
            let capacity = Compressor.bound(plain.count)
            ensureScratch(capacity)
            if let n = compressor.compress(plain, into: scratch.baseAddress!, capacity: capacity, limit: plain.count - plain.count / 32) {
                payload = UnsafeRawBufferPointer(rebasing: scratch[0..<n])
                compressed = true
            }
        }
        let sealedLength = payload.count + Sealer.overhead
        if sealedScratch.count < sealedLength {
            sealedScratch.deallocate()
            sealedScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(sealedLength, 1 << 20), alignment: 64)
        }
        var context = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &context) { id.write(to: $0.baseAddress!) }
        try withUnsafeBytes(of: &context) { aad in
            try sealer.seal(payload, context: aad, into: sealedScratch.baseAddress!)
        }
        return (compressed, UnsafeRawBufferPointer(rebasing: sealedScratch[0..<sealedLength]))
    }

    /// Compresses (when it saves at least 1/32 of the size) and seals `plain`, into an array of
    /// its own (for storages that build packs in memory).
    func seal(_ plain: UnsafeRawBufferPointer, id: BlobID, kind: BlobKind) throws -> SealedBlob {
        let (compressed, sealed) = try sealInPlace(plain, id: id)
        return SealedBlob(id: id, kind: kind, compressed: compressed, rawLength: plain.count, bytes: Array(sealed))
    }

    /// Opens a sealed blob, decompresses it and checks that its plaintext hashes to `blob.id`.
    /// The result is valid only until the next call on this codec.
    func open(_ sealed: UnsafeRawBufferPointer, blob: PackedBlob, into body: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard Int(blob.length) == sealed.count, sealed.count >= Sealer.overhead else {
            throw KhoError(.integrity, "Blob \(blob.id.shortHex) has the wrong stored length: its pack is damaged.")
        }
        let payloadLength = sealed.count - Sealer.overhead
        let rawLength = Int(blob.rawLength)
        ensureScratch(payloadLength + rawLength + 64)
        var context = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &context) { blob.id.write(to: $0.baseAddress!) }
        let opened = try withUnsafeBytes(of: &context) { aad in
            try sealer.open(sealed, context: aad, into: scratch.baseAddress!)
        }
        guard opened else {
            throw KhoError(.integrity, "Blob \(blob.id.shortHex) does not authenticate: its pack is damaged.")
        }
        var plain = UnsafeRawBufferPointer(rebasing: scratch[0..<payloadLength])
        if blob.compressed {
            let out = scratch.baseAddress! + payloadLength
            guard decompressor.decompress(plain, into: out, rawLength: rawLength) else {
                throw KhoError(.integrity, "Blob \(blob.id.shortHex) does not decompress to its recorded length: its pack is damaged.")
            }
            plain = UnsafeRawBufferPointer(start: out, count: rawLength)
        } else if plain.count != rawLength {
            throw KhoError(.integrity, "Blob \(blob.id.shortHex) has the wrong length: its pack is damaged.")
        }
        guard ConstantTime.equal(try hasher.id(of: plain), blob.id) else {
            throw KhoError(.integrity, "Blob \(blob.id.shortHex) does not hash to its ID: its pack is damaged.")
        }
        try body(plain)
    }

    /// Loads one blob from storage and passes its verified plaintext to `body`.
    package func load(_ location: BlobLocation, from repository: Repository, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let sealed = try repository.storage.load(Handle(.data, location.pack.hex), offset: Int(location.blob.offset), length: Int(location.blob.length))
        try sealed.withUnsafeBytes { try open($0, blob: location.blob, into: body) }
    }

    package func loadBytes(_ location: BlobLocation, from repository: Repository) throws -> [UInt8] {
        var result: [UInt8] = []
        try load(location, from: repository) { result = Array($0) }
        return result
    }
}

extension Repository {
    /// Loads and decodes a tree blob.
    package func loadTree(_ id: BlobID, index: MasterIndex, codec: BlobCodec) throws -> Tree {
        guard let location = index.lookup(id) else {
            throw KhoError(.integrity, "Tree \(id.shortHex) is not in the index: the repository is missing data; run `kho check`.")
        }
        return try Tree(decoding: try codec.loadBytes(location, from: self), id: id)
    }
}
