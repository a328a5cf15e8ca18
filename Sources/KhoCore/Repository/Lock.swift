import Foundation
import KhoSupport
import Glibc

/// The content of a lock file in `locks/`. Lock files are the only files rewritten in place (when
/// refreshed) and are named by a random ID, not by their hash.
package struct LockInfo: Codable, Sendable {
    package var exclusive: Bool
    package var hostname: String
    package var pid: Int32
    package var user: String
    package var command: String
    package var time: Date
    package var refreshed: Date
    /// The boot of the holder's host (Linux boot_id) and the process's start time in clock ticks
    /// since that boot: with them a PID names one process, not whichever reuses the number later.
    /// Absent in locks of an earlier kho.
    package var bootID: String?
    package var processStart: UInt64?

    package init(exclusive: Bool, hostname: String, pid: Int32, user: String, command: String, time: Date, refreshed: Date,
                bootID: String? = nil, processStart: UInt64? = nil) {
        self.exclusive = exclusive
        self.hostname = hostname
        self.pid = pid
        self.user = user
        self.command = command
        self.time = time
        self.refreshed = refreshed
        self.bootID = bootID
        self.processStart = processStart
    }

    package var holder: String {
        "PID \(pid) on \(hostname) (user \(user), `\(command)`, since \(Timestamp.format(time)))"
    }

    /// Whether the holder is this host in its current boot, where the process table answers for
    /// it and no clock is needed.
    package var isFromThisBoot: Bool {
        hostname == Host.name && (bootID == nil || bootID == ProcessIdentity.bootID)
    }

    /// A lock of this host is stale only when its process is gone (or the PID now belongs to a
    /// process that started at another time). A lock of another host (or of this host's name on
    /// another boot, which may be another machine) is stale only when neither its content nor
    /// the storage's modification time of its file shows a refresh for `staleAfter` seconds:
    /// one host's clock being wrong does not make a live lock stale.
    package func isStale(now: Date = Date(), modified: Date? = nil, staleAfter: TimeInterval = RepositoryLock.staleAfter) -> Bool {
        if isFromThisBoot {
            guard ProcessIdentity.isRunning(pid) else { return true }
            if let processStart, let current = ProcessIdentity.startTime(of: pid), current != processStart { return true }
            return false
        }
        guard now.timeIntervalSince(refreshed) > staleAfter else { return false }
        if let modified, now.timeIntervalSince(modified) <= staleAfter { return false }
        return true
    }
}

/// What identifies a process on Linux beyond its PID.
package enum ProcessIdentity {
    package static let bootID: String? = {
        // try?: without /proc (not Linux, a restricted container) locks carry no boot ID and are
        // judged by host name and PID, as locks of an earlier kho are.
        guard let text = try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8) else { return nil }
        let id = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return id.isEmpty ? nil : id
    }()

    /// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot.
    package static func startTime(of pid: Int32) -> UInt64? {
        // try?: no such process (or no /proc): no start time, and the PID alone decides.
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        // The command name (field 2) may hold spaces and parentheses: count from its end.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 19 else { return nil }
        return UInt64(fields[19])
    }

    package static func isRunning(_ pid: Int32) -> Bool {
        pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH)
    }
}

/// A file in `locks/`: a lock kho can read, or one it cannot (damaged, from a newer kho, not
/// readable), which must be taken for a live lock of unknown kind.
package enum LockFile: Sendable {
    case readable(name: String, info: LockInfo, modified: Date?)
    case unreadable(name: String, reason: String, modified: Date?)

    package var name: String {
        switch self {
        case .readable(let name, _, _), .unreadable(let name, _, _): return name
        }
    }
}

/// A shared or exclusive lock on a repository, held until `release()` and refreshed meanwhile.
/// Backup, check and restore share; forget and prune exclude everyone else.
public final class RepositoryLock: @unchecked Sendable {
    public static let staleAfter: TimeInterval = 30 * 60
    public static let refreshInterval: TimeInterval = 5 * 60

    public let storage: any Storage
    public let name: String
    private var info: LockInfo
    private let stop = DispatchSemaphore(value: 0)
    private var refresher: Worker?
    private let released = Locked(false)
    private let failure = Locked<KhoError?>(nil)
    /// The refresher thread and a writer confirming the lock do not rewrite it at once.
    private let refreshing = NSLock()

    private init(storage: any Storage, name: String, info: LockInfo) {
        self.storage = storage
        self.name = name
        self.info = info
    }

