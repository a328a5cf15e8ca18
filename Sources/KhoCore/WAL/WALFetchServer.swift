import Foundation
import Glibc
import KhoSupport

/// Serves archived WAL to a recovering cluster's `restore_command` from the process that opened
/// the repository (docs/design/pitr.md section 4, "served mode"): `kho wal fetch --server SOCKET`
/// runs as the cluster's user and holds no password, no key and no storage credentials; it asks
/// here over a Unix socket that only the cluster's user and root may use, and gets checked bytes.
///
/// Read-ahead: after a segment is asked for, the next `readAhead` segments of its timeline that
/// the archive holds are fetched in the background, so that replay waits on storage once, not
/// once per segment.
///
/// Protocol, one request per connection: `FETCH <name>\n` with the descriptor of a new, empty file
/// of the client's attached (`SCM_RIGHTS`); answers `WROTE <size>\n` (written into that file),
/// `MISSING\n` (not archived and past the archive's end: the normal end of WAL), `GAP <text>\n`
/// (not archived although later segments of its timeline are), `ERROR <text>\n`.
public final class WALFetchServer: @unchecked Sendable {
    public struct Statistics: Sendable, Equatable {
        public var served = 0
        public var bytes: Int64 = 0
        public var missing = 0
        public var prefetched = 0
        public var fromReadAhead = 0
        /// The last segment served (what replay reached as far as the archive is concerned).
        public var lastSegment: String?
    }

    public let socketPath: String
    private let repository: Repository
    private let record: WALArchiveRecord
    private let cluster: SystemIdentifier
    private let inventory: WALInventory
    private let allowedUser: uid_t
    private let readAhead: Int
    private let listener: UnixSocket
    private let state = Locked(State())
    private var acceptThread: Worker?
    private let fetchQueue = BoundedQueue<WALFileName>(capacity: 1024)
    private var fetchers: [Worker] = []
    /// Signalled whenever a read-ahead ends (stored or failed), for a request waiting on it.
    private let readAheadEnded = NSCondition()

    private struct State {
        var statistics = Statistics()
        /// Files fetched ahead, by name, until asked for.
        var ready: [String: [UInt8]] = [:]
        var inFlight: Set<String> = []
        var failed: [String: String] = [:]
        var readyBytes = 0
        /// The segment served last: at the end of recovery PostgreSQL asks for it again (to copy
        /// its start onto the new timeline), and fetching it again from the repository was a
        /// wait on the path to promotion.
        var lastServed: (name: String, bytes: [UInt8])?
    }

    /// Listens at `socketPath` (created 0600, then given to `allowedUser`) and serves the
    /// archive of `record`'s cluster.
    public init(repository: Repository, record: WALArchiveRecord, socketPath: String, allowedUser: uid_t,
                allowedGroup: gid_t, readAhead: Int = 8, connections: Int? = nil) throws {
        self.repository = repository
        self.record = record
        self.cluster = try SystemIdentifier(parsing: record.cluster)
        self.socketPath = socketPath
        self.allowedUser = allowedUser
        self.readAhead = max(0, min(readAhead, 64))
        inventory = try WALArchive.inventory(of: record, in: repository)
        listener = try UnixSocket.listen(at: socketPath, mode: 0o600)
        try Syscall.call("chown", socketPath) { chown(socketPath, allowedUser, allowedGroup) }
        // On a local disk a read-ahead is decryption and decompression: one thread keeps ahead of
        // replay, which is one process, and leaves the other cores to the recovering server
        // (four read-aheads beside its start-up made that start-up slower than they saved).
        // Requests to object storage wait on the network and are worth overlapping.
        let fetcherCount = connections ?? (repository.storage.readsAreRequests ? 4 : 2)
        for n in 0..<max(1, fetcherCount) {
            fetchers.append(Worker(name: "kho-wal-prefetch-\(n)") { [weak self] in self?.prefetchLoop() })
        }
        acceptThread = Worker(name: "kho-wal-fetch-server") { [weak self] in self?.acceptLoop() }
    }

    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// Starts reading ahead at `first` (the base backup's first segment), before the cluster asks:
    /// its start-up then overlaps the first fetches instead of waiting for them.
    public func readAhead(from first: WALFileName) {
        guard first.kind == .segment else { return }
        queueReadAhead(timeline: first.timeline, from: first.segmentNumber(segmentSize: inventory.segmentSize))
    }

    /// Stops serving and removes the socket file; waits for the threads.
    public func stop() {
        listener.shutdownListening()
        acceptThread?.join()
        fetchQueue.close()
        fetchers.forEach { $0.join() }
        listener.close()
        unlink(socketPath)
    }

    private func acceptLoop() {
        while true {
            let connection: UnixSocket?
            do { connection = try listener.accept() } catch { return }
            guard let connection else { return }
            _ = Worker(name: "kho-wal-fetch-answer") { [self] in
                answer(connection)
                connection.close()
            }
        }
    }

