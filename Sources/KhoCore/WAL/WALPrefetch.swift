import Foundation
import Glibc
import KhoSupport

/// Read-ahead for `kho wal fetch` in standalone mode (docs/design/pitr.md section 4): a call that
/// has to open the repository (one key derivation) also fetches the next segments of the timeline
/// in parallel into a folder, and the following calls answer from there without opening it.
///
/// Files land in `<folder>/<sysid>/<segment>` through a temporary name, whole or not at all, only
/// after `WALArchive.fetch` verified them (seal, SHA-256, header). The folder is the recovering
/// cluster's user's, as `pg_wal` is, so a file served from it is checked again only as cheaply as
/// that allows: its header must name the cluster, the timeline and the segment's start, and its
/// size must be the header's segment size. Anything that is not in the folder, a gap included,
/// is asked of the repository, which decides.
public struct WALPrefetch: Sendable {
    public let folder: String
    public let cluster: SystemIdentifier

    /// Prepares `<root>/<sysid>` (both created 0700 when missing).
    public init(root: String, cluster: SystemIdentifier) throws {
        self.cluster = cluster
        folder = root + "/" + cluster.description
        for path in [root, folder] {
            let (_, code) = Syscall.attempt { mkdir(path, 0o700) }
            guard code == 0 || code == EEXIST else { throw KhoError.posix("mkdir", path, errno: code) }
            var info = stat()
            _ = try Syscall.call("lstat", path) { lstat(path, &info) }
            guard info.st_mode & S_IFMT == S_IFDIR else {
                throw KhoError(.usage, "\(path) is not a folder: give --prefetch a folder of its own for this recovery.")
            }
        }
    }

    /// Writes `name` to `destination` from the folder and removes it there, with every older
    /// segment of the timeline (recovery does not go back). False when the folder does not hold it.
    public func serve(name: WALFileName, to destination: String) throws -> Bool {
        guard name.kind == .segment else { return false }
        let path = folder + "/" + name.description
        let file: [UInt8]
        do {
            file = try Syscall.readFile(path, limit: WALObject.largestSegmentSize)
        } catch let error as KhoError {
            if access(path, F_OK) != 0 && errno == ENOENT { return false }
            throw error
        }
        let header = try WALSegmentHeader(parsing: file, file: path)
        let size = try WALSegmentSize(bytes: Int(header.segmentSize))
        try header.validate(as: name, against: .init(cluster: cluster, segmentSize: size, blockSize: header.blockSize, magic: header.magic))
        guard file.count == size.bytes else {
            throw KhoError(.integrity, "\(path) is \(file.count) bytes, not a whole segment: remove the --prefetch folder's files and fetch again.")
        }
        try WALRecoveryFetch.writeWhole(file, to: destination, durable: false)
        let served = name.segmentNumber(segmentSize: size)
        for leaf in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] {
            guard let other = try? WALFileName(parsing: leaf), other.kind == .segment, other.timeline == name.timeline,
                  other.segmentNumber(segmentSize: size) <= served else { continue }
            unlink(folder + "/" + leaf)
        }
        return true
    }

    /// Fetches the `count` segments after `name` on its timeline that the folder lacks,
    /// `connections` at a time. What is not archived or fails is left out, not reported: the
    /// call that asks for it goes to the repository and gets the real answer.
    public func fill(after name: WALFileName, count: Int, record: WALArchiveRecord, repository: Repository, connections: Int) {
        guard name.kind == .segment, count > 0, let size = try? WALSegmentSize(bytes: record.segmentSize) else { return }
        let folder = self.folder
        let first = name.segmentNumber(segmentSize: size) + 1
        let wanted = (first..<(first + UInt64(count))).map { WALFileName.segment(timeline: name.timeline, number: $0, segmentSize: size) }
            .filter { access(folder + "/" + $0.description, F_OK) != 0 }
        let next = Locked(0)
        let cluster = self.cluster
        var workers: [Worker] = []
        for n in 0..<max(1, min(connections, wanted.count)) {
            workers.append(Worker(name: "kho-wal-prefetch-\(n)") {
                while true {
                    let index = next.withLock { value -> Int in
                        defer { value += 1 }
                        return value
                    }
                    guard index < wanted.count else { return }
                    let segment = wanted[index]
                    guard let file = try? WALArchive.fetch(name: segment, cluster: cluster, record: record, from: repository) else { continue }
                    // A failed write leaves no file (writeWhole): that segment is fetched when asked.
                    do { try WALRecoveryFetch.writeWhole(file, to: folder + "/" + segment.description) } catch { continue }
                }
            })
        }
        workers.forEach { $0.join() }
    }
}
