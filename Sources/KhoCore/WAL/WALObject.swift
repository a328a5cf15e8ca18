import Foundation
import KhoSupport

/// What a WAL object says about the file it holds (docs/FORMAT.md section 20.3), sealed with it.
public struct WALObjectMeta: Codable, Equatable, Sendable {
    /// The cluster's system identifier, 16 lower-case hex digits.
    public var cluster: String
    /// The WAL file's name as PostgreSQL wrote it.
    public var name: String
    public var kind: WALFileName.Kind
    /// Bytes of the raw file.
    public var size: Int
    /// SHA-256 of the raw file, lower-case hex: what a re-push of the same name is compared by
    /// (the sealed bytes differ on every seal).
    public var sha256: String
    public var timeline: UInt32
    public var segmentSize: Int
    /// `xlp_magic` of a segment's first page, 4 lower-case hex digits (segments and partials only).
    public var pageMagic: String?
    /// When kho sealed it (RFC 3339, UTC).
    public var pushed: String
    public var host: String
    /// The ID of the key file whose password opened the repository that pushed it.
    public var key: String

    public init(cluster: SystemIdentifier, name: WALFileName, size: Int, sha256: String, segmentSize: WALSegmentSize,
                pageMagic: UInt16?, pushed: Date, host: String, key: String) {
        self.cluster = cluster.description
        self.name = name.description
        kind = name.kind
        self.size = size
        self.sha256 = sha256
        timeline = name.timeline
        self.segmentSize = segmentSize.bytes
        self.pageMagic = pageMagic.map { m in let d = String(m, radix: 16); return String(repeating: "0", count: 4 - d.count) + d }
        self.pushed = Timestamp.format(pushed)
        self.host = host
        self.key = key
    }
}

/// One archived WAL file as stored: a sealed file (FORMAT section 10) whose AAD names the
/// cluster and the file, so that an authentic object saved under another name does not open.
///
/// ```
/// stored    = seal(encryption key, "kho/wal:" ‖ sysid ‖ "/" ‖ name, encoding ‖ body)
/// body      = u32 metaLength ‖ meta JSON ‖ the file's bytes, unchanged
/// encoding  = 0: body as is; 1: body is one zstd frame (with its decompressed size)
/// ```
public enum WALObject {
    /// The AAD of a WAL file's object. Never 32 bytes long (the shortest, a history file's, is 41),
    /// so it can never equal a blob ID's context.
    public static func context(cluster: SystemIdentifier, name: WALFileName) -> [UInt8] {
        Array("kho/wal:\(cluster)/\(name)".utf8)
    }

    /// The AAD of the archive record `wal/<sysid>/archive`. The design's `kho/wal:<sysid>/archive`
    /// would be exactly 32 bytes, the length reserved for blob IDs (FORMAT 5.4); this one is 39.
    public static func recordContext(cluster: SystemIdentifier) -> [UInt8] {
        Array("kho/wal:\(cluster)/archive-record".utf8)
    }

    /// The largest segment kho v1 archives: the object is sealed in memory.
    public static let largestSegmentSize = 64 << 20
    /// zstd's threads for one large file: the cores of this host, at most 4 (a 16 MiB segment
    /// makes about 8 jobs of zstd's at level 1).
    public static let compressionWorkers = min(4, max(1, ProcessInfo.processInfo.activeProcessorCount))
    /// The largest meta JSON a reader accepts (kho writes about 400 bytes).
    static let largestMeta = 64 << 10

    /// Seals `file` with its meta; compresses when that makes it smaller (a segment closed early by
    /// `archive_timeout` is mostly zeros) and `compressionLevel` is above 0.
    package static func seal(file: [UInt8], meta: WALObjectMeta, cluster: SystemIdentifier, name: WALFileName,
                             sealer: Sealer, compressionLevel: Int, workers: Int = compressionWorkers) throws -> [UInt8] {
        guard meta.cluster == cluster.description, meta.name == name.description, meta.size == file.count else {
            throw KhoError(.failure, "The description of \(name) does not match the file being sealed: this is a bug in kho; nothing was stored; report it.")
        }
        guard file.count <= largestSegmentSize else {
            throw KhoError(.source, "\(name) is \(file.count) bytes, more than the \(largestSegmentSize >> 20) MiB kho archives per WAL file: set up the cluster with a WAL segment size of at most 64 MiB.")
        }
        return try ArchivedFileSeal.seal(file: file, meta: Array(try JSON.encoder.encode(meta)), context: context(cluster: cluster, name: name),
                                         sealer: sealer, compressionLevel: compressionLevel, workers: workers)
    }

