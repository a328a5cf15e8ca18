import KhoSupport
/// Little-endian writer for the repository's binary structures.
struct BinaryWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    public mutating func id(_ v: BlobID) {
        bytes.append(contentsOf: v.bytes)
    }
    public mutating func raw(_ v: some Collection<UInt8>) { bytes.append(contentsOf: v) }
    /// A byte string prefixed with its length as u32.
    public mutating func data(_ v: some Collection<UInt8>) {
        u32(UInt32(v.count))
        bytes.append(contentsOf: v)
    }
}

/// Reader matching `BinaryWriter`; every read is bounds-checked and throws an integrity error.
struct BinaryReader {
    private let bytes: [UInt8]
    public private(set) var offset: Int
    private let what: String

    public init(_ bytes: [UInt8], what: String, offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
        self.what = what
    }

    public var remaining: Int { bytes.count - offset }
    public var atEnd: Bool { offset == bytes.count }

    private mutating func take(_ n: Int) throws -> Int {
        guard n >= 0, n <= bytes.count - offset else {
            throw KhoError(.integrity, "\(what) is truncated or malformed at byte \(offset): run `kho check --read-data` to find the damaged file.")
        }
        let at = offset
        offset += n
        return at
    }

    private mutating func load<T: FixedWidthInteger>(_: T.Type) throws -> T {
        let at = try take(MemoryLayout<T>.size)
        return bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: T.self)) }
    }

    public mutating func u8() throws -> UInt8 { try load(UInt8.self) }
    public mutating func u16() throws -> UInt16 { try load(UInt16.self) }
    public mutating func u32() throws -> UInt32 { try load(UInt32.self) }
    public mutating func u64() throws -> UInt64 { try load(UInt64.self) }
    public mutating func i64() throws -> Int64 { Int64(bitPattern: try u64()) }
    public mutating func id() throws -> BlobID {
        let at = try take(32)
        return bytes.withUnsafeBytes { BlobID(bytes: $0.baseAddress! + at) }
    }
    public mutating func raw(_ n: Int) throws -> ArraySlice<UInt8> {
        let at = try take(n)
        return bytes[at..<(at + n)]
    }
    public mutating func data(limit: Int = 1 << 30) throws -> [UInt8] {
        let n = Int(try u32())
        guard n <= limit else {
            throw KhoError(.integrity, "\(what) holds a field of \(n) bytes, more than the \(limit) allowed: the file is damaged.")
        }
        return Array(try raw(n))
    }
}
