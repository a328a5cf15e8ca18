import Foundation
import KhoSupport

/// Counters a long command updates and a terminal ticker reads.
public final class ProgressCounter: @unchecked Sendable {
    public struct Counts: Sendable {
        public var files = 0
        public var bytes: Int64 = 0
        /// Expected totals when known (restore knows them; a backup of a stream does not).
        public var totalFiles: Int?
        public var totalBytes: Int64?
        public var currentPath = ""
    }

    private let lock = NSLock()
    private var counts = Counts()
    public let start = Date()

    public init() {}

    public func add(files: Int = 0, bytes: Int64 = 0) {
        lock.lock()
        counts.files += files
        counts.bytes += bytes
        lock.unlock()
    }

    public func setTotals(files: Int?, bytes: Int64?) {
        lock.lock()
        counts.totalFiles = files
        counts.totalBytes = bytes
        lock.unlock()
    }

    public func setCurrent(_ path: String) {
        lock.lock()
        counts.currentPath = path
        lock.unlock()
    }

    public var snapshot: Counts {
        lock.lock()
        defer { lock.unlock() }
        return counts
    }
}