    private func answer(_ connection: UnixSocket) {
        connection.setTimeout(seconds: 300)
        do {
            let peer = try connection.peerUserID()
            guard peer == 0 || peer == allowedUser else {
                try connection.write(Array("ERROR user \(peer) may not fetch WAL from this restore\n".utf8))
                return
            }
            // The request and the descriptor of the file to fill come in one message.
            let request = try DescriptorPassing.receive(connection.descriptor, limit: 128, maxDescriptors: 1, what: "the restore's WAL socket")
            defer { request.descriptors.forEach { _ = close($0) } }
            let line = String(decoding: request.bytes, as: UTF8.self)
            guard !request.truncated, line.hasPrefix("FETCH "), line.hasSuffix("\n"), request.descriptors.count == 1 else {
                try connection.write(Array("ERROR the request is not a kho restore_command's (one line and one file): run kho wal fetch of the same kho as the restore\n".utf8))
                return
            }
            let name: WALFileName
            do {
                name = try WALFileName(parsing: line.dropFirst(6).dropLast())
            } catch let error as KhoError {
                try connection.write(Array("ERROR \(error.message)\n".utf8))
                return
            }
            let (head, body) = try response(for: name)
            guard let body else {
                try connection.write(head)
                return
            }
            try connection.write(Array(Self.fill(request.descriptors[0], with: body).utf8))
        } catch {
            // The client reports what it did not get; the recovery it serves stops there.
        }
    }

    /// Writes the file into the client's new, empty file, so that 16 MiB per segment cross no
    /// socket and no buffer of the client's (in the serial path of replay): `WROTE <size>`, or
    /// an `ERROR` line. The descriptor is only written through: it gives this process no more
    /// than the client could do with it itself.
    static func fill(_ fd: Int32, with bytes: [UInt8]) -> String {
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG, status.st_size == 0 else {
            return "ERROR the file restore_command passed is not a new, empty regular file: nothing was written\n"
        }
        do {
            try bytes.withUnsafeBytes { try Syscall.pwriteAll(fd, $0, offset: 0, "the file restore_command passed") }
        } catch let error as KhoError {
            return "ERROR \(error.message)\n"
        } catch {
            return "ERROR \(error)\n"
        }
        return "WROTE \(bytes.count)\n"
    }

    /// The answer's line, or the file's bytes (the line then says how they were written).
    private func response(for name: WALFileName) throws -> (head: [UInt8], body: [UInt8]?) {
        let key = name.description
        // Wait for a read-ahead of this very file rather than fetch it twice. The condition's
        // lock is held from the look to the wait, and a read-ahead signals under it after it
        // changed the state: its end cannot fall between the two.
        var bytes: [UInt8]?
        var prefetchFailure: String?
        let deadline = Date().addingTimeInterval(300)
        readAheadEnded.lock()
        while true {
            let (taken, busy, failure) = state.withLock { s -> ([UInt8]?, Bool, String?) in
                if let data = s.ready.removeValue(forKey: key) { s.readyBytes -= data.count; return (data, false, nil) }
                if let last = s.lastServed, last.name == key { return (last.bytes, false, nil) }
                return (nil, s.inFlight.contains(key), s.failed.removeValue(forKey: key))
            }
            if let taken { bytes = taken; state.withLock { $0.statistics.fromReadAhead += 1 }; break }
            if let failure { prefetchFailure = failure; break }
            if !busy || !readAheadEnded.wait(until: deadline) { break }
        }
        readAheadEnded.unlock()
        if let prefetchFailure { return (Array("ERROR \(prefetchFailure)\n".utf8), nil) }
        if bytes == nil {
            do {
                bytes = try WALArchive.fetch(name: name, cluster: cluster, record: record, from: repository)
            } catch let error as KhoError {
                return (Array("ERROR \(error.message)\n".utf8), nil)
            }
        }
        guard let bytes else {
            state.withLock { $0.statistics.missing += 1 }
            if let gap = gapMessage(for: name) { return (Array("GAP \(gap)\n".utf8), nil) }
            return (Array("MISSING\n".utf8), nil)
        }
        state.withLock {
            $0.statistics.served += 1
            $0.statistics.bytes += Int64(bytes.count)
            if name.kind == .segment {
                $0.statistics.lastSegment = key
                $0.lastServed = (key, bytes)
            }
        }
        if name.kind == .segment { scheduleReadAhead(after: name) }
        return (Array("OK \(bytes.count)\n".utf8), bytes)
    }

    /// A segment missing although later segments of its timeline were archived: replay would end
    /// early at a wrong point, so it must stop instead.
    private func gapMessage(for name: WALFileName) -> String? {
        guard name.kind == .segment else { return nil }
        let number = name.segmentNumber(segmentSize: inventory.segmentSize)
        guard let later = inventory.segments[name.timeline]?.keys.filter({ $0 > number }).min() else { return nil }
        let next = WALFileName.segment(timeline: name.timeline, number: later, segmentSize: inventory.segmentSize)
        return "\(name) is missing from the archive of cluster \(cluster) although \(next) and later segments are archived: recovery cannot pass this gap; run `kho check`, and restore to a point before it or from a base backup after it."
    }

