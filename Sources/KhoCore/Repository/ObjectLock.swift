import Foundation
import KhoSupport

/// How long a repository's files are kept from removal (`kho init --object-lock-days N`), recorded in
/// `config` so that every writer locks what it writes.
public struct ObjectLockSettings: Codable, Sendable, Equatable {
    /// Compliance: nobody can shorten or lift the lock, not even the bucket's owner. Governance: a
    /// user with the s3:BypassGovernanceRetention permission can.
    public enum Mode: String, Codable, Sendable, CaseIterable {
        case compliance, governance
    }

    public var days: Int
    public var mode: Mode

    public init(days: Int, mode: Mode) {
        self.days = days
        self.mode = mode
    }

    public static let allowedDays = 1...36500
}

/// Storage that can keep files from being removed until a date (S3 Object Lock). Unlike the
/// append-only flag, the storage enforces it: credentials stolen from the backup host cannot
/// remove a locked file before its date.
public protocol RetainingStorage: Storage {
    /// Throws, saying how to fix it, when files here cannot be locked (a bucket made without object lock).
    func checkRetentionSupported() throws
    /// From now on, every file saved (except lock files, which must stay removable) is locked for
    /// this long from the moment it is written.
    func setRetention(_ settings: ObjectLockSettings?)
    /// When the file can first be removed; nil when it can be removed now (or is gone).
    /// `Date.distantFuture` for a file under a legal hold, which has no date.
    func retainedUntil(_ handle: Handle) throws -> Date?
    /// Keeps the file locked at least until `date`; a later date already set is kept.
    func retain(_ handle: Handle, until date: Date) throws
}

/// A file that could not be removed yet, and from when it can be.
package struct RetainedFile: Sendable, Equatable, Codable {
    package var path: String
    package var until: Date
}

extension Repository {
    public var objectLock: ObjectLockSettings? { config.objectLock }

    /// The storage's locking, when this repository locks its files.
    var retainingStorage: (any RetainingStorage)? {
        guard config.objectLock != nil else { return nil }
        return storage as? any RetainingStorage
    }

    /// When `handle` can first be removed, or nil when now.
    public func retainedUntil(_ handle: Handle) throws -> Date? {
        guard let storage = retainingStorage, let until = try storage.retainedUntil(handle), until > Date() else { return nil }
        return until
    }

    /// The lock dates of many files at once (one request each, several in flight): nil entries can
    /// be removed now.
    func retentionDates(_ handles: [Handle]) throws -> [Handle: Date] {
        guard let storage = retainingStorage, !handles.isEmpty else { return [:] }
        let now = Date()
        let result = Locked<[Handle: Date]>([:])
        try Self.forEachInParallel(handles) { handle in
            if let until = try storage.retainedUntil(handle), until > now {
                result.withLock { $0[handle] = until }
            }
        }
        return result.current
    }

    /// Extends the lock of every file in `handles` whose lock ends within half the lock period, to
    /// a full period from now: files that new snapshots still use stay protected, however old.
    /// Returns how many locks were extended.
    public func extendRetention(_ handles: [Handle]) throws -> Int {
        guard let settings = config.objectLock, let storage = retainingStorage, !handles.isEmpty else { return 0 }
        let now = Date()
        let soon = now.addingTimeInterval(Double(settings.days) * 86400 / 2)
        let until = now.addingTimeInterval(Double(settings.days) * 86400)
        let extended = Locked(0)
        try Self.forEachInParallel(handles) { handle in
            do {
                let current = try storage.retainedUntil(handle)
                if current.map({ $0 < soon }) ?? true {
                    try storage.retain(handle, until: until)
                    extended.withLock { $0 += 1 }
                }
            } catch let error as KhoError where error.kind == .integrity {
                // Gone meanwhile (a concurrent forget): nothing to protect.
            }
        }
        return extended.current
    }

    /// Extends the lock of every file of the repository (see `extendRetention`): for repositories
    /// that are never pruned, where nothing tells used data from unused.
    public func extendRetentionOfAll() throws -> Int {
        guard objectLock != nil else { return 0 }
        var handles: [Handle] = [.config]
        for kind in [FileKind.data, .index, .snapshot, .key, .anchor, .drill] {
            handles += try storage.list(kind).map { Handle(kind, $0.name) }
        }
        return try extendRetention(handles)
    }

    /// One request per file, eight in flight: lock lookups are small and the time is all latency.
    private static func forEachInParallel(_ handles: [Handle], _ body: @escaping @Sendable (Handle) throws -> Void) throws {
        let firstError = FirstError()
        let next = Locked(0)
        let workers = (0..<min(8, handles.count)).map { number in
            Worker(name: "kho-lock-\(number)") {
                while firstError.value == nil {
                    let i = next.withLock { value -> Int in defer { value += 1 }; return value }
                    guard i < handles.count else { return }
                    do { try body(handles[i]) } catch { firstError.record(error) }
                }
            }
        }
        for worker in workers { worker.join() }
        try firstError.check()
    }

    /// The message for a file that cannot be removed yet.
    public func retainedMessage(_ what: String, until: Date, command: String) -> String {
        if until == .distantFuture {
            return "\(what) is under a legal hold in \(storage.location) and cannot be removed until the hold is lifted; \(command) leaves it."
        }
        let days = objectLock.map { " (files are locked for \($0.days) days when written)" } ?? ""
        return "\(what) is locked by S3 Object Lock until \(ObjectLockFormat.text(until))\(days): \(command) leaves it and removes it when run after that date."
    }
}

package enum ObjectLockFormat {
    /// `2026-12-29 08:30 UTC`
    package static func text(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm 'UTC'"
        return formatter.string(from: date)
    }
}