    /// Takes the lock, waiting up to `wait` seconds for conflicting holders to go away.
    public static func acquire(storage: any Storage, exclusive: Bool, command: String, wait: TimeInterval = 0,
                               refreshInterval: TimeInterval = RepositoryLock.refreshInterval,
                               name: String? = nil) throws -> RepositoryLock {
        let name = try name ?? RepositoryLock.newName()
        let deadline = Date().addingTimeInterval(wait)
        while true {
            if let holder = try conflict(storage: storage, exclusive: exclusive, ignoring: nil) {
                if Date() >= deadline { throw lockedError(holder, storage: storage) }
                Thread.sleep(forTimeInterval: min(1.0, max(0.05, deadline.timeIntervalSinceNow)))
                continue
            }
            let now = Date()
            let info = LockInfo(exclusive: exclusive, hostname: Host.name, pid: getpid(), user: Host.user,
                                command: command, time: now, refreshed: now, bootID: ProcessIdentity.bootID,
                                processStart: ProcessIdentity.startTime(of: getpid()))
            try storage.save(Handle(.lock, name), data: Array(try JSON.encoder.encode(info)))
            // Someone may have written a conflicting lock at the same moment: both look again.
            if let holder = try conflict(storage: storage, exclusive: exclusive, ignoring: name) {
                // try?: a lock of ours left behind is stale once this process ends (its PID is
                // gone); the conflict is what this command reports or waits out.
                try? storage.remove(Handle(.lock, name))
                if Date() >= deadline { throw lockedError(holder, storage: storage) }
                Thread.sleep(forTimeInterval: Double.random(in: 0.05...0.3))
                continue
            }
            let lock = RepositoryLock(storage: storage, name: name, info: info)
            held.withLock { $0[storage.location, default: []].append(lock) }
            lock.startRefreshing(every: RepositoryLock.testRefreshInterval ?? refreshInterval)
            return lock
        }
    }

    /// A fresh lock file name; a caller that must clean up after a signal can learn it first.
    public static func newName() throws -> String { Hex.encode(try Random.bytes(32)) }

    private static func lockedError(_ holder: LockFile, storage: any Storage) -> KhoError {
        switch holder {
        case .readable(_, let info, _):
            return KhoError(.locked, "The repository at \(storage.location) is locked\(info.exclusive ? " exclusively" : "") by \(info.holder): wait for it to finish (see --lock-wait), or if that process is gone run `kho unlock`.", retryable: true)
        case .unreadable(let name, let reason, _):
            return KhoError(.locked, "The repository at \(storage.location) has a lock file that cannot be read (locks/\(name): \(reason)); it may be the lock of a running kho, so this command does not run beside it. Check that no kho process uses this repository on any host, then remove it with `kho unlock --remove-all`.", retryable: true)
        }
    }

    /// The first lock that conflicts with the one wanted: a live lock, or, for an exclusive lock,
    /// a lock file that cannot be read (it may be a running backup's).
    static func conflict(storage: any Storage, exclusive: Bool, ignoring own: String?) throws -> LockFile? {
        for file in try scan(storage: storage) where file.name != own {
            switch file {
            case .readable(_, let info, let modified):
                if info.isStale(modified: modified) { continue }
                if exclusive || info.exclusive { return file }
            case .unreadable:
                if exclusive { return file }
            }
        }
        return nil
    }

    /// Every lock file, read. A file that went away while being read (a lock released meanwhile)
    /// is left out.
    package static func scan(storage: any Storage) throws -> [LockFile] {
        var result: [LockFile] = []
        for file in try storage.list(.lock) {
            let handle = Handle(.lock, file.name)
            let bytes: [UInt8]
            do {
                bytes = try storage.load(handle)
            } catch let error as KhoError {
                // Gone since the listing (released meanwhile) only when the storage says it is
                // missing; a stat that fails otherwise leaves it listed as unreadable, which
                // keeps prune out: the safe side.
                if error.kind == .integrity, try !storage.exists(handle) { continue }
                result.append(.unreadable(name: file.name, reason: error.message, modified: file.modified))
                continue
            }
            do {
                result.append(.readable(name: file.name, info: try JSON.decoder.decode(LockInfo.self, from: Data(bytes)), modified: file.modified))
            } catch {
                result.append(.unreadable(name: file.name, reason: "not a kho lock (damaged, or written by a newer kho)", modified: file.modified))
            }
        }
        return result
    }

    package static func list(storage: any Storage) throws -> [(name: String, info: LockInfo)] {
        try scan(storage: storage).compactMap { file in
            if case .readable(let name, let info, _) = file { return (name, info) }
            return nil
        }
    }