    private func scheduleReadAhead(after name: WALFileName) {
        queueReadAhead(timeline: name.timeline, from: name.segmentNumber(segmentSize: inventory.segmentSize) + 1)
    }

    private func queueReadAhead(timeline: UInt32, from first: UInt64) {
        guard readAhead > 0 else { return }
        let size = inventory.segmentSize
        let available = inventory.segments[timeline] ?? [:]
        for number in first..<(first + UInt64(readAhead)) where available[number] != nil {
            let next = WALFileName.segment(timeline: timeline, number: number, segmentSize: size)
            let queued = state.withLock { s -> Bool in
                let key = next.description
                // Bounded memory: at most readAhead segments waiting, whatever replay does.
                guard s.ready[key] == nil, !s.inFlight.contains(key), s.ready.count + s.inFlight.count < readAhead else { return false }
                s.inFlight.insert(key)
                return true
            }
            if queued { _ = fetchQueue.push(next) }
        }
    }

    private func prefetchLoop() {
        while let name = fetchQueue.pop() {
            let key = name.description
            do {
                let bytes = try WALArchive.fetch(name: name, cluster: cluster, record: record, from: repository)
                state.withLock { s in
                    s.inFlight.remove(key)
                    if let bytes {
                        s.ready[key] = bytes
                        s.readyBytes += bytes.count
                        s.statistics.prefetched += 1
                    }
                }
            } catch {
                let message = (error as? KhoError)?.message ?? "\(error)"
                state.withLock { s in
                    s.inFlight.remove(key)
                    s.failed[key] = message
                }
            }
            readAheadEnded.lock()
            readAheadEnded.broadcast()
            readAheadEnded.unlock()
        }
    }
}

/// The `restore_command` side of `WALFetchServer`: asks for one file and writes it to PostgreSQL's
/// `%p` through a temporary name, so that PostgreSQL never sees an empty or partial file.
public enum WALFetchClient {
    /// What PostgreSQL is told, as restore_command's exit status.
    public enum Outcome: Sendable, Equatable {
        /// The file is at its destination (exit 0).
        case written(bytes: Int)
        /// Not archived, past the end of the archive: recovery ends its archive reading here (exit 1).
        case missing
        /// Recovery must stop rather than end early at a wrong point (exit 126, which PostgreSQL
        /// treats as fatal): a gap, a damaged file, the server gone.
        case fatal(String)

        public var exitStatus: Int32 {
            switch self {
            case .written: return 0
            case .missing: return 1
            case .fatal: return 126
            }
        }
    }

    /// Creates `destination + ".kho-tmp"`, has the server fill it, and renames it over
    /// `destination`, so that PostgreSQL never finds an empty or partial file under the name it
    /// asked for. Not fsynced: PostgreSQL never trusts a file restore_command wrote across a crash
    /// (it asks again after restarting), and durably renames what it keeps
    /// (KeepFileRestoredFromArchive). An fsync per 16 MiB segment here was a wait on the disk in
    /// every step of serial replay; pgBackRest's archive-get does not sync either.
    public static func fetch(socket path: String, name: String, destination: String) -> Outcome {
        let temporary = destination + ".kho-tmp"
        var fd: Int32 = -1
        var placed = false
        defer {
            if fd >= 0 { _ = close(fd) }
            if !placed { unlink(temporary) }
        }
        do {
            let parsed = try WALFileName(parsing: name)
            fd = try Syscall.call("open", temporary) { open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600) }
            let socket = try UnixSocket.connect(to: path)
            defer { socket.close() }
            socket.setTimeout(seconds: 600)
            try DescriptorPassing.send(socket.descriptor, Array("FETCH \(parsed)\n".utf8), descriptor: fd, what: "the restore's WAL socket")
            guard let head = try socket.readLine(limit: 4096) else {
                return .fatal("The kho restore serving WAL at \(path) closed the connection without an answer: see its messages; recovery stops here.")
            }
            if head == "MISSING" { return .missing }
            if head.hasPrefix("GAP ") || head.hasPrefix("ERROR ") {
                return .fatal(String(head.drop { $0 != " " }.dropFirst()))
            }
            var status = stat()
            guard head.hasPrefix("WROTE "), let size = Int(head.dropFirst(6)), (0...(WALObject.largestSegmentSize)).contains(size),
                  fstat(fd, &status) == 0, status.st_size == size else {
                return .fatal("The process at \(path) answered \"\(head.prefix(80))\", not as kho's WAL server does, or its file is not the size it said: recovery stops here.")
            }
            // A write the disk refuses late (NFS, quota) shows at close.
            let written = fd
            fd = -1
            try Syscall.call("close", temporary) { close(written) }
            try Syscall.call("rename", destination) { rename(temporary, destination) }
            placed = true
            return .written(bytes: size)
        } catch let error as KhoError {
            return .fatal(error.message)
        } catch {
            return .fatal("\(error)")
        }
    }
}
