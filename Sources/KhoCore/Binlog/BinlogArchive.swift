import Foundation
import KhoSupport

/// The server a binary log comes from, as `kho binlog serve` reads it when it connects.
public struct BinlogServerIdentity: Sendable, Equatable {
    public var serverId: UInt32
    public var gtidDomainId: UInt32
    public var basename: String
    public var version: String
    public init(serverId: UInt32, gtidDomainId: UInt32, basename: String, version: String) {
        self.serverId = serverId; self.gtidDomainId = gtidDomainId; self.basename = basename; self.version = version
    }
}

/// One stored binary log file: its pieces in order, how far they reach without a hole, and its
/// end marker when the file is whole.
public struct BinlogStoredFile: Sendable {
    public var name: BinlogFileName
    public var pieces: [BinlogPiece]
    /// Bytes from the file's start that the pieces cover without a hole.
    public var contiguous: UInt64
    /// The pieces leave a hole (or overlap) before their last one.
    public var holes: Bool
    /// The end marker exists (its size is read only when needed).
    public var ended: Bool
    /// Bytes of the sealed objects.
    public var storedBytes: Int
}

/// What one listing of `binlog/<archive>/` shows.
public struct BinlogInventory: Sendable {
    public var hasRecord: Bool
    /// Oldest first.
    public var files: [BinlogStoredFile]
    /// Names listed that are not kho's (ignored, reported by `kho binlog ls`).
    public var strays: [String]
}

/// A source's archived binary log in a repository (docs/design/pitr.md section 9, FORMAT 22):
/// pieces pushed as the log grows, end markers once a file is whole, the record of the server.
public final class BinlogArchive: @unchecked Sendable {
    public let repository: Repository
    public private(set) var source: String
    public let id: BinlogArchiveID
    public let host: String

    public init(repository: Repository, source: String, host: String = Host.name) throws {
        guard !source.isEmpty, source.utf8.count <= 200, !source.utf8.contains(where: { $0 < 0x20 || $0 == 0x7f }) else {
            throw KhoError(.usage, "The source name must be 1 to 200 printable characters: pass the policy source's name with --source.")
        }
        self.repository = repository
        self.source = source
        id = try BinlogArchiveID(source: source)
        self.host = host
    }

    /// An archive found by its folder (`kho check`): its source is the record's, once read.
    package init(repository: Repository, id: BinlogArchiveID, host: String = Host.name) throws {
        self.repository = repository
        self.id = id
        self.host = host
        source = id.description
        if let record = try record() { source = record.source }
    }

    // MARK: the record

    public func record() throws -> BinlogArchiveRecord? {
        let handle = BinlogObject.recordHandle(id)
        guard try repository.storage.exists(handle) else { return nil }
        return try openRecord(try repository.storage.load(handle))
    }

    private func openRecord(_ sealed: [UInt8]) throws -> BinlogArchiveRecord {
        let handle = BinlogObject.recordHandle(id)
        let record = try BinlogObject.openJSON(sealed, as: BinlogArchiveRecord.self, context: BinlogObject.recordContext(id),
                                               path: handle.path, sealer: try repository.makeSealer())
        guard record.archive == id.description else {
            throw KhoError(.integrity, "\(handle.path) names archive \(record.archive), not \(id): it was written by a faulty kho; run `kho check`.")
        }
        return record
    }

    /// The archive's record, made from `server` when the archive is new; refuses another server.
    @discardableResult
    public func claim(for server: BinlogServerIdentity, now: Date = Date()) throws -> BinlogArchiveRecord {
        let handle = BinlogObject.recordHandle(id)
        var record: BinlogArchiveRecord
        if let known = try self.record() {
            record = known
        } else {
            record = BinlogArchiveRecord(source: source, archive: id, serverId: server.serverId, gtidDomainId: server.gtidDomainId,
                                         basename: server.basename, serverVersion: server.version, created: now, host: host)
            let sealed = try BinlogObject.sealJSON(record, context: BinlogObject.recordContext(id), sealer: try repository.makeSealer())
            if try !repository.storage.saveIfAbsent(handle, data: sealed) {
                record = try openRecord(try repository.storage.load(handle))
            }
        }
        guard record.source == source else {
            throw KhoError(.integrity, "\(handle.path) belongs to source \(record.source), not \(source): nothing was stored; give --source the name this server's binary log is archived under.")
        }
        guard record.serverId == server.serverId, record.gtidDomainId == server.gtidDomainId, record.basename == server.basename else {
            throw KhoError(.integrity, "Source \(source)'s binary log is archived from the server with server_id \(record.serverId), gtid_domain_id \(record.gtidDomainId) and files \(record.basename).* (since \(record.created), from \(record.host)); this server has server_id \(server.serverId), gtid_domain_id \(server.gtidDomainId), files \(server.basename).*: nothing was stored; point kho binlog serve at the source's own server, or archive this one under another --source.")
        }
        return record
    }

    // MARK: pushing

