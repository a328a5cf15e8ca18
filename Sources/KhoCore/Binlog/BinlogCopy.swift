import Foundation
import KhoSupport

/// Carries archived binary logs from one repository to another (`kho copy`, `kho rekey`, policy
/// copies of MariaDB sources): archive records, pieces and end markers the target lacks, each
/// opened with the source's key and sealed again with the target's under the same name and AAD,
/// and saved only if absent (FORMAT 22.4). The record goes first, so a target never holds pieces
/// of an archive whose server it cannot name; a file's end marker goes after all of its pieces,
/// so a target that shows a file whole holds its bytes. An interrupted copy leaves whole objects
/// only; the next copy adds the rest.
public enum BinlogCopy {
    public struct Summary: Codable, Sendable, Equatable {
        public var records = 0
        public var pieces = 0
        public var ends = 0
        /// Bytes of binary log carried (the pieces' own bytes, not the sealed objects').
        public var bytes: Int64 = 0
        public init() {}
    }

    /// Copies the binary log archives of every source, or only those of `sources`.
    public static func copy(from source: Repository, to target: Repository, sources: Set<String>? = nil, workers: Int = 2) throws -> Summary {
        var summary = Summary()
        let listed = try source.storage.list(.binlog, under: "")
        guard !listed.isEmpty else { return summary }
        // A folder that is not one kho could have made is left behind: `kho check` reports it in the source.
        let folders = Set(listed.compactMap { entry in entry.name.split(separator: "/").first.flatMap { BinlogArchiveID(folder: String($0)) } })
        let present = Set(try target.storage.list(.binlog, under: "").map(\.name))
        let targetSealer = try target.makeSealer()
        for id in folders.sorted(by: { $0.description < $1.description }) {
            let archive = try BinlogArchive(repository: source, id: id)
            // Pieces without a record are not copied: nothing could check whose server they are.
            guard let record = try archive.record() else { continue }
            if let sources, !sources.contains(record.source) { continue }
            let recordHandle = BinlogObject.recordHandle(id)
            if !present.contains(recordHandle.name),
               try target.storage.saveIfAbsent(recordHandle, data: try BinlogObject.sealJSON(record, context: BinlogObject.recordContext(id), sealer: targetSealer)) {
                summary.records += 1
            }
            let inventory = try archive.inventory()
            let pieces = inventory.files.flatMap(\.pieces).filter { !present.contains(BinlogObject.pieceHandle(id, $0).name) }
            let copied = try copyPieces(pieces, archive: id, from: source, to: target, workers: workers)
            summary.pieces += copied.pieces
            summary.bytes += copied.bytes
            for file in inventory.files where file.ended {
                let handle = BinlogObject.endHandle(id, file.name)
                guard !present.contains(handle.name) else { continue }
                let end = try archive.fileEnd(file.name)
                if try target.storage.saveIfAbsent(handle, data: try BinlogObject.sealJSON(end, context: BinlogObject.endContext(id, file.name), sealer: targetSealer)) {
                    summary.ends += 1
                }
            }
        }
        return summary
    }

    private static func copyPieces(_ pieces: [BinlogPiece], archive id: BinlogArchiveID, from source: Repository, to target: Repository,
                                   workers: Int) throws -> (pieces: Int, bytes: Int64) {
        guard !pieces.isEmpty else { return (0, 0) }
        let queue = BoundedQueue<BinlogPiece>(capacity: pieces.count + 1)
        pieces.forEach { _ = queue.push($0) }
        queue.close()
        let counted = Locked((pieces: 0, bytes: Int64(0)))
        let failure = FirstError()
        var threads: [Worker] = []
        for n in 0..<max(1, min(workers, 16)) {
            threads.append(Worker(name: "kho-binlog-copy-\(n)") {
                // A sealer holds one cipher context: one per thread.
                let sealers: (source: Sealer, target: Sealer)
                do { sealers = (try source.makeSealer(), try target.makeSealer()) } catch { failure.record(error); return }
                while let piece = queue.pop() {
                    do {
                        try failure.check()
                        let handle = BinlogObject.pieceHandle(id, piece)
                        let opened = try BinlogObject.openPiece(try source.storage.load(handle), archive: id, piece: piece, sealer: sealers.source)
                        let sealed = try BinlogObject.sealPiece(opened.bytes, meta: opened.meta, archive: id, piece: piece, sealer: sealers.target,
                                                                compressionLevel: target.config.compressionLevel)
                        if try target.storage.saveIfAbsent(handle, data: sealed) {
                            counted.withLock { $0.pieces += 1; $0.bytes += Int64(piece.length) }
                        }
                    } catch {
                        failure.record(error)
                    }
                }
            })
        }
        threads.forEach { $0.join() }
        try failure.check()
        return counted.current
    }
}
