import Foundation
import Glibc
import KhoCore
import KhoSupport

/// What a WAL agent says about itself, in `<state>/<source>.status.json` (rewritten about every
/// second while it runs, and once more when it stops), for `kho status` and the metrics.
public struct WALAgentStatus: Codable, Sendable, Equatable {
    public var source: String
    public var dataDirectory: String
    public var pid: Int32
    public var host: String
    public var started: Date
    /// When the agent last wrote this file; a running agent keeps it within a few seconds of now.
    public var updated: Date
    /// False once the agent stopped (SIGTERM); a killed agent leaves true with an old `updated`.
    public var running: Bool
    /// `.ready` files in `pg_wal/archive_status` at the last look: PostgreSQL's queue.
    public var readyFiles: Int
    /// Age in seconds of the oldest `.ready` file (0 when there is none).
    public var oldestReadySeconds: Double
    public var lastPush: Date?
    /// When a `kho wal push` was last answered ok (a push, or a file the read-ahead had pushed).
    public var lastAnswer: Date?
    public var lastPushed: String?
    public var lastError: String?
    public var lastErrorAt: Date?
    /// Failed pushes since the last success.
    public var consecutiveFailures: Int
    /// Files the read-ahead pushed before PostgreSQL asked.
    public var pushedAhead: Int
    /// Files pushed when `kho wal push` asked, because the read-ahead had not got to them.
    public var pushedOnRequest: Int
    /// `kho wal push` requests answered from what the read-ahead had pushed (same SHA-256).
    public var answeredAhead: Int
    /// Pushes the archive refused (other cluster, different content, invalid file).
    public var refused: Int
    /// Requests from peers that may not push.
    public var denied: Int
    /// PostgreSQL's queue is not moving: files wait, the oldest for longer than `stallAfter`
    /// seconds, and nothing was pushed or answered for as long; or pushes keep failing.
    public var stalled: Bool
    public var stallAfterSeconds: Double

    public init(source: String, dataDirectory: String, started: Date, stallAfter: TimeInterval) {
        self.source = source
        self.dataDirectory = dataDirectory
        pid = getpid()
        host = Host.name
        self.started = started
        updated = started
        running = true
        readyFiles = 0
        oldestReadySeconds = 0
        consecutiveFailures = 0
        pushedAhead = 0
        pushedOnRequest = 0
        answeredAhead = 0
        refused = 0
        denied = 0
        stalled = false
        stallAfterSeconds = stallAfter
    }

    /// Failed pushes in a row after which the agent counts as stalled even while the queue is young.
    public static let failureLimit = 5

    /// The stall rule, in one place for the agent and for readers of the file. A queue that is
    /// old but moving (an agent catching up after an outage) is not stalled.
    public static func isStalled(readyFiles: Int, oldestReadySeconds: Double, secondsSinceProgress: Double, consecutiveFailures: Int,
                                 stallAfter: TimeInterval) -> Bool {
        readyFiles > 0 && ((oldestReadySeconds > stallAfter && secondsSinceProgress > stallAfter) || consecutiveFailures >= failureLimit)
    }

    /// Seconds at `now` since the agent last pushed or answered (or started).
    public func secondsSinceProgress(now: Date) -> Double {
        now.timeIntervalSince([lastPush, lastAnswer, started].compactMap { $0 }.max() ?? started)
    }

    /// How a reader (`kho status`) should see the agent at `now`: an agent that stopped or whose
    /// file is older than `heartbeat` seconds is not running, and with `.ready` files waiting (as
    /// counted now by `WALReadyQueue.look`) that is a stall, whatever the file last said.
    public func assessed(now: Date, queue: WALReadyQueue.Look?, heartbeat: TimeInterval = 30) -> WALAgentStatus {
        var result = self
        if now.timeIntervalSince(updated) > heartbeat { result.running = false }
        if let queue {
            result.readyFiles = queue.count
            result.oldestReadySeconds = queue.oldestAge(now: now)
        }
        let failing = result.running ? result.consecutiveFailures : WALAgentStatus.failureLimit
        result.stalled = WALAgentStatus.isStalled(readyFiles: result.readyFiles, oldestReadySeconds: result.oldestReadySeconds,
                                                  secondsSinceProgress: result.secondsSinceProgress(now: now),
                                                  consecutiveFailures: failing, stallAfter: stallAfterSeconds)
        return result
    }

    /// What `kho status` shows for `source`: the agent's file in `stateDirectory`, judged at `now`
    /// against the cluster's queue as it is now (when the data directory it names can be listed
    /// here). Nil when no agent has run for the source with that state folder.
    public static func current(source: String, stateDirectory: String = WALAgentPaths.stateFolder, now: Date = Date()) throws -> WALAgentStatus? {
        let path = try WALAgentPaths.status(source: source, stateDirectory: stateDirectory)
        guard access(path, F_OK) == 0 else { return nil }
        let status = try read(path: path)
        var queue: WALReadyQueue.Look?
        do {
            queue = try WALReadyQueue.look(dataDirectory: status.dataDirectory)
        } catch {
            // Another host's cluster, or one gone: the file's own counts stand.
            queue = nil
        }
        return status.assessed(now: now, queue: queue)
    }

    public static func read(path: String) throws -> WALAgentStatus {
        let bytes = try Syscall.readFile(path, limit: 1 << 20)
        do {
            return try JSON.decoder.decode(WALAgentStatus.self, from: Data(bytes))
        } catch {
            throw KhoError(.failure, "\(path) is not a WAL agent status file (\(error)): it is rewritten by kho wal serve within a second; check that nothing else writes there.")
        }
    }

    /// Replaces the file at `path` (temporary file in the same folder, then rename): a reader
    /// sees the old or the new status, never half of one.
    func write(path: String) throws {
        let data = try JSON.prettyEncoder.encode(self)
        let temporary = path + ".tmp"
        let fd = try Syscall.call("open", temporary) { open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o644) }
        do {
            try data.withUnsafeBytes { try Syscall.writeAll(fd, $0, temporary) }
            close(fd)
        } catch {
            close(fd)
            throw error
        }
        try Syscall.call("rename", path) { rename(temporary, path) }
    }
}