    /// Stores `bytes` (whole events, scanned as `scan`) as the piece at `offset` of `file`. The
    /// same bytes already stored under the name succeed (a restart repeating its last push);
    /// other bytes are an integrity error and nothing is replaced.
    @discardableResult
    public func push(file: BinlogFileName, offset: UInt64, bytes: [UInt8], scan: BinlogEventScan, now: Date = Date()) throws -> WALPushOutcome {
        let piece = BinlogPiece(file: file, offset: offset, length: bytes.count)
        let digest = try SHA256.hash(bytes).hex
        func time(_ seconds: UInt32?) -> String? { seconds.map { Timestamp.format(Date(timeIntervalSince1970: Double($0))) } }
        let meta = BinlogPieceMeta(archive: id.description, file: file.description, offset: offset, size: bytes.count, sha256: digest,
                                   events: scan.events, firstEvent: time(scan.firstTime), lastEvent: time(scan.lastTime),
                                   pushed: Timestamp.format(now), host: host, key: repository.keyID)
        let sealer = try repository.makeSealer()
        let sealed = try BinlogObject.sealPiece(bytes, meta: meta, archive: id, piece: piece, sealer: sealer, compressionLevel: repository.config.compressionLevel)
        let handle = BinlogObject.pieceHandle(id, piece)
        if try repository.storage.saveIfAbsent(handle, data: sealed) { return .stored }
        let stored = try BinlogObject.openPiece(try repository.storage.load(handle), archive: id, piece: piece, sealer: sealer)
        guard stored.meta.sha256 == digest else {
            throw KhoError(.integrity, "\(handle.path) is already archived with different content (pushed \(stored.meta.pushed) by \(stored.meta.host)): nothing was replaced; the server's binary log was reset (RESET MASTER) or another server writes files of the same names; archive it under another --source and take a new dump.")
        }
        return .repeated
    }

    /// Records that `file` is whole at `size` bytes: the server writes the next file.
    public func markEnded(file: BinlogFileName, size: UInt64, lastEvent: UInt32?, now: Date = Date()) throws {
        let end = BinlogFileEnd(archive: id.description, file: file.description, size: size,
                                lastEvent: lastEvent.map { Timestamp.format(Date(timeIntervalSince1970: Double($0))) },
                                pushed: Timestamp.format(now), host: host)
        let handle = BinlogObject.endHandle(id, file)
        let sealed = try BinlogObject.sealJSON(end, context: BinlogObject.endContext(id, file), sealer: try repository.makeSealer())
        if try repository.storage.saveIfAbsent(handle, data: sealed) { return }
        let stored = try fileEnd(file)
        guard stored.size == size else {
            throw KhoError(.integrity, "\(handle.path) says \(file) ended at \(stored.size) bytes, the server's file is \(size): nothing was replaced; the server's binary log was reset or another server writes files of the same names; archive it under another --source.")
        }
    }

    public func fileEnd(_ file: BinlogFileName) throws -> BinlogFileEnd {
        let handle = BinlogObject.endHandle(id, file)
        return try BinlogObject.openJSON(try repository.storage.load(handle), as: BinlogFileEnd.self, context: BinlogObject.endContext(id, file),
                                         path: handle.path, sealer: try repository.makeSealer())
    }

    // MARK: reading

    public func inventory() throws -> BinlogInventory {
        BinlogArchive.inventory(listed: try repository.storage.list(.binlog, under: id.description), id: id)
    }

    /// The inventory of archive `id` from a listing of its folder (the report lists once and
    /// judges the archive as it stood at a period's end from the same listing).
    public static func inventory(listed: [StoredFile], id: BinlogArchiveID) -> BinlogInventory {
        var hasRecord = false
        var pieces: [BinlogFileName: [BinlogPiece]] = [:]
        var sizes: [BinlogFileName: Int] = [:]
        var ended: Set<BinlogFileName> = []
        var strays: [String] = []
        let prefix = id.description + "/"
        for entry in listed {
            guard entry.name.hasPrefix(prefix) else { strays.append(entry.name); continue }
            let rest = entry.name.dropFirst(prefix.count)
            if rest == "archive" { hasRecord = true; continue }
            let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, let file = try? BinlogFileName(String(parts[0])) else { strays.append(entry.name); continue }
            if parts[1] == "end" {
                ended.insert(file)
            } else if let piece = BinlogPiece.parse(file: file, name: parts[1]) {
                pieces[file, default: []].append(piece)
            } else {
                strays.append(entry.name)
                continue
            }
            sizes[file, default: 0] += entry.size
        }
        var files: [BinlogStoredFile] = []
        for name in Set(pieces.keys).union(ended).sorted() {
            let sorted = (pieces[name] ?? []).sorted()
            var reach: UInt64 = 0
            var holes = false
            for piece in sorted {
                if piece.offset == reach { reach = piece.end } else { holes = true; break }
            }
            files.append(BinlogStoredFile(name: name, pieces: sorted, contiguous: reach, holes: holes, ended: ended.contains(name),
                                          storedBytes: sizes[name] ?? 0))
        }
        return BinlogInventory(hasRecord: hasRecord, files: files, strays: strays)
    }

    /// Opens one piece, checked.
    public func load(_ piece: BinlogPiece) throws -> (meta: BinlogPieceMeta, bytes: [UInt8]) {
        let handle = BinlogObject.pieceHandle(id, piece)
        let sealed: [UInt8]
        do {
            sealed = try repository.storage.load(handle)
        } catch let error as KhoError where error.kind == .storage || error.kind == .failure {
            if try !repository.storage.exists(handle) {
                throw KhoError(.integrity, "\(handle.path) is missing from the repository: the archived binary log has a gap there; run `kho check`.")
            }
            throw error
        }
        return try BinlogObject.openPiece(sealed, archive: id, piece: piece, sealer: try repository.makeSealer())
    }
}
