import KhoSupport
/// Finds AES-GCM nonces used twice under the repository's key.
///
/// Every sealed object starts with its 96-bit nonce (docs/FORMAT.md, section 5.4). Two different
/// messages sealed under one key and one nonce give away the XOR of their plaintexts and GCM's
/// authentication subkey, after which anyone who can read the storage can forge data that checks
/// as intact. Copies of one message (the same blob in two packs, as an interrupted prune leaves
/// them) are the same bytes and give nothing away, so a repeat counts only between different
/// objects: different files, or blobs with different IDs.
///
/// Memory: 32 bytes per sealed object, about 60 MiB for two million blobs.
final class NonceCensus: @unchecked Sendable {
    enum ObjectKind: UInt8 {
        case snapshotFile, indexFile, anchorFile, drillFile, packHeader, blob, walFile, binlogFile

        /// The kind of a sealed file (snapshot, index, anchor or drill evidence).
        init(file kind: FileKind) {
            switch kind {
            case .snapshot: self = .snapshotFile
            case .index: self = .indexFile
            case .drill: self = .drillFile
            case .wal: self = .walFile
            case .binlog: self = .binlogFile
            default: self = .anchorFile
            }
        }
    }

    struct Record {
        var high: UInt64
        var low: UInt32
        var kind: ObjectKind
        /// Index into `places`: the file, or for a blob the pack holding it.
        var place: Int32
        /// First word of the blob's ID (0 for files): blobs with the same ID are copies.
        var blobWord: UInt64

        func sameNonce(_ other: Record) -> Bool { high == other.high && low == other.low }
        func sameObject(_ other: Record) -> Bool {
            kind == other.kind && (kind == .blob ? blobWord == other.blobWord : place == other.place)
        }
    }

    private let state = Locked((records: [Record](), places: [String](), placeIndex: [String: Int32]()))

    /// Records the nonce at the start of `sealed` (at least 12 bytes).
    func add(_ sealed: UnsafeRawBufferPointer, kind: ObjectKind, place: String, blob: BlobID? = nil) {
        guard sealed.count >= Sealer.nonceSize else { return }
        let high = UInt64(bigEndian: sealed.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        let low = UInt32(bigEndian: sealed.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        state.withLock { s in
            let index: Int32
            if let known = s.placeIndex[place] {
                index = known
            } else {
                index = Int32(s.places.count)
                s.places.append(place)
                s.placeIndex[place] = index
            }
            s.records.append(Record(high: high, low: low, kind: kind, place: index, blobWord: blob?.w0 ?? 0))
        }
    }

    func add(_ sealed: [UInt8], kind: ObjectKind, place: String) {
        sealed.withUnsafeBytes { add($0, kind: kind, place: place) }
    }

    var count: Int { state.withLock { $0.records.count } }

    /// One repeated nonce and the different objects that use it.
    struct Repeat: Sendable {
        var nonce: String
        /// Each object described for a person: `snapshots/…`, `index/…`, `header of pack …`, `blob … in pack …`.
        var objects: [String]
        /// Snapshot files among them (full IDs).
        var snapshotFiles: [String]
    }

    /// Every nonce used by more than one object, in nonce order.
    func repeats() -> [Repeat] {
        state.withLock { s in
            s.records.sort { ($0.high, $0.low) < ($1.high, $1.low) }
            var result: [Repeat] = []
            var i = 0
            while i < s.records.count {
                var j = i + 1
                while j < s.records.count && s.records[j].sameNonce(s.records[i]) { j += 1 }
                if j - i > 1 {
                    var distinct: [Record] = []
                    for record in s.records[i..<j] where !distinct.contains(where: { $0.sameObject(record) }) {
                        distinct.append(record)
                    }
                    if distinct.count > 1 {
                        let first = s.records[i]
                        let nonce = Hex.encode(withUnsafeBytes(of: first.high.bigEndian) { Array($0) }
                                               + withUnsafeBytes(of: first.low.bigEndian) { Array($0) })
                        result.append(Repeat(
                            nonce: nonce,
                            objects: distinct.map { describe($0, places: s.places) },
                            snapshotFiles: distinct.filter { $0.kind == .snapshotFile }.map { s.places[Int($0.place)] }))
                    }
                }
                i = j
            }
            return result
        }
    }

    private func describe(_ record: Record, places: [String]) -> String {
        let place = places[Int(record.place)]
        switch record.kind {
        case .snapshotFile: return "snapshots/\(place.prefix(8))"
        case .indexFile: return "index/\(place.prefix(8))"
        case .anchorFile: return "anchors/\(place.prefix(8))"
        case .drillFile: return "drills/\(place.prefix(8))"
        // WAL names are short and say which cluster and segment: keep them whole.
        case .walFile: return "wal/\(place)"
        case .binlogFile: return "binlog/\(place)"
        case .packHeader: return "header of pack \(place.prefix(8))"
        case .blob:
            return "blob \(Hex.encode(withUnsafeBytes(of: record.blobWord.bigEndian) { Array($0) }).prefix(8)) in pack \(place.prefix(8))"
        }
    }
}

extension Repository {
    /// The nonce of a pack's header, read from the end of the pack without reading its blobs.
    func packHeaderNonce(name: String, size: Int) throws -> [UInt8] {
        let handle = Handle(.data, name)
        guard size >= 4 + Sealer.overhead else {
            throw KhoError(.integrity, "Pack \(name.prefix(8)) is only \(size) bytes long: it is truncated.")
        }
        // One read covers the trailer and, for packs of up to ~1,400 blobs, the whole header.
        let tailLength = min(size, 64 << 10)
        let tail = try storage.load(handle, offset: size - tailLength, length: tailLength)
        let length = tail.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: tailLength - 4, as: UInt32.self))) }
        guard length >= Sealer.overhead, length <= size - 4 else {
            throw KhoError(.integrity, "Pack \(name.prefix(8)) records a header length of \(length) bytes that does not fit the pack: it is truncated or damaged.")
        }
        if length + 4 <= tailLength {
            let start = tailLength - 4 - length
            return Array(tail[start..<(start + Sealer.nonceSize)])
        }
        return try storage.load(handle, offset: size - 4 - length, length: Sealer.nonceSize)
    }
}