    /// Removes stale locks, or all locks with `all`. Returns the names removed. With `all`, lock
    /// files that cannot be read (damaged, or from a newer kho) go too.
    package static func unlock(storage: any Storage, all: Bool) throws -> [(name: String, info: LockInfo)] {
        var removed: [(String, LockInfo)] = []
        for file in try scan(storage: storage) {
            switch file {
            case .readable(let name, let info, let modified):
                guard all || info.isStale(modified: modified) else { continue }
                try storage.remove(Handle(.lock, name))
                removed.append((name, info))
            case .unreadable(let name, _, _):
                guard all else { continue }
                try storage.remove(Handle(.lock, name))
                removed.append((name, LockInfo(exclusive: false, hostname: "?", pid: 0, user: "?", command: "unreadable lock file",
                                               time: Date(timeIntervalSince1970: 0), refreshed: Date(timeIntervalSince1970: 0))))
            }
        }
        return removed
    }

    /// Locks this process holds, by storage location, so that writers can stop when one is lost.
    private static let held = Locked<[String: [RepositoryLock]]>([:])

    /// Throws when a lock this process holds on `storage` could not be refreshed: the lock may be
    /// gone, a prune may run, and nothing written from now on may be recorded as good.
    /// With `confirm`, the lock file is also read back and refreshed now (before a snapshot is
    /// recorded: the refresher may not have looked since the lock was lost).
    public static func checkHeld(_ storage: any Storage, confirm: Bool = false) throws {
        for lock in held.withLock({ $0[storage.location] ?? [] }) {
            try lock.check()
            if confirm {
                do {
                    try lock.refresh()
                } catch {
                    lock.fail(error)
                    try lock.check()
                }
            }
        }
    }

    /// For tests only (KHO_TEST_LOCK_REFRESH, seconds): a short refresh interval, so that a test
    /// sees a lost lock noticed without waiting minutes. Read only when a test sets it.
    static let testRefreshInterval: TimeInterval? = {
        guard let text = TestKnobs.value("KHO_TEST_LOCK_REFRESH"), let seconds = Double(text), seconds > 0 else { return nil }
        return seconds
    }()

    /// Throws the error that ended the lock's refreshing, if any.
    public func check() throws {
        if let error = failure.current { throw error }
    }

    /// Rewrites the lock every `interval`. A lock file that is gone or no longer ours (removed by
    /// `kho unlock`, replaced) or that cannot be written ends the refreshing with an error that
    /// `check()` throws: the holder must stop, since others may already treat the repository as
    /// unlocked.
    private func startRefreshing(every interval: TimeInterval) {
        refresher = Worker(name: "kho-lock-refresh") { [self] in
            while stop.wait(timeout: .now() + interval) == .timedOut {
                do {
                    try refresh()
                } catch {
                    fail(error)
                    return
                }
            }
        }
    }

    /// The error is of kind `.locked` (exit 10, retryable): the lock is what failed, as when the
    /// repository is locked, and running the command again is the fix.
    private func fail(_ error: Error) {
        let message = (error as? KhoError)?.message ?? "\(error)"
        failure.withLock { current in
            if current == nil {
                current = KhoError(.locked, "The lock of this \(info.command) on \(storage.location) could not be refreshed (\(message)), so it stopped: another kho (a prune) may now treat the repository as unlocked and remove what it wrote; nothing from this run is recorded as good. Run it again.", retryable: true)
            }
        }
    }

    private func refresh() throws {
        refreshing.lock()
        defer { refreshing.unlock() }
        let handle = Handle(.lock, name)
        let current: [UInt8]
        do {
            current = try storage.load(handle)
        } catch let error as KhoError where error.kind == .integrity {
            throw KhoError(.locked, "its file locks/\(name) was removed")
        }
        // A file damaged in place still kept prune and forget out (an unreadable lock blocks
        // them), so it is simply written again; another process's lock under this name is not.
        // try?: a file that does not decode is that damaged file.
        if let stored = try? JSON.decoder.decode(LockInfo.self, from: Data(current)),
           stored.pid != info.pid || stored.hostname != info.hostname || abs(stored.time.timeIntervalSince(info.time)) >= 0.001 {
            throw KhoError(.locked, "its file locks/\(name) was replaced by the lock of \(stored.holder)")
        }
        info.refreshed = Date()
        try storage.save(handle, data: Array(try JSON.encoder.encode(info)))
    }

    public func release() {
        let already = released.withLock { done -> Bool in
            defer { done = true }
            return done
        }
        if already { return }
        stop.signal()
        refresher?.join()
        RepositoryLock.held.withLock { $0[storage.location]?.removeAll { $0 === self } }
        // try?: the operation is over; a lock file left behind names a process that is about to
        // end, so it is stale for everyone (and `kho unlock` removes it).
        try? storage.remove(Handle(.lock, name))
    }

    deinit { release() }
}