    /// Opens the object stored under `cluster`/`name` and checks that what it holds is that
    /// file: it authenticates under that name's AAD, its meta names the same cluster and file,
    /// and the bytes have the size and SHA-256 the meta records.
    package static func open(_ sealed: [UInt8], cluster: SystemIdentifier, name: WALFileName, sealer: Sealer) throws -> (meta: WALObjectMeta, file: [UInt8]) {
        let path = "wal/" + name.storedName(cluster: cluster)
        func damaged(_ why: String) -> KhoError {
            KhoError(.integrity, "\(path) \(why): the archived file cannot be used; run `kho check` and take a new base backup so that recovery does not need it.")
        }
        let (metaBytes, file) = try ArchivedFileSeal.open(sealed, context: context(cluster: cluster, name: name), sealer: sealer,
                                                          largestFile: largestSegmentSize, path: path, damaged: damaged)
        let meta: WALObjectMeta
        do {
            meta = try JSON.decoder.decode(WALObjectMeta.self, from: Data(metaBytes))
        } catch {
            throw damaged("has a description that is not valid JSON (\(error))")
        }
        guard meta.cluster == cluster.description, meta.name == name.description, meta.kind == name.kind else {
            throw damaged("describes \(meta.cluster)/\(meta.name), not this file")
        }
        guard meta.size == file.count, try SHA256.hash(file).hex == meta.sha256 else {
            throw damaged("holds bytes whose size or SHA-256 differ from its description")
        }
        return (meta, file)
    }
}

/// The layout archived files share, WAL segments and binary log pieces alike: an encoding byte,
/// then `u32 metaLength ‖ meta JSON ‖ the file's bytes`, zstd-compressed as one frame when that is
/// smaller, sealed under an AAD that names the file.
package enum ArchivedFileSeal {
    package static func seal(file: [UInt8], meta json: [UInt8], context: [UInt8], sealer: Sealer, compressionLevel: Int,
                             workers: Int = WALObject.compressionWorkers) throws -> [UInt8] {
        // The body is the meta's length and JSON, then the file. The file is compressed where it
        // lies, behind the meta, on zstd's workers: the push of a segment waits for this, and
        // PostgreSQL's archiver waits for the push.
        var head: [UInt8] = []
        head.reserveCapacity(4 + json.count)
        withUnsafeBytes(of: UInt32(json.count).littleEndian) { head += $0 }
        head += json
        let bodyCount = head.count + file.count
        var plain: [UInt8] = []
        if compressionLevel > 0 {
            let capacity = Compressor.bound(bodyCount)
            let compressor = Compressor(level: compressionLevel, workers: file.count >= 1 << 20 ? workers : 0)
            plain = [UInt8](unsafeUninitializedCapacity: 1 + capacity) { buffer, count in
                buffer[0] = 1
                count = head.withUnsafeBytes { head in
                    file.withUnsafeBytes { file in
                        compressor.compress(parts: [head, file], into: UnsafeMutableRawPointer(buffer.baseAddress! + 1),
                                            capacity: capacity, limit: bodyCount).map { 1 + $0 } ?? 0
                    }
                }
            }
        }
        if plain.isEmpty {
            plain.reserveCapacity(1 + bodyCount)
            plain.append(0)
            plain += head
            plain += file
        }
        return try sealer.seal(plain, context: context)
    }

    /// The meta JSON's bytes and the file's, once the object authenticates under `context`.
    package static func open(_ sealed: [UInt8], context: [UInt8], sealer: Sealer, largestFile: Int, path: String,
                             damaged: (String) -> KhoError) throws -> (meta: [UInt8], file: [UInt8]) {
        guard let plain = try sealer.open(sealed, context: context), let encoding = plain.first else {
            throw damaged("does not authenticate as that file (damaged, not of this repository, or another file's object saved under its name)")
        }
        let body: [UInt8]
        switch encoding {
        case 0: body = Array(plain[1...])
        case 1:
            guard let inflated = Decompressor().decompress(Array(plain[1...]), maxSize: largestFile + WALObject.largestMeta + 4) else {
                throw damaged("authenticates but does not decompress")
            }
            body = inflated
        default:
            throw KhoError(.integrity, "\(path) uses an unknown encoding \(encoding): it was written by a newer kho; upgrade kho.")
        }
        guard body.count >= 4 else { throw damaged("holds no description") }
        let metaLength = Int(UInt32(body[0]) | UInt32(body[1]) << 8 | UInt32(body[2]) << 16 | UInt32(body[3]) << 24)
        guard metaLength <= WALObject.largestMeta, 4 + metaLength <= body.count else { throw damaged("has a description longer than the object") }
        return (Array(body[4..<(4 + metaLength)]), Array(body[(4 + metaLength)...]))
    }
}

