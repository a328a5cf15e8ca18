import ArgumentParser
import Foundation
import KhoCore
import KhoSupport

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stats", abstract: "Show how much data the repository holds and how well it deduplicates and compresses.")

    @OptionGroup var repository: RepositoryOptions

    @Flag(help: "Print the figures as JSON.")
    var json = false

    struct Figures: Encodable {
        var snapshots: Int
        var packs: Int
        var indexFiles: Int
        var blobs: Int
        var dataBlobs: Int
        var treeBlobs: Int
        /// Sum of all snapshots' file sizes: what restoring every snapshot would write.
        var restoreSize: Int64
        /// Unique content before compression.
        var uniqueRawSize: Int64
        /// Bytes of all packs on storage.
        var storedSize: Int64
        var deduplicationRatio: Double
        var compressionRatio: Double
    }

    func run() throws {
        let repo = try repository.open()
        let index = try repo.loadIndex()
        let snapshots = try repo.listSnapshots()
        var dataBlobs = 0
        var treeBlobs = 0
        var raw: Int64 = 0
        var sealed: Int64 = 0
        var seen = Set<BlobID>()
        index.forEach { location in
            guard seen.insert(location.blob.id).inserted else { return }
            if location.blob.kind == .tree { treeBlobs += 1 } else { dataBlobs += 1 }
            raw += Int64(location.blob.rawLength)
            sealed += Int64(location.blob.length)
        }
        let stored = try repo.storage.list(.data).reduce(Int64(0)) { $0 + Int64($1.size) }
        let restoreSize = snapshots.reduce(Int64(0)) { $0 + ($1.summary?.totalSize ?? 0) }
        let figures = Figures(snapshots: snapshots.count, packs: index.packIDs.count, indexFiles: index.files.count,
                              blobs: seen.count, dataBlobs: dataBlobs, treeBlobs: treeBlobs, restoreSize: restoreSize,
                              uniqueRawSize: raw, storedSize: stored,
                              deduplicationRatio: raw > 0 ? Double(restoreSize) / Double(raw) : 0,
                              compressionRatio: sealed > 0 ? Double(raw) / Double(sealed) : 0)
        if json {
            try Terminal.json(figures)
            return
        }
        Terminal.out("repository \(repo.config.id.prefix(8)) at \(repo.storage.location)")
        Terminal.out("snapshots:          \(figures.snapshots)")
        Terminal.out("total restore size: \(Format.bytes(figures.restoreSize))")
        Terminal.out("unique data:        \(Format.bytes(figures.uniqueRawSize)) in \(figures.blobs) blobs (\(figures.dataBlobs) data, \(figures.treeBlobs) trees)")
        Terminal.out("stored:             \(Format.bytes(figures.storedSize)) in \(figures.packs) packs")
        Terminal.out(String(format: "deduplication:      %.2f×   compression: %.2f×", figures.deduplicationRatio, figures.compressionRatio))
    }
}
