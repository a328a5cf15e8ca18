import Foundation
import Glibc
import KhoCore
import KhoSources
import KhoSupport

public struct BinlogArchiverOptions: Sendable {
    /// How often the growing file's new events are stored: the archive's RPO while the server
    /// writes into one file.
    public var interval: TimeInterval = 60
    /// Where mariadb-binlog writes; emptied at every start (everything in it is also on the server).
    public var spool: String
    /// Who mariadb-binlog runs as (nil: as kho, when kho is not root).
    public var streamUser: MariaDBBinlogServer.StreamUser?
    public var verbose = false
    /// How long to wait before connecting again after the stream or the server failed.
    public var retryAfter: TimeInterval = 5
    /// Where the serve says how it does (`BinlogArchiverStatus`); nil: nowhere.
    public var statusFile: String?

    public init(spool: String) { self.spool = spool }
}

/// `kho binlog serve`: MariaDB's binary log archived as it grows (docs/design/pitr.md section 9).
/// `mariadb-binlog --raw --stop-never` streams the files into a spool folder; every file the stream
/// has moved past is stored whole (its remaining pieces and its end marker) and removed from the
/// spool; the file being written is stored every `interval` as a new piece of the events it gained.
/// A restart starts again at the first file not stored whole and stores only what is missing.
public final class BinlogArchiver: @unchecked Sendable {
    public let archive: BinlogArchive
    public let server: MariaDBBinlogServer
    public let options: BinlogArchiverOptions
    private let log: @Sendable (String) -> Void

    /// Bytes of each spooled file already in the repository, from its start.
    private var stored: [BinlogFileName: UInt64] = [:]
    private var lastPush: [BinlogFileName: Date] = [:]
    /// The last piece stored before a restart, compared with the stream's bytes once it has them.
    private var unverified: BinlogPiece?
    private var caughtUp: Date?
    private var lastError: String?

    public init(archive: BinlogArchive, server: MariaDBBinlogServer, options: BinlogArchiverOptions, log: @escaping @Sendable (String) -> Void) {
        self.archive = archive
        self.server = server
        self.options = options
        self.log = log
    }

    /// Runs until `stop` says so. An integrity error (another server, different content under a
    /// stored name) ends it; a server or stream failure is logged and retried.
    public func run(stop: () -> Bool) throws {
        while !stop() {
            do {
                try session(stop: stop)
            } catch let error as KhoError where error.kind == .source || error.kind == .storage || error.kind == .failure {
                log("binlog serve: \(error.message) (again in \(Int(options.retryAfter)) s)")
                lastError = error.message
                writeStatus()
                let until = Date().addingTimeInterval(options.retryAfter)
                while Date() < until && !stop() { usleep(100_000) }
            }
        }
    }

    /// One connection: where to start, the stream, the pushes, until the stream ends or `stop`.
    private func session(stop: () -> Bool) throws {
        let state = try server.state()
        if state.format != "ROW" {
            log("binlog serve: the server's binlog_format is \(state.format): a restore replays ROW only; SET GLOBAL binlog_format = ROW and put it in the server's configuration")
        }
        try archive.claim(for: state.identity)
        guard let first = try startingFile(state) else {
            throw KhoError(.source, "Source \(archive.source): the server lists no binary log file (SHOW BINARY LOGS is empty).")
        }
        try prepareSpool()
        let stream = try server.stream(from: first, into: options.spool, as: options.streamUser)
        defer {
            // SIGKILL: kho ignores SIGTERM (its own handler takes it), and a child inherits that.
            // The stream holds nothing the spool or the server does not.
            stream.signal(SIGKILL)
            stream.wait()
        }
        if options.verbose { log("binlog serve: streaming from \(first) (\(stored[first] ?? 0) bytes of it already stored)") }
        var ended: Subprocess.Termination?
        while true {
            let stopping = stop()
            try pushSpool(final: stopping || ended != nil)
            if stopping { return }
            if let ended {
                throw KhoError(.source, "Source \(archive.source): mariadb-binlog stopped (\(ended)): \(stream.standardError.suffix(400))")
            }
            if stream.hasEnded { ended = stream.wait() }
            usleep(200_000)
        }
    }

