import Foundation
import KhoSupport

/// One piece of an archived binary log file: a run of whole events at an offset of the file
/// (docs/FORMAT.md section 22). A file is stored as it grows, piece after piece, so the newest
/// events are in the repository within an interval however large the file grows.
public struct BinlogPiece: Hashable, Sendable, Comparable {
    public var file: BinlogFileName
    /// Where the piece starts in the file (0 for the first: it holds the magic).
    public var offset: UInt64
    public var length: Int

    public init(file: BinlogFileName, offset: UInt64, length: Int) {
        self.file = file; self.offset = offset; self.length = length
    }

    public var end: UInt64 { offset + UInt64(length) }

    /// `<file>/<offset, 12 hex digits>-<length, 8 hex digits>`: the range is in the name, so
    /// one listing says which bytes of which file are stored.
    public var storedName: String { "\(file)/\(BinlogPiece.hex(offset, 12))-\(BinlogPiece.hex(UInt64(length), 8))" }

    static func hex(_ value: UInt64, _ digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }

    /// The piece a stored name `<offset>-<length>` under a file's folder describes, or nil.
    static func parse(file: BinlogFileName, name: Substring) -> BinlogPiece? {
        let parts = name.split(separator: "-")
        guard parts.count == 2, parts[0].count == 12, parts[1].count == 8, let offset = UInt64(parts[0], radix: 16),
              let length = Int(parts[1], radix: 16), length > 0, parts.allSatisfy({ $0.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) } }) else {
            return nil
        }
        return BinlogPiece(file: file, offset: offset, length: length)
    }

    public static func < (a: BinlogPiece, b: BinlogPiece) -> Bool { a.file != b.file ? a.file < b.file : a.offset < b.offset }
}

/// What a binary log piece says about itself, sealed with it.
public struct BinlogPieceMeta: Codable, Equatable, Sendable {
    public var archive: String
    public var file: String
    public var offset: UInt64
    public var size: Int
    public var sha256: String
    public var events: Int
    /// Times of its first and last timed events (RFC 3339, UTC; whole seconds, as the log has them).
    public var firstEvent: String?
    public var lastEvent: String?
    public var pushed: String
    public var host: String
    public var key: String
}

/// `binlog/<archive>/<file>/end`: the file is whole (the server moved on to the next one), and how
/// long it is. Without it a file is still growing, or its end was never stored.
public struct BinlogFileEnd: Codable, Equatable, Sendable {
    public var archive: String
    public var file: String
    public var size: UInt64
    public var lastEvent: String?
    public var pushed: String
    public var host: String
}

/// `binlog/<archive>/archive`: the server whose binary log this archive is. Saved once, with
/// `saveIfAbsent`; every later `kho binlog serve` must find the same server in it.
public struct BinlogArchiveRecord: Codable, Equatable, Sendable {
    public var source: String
    public var archive: String
    public var serverId: UInt32
    public var gtidDomainId: UInt32
    /// `@@log_bin_basename`'s last component: the files' stem.
    public var basename: String
    public var serverVersion: String
    public var created: String
    public var host: String

    public init(source: String, archive: BinlogArchiveID, serverId: UInt32, gtidDomainId: UInt32, basename: String,
                serverVersion: String, created: Date, host: String) {
        self.source = source; self.archive = archive.description; self.serverId = serverId; self.gtidDomainId = gtidDomainId
        self.basename = basename; self.serverVersion = serverVersion; self.created = Timestamp.format(created); self.host = host
    }
}

/// The sealing of binary log objects: the layout of WAL objects (`ArchivedFileSeal`), under AADs
/// that name the archive and the piece, so an authentic object saved under another name does not
/// open. Every AAD is longer than 32 bytes, the length of a blob ID's context.
public enum BinlogObject {
    public static let largestPiece = 64 << 20