extension Repository {
    /// Seals an archived WAL file for storage under `name.handle(cluster:)`.
    public func sealWAL(_ file: [UInt8], meta: WALObjectMeta, cluster: SystemIdentifier, name: WALFileName,
                        workers: Int = WALObject.compressionWorkers) throws -> [UInt8] {
        try WALObject.seal(file: file, meta: meta, cluster: cluster, name: name, sealer: try makeSealer(),
                           compressionLevel: config.compressionLevel, workers: workers)
    }

    /// Opens and checks an archived WAL file's object (see `WALObject.open`).
    public func openWAL(_ sealed: [UInt8], cluster: SystemIdentifier, name: WALFileName) throws -> (meta: WALObjectMeta, file: [UInt8]) {
        try WALObject.open(sealed, cluster: cluster, name: name, sealer: try makeSealer())
    }
}

/// `wal/<sysid>/archive`: which source's archive a cluster's WAL is, and what every file pushed
/// into it must match (docs/FORMAT.md section 20.3). Saved once, with `saveIfAbsent`; the current
/// archive of a source is the newest record naming it.
public struct WALArchiveRecord: Codable, Equatable, Sendable {
    /// The policy source whose archive this is.
    public var source: String
    /// The cluster's system identifier, 16 lower-case hex digits; must equal the path's.
    public var cluster: String
    /// The server's major version (15, 16, 17).
    public var serverVersion: Int
    public var segmentSize: Int
    public var walBlockSize: Int
    /// `XLOG_PAGE_MAGIC` of the server version, 4 lower-case hex digits.
    public var pageMagic: String
    public var created: String
    public var host: String
    /// The cluster whose archive this one replaced (`kho wal adopt`), 16 lower-case hex digits.
    public var previous: String?

    public init(source: String, cluster: SystemIdentifier, serverVersion: Int, segmentSize: WALSegmentSize, walBlockSize: Int,
                pageMagic: UInt16, created: Date, host: String, previous: SystemIdentifier? = nil) {
        self.source = source
        self.cluster = cluster.description
        self.serverVersion = serverVersion
        self.segmentSize = segmentSize.bytes
        self.walBlockSize = walBlockSize
        let digits = String(pageMagic, radix: 16)
        self.pageMagic = String(repeating: "0", count: max(0, 4 - digits.count)) + digits
        self.created = Timestamp.format(created)
        self.host = host
        self.previous = previous?.description
    }

    public static func handle(cluster: SystemIdentifier) -> Handle { Handle(.wal, "\(cluster)/archive") }

    /// What segments pushed into this archive must match, from the record's own fields.
    public func expectation() throws -> WALSegmentHeader.Expectation {
        guard let magic = UInt16(pageMagic, radix: 16), walBlockSize > 0, walBlockSize <= Int(UInt32.max) else {
            throw KhoError(.integrity, "The WAL archive record of cluster \(cluster) has an unreadable page magic or block size: it was not written by kho; run `kho check`.")
        }
        return WALSegmentHeader.Expectation(cluster: try SystemIdentifier(parsing: cluster), segmentSize: try WALSegmentSize(bytes: segmentSize),
                                            blockSize: UInt32(walBlockSize), magic: magic)
    }

    package func seal(sealer: Sealer) throws -> [UInt8] {
        let cluster = try SystemIdentifier(parsing: self.cluster)
        return try sealer.seal([0] + Array(try JSON.encoder.encode(self)), context: WALObject.recordContext(cluster: cluster))
    }

    /// Opens the record stored at `wal/<cluster>/archive` and checks that it is that cluster's.
    package static func open(_ sealed: [UInt8], cluster: SystemIdentifier, sealer: Sealer) throws -> WALArchiveRecord {
        let path = handle(cluster: cluster).path
        guard let plain = try sealer.open(sealed, context: WALObject.recordContext(cluster: cluster)), plain.first == 0 else {
            throw KhoError(.integrity, "\(path) does not authenticate as that cluster's archive record (damaged, not of this repository, or another cluster's record saved under its name): run `kho check`.")
        }
        let record: WALArchiveRecord
        do {
            record = try JSON.decoder.decode(WALArchiveRecord.self, from: Data(plain[1...]))
        } catch {
            throw KhoError(.integrity, "\(path) authenticates but is not an archive record kho can read (\(error)): it was written by a newer or faulty kho; upgrade kho, or run `kho check`.")
        }
        guard record.cluster == cluster.description else {
            throw KhoError(.integrity, "\(path) names cluster \(record.cluster), not \(cluster): it was written by a faulty kho; run `kho check`.")
        }
        return record
    }
}

extension Repository {
    public func sealWALRecord(_ record: WALArchiveRecord) throws -> [UInt8] { try record.seal(sealer: try makeSealer()) }

    public func openWALRecord(_ sealed: [UInt8], cluster: SystemIdentifier) throws -> WALArchiveRecord {
        try WALArchiveRecord.open(sealed, cluster: cluster, sealer: try makeSealer())
    }
}
