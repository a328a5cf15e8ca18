import Foundation
import Glibc
import KhoCore
import KhoSupport

@_silgen_name("inotify_init1") private func systemInotifyInit(_ flags: Int32) -> Int32
@_silgen_name("inotify_add_watch") private func systemInotifyAddWatch(_ fd: Int32, _ path: UnsafePointer<CChar>, _ mask: UInt32) -> Int32

/// How `kho wal serve` runs a source's agent.
public struct WALAgentOptions: Sendable {
    public var source: String
    /// The cluster's data directory on this host: its owner may push, its `pg_wal` is read ahead.
    public var dataDirectory: String
    public var socketPath: String
    /// Where the ledger of pushed files and the status file live (`/var/lib/kho/wal`).
    public var stateDirectory: String
    /// Read-ahead pushes in parallel.
    public var uploaders = 2
    /// How often the queue is listed when no change is signalled.
    public var scanInterval: TimeInterval = 0.2
    /// A queue whose oldest file waits longer than this is stalled.
    public var stallAfter: TimeInterval = 300
    /// Clients served at once; more are told to retry. PostgreSQL's archiver asks one file at a
    /// time; the bound keeps a flood of requests (each may hold a 64 MiB file) from using memory.
    public var maxClients = 4
    /// Log every push, not only problems and a summary.
    public var verbose = false

    public init(source: String, dataDirectory: String, socketPath: String, stateDirectory: String) {
        self.source = source
        self.dataDirectory = dataDirectory
        self.socketPath = socketPath
        self.stateDirectory = stateDirectory
    }
}

/// The WAL agent (docs/design/pitr.md section 3): the one process that holds the repository's key
/// for a cluster's archive. It opens the repository once, pushes `.ready` files from `pg_wal`
/// ahead of PostgreSQL with a few uploaders, and answers `kho wal push` over a Unix socket: a
/// request for a file it already pushed with the same bytes is answered at once, any other is
/// pushed then. It never writes into `archive_status` (PostgreSQL owns it), never opens a path a
/// client named, and serves only the data directory's owner and root.
public final class WALAgent: @unchecked Sendable {
    public let archive: WALArchive
    public let options: WALAgentOptions
    private let log: @Sendable (String) -> Void
    private let ledger: WALPushedLedger
    private let statusPath: String
    /// The data directory's owner (who runs the archiver) and the group the socket is given.
    private let owner: uid_t
    private let group: gid_t

    /// Guards everything below: names in flight, refusals, back-off, the status, client count.
    private let condition = NSCondition()
    private var inFlight: Set<String> = []
    private var refusedNames: [String: String] = [:]
    private var backoff: [String: (failures: Int, next: Date)] = [:]
    /// The identity of each file the read-ahead pushed, by name: a request whose descriptor has
    /// the same identity is answered without reading and hashing 16 MiB again (the answer is the
    /// one serial step of PostgreSQL's archiver). Memory only; after a restart requests are hashed.
    private var pushedIdentities: [String: WALFileIdentity] = [:]
    private var status: WALAgentStatus
    private var clients = 0
    /// Files handed to the uploaders and not finished yet.
    private var readAheadPending = 0
    /// The last status-file error logged, so that a lasting one is logged once.
    private var lastStatusError: String?

    private enum Origin { case readAhead, request }

