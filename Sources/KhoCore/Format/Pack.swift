import KhoSupport
/// What a blob holds: file content or a directory listing.
public enum BlobKind: UInt8, Sendable, Codable {
    case data = 0
    case tree = 1
}

/// A blob's place inside one pack, as the pack header and the index record it.
package struct PackedBlob: Sendable, Equatable {
    package var id: BlobID
    package var kind: BlobKind
    package var compressed: Bool
    /// Offset of the sealed blob from the start of the pack.
    package var offset: UInt32
    /// Length of the sealed blob (nonce, ciphertext, tag).
    package var length: UInt32
    /// Length of the plaintext after decompression.
    package var rawLength: UInt32

    package init(id: BlobID, kind: BlobKind, compressed: Bool, offset: UInt32, length: UInt32, rawLength: UInt32) {
        self.id = id; self.kind = kind; self.compressed = compressed
        self.offset = offset; self.length = length; self.rawLength = rawLength
    }

    /// id (32) ‖ kind (1) ‖ flags (1) ‖ offset (4) ‖ length (4) ‖ raw length (4), little-endian.
    static let encodedSize = 46

    func encode(into w: inout BinaryWriter) {
        w.id(id)
        w.u8(kind.rawValue)
        w.u8(compressed ? 1 : 0)
        w.u32(offset)
        w.u32(length)
        w.u32(rawLength)
    }

    static func decode(from r: inout BinaryReader) throws -> PackedBlob {
        let id = try r.id()
        guard let kind = BlobKind(rawValue: try r.u8()) else {
            throw KhoError(.integrity, "A blob entry has an unknown kind: the file is damaged.")
        }
        let flags = try r.u8()
        return PackedBlob(id: id, kind: kind, compressed: flags & 1 != 0, offset: try r.u32(), length: try r.u32(), rawLength: try r.u32())
    }
}

/// A pack file: sealed blobs one after another, then the sealed header listing them, then the
/// header's sealed length as a little-endian u32.
enum PackFormat {
    static let headerContext = Array("kho/pack-header".utf8)
    static let headerMagic = Array("KPAK".utf8)

    static func encodeHeader(_ blobs: [PackedBlob]) -> [UInt8] {
        var w = BinaryWriter(capacity: 9 + blobs.count * PackedBlob.encodedSize)
        w.raw(headerMagic)
        w.u8(1)
        w.u32(UInt32(blobs.count))
        for blob in blobs { blob.encode(into: &w) }
        return w.bytes
    }

    static func decodeHeader(_ bytes: [UInt8], pack: String) throws -> [PackedBlob] {
        var r = BinaryReader(bytes, what: "header of pack \(pack.prefix(8))")
        guard Array(try r.raw(4)) == headerMagic, try r.u8() == 1 else {
            throw KhoError(.integrity, "Pack \(pack.prefix(8)) has a header of an unknown format: the pack is damaged.")
        }
        let count = Int(try r.u32())
        guard count == r.remaining / PackedBlob.encodedSize, r.remaining % PackedBlob.encodedSize == 0 else {
            throw KhoError(.integrity, "Pack \(pack.prefix(8)) has a header whose length does not match its blob count: the pack is damaged.")
        }
        var blobs: [PackedBlob] = []
        blobs.reserveCapacity(count)
        for _ in 0..<count { blobs.append(try PackedBlob.decode(from: &r)) }
        return blobs
    }
}

extension Repository {
    /// Reads and authenticates a pack's header from the pack's full bytes.
    package func packHeader(of pack: [UInt8], name: String) throws -> [PackedBlob] {
        guard pack.count >= 4 else {
            throw KhoError(.integrity, "Pack \(name.prefix(8)) is only \(pack.count) bytes long: it is truncated.")
        }
        let length = pack.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: pack.count - 4, as: UInt32.self))) }
        guard length >= Sealer.overhead, length <= pack.count - 4 else {
            throw KhoError(.integrity, "Pack \(name.prefix(8)) records a header length of \(length) bytes that does not fit the pack: it is truncated or damaged.")
        }
        let sealed = Array(pack[(pack.count - 4 - length)..<(pack.count - 4)])
        guard let plain = try makeSealer().open(sealed, context: PackFormat.headerContext) else {
            throw KhoError(.integrity, "The header of pack \(name.prefix(8)) does not authenticate: the pack is damaged.")
        }
        return try PackFormat.decodeHeader(plain, pack: name)
    }

    /// Reads a pack's header from storage without reading its blobs.
    package func loadPackHeader(name: String) throws -> [PackedBlob] {
        let handle = Handle(.data, name)
        let size = try storage.stat(handle).size
        guard size >= 4 + Sealer.overhead else {
            throw KhoError(.integrity, "Pack \(name.prefix(8)) is only \(size) bytes long: it is truncated.")
        }
        let trailer = try storage.load(handle, offset: size - 4, length: 4)
        let length = trailer.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self))) }
        guard length >= Sealer.overhead, length <= size - 4 else {
            throw KhoError(.integrity, "Pack \(name.prefix(8)) records a header length of \(length) bytes that does not fit the pack: it is truncated or damaged.")
        }
        let sealed = try storage.load(handle, offset: size - 4 - length, length: length)
        guard let plain = try makeSealer().open(sealed, context: PackFormat.headerContext) else {
            throw KhoError(.integrity, "The header of pack \(name.prefix(8)) does not authenticate: the pack is damaged.")
        }
        return try PackFormat.decodeHeader(plain, pack: name)
    }
}

/// A blob compressed and sealed, ready to be appended to a pack.
struct SealedBlob {
    var id: BlobID
    var kind: BlobKind
    var compressed: Bool
    var rawLength: Int
    var bytes: [UInt8]
}

/// Collects sealed blobs into one pack in memory.
final class PackBuilder {
    private var bytes: [UInt8] = []
    private(set) var blobs: [PackedBlob] = []
    let targetSize: Int

    init(targetSize: Int) {
        self.targetSize = targetSize
    }

    var isEmpty: Bool { blobs.isEmpty }
    var count: Int { bytes.count }
    var isFull: Bool { bytes.count >= targetSize }

    func append(_ blob: SealedBlob) {
        if bytes.capacity == 0 {
            // Room for the blobs and the header; pages are touched only as they are written.
            bytes.reserveCapacity(targetSize + 64 + (targetSize / 1024 + 64) * PackedBlob.encodedSize / 16)
        }
        let offset = bytes.count
        bytes.append(contentsOf: blob.bytes)
        blobs.append(PackedBlob(id: blob.id, kind: blob.kind, compressed: blob.compressed, offset: UInt32(offset),
                                length: UInt32(blob.bytes.count), rawLength: UInt32(blob.rawLength)))
    }

    /// Closes the pack: appends the sealed header and its length. Returns the bytes and the blobs.
    func finish(sealer: Sealer) throws -> (bytes: [UInt8], blobs: [PackedBlob]) {
        let header = try sealer.seal(PackFormat.encodeHeader(blobs), context: PackFormat.headerContext)
        bytes.append(contentsOf: header)
        withUnsafeBytes(of: UInt32(header.count).littleEndian) { bytes.append(contentsOf: $0) }
        let result = (bytes, blobs)
        bytes = []
        blobs = []
        return result
    }
}