    static func pieceContext(_ archive: BinlogArchiveID, _ piece: BinlogPiece) -> [UInt8] {
        Array("kho/binlog-piece:\(archive)/\(piece.storedName)".utf8)
    }
    static func endContext(_ archive: BinlogArchiveID, _ file: BinlogFileName) -> [UInt8] {
        Array("kho/binlog-file-complete:\(archive)/\(file)/end".utf8)
    }
    static func recordContext(_ archive: BinlogArchiveID) -> [UInt8] {
        Array("kho/binlog-archive-record:\(archive)/archive".utf8)
    }

    public static func pieceHandle(_ archive: BinlogArchiveID, _ piece: BinlogPiece) -> Handle { Handle(.binlog, "\(archive)/\(piece.storedName)") }
    public static func endHandle(_ archive: BinlogArchiveID, _ file: BinlogFileName) -> Handle { Handle(.binlog, "\(archive)/\(file)/end") }
    public static func recordHandle(_ archive: BinlogArchiveID) -> Handle { Handle(.binlog, "\(archive)/archive") }

    package static func sealPiece(_ bytes: [UInt8], meta: BinlogPieceMeta, archive: BinlogArchiveID, piece: BinlogPiece,
                                  sealer: Sealer, compressionLevel: Int) throws -> [UInt8] {
        guard meta.size == bytes.count, bytes.count == piece.length, bytes.count <= largestPiece else {
            throw KhoError(.failure, "The description of binary log piece \(piece.storedName) does not match its bytes: this is a bug in kho; nothing was stored; report it.")
        }
        return try ArchivedFileSeal.seal(file: bytes, meta: Array(try JSON.encoder.encode(meta)), context: pieceContext(archive, piece),
                                         sealer: sealer, compressionLevel: compressionLevel)
    }

    /// Opens a piece and checks it is that piece: its AAD, its description, its size and SHA-256.
    package static func openPiece(_ sealed: [UInt8], archive: BinlogArchiveID, piece: BinlogPiece, sealer: Sealer) throws -> (meta: BinlogPieceMeta, bytes: [UInt8]) {
        let path = "binlog/\(archive)/\(piece.storedName)"
        func damaged(_ why: String) -> KhoError {
            KhoError(.integrity, "\(path) \(why): the archived binary log cannot be replayed past it; run `kho check` and take a new dump of the source.")
        }
        let (metaBytes, bytes) = try ArchivedFileSeal.open(sealed, context: pieceContext(archive, piece), sealer: sealer,
                                                           largestFile: largestPiece, path: path, damaged: damaged)
        let meta: BinlogPieceMeta
        do { meta = try JSON.decoder.decode(BinlogPieceMeta.self, from: Data(metaBytes)) } catch {
            throw damaged("has a description that is not valid JSON (\(error))")
        }
        guard meta.archive == archive.description, meta.file == piece.file.description, meta.offset == piece.offset else {
            throw damaged("describes \(meta.archive)/\(meta.file) at \(meta.offset), not this piece")
        }
        guard meta.size == bytes.count, bytes.count == piece.length, try SHA256.hash(bytes).hex == meta.sha256 else {
            throw damaged("holds bytes whose size or SHA-256 differ from its description")
        }
        return (meta, bytes)
    }

    package static func sealJSON<T: Encodable>(_ value: T, context: [UInt8], sealer: Sealer) throws -> [UInt8] {
        try sealer.seal([0] + Array(try JSON.encoder.encode(value)), context: context)
    }

    package static func openJSON<T: Decodable>(_ sealed: [UInt8], as type: T.Type, context: [UInt8], path: String, sealer: Sealer) throws -> T {
        guard let plain = try sealer.open(sealed, context: context), plain.first == 0 else {
            throw KhoError(.integrity, "\(path) does not authenticate as that object (damaged, not of this repository, or another object saved under its name): run `kho check`.")
        }
        do {
            return try JSON.decoder.decode(T.self, from: Data(plain[1...]))
        } catch {
            throw KhoError(.integrity, "\(path) authenticates but kho cannot read it (\(error)): it was written by a newer or faulty kho; upgrade kho, or run `kho check`.")
        }
    }
}
