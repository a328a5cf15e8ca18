import Foundation
import Glibc
import KhoCore
import KhoSupport

/// PostgreSQL's archive queue: the `.ready` files in `pg_wal/archive_status`, which the server
/// creates when a file is complete and renames to `.done` once `archive_command` succeeded. kho
/// only reads this folder; PostgreSQL owns it.
public enum WALReadyQueue {
    public struct Look: Sendable {
        /// Files waiting, in the order PostgreSQL archives them: timeline history files first (a
        /// recovery needs them before the new timeline's segments), then by name, oldest first.
        public var names: [WALFileName]
        public var count: Int { names.count }
        /// When the first file in that order became ready (nil when the queue is empty).
        public var oldestReady: Date?

        public func oldestAge(now: Date) -> Double {
            oldestReady.map { max(0, now.timeIntervalSince($0)) } ?? 0
        }
    }

    public static func statusFolder(dataDirectory: String) -> String {
        dataDirectory + "/pg_wal/archive_status"
    }

    /// Lists the queue of the cluster in `dataDirectory`. Names that are not WAL files PostgreSQL
    /// archives are ignored: they are not kho's to read.
    public static func look(dataDirectory: String) throws -> Look {
        let folder = statusFolder(dataDirectory: dataDirectory)
        let entries: [String]
        do {
            entries = try FileManager.default.contentsOfDirectory(atPath: folder)
        } catch {
            throw KhoError(.source, "\(folder) cannot be listed (\(error.localizedDescription)): check --data-directory and that archive_mode is on.")
        }
        var names: [WALFileName] = []
        for entry in entries where entry.hasSuffix(".ready") {
            if let name = try? WALFileName(parsing: entry.dropLast(6)) { names.append(name) }
        }
        names.sort { a, b in
            let (ah, bh) = (a.kind == .history, b.kind == .history)
            if ah != bh { return ah }
            return a.description < b.description
        }
        var oldest: Date?
        if let first = names.first {
            var info = stat()
            let path = folder + "/" + first.description + ".ready"
            if lstat(path, &info) == 0 {
                oldest = Date(timeIntervalSince1970: Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9)
            }
        }
        return Look(names: names, oldestReady: oldest)
    }

    /// True while PostgreSQL still waits for `name` to be archived.
    static func isReady(_ name: WALFileName, dataDirectory: String) -> Bool {
        let path = statusFolder(dataDirectory: dataDirectory) + "/" + name.description + ".ready"
        var info = stat()
        return lstat(path, &info) == 0
    }
}
