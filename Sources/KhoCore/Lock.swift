import Foundation
import Glibc

/// The content of a lock file in `locks/`. Lock files are the only files rewritten in place (when
/// refreshed) and are named by a random ID, not by their hash.
public struct LockInfo: Codable, Sendable {
    public var exclusive: Bool
    public var hostname: String
    public var pid: Int32
    public var user: String
    public var command: String
    public var time: Date
    public var refreshed: Date

    public var holder: String {
        "PID \(pid) on \(hostname) (user \(user), `\(command)`, since \(Timestamp.format(time)))"
    }

    /// A lock is stale when its process is gone on this host, or when nobody refreshed it for
    /// `staleAfter` seconds (its host crashed or lost the repository).
    public func isStale(now: Date = Date(), staleAfter: TimeInterval = RepositoryLock.staleAfter) -> Bool {
        if hostname == Host.name && kill(pid, 0) != 0 && errno == ESRCH { return true }
        return now.timeIntervalSince(refreshed) > staleAfter
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
                                command: command, time: now, refreshed: now)
            try storage.save(Handle(.lock, name), data: Array(try JSON.encoder.encode(info)))
            // Someone may have written a conflicting lock at the same moment: both look again.
            if let holder = try conflict(storage: storage, exclusive: exclusive, ignoring: name) {
                try? storage.remove(Handle(.lock, name))
                if Date() >= deadline { throw lockedError(holder, storage: storage) }
                Thread.sleep(forTimeInterval: Double.random(in: 0.05...0.3))
                continue
            }
            let lock = RepositoryLock(storage: storage, name: name, info: info)
            lock.startRefreshing(every: refreshInterval)
            return lock
        }
    }

    /// A fresh lock file name; a caller that must clean up after a signal can learn it first.
    public static func newName() throws -> String { Hex.encode(try Random.bytes(32)) }

    private static func lockedError(_ holder: LockInfo, storage: any Storage) -> KhoError {
        KhoError(.locked, "The repository at \(storage.location) is locked\(holder.exclusive ? " exclusively" : "") by \(holder.holder): wait for it to finish (see --lock-wait), or if that process is gone run `kho unlock`.", retryable: true)
    }

    /// The first live lock that conflicts with the one wanted.
    static func conflict(storage: any Storage, exclusive: Bool, ignoring own: String?) throws -> LockInfo? {
        for (name, lock) in try list(storage: storage) where name != own {
            if lock.isStale() { continue }
            if exclusive || lock.exclusive { return lock }
        }
        return nil
    }

    public static func list(storage: any Storage) throws -> [(name: String, info: LockInfo)] {
        try storage.list(.lock).compactMap { file in
            guard let bytes = try? storage.load(Handle(.lock, file.name)),
                  let info = try? JSON.decoder.decode(LockInfo.self, from: Data(bytes)) else { return nil }
            return (file.name, info)
        }
    }

    /// Removes stale locks, or all locks with `all`. Returns the names removed. With `all`, lock
    /// files that cannot be read (damaged, or from a newer kho) go too.
    public static func unlock(storage: any Storage, all: Bool) throws -> [(name: String, info: LockInfo)] {
        var removed: [(String, LockInfo)] = []
        let readable = try list(storage: storage)
        for (name, info) in readable where all || info.isStale() {
            try storage.remove(Handle(.lock, name))
            removed.append((name, info))
        }
        if all {
            let known = Set(readable.map(\.name))
            for file in try storage.list(.lock) where !known.contains(file.name) {
                try storage.remove(Handle(.lock, file.name))
                removed.append((file.name, LockInfo(exclusive: false, hostname: "?", pid: 0, user: "?", command: "unreadable lock file",
                                                    time: Date(timeIntervalSince1970: 0), refreshed: Date(timeIntervalSince1970: 0))))
            }
        }
        return removed
    }

    private func startRefreshing(every interval: TimeInterval) {
        refresher = Worker(name: "kho-lock-refresh") { [self] in
            while stop.wait(timeout: .now() + interval) == .timedOut {
                info.refreshed = Date()
                if let bytes = try? JSON.encoder.encode(info) {
                    try? storage.save(Handle(.lock, name), data: Array(bytes))
                }
            }
        }
    }

    public func release() {
        let already = released.withLock { done -> Bool in
            defer { done = true }
            return done
        }
        if already { return }
        stop.signal()
        refresher?.join()
        try? storage.remove(Handle(.lock, name))
    }

    deinit { release() }
}
