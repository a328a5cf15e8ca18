import Foundation
import KhoSupport

/// Carries archived WAL from one repository to another (`kho copy`, `kho rekey`, policy copies):
/// archive records, retirement markers and WAL files the target lacks, each opened with the
/// source's key and sealed again with the target's under the same identity (cluster and name in
/// the AAD), and saved only if absent. A copy interrupted half way leaves whole objects only; the
/// next copy adds the rest. Records go first, so a target never holds WAL of a cluster it has no
/// record for.
public enum WALCopy {
    public struct Summary: Codable, Sendable, Equatable {
        public var records = 0
        public var markers = 0
        public var files = 0
        public var bytes: Int64 = 0
        public init() {}
    }

    /// Copies the WAL archives of every source, or only those of `sources`.
    public static func copy(from source: Repository, to target: Repository, sources: Set<String>? = nil, workers: Int = 2) throws -> Summary {
        var summary = Summary()
        var archive = try WALArchive.inventory(in: source)
        if let sources {
            archive.records = archive.records.filter { sources.contains($0.source) }
            let kept = Set(archive.records.map(\.cluster))
            archive.retired = archive.retired.filter { kept.contains($0) }
        }
        guard !archive.records.isEmpty else { return summary }
        let present = Set(try target.storage.list(.wal, under: "").map(\.name))
        for record in archive.records {
            let cluster = try SystemIdentifier(parsing: record.cluster)
            let handle = WALArchiveRecord.handle(cluster: cluster)
            if !present.contains(handle.name), try target.storage.saveIfAbsent(handle, data: try target.sealWALRecord(record)) {
                summary.records += 1
            }
        }
        var files: [(SystemIdentifier, WALFileName, Int)] = []
        for file in archive.files where !present.contains(file.name) {
            let parts = file.name.split(separator: "/")
            guard let first = parts.first, let cluster = try? SystemIdentifier(parsing: first) else { continue }
            guard archive.records.contains(where: { $0.cluster == cluster.description }) else { continue }
            if parts.count == 2 && (parts[1] == "archive" || parts[1] == "retired") { continue }
            // A name that is not kho's is left behind: `kho check` reports it in the source.
            guard let name = try? WALFileName(storedName: file.name) else { continue }
            files.append((cluster, name, file.size))
        }
        let queue = BoundedQueue<(SystemIdentifier, WALFileName, Int)>(capacity: files.count + 1)
        files.forEach { _ = queue.push($0) }
        queue.close()
        let counted = Locked((files: 0, bytes: Int64(0)))
        let failure = FirstError()
        var threads: [Worker] = []
        for n in 0..<max(1, min(workers, 16)) {
            threads.append(Worker(name: "kho-wal-copy-\(n)") {
                while let (cluster, name, size) = queue.pop() {
                    do {
                        try failure.check()
                        let opened = try source.openWAL(try source.storage.load(name.handle(cluster: cluster)), cluster: cluster, name: name)
                        let sealed = try target.sealWAL(opened.file, meta: opened.meta, cluster: cluster, name: name)
                        if try target.storage.saveIfAbsent(name.handle(cluster: cluster), data: sealed) {
                            counted.withLock { $0.files += 1; $0.bytes += Int64(size) }
                        }
                    } catch {
                        failure.record(error)
                    }
                }
            })
        }
        threads.forEach { $0.join() }
        try failure.check()
        summary.files = counted.current.files
        summary.bytes = counted.current.bytes
        // Retirements last: a target that shows a cluster retired also holds its WAL.
        for cluster in archive.retired.sorted() {
            let id = try SystemIdentifier(parsing: cluster)
            let handle = WALRetirement.handle(cluster: id)
            guard !present.contains(handle.name) else { continue }
            let marker = try source.openWALRetirement(try source.storage.load(handle), cluster: id)
            if try target.storage.saveIfAbsent(handle, data: try target.sealWALRetirement(marker)) { summary.markers += 1 }
        }
        return summary
    }
}