    /// The file after the newest one stored whole, or the newest stored partly, or the oldest the
    /// server still has. A file the server purged before it was stored is a gap, logged here and
    /// refused by a restore that needs it.
    private func startingFile(_ state: MariaDBBinlogServer.State) throws -> BinlogFileName? {
        let inventory = try archive.inventory()
        stored = [:]
        lastPush = [:]
        unverified = nil
        let ours = inventory.files.filter { $0.name.basename == state.identity.basename }
        guard let last = ours.last else { return state.files.first?.name }
        if !last.ended && !last.holes && state.files.contains(where: { $0.name == last.name }) {
            stored[last.name] = last.contiguous
            unverified = last.pieces.last
            return last.name
        }
        guard let next = state.files.first(where: { last.name < $0.name }) else {
            // Everything the server has is stored already (its newest file too, marked whole by a
            // serve that saw the next one, since purged or reset): stream it again, storing nothing
            // twice, until the server writes the next file.
            guard let newest = state.files.last?.name, newest == last.name else {
                throw KhoError(.integrity, "Source \(archive.source): the server's newest binary log file \(state.files.last?.name.description ?? "-") comes before the archive's newest, \(last.name): its log was reset (RESET MASTER) or it is another server; nothing was stored; archive it under another --source and take a new dump.")
            }
            stored[last.name] = last.contiguous
            unverified = last.pieces.last
            return newest
        }
        if !last.name.isFollowed(by: next.name) || last.holes || !last.ended {
            log("binlog serve: the archive has a gap after \(last.name): the server no longer has what follows it; archiving from \(next.name); take a new dump, which starts a replay after the gap")
        }
        return next.name
    }

    /// The spool folder, made or checked and emptied: a folder (not a link) that holds nothing but
    /// binary log files, owned by the stream's user with mode 0700, below folders the user can pass.
    private func prepareSpool() throws {
        let spool = options.spool
        let parent = (spool as NSString).deletingLastPathComponent
        let parentExisted = access(parent, F_OK) == 0
        try FileSystem.makeFolders(parent, mode: 0o711)
        // A folder made here lets the stream's user pass (kho's umask would make it 0700).
        if !parentExisted && options.streamUser != nil { try Syscall.call("chmod", parent) { chmod(parent, 0o711) } }
        let (made, code) = Syscall.attempt { mkdir(spool, 0o700) }
        if made != 0 && code != EEXIST { throw KhoError.posix("mkdir", spool, errno: code) }
        var info = stat()
        try Syscall.call("lstat", spool) { lstat(spool, &info) }
        guard info.st_mode & S_IFMT == S_IFDIR, info.st_uid == 0 || info.st_uid == (options.streamUser?.uid ?? geteuid()) else {
            throw KhoError(.usage, "\(spool) is not a folder of root's or the stream user's: give --spool-directory a folder kho binlog serve can keep for itself.")
        }
        for name in try FileManager.default.contentsOfDirectory(atPath: spool) {
            guard (try? BinlogFileName(name)) != nil else {
                throw KhoError(.usage, "\(spool) holds \(name.prefix(80).debugDescription), which kho binlog serve did not write: it empties its spool folder at every start, so give --spool-directory a folder of its own.")
            }
            try Syscall.call("unlink", spool + "/" + name) { unlink(spool + "/" + name) }
        }
        if let user = options.streamUser {
            // Every folder above must let the stream's user pass (not read).
            var folder = parent
            while !folder.isEmpty && folder != "/" {
                var above = stat()
                try Syscall.call("stat", folder) { stat(folder, &above) }
                guard above.st_mode & S_IXOTH != 0 || (above.st_uid == user.uid && above.st_mode & S_IXUSR != 0) else {
                    throw KhoError(.usage, "mariadb-binlog runs as \(user.name) and cannot pass \(folder) (mode \(String(above.st_mode & 0o7777, radix: 8))) to reach the spool \(spool): chmod o+x \(folder), or give --spool-directory elsewhere (the default is /var/spool/kho/binlog/<archive>).")
                }
                folder = (folder as NSString).deletingLastPathComponent
            }
            try Syscall.call("chown", spool) { chown(spool, user.uid, user.gid) }
        }
        try Syscall.call("chmod", spool) { chmod(spool, 0o700) }
    }

    /// Stores what the spool holds beyond the repository: files the stream has left whole, the
    /// growing one when its interval is up (or `final`).
    private func pushSpool(final: Bool) throws {
        var files: [BinlogFileName] = []
        for name in try FileManager.default.contentsOfDirectory(atPath: options.spool) {
            // mariadb-binlog writes only the server's file names; anything else is not ours to store.
            if let file = try? BinlogFileName(name) { files.append(file) }
        }
        files.sort()
        for (i, file) in files.enumerated() {
            let path = options.spool + "/" + file.description
            let whole = i < files.count - 1
            let due = final || Date().timeIntervalSince(lastPush[file] ?? .distantPast) >= options.interval
            guard whole || due else { continue }
            let size = try fileSize(path)
            let lastEvent = try pushNew(file, path: path, size: size)
            lastPush[file] = Date()
            if !whole {
                caughtUp = lastPush[file]
                lastError = nil
                writeStatus()
            }
            if whole {
                guard stored[file] ?? 0 == size else {
                    throw KhoError(.integrity, "The spooled \(file) ends inside an event although the server went on to the next file: it was not marked whole; check the disk under \(options.spool).")
                }
                try archive.markEnded(file: file, size: size, lastEvent: lastEvent)
                try Syscall.call("unlink", path) { unlink(path) }
                stored[file] = nil
                lastPush[file] = nil
                if options.verbose { log("binlog serve: \(file) stored whole, \(size) bytes") }
            }
        }
    }

