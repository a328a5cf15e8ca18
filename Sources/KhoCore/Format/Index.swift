import KhoSupport
/// Where a blob is stored.
package struct BlobLocation: Sendable, Equatable {
    package var pack: BlobID
    package var blob: PackedBlob
}

/// One row of the in-memory index: 56 bytes with padding, no references.
struct IndexEntry {
    var id: BlobID
    var pack: UInt32
    var offset: UInt32
    var length: UInt32
    var rawLength: UInt32
    var kind: UInt8
    var flags: UInt8
}

/// Every blob the repository's index files list, as one sorted table searched by binary search.
/// Immutable once built, so it is shared freely between threads.
public struct MasterIndex: Sendable {
    private(set) var packs: [BlobID] = []
    private var entries: [IndexEntry] = []
    /// Index files the table was built from.
    public private(set) var files: [String] = []

    public init() {}

    public var blobCount: Int { entries.count }
    public var packIDs: [BlobID] { packs }

    /// Builds the table from packs and their blobs; duplicates (a blob stored twice) are kept, the
    /// first wins on lookup.
    init(packs packList: [(pack: BlobID, blobs: [PackedBlob])], files: [String]) {
        var packNumbers: [BlobID: UInt32] = [:]
        var entries: [IndexEntry] = []
        entries.reserveCapacity(packList.reduce(0) { $0 + $1.blobs.count })
        for (pack, blobs) in packList {
            let number: UInt32
            if let existing = packNumbers[pack] {
                number = existing
            } else {
                number = UInt32(packs.count)
                packNumbers[pack] = number
                packs.append(pack)
            }
            for blob in blobs {
                entries.append(IndexEntry(id: blob.id, pack: number, offset: blob.offset, length: blob.length,
                                          rawLength: blob.rawLength, kind: blob.kind.rawValue, flags: blob.compressed ? 1 : 0))
            }
        }
        entries.sort { $0.id < $1.id }
        self.entries = entries
        self.files = files
    }

    private func firstIndex(of id: BlobID) -> Int? {
        entries.withUnsafeBufferPointer { table -> Int? in
            var low = 0
            var high = table.count
            while low < high {
                let mid = (low &+ high) >> 1
                if table[mid].id < id { low = mid &+ 1 } else { high = mid }
            }
            return low < table.count && table[low].id == id ? low : nil
        }
    }

    public func contains(_ id: BlobID) -> Bool { firstIndex(of: id) != nil }

    package func lookup(_ id: BlobID) -> BlobLocation? {
        guard let i = firstIndex(of: id) else { return nil }
        return location(entries[i])
    }

    /// Every location of a blob (more than one after concurrent backups or an interrupted prune).
    package func lookupAll(_ id: BlobID) -> [BlobLocation] {
        guard var i = firstIndex(of: id) else { return [] }
        var result: [BlobLocation] = []
        while i < entries.count, entries[i].id == id {
            result.append(location(entries[i]))
            i += 1
        }
        return result
    }

    private func location(_ e: IndexEntry) -> BlobLocation {
        BlobLocation(pack: packs[Int(e.pack)],
                     blob: PackedBlob(id: e.id, kind: BlobKind(rawValue: e.kind) ?? .data, compressed: e.flags & 1 != 0,
                                      offset: e.offset, length: e.length, rawLength: e.rawLength))
    }

    /// Blobs grouped by pack.
    package func blobsByPack() -> [BlobID: [PackedBlob]] {
        var result: [BlobID: [PackedBlob]] = [:]
        for e in entries {
            result[packs[Int(e.pack)], default: []].append(location(e).blob)
        }
        return result
    }

    /// Calls `body` for every entry, in ID order.
    package func forEach(_ body: (BlobLocation) throws -> Void) rethrows {
        for e in entries { try body(location(e)) }
    }
}

/// The content of one index file: packs and their blobs, and the index files it replaces.
package struct IndexFile: Sendable {
    package var packs: [(pack: BlobID, blobs: [PackedBlob])]
    /// Index files this one makes obsolete (written by prune before it removes them).
    package var supersedes: [BlobID]

    package init(packs: [(pack: BlobID, blobs: [PackedBlob])], supersedes: [BlobID] = []) {
        self.packs = packs
        self.supersedes = supersedes
    }

    static let magic = Array("KIDX".utf8)

    package func encoded() -> [UInt8] {
        var w = BinaryWriter(capacity: 64 + packs.reduce(0) { $0 + 36 + $1.blobs.count * PackedBlob.encodedSize })
        w.raw(IndexFile.magic)
        w.u8(1)
        w.u32(UInt32(supersedes.count))
        for id in supersedes { w.id(id) }
        w.u32(UInt32(packs.count))
        for (pack, blobs) in packs {
            w.id(pack)
            w.u32(UInt32(blobs.count))
            for blob in blobs { blob.encode(into: &w) }
        }
        return w.bytes
    }

    package init(decoding bytes: [UInt8], name: String) throws {
        var r = BinaryReader(bytes, what: "index file \(name.prefix(8))")
        guard Array(try r.raw(4)) == IndexFile.magic, try r.u8() == 1 else {
            throw KhoError(.integrity, "Index file \(name.prefix(8)) is not a version 1 index: it is damaged or newer than this kho.")
        }
        var supersedes: [BlobID] = []
        for _ in 0..<Int(try r.u32()) { supersedes.append(try r.id()) }
        var packs: [(pack: BlobID, blobs: [PackedBlob])] = []
        for _ in 0..<Int(try r.u32()) {
            let pack = try r.id()
            let count = Int(try r.u32())
            guard count <= r.remaining / PackedBlob.encodedSize else {
                throw KhoError(.integrity, "Index file \(name.prefix(8)) is truncated: run `kho check`.")
            }
            var blobs: [PackedBlob] = []
            blobs.reserveCapacity(count)
            for _ in 0..<count { blobs.append(try PackedBlob.decode(from: &r)) }
            packs.append((pack, blobs))
        }
        guard r.atEnd else {
            throw KhoError(.integrity, "Index file \(name.prefix(8)) has trailing bytes: it is damaged.")
        }
        self.packs = packs
        self.supersedes = supersedes
    }
}

extension Repository {
    package func saveIndexFile(_ file: IndexFile) throws -> BlobID {
        try saveSealed(file.encoded(), kind: .index)
    }

    package func loadIndexFile(name: String) throws -> IndexFile {
        try IndexFile(decoding: try loadSealed(Handle(.index, name)), name: name)
    }

    /// Loads every index file. A damaged index file is reported through `damaged` and skipped, so
    /// that blobs listed elsewhere stay reachable; `kho check` reports it as an error.
    public func loadIndex(damaged: ((String, KhoError) -> Void)? = nil) throws -> MasterIndex {
        let names = try storage.list(.index).map(\.name)
        var loaded: [(name: String, file: IndexFile)] = []
        var superseded = Set<BlobID>()
        for name in names {
            do {
                let file = try loadIndexFile(name: name)
                loaded.append((name, file))
                superseded.formUnion(file.supersedes)
            } catch let error as KhoError {
                if let damaged { damaged(name, error) } else { logger.warning("\(error.message)") }
            }
        }
        var packs: [(pack: BlobID, blobs: [PackedBlob])] = []
        var files: [String] = []
        for (name, file) in loaded where !superseded.contains(BlobID(hex: name) ?? .zero) {
            packs.append(contentsOf: file.packs)
            files.append(name)
        }
        return MasterIndex(packs: packs, files: files)
    }
}