    public init(archive: WALArchive, options: WALAgentOptions, log: @escaping @Sendable (String) -> Void) throws {
        guard archive.source == options.source else {
            throw KhoError(.usage, "The archive is for source \(archive.source), the agent for \(options.source): pass one --source.")
        }
        guard (1...64).contains(options.uploaders) else {
            throw KhoError(.usage, "--connections must be 1 to 64; got \(options.uploaders).")
        }
        self.archive = archive
        self.options = options
        self.log = log
        var info = stat()
        try Syscall.call("stat", options.dataDirectory) { stat(options.dataDirectory, &info) }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw KhoError(.usage, "\(options.dataDirectory) is not a folder: pass the cluster's data directory with --data-directory.")
        }
        _ = try WALClusterIdentity.read(dataDirectory: options.dataDirectory)
        _ = try WALReadyQueue.look(dataDirectory: options.dataDirectory)
        owner = info.st_uid
        group = WALAgent.primaryGroup(of: info.st_uid) ?? info.st_gid
        try WALAgent.prepareStateDirectory(options.stateDirectory)
        ledger = try WALPushedLedger(path: try WALAgentPaths.ledger(source: options.source, stateDirectory: options.stateDirectory))
        statusPath = try WALAgentPaths.status(source: options.source, stateDirectory: options.stateDirectory)
        status = WALAgentStatus(source: options.source, dataDirectory: options.dataDirectory, started: Date(), stallAfter: options.stallAfter)
    }

    /// A copy of the status as it is now.
    public var currentStatus: WALAgentStatus { condition.withLock { status } }

    /// Serves until `stop` returns true (checked every 200 ms), then lets pushes in progress
    /// finish, removes the socket and writes the final status.
    public func run(stop: @escaping @Sendable () -> Bool) throws {
        let listener = try prepareSocket()
        var socketInfo = stat()
        try Syscall.call("stat", options.socketPath) { lstat(options.socketPath, &socketInfo) }
        log("kho wal serve: source \(options.source), cluster in \(options.dataDirectory), listening on \(options.socketPath) for uid \(owner) and root, \(options.uploaders) uploaders, pushed files remembered in \(ledger.path)")
        let queue = BoundedQueue<WALFileName>(capacity: 2 * options.uploaders)
        var workers: [Worker] = []
        for index in 0..<options.uploaders {
            workers.append(Worker(name: "kho-wal-upload-\(index)") { [self] in
                while let name = queue.pop() {
                    readAhead(name)
                    condition.withLock { readAheadPending -= 1 }
                }
            })
        }
        let finished = Locked(false)
        let scanner = Worker(name: "kho-wal-scan") { [self] in
            scan(into: queue, stop: { stop() || finished.current })
        }
        defer {
            finished.withLock { $0 = true }
            queue.close()
            scanner.join()
            for worker in workers { worker.join() }
            // The socket is removed only while it is still the one this agent made.
            var now = stat()
            if lstat(options.socketPath, &now) == 0, now.st_ino == socketInfo.st_ino, now.st_dev == socketInfo.st_dev {
                unlink(options.socketPath)
            }
            waitForClients(seconds: 30)
            condition.withLock { status.running = false }
            writeStatus()
            log("kho wal serve: source \(options.source) stopped; \(summary())")
        }
        defer { close(listener) }
        while !stop() {
            guard let connection = try WALSocket.accept(listener, timeout: 0.2) else { continue }
            let admitted = condition.withLock { () -> Bool in
                guard clients < options.maxClients else { return false }
                clients += 1
                return true
            }
            guard admitted else {
                // try?: the client is told to retry if it listens; if it is gone there is nobody to tell.
                try? WALSocket.send(connection, WALAgentProtocol.answer(.failed("The WAL agent serves \(options.maxClients) requests at once: PostgreSQL retries.")))
                close(connection)
                continue
            }
            _ = Worker(name: "kho-wal-client") { [self] in
                serve(connection)
                close(connection)
                condition.withLock {
                    clients -= 1
                    condition.broadcast()
                }
            }
        }
    }

    // MARK: read-ahead

    /// Lists the queue every `scanInterval` (sooner when inotify says a file became ready) and
    /// hands files nobody pushed yet to the uploaders, oldest first.
    private func scan(into queue: BoundedQueue<WALFileName>, stop: @escaping @Sendable () -> Bool) {
        let folder = WALReadyQueue.statusFolder(dataDirectory: options.dataDirectory)
        var watch = systemInotifyInit(Int32(O_NONBLOCK | O_CLOEXEC))
        // IN_CREATE | IN_MOVED_TO: PostgreSQL creates `.ready` files; without inotify the
        // interval alone paces the read-ahead.
        if watch >= 0, systemInotifyAddWatch(watch, folder, 0x100 | 0x80) < 0 {
            close(watch)
            watch = -1
        }
        defer { if watch >= 0 { close(watch) } }
        var lastStatus = Date.distantPast
        var lastSummary = Date()
        var lastListingError: String?
        while !stop() {
            do {
                let look = try WALReadyQueue.look(dataDirectory: options.dataDirectory)
                let cluster = try WALClusterIdentity.read(dataDirectory: options.dataDirectory).cluster
                lastListingError = nil
                condition.withLock {
                    status.readyFiles = look.count
                    status.oldestReadySeconds = look.oldestAge(now: Date())
                }
                // Only as many as the queue takes without waiting: the scanner also keeps the
                // status file fresh, which must not stop while a slow storage holds the uploaders.
                for name in look.names {
                    if stop() || condition.withLock({ readAheadPending >= 2 * options.uploaders }) { break }
                    guard claimForReadAhead(name, cluster: cluster) else { continue }
                    condition.withLock { readAheadPending += 1 }
                    if !queue.push(name) {
                        condition.withLock { readAheadPending -= 1 }
                        release(name)
                        break
                    }
                }
            } catch {
                let message = (error as? KhoError)?.message ?? "\(error)"
                if message != lastListingError { log("ERROR: \(message)") }
                lastListingError = message
                noteFailure(name: nil, message: message)
            }
            if Date().timeIntervalSince(lastStatus) >= 1 {
                writeStatus()
                lastStatus = Date()
            }
            if Date().timeIntervalSince(lastSummary) >= 300 {
                log("kho wal serve: \(summary())")
                lastSummary = Date()
            }
            waitForChange(watch)
        }
    }

    private func waitForChange(_ watch: Int32) {
        guard watch >= 0 else {
            usleep(useconds_t(options.scanInterval * 1_000_000))
            return
        }
        var entry = pollfd(fd: watch, events: Int16(POLLIN), revents: 0)
        if poll(&entry, 1, Int32(options.scanInterval * 1000)) > 0 {
            var buffer = [UInt8](repeating: 0, count: 8192)
            while buffer.withUnsafeMutableBytes({ read(watch, $0.baseAddress, $0.count) }) > 0 {}
        }
    }

    /// Claims `name` for the read-ahead unless it is pushed, in flight, refused, or waiting out a
    /// back-off after failures.
    private func claimForReadAhead(_ name: WALFileName, cluster: SystemIdentifier) -> Bool {
        let key = name.description
        if ledger.digest(of: name, cluster: cluster) != nil { return false }
        return condition.withLock {
            if inFlight.contains(key) || refusedNames[key] != nil { return false }
            if let wait = backoff[key], wait.next > Date() { return false }
            inFlight.insert(key)
            return true
        }
    }

    private func release(_ name: WALFileName) {
        condition.withLock {
            inFlight.remove(name.description)
            condition.broadcast()
        }
    }

    private func readAhead(_ name: WALFileName) {
        defer { release(name) }
        do {
            guard let (file, identity) = try WALFileReading.fromPgWal(name, dataDirectory: options.dataDirectory) else { return }
            // `.ready` still there after the read means PostgreSQL had not archived (and so not
            // recycled) the file while it was read: the bytes are the file's.
            guard WALReadyQueue.isReady(name, dataDirectory: options.dataDirectory) else { return }
            let digest = try SHA256.hash(file)
            _ = try push(name, file: file, digest: digest, origin: .readAhead)
            condition.withLock {
                // A bound, not a cache policy: PostgreSQL asks for files in order, soon after.
                if pushedIdentities.count >= 4096 { pushedIdentities.removeAll(keepingCapacity: true) }
                pushedIdentities[name.description] = identity
            }
        } catch {
            // push recorded what it could; a read error is recorded here.
            if !(error is PushFailure) {
                noteFailure(name: name, message: (error as? KhoError)?.message ?? "\(error)")
            }
        }
    }

    // MARK: requests

    private func serve(_ connection: Int32) {
        let answer = answerRequest(connection)
        do {
            try WALSocket.send(connection, WALAgentProtocol.answer(answer))
        } catch {
            // The client gave up (timeout, killed): PostgreSQL asks again and the file, if pushed,
            // is then answered from the ledger.
            if options.verbose { log("the answer could not be sent: \((error as? KhoError)?.message ?? "\(error)")") }
        }
    }

    private func answerRequest(_ connection: Int32) -> WALAgentAnswer {
        let peer: PeerCredentials
        do {
            peer = try WALSocket.peerCredentials(connection)
        } catch {
            return .failed("The WAL agent could not tell who is asking: \((error as? KhoError)?.message ?? "\(error)")")
        }
        let message: SocketMessage
        do {
            WALSocket.setTimeouts(connection, 10)
            guard try WALSocket.waitReadable(connection, timeout: 10) else { return .failed("No request arrived within 10 s.") }
            message = try WALSocket.receive(connection, limit: WALAgentProtocol.requestLimit, maxDescriptors: 2)
        } catch {
            return .failed("The request could not be read: \((error as? KhoError)?.message ?? "\(error)")")
        }
        // The request is taken off the socket even from a peer that is refused (closing with it
        // unread would reset the connection before the answer arrives); its descriptor is closed
        // unread.
        defer { for fd in message.descriptors { close(fd) } }
        guard peer.uid == owner || peer.uid == 0 || peer.uid == geteuid() else {
            condition.withLock { status.denied += 1 }
            log("refused a request from uid \(peer.uid) (pid \(peer.pid)): only uid \(owner), the owner of \(options.dataDirectory), and root may push")
            return .denied("uid \(peer.uid) may not push WAL for source \(options.source): run archive_command as the cluster's owner (uid \(owner)).")
        }
        guard !message.truncated, message.descriptors.count == 1 else {
            return .failed("The request is not a kho wal push request (one WAL file name and one open file): run kho wal push of the same version as kho wal serve.")
        }
        let name: WALFileName
        do {
            name = try WALAgentProtocol.parseRequest(message.bytes)
        } catch {
            return .failed((error as? KhoError)?.message ?? "\(error)")
        }
        let cluster: SystemIdentifier
        let identity: WALFileIdentity
        do {
            cluster = try WALClusterIdentity.read(dataDirectory: options.dataDirectory).cluster
            identity = try WALFileIdentity(descriptor: message.descriptors[0], shown: "the file passed for \(name)")
        } catch let error as KhoError {
            return .failed(error.message)
        } catch {
            return .failed("\(error)")
        }
        let key = name.description
        // The same file the read-ahead pushed, untouched since: answered from the ledger without
        // reading it again. Waits first for a push of the name in progress (usually the read-ahead's).
        let unchanged: Bool = condition.withLock {
            while inFlight.contains(key) { condition.wait() }
            guard pushedIdentities[key] == identity, ledger.digest(of: name, cluster: cluster) != nil else { return false }
            status.answeredAhead += 1
            status.lastAnswer = Date()
            return true
        }
        if unchanged {
            if options.verbose { log("\(name): already archived, answered from the read-ahead (same file)") }
            return .ok("\(name) is archived.")
        }
        let file: [UInt8]
        let digest: BlobID
        do {
            file = try WALFileReading.fromDescriptor(message.descriptors[0], shown: "the file passed for \(name)")
            digest = try SHA256.hash(file)
        } catch let error as KhoError {
            return error.kind == .integrity ? .refused(error.message) : .failed(error.message)
        } catch {
            return .failed("\(error)")
        }
        // Another descriptor (a copy, a restarted agent): answered when the ledger holds these
        // bytes under the name, or pushed now.
        let known: Bool = condition.withLock {
            while inFlight.contains(key) { condition.wait() }
            if ledger.digest(of: name, cluster: cluster) == digest {
                status.answeredAhead += 1
                status.lastAnswer = Date()
                return true
            }
            inFlight.insert(key)
            return false
        }
        if known {
            if options.verbose { log("\(name): already archived, answered from the read-ahead") }
            return .ok("\(name) is archived.")
        }
        defer { release(name) }
        do {
            let outcome = try push(name, file: file, digest: digest, origin: .request)
            condition.withLock { status.lastAnswer = Date() }
            return .ok(outcome == .stored ? "\(name) is archived." : "\(name) was already archived with the same content.")
        } catch let failure as PushFailure {
            return failure.refused ? .refused(failure.message) : .failed(failure.message)
        } catch {
            return .failed("\(error)")
        }
    }

    // MARK: pushing

    /// A push that did not succeed, already logged and counted.
    private struct PushFailure: Error {
        var refused: Bool
        var message: String
    }

    /// Pushes one file (the caller holds its claim) and records it: ledger first, then memory and
    /// status. The cluster's identity is read each time, so a rebuilt cluster in the same folder
    /// is noticed by the archive's checks.
    private func push(_ name: WALFileName, file: [UInt8], digest: BlobID, origin: Origin) throws -> WALPushOutcome {
        let outcome: WALPushOutcome
        let identity: WALClusterIdentity
        let started = Date()
        do {
            identity = try WALClusterIdentity.read(dataDirectory: options.dataDirectory)
            outcome = try archive.push(name: name, file: file, identity: identity, digest: digest)
        } catch let error as KhoError where error.kind == .integrity {
            condition.withLock {
                refusedNames[name.description] = error.message
                status.refused += 1
                status.lastError = error.message
                status.lastErrorAt = Date()
            }
            log("REFUSED \(name): \(error.message)")
            throw PushFailure(refused: true, message: error.message)
        } catch {
            let message = (error as? KhoError)?.message ?? "\(error)"
            noteFailure(name: name, message: message)
            throw PushFailure(refused: false, message: message)
        }
        do {
            try ledger.append(name: name, cluster: identity.cluster, digest: digest)
        } catch {
            // The file is archived; only the shortcut for PostgreSQL's request is lost, which then
            // pushes again and is answered as a repeat.
            log("WARNING: \(name) is archived but could not be recorded in \(ledger.path): \((error as? KhoError)?.message ?? "\(error)")")
        }
        condition.withLock {
            refusedNames[name.description] = nil
            backoff[name.description] = nil
            status.lastPush = Date()
            status.lastPushed = name.description
            status.consecutiveFailures = 0
            switch origin {
            case .readAhead: status.pushedAhead += 1
            case .request: status.pushedOnRequest += 1
            }
        }
        if options.verbose {
            log("\(name): \(outcome == .stored ? "stored" : "already stored with the same content") (\(origin == .readAhead ? "read-ahead" : "on request")) in \(Int(Date().timeIntervalSince(started) * 1000)) ms")
        }
        return outcome
    }

    private func noteFailure(name: WALFileName?, message: String) {
        let failures = condition.withLock { () -> Int in
            status.consecutiveFailures += 1
            status.lastError = message
            status.lastErrorAt = Date()
            guard let name else { return status.consecutiveFailures }
            let count = (backoff[name.description]?.failures ?? 0) + 1
            backoff[name.description] = (count, Date().addingTimeInterval(min(30, 0.5 * pow(2, Double(count - 1)))))
            return count
        }
        if let name {
            log("ERROR: \(name) was not archived (attempt \(failures)): \(message)")
        }
    }

    // MARK: status

    private func writeStatus() {
        let snapshot = condition.withLock { () -> WALAgentStatus in
            status.updated = Date()
            status.stalled = WALAgentStatus.isStalled(readyFiles: status.readyFiles, oldestReadySeconds: status.oldestReadySeconds,
                                                      secondsSinceProgress: status.secondsSinceProgress(now: status.updated),
                                                      consecutiveFailures: status.consecutiveFailures, stallAfter: options.stallAfter)
            return status
        }
        do {
            try snapshot.write(path: statusPath)
            lastStatusError = nil
        } catch {
            let message = (error as? KhoError)?.message ?? "\(error)"
            if message != lastStatusError { log("WARNING: the status file \(statusPath) could not be written: \(message)") }
            lastStatusError = message
        }
    }

    private func summary() -> String {
        let s = currentStatus
        return "\(s.pushedAhead) files pushed ahead, \(s.pushedOnRequest) on request, \(s.answeredAhead) requests answered from the read-ahead, \(s.refused) refused, \(s.readyFiles) waiting\(s.stalled ? ", STALLED" : "")"
    }

    private func waitForClients(seconds: TimeInterval) {
        let deadline = Date().addingTimeInterval(seconds)
        condition.withLock {
            while clients > 0 && Date() < deadline { _ = condition.wait(until: min(deadline, Date().addingTimeInterval(0.2))) }
        }
    }

    // MARK: set-up

    private static func primaryGroup(of uid: uid_t) -> gid_t? {
        var entry = passwd()
        var found: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16384)
        guard getpwuid_r(uid, &entry, &buffer, buffer.count, &found) == 0, found != nil else { return nil }
        return entry.pw_gid
    }

    /// The state folder: created 0700 if missing; one that exists must be a folder only its owner
    /// (this user) can write, since the ledger decides what is answered without pushing.
    static func prepareStateDirectory(_ path: String) throws {
        try makeFolder(path, mode: 0o700, parentsMode: 0o755)
        try requirePrivateFolder(path, what: "--state-directory")
    }

    /// Creates `path` (and missing parents with `parentsMode`) with `mode`; an existing folder is
    /// left as it is.
    private static func makeFolder(_ path: String, mode: mode_t, parentsMode: mode_t) throws {
        var info = stat()
        if lstat(path, &info) == 0 { return }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != path && parent != "/" { try makeFolder(parent, mode: parentsMode, parentsMode: parentsMode) }
        let (_, code) = Syscall.attempt { mkdir(path, mode) }
        if code != 0 && code != EEXIST { throw KhoError.posix("mkdir", path, errno: code) }
        if code == 0 { try Syscall.call("chmod", path) { chmod(path, mode) } }
    }

    /// `path` is a folder (not a link) owned by this user that no one else can write: whoever could
    /// write it could swap the socket or the ledger under the agent.
    private static func requirePrivateFolder(_ path: String, what: String) throws {
        var info = stat()
        try Syscall.call("lstat", path) { lstat(path, &info) }
        guard info.st_mode & S_IFMT == S_IFDIR, info.st_uid == geteuid(), info.st_mode & (S_IWGRP | S_IWOTH) == 0 else {
            throw KhoError(.usage, "\(path) (\(what)) must be a folder owned by uid \(geteuid()) that no other user can write: fix its owner and mode, or pass another folder.")
        }
    }

    /// Makes the listening socket: in `/run/kho/wal` (created `root:<owner's group>` 0750) by
    /// default, or where --socket says, in a folder only this user can write. A socket left by an
    /// agent that died is replaced; one that answers means another agent runs.
    private func prepareSocket() throws -> Int32 {
        let path = options.socketPath
        let folder = (path as NSString).deletingLastPathComponent
        if folder == WALAgentPaths.socketFolder {
            try WALAgent.makeFolder(folder, mode: 0o750, parentsMode: 0o755)
            try Syscall.call("chown", folder) { chown(folder, geteuid(), group) }
            try Syscall.call("chmod", folder) { chmod(folder, 0o750) }
        }
        try WALAgent.requirePrivateFolder(folder.isEmpty ? "." : folder, what: "the socket's folder")
        var info = stat()
        if lstat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFSOCK else {
                throw KhoError(.usage, "\(path) exists and is not a socket: remove it or pass another --socket.")
            }
            if case .connected(let fd) = try WALSocket.connect(to: path, timeout: 1) {
                close(fd)
                throw KhoError(.locked, "Another WAL agent listens on \(path): stop it first, or pass another --socket.")
            }
            try Syscall.call("unlink", path) { unlink(path) }
        }
        let listener = try WALSocket.listen(at: path)
        do {
            // The folder is writable by this user only, so the name cannot be swapped for a link
            // between bind and these calls.
            try Syscall.call("chown", path) { chown(path, geteuid(), group) }
            try Syscall.call("chmod", path) { chmod(path, 0o660) }
        } catch {
            close(listener)
            unlink(path)
            throw error
        }
        return listener
    }
}