    /// Stores the whole events of `file` beyond what is stored, as pieces of at most 64 MiB.
    /// Returns the time of the last event stored now.
    @discardableResult
    private func pushNew(_ file: BinlogFileName, path: String, size: UInt64) throws -> UInt32? {
        var at = stored[file] ?? 0
        var lastEvent: UInt32?
        if let piece = unverified, piece.file == file, size >= piece.end {
            try verify(piece, path: path)
            unverified = nil
        }
        guard size > at else { return nil }
        let fd = try BinlogArchiver.openSpooled(path)
        defer { close(fd) }
        while size > at {
            let bytes = try BinlogArchiver.read(fd, path: path, at: at, count: Int(min(size - at, UInt64(BinlogObject.largestPiece))))
            if bytes.isEmpty { break }
            let scan = try bytes.withUnsafeBytes { try BinlogEvents.scan($0, atFileStart: at == 0, limit: BinlogObject.largestPiece, file: file.description) }
            if scan.wholeBytes == 0 {
                if bytes.count >= BinlogObject.largestPiece {
                    throw KhoError(.source, "\(file) holds an event larger than \(BinlogObject.largestPiece >> 20) MiB at offset \(at): kho cannot archive it; lower max_allowed_packet on the server or split the statement.")
                }
                break
            }
            let piece = Array(bytes[0..<scan.wholeBytes])
            let outcome = try archive.push(file: file, offset: at, bytes: piece, scan: scan)
            if options.verbose { log("binlog serve: \(file) \(at)+\(piece.count) \(outcome.rawValue)") }
            at += UInt64(piece.count)
            stored[file] = at
            lastEvent = scan.lastTime ?? lastEvent
        }
        return lastEvent
    }

    /// The bytes of the last piece stored before this stream began equal the stream's own: the
    /// server's file is the one archived, not another written under the same name.
    private func verify(_ piece: BinlogPiece, path: String) throws {
        let stored = try archive.load(piece)
        let fd = try BinlogArchiver.openSpooled(path)
        defer { close(fd) }
        let spooled = try BinlogArchiver.read(fd, path: path, at: piece.offset, count: piece.length)
        guard spooled == stored.bytes else {
            throw KhoError(.integrity, "binlog/\(archive.id)/\(piece.storedName) differs from what the server now sends for those bytes of \(piece.file): nothing was replaced; the server's binary log was reset (RESET MASTER) or another server writes files of the same names; archive it under another --source and take a new dump.")
        }
    }

    /// A status file that cannot be written leaves `kho status` without this host's view, which it
    /// says; archiving goes on, and the log names the problem.
    private func writeStatus() {
        guard let path = options.statusFile else { return }
        let status = BinlogArchiverStatus(source: archive.source, archive: archive.id.description, pid: getpid(), interval: options.interval,
                                          updated: Date(), caughtUp: caughtUp, lastError: lastError)
        do { try status.write(to: path) } catch { log("binlog serve: cannot write \(path): \(error)") }
    }

    private func fileSize(_ path: String) throws -> UInt64 {
        var info = stat()
        try Syscall.call("lstat", path) { lstat(path, &info) }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw KhoError(.integrity, "\(path) is not a regular file: something other than mariadb-binlog wrote into the spool; nothing was stored from it.")
        }
        return UInt64(info.st_size)
    }

    /// The spooled file, never through a link: the stream's user can write the spool folder.
    static func openSpooled(_ path: String) throws -> Int32 {
        try Syscall.call("open", path) { open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
    }

    /// `count` bytes at `offset`, fewer at the file's end.
    static func read(_ fd: Int32, path: String, at offset: UInt64, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = try bytes.withUnsafeMutableBytes { buffer in
                try Syscall.call("pread", path) { pread(fd, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done)) }
            }
            if n == 0 { break }
            done += n
        }
        bytes.removeLast(count - done)
        return bytes
    }
}
