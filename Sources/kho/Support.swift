import ArgumentParser
import Foundation
import Glibc
import KhoCore
import KhoSupport
import KhoStorage
import KhoSources
import KhoVerify
import KhoPolicy

/// A command's result that is not success; thrown to leave with that exit code.
struct ExitStatus: Error {
    var code: KhoExitCode
    init(_ code: KhoExitCode) { self.code = code }
    init(verdict: Verdict) { self.code = KhoExitCode(verdict) }
}

/// Ends a command with its verdict: nothing for success, else the verdict's exit code.
func finish(_ verdict: Verdict) throws {
    if verdict != .success { throw ExitStatus(verdict: verdict) }
}

/// What each library result says of how its command came out, in one place.
extension Verdict {
    init(_ snapshot: Snapshot) { self = snapshot.partial ? .partial : .success }
    init(_ report: CheckReport) { self = report.ok ? .success : .damaged }
    init(_ summary: RestoreSummary) { self = summary.errors > 0 ? .damaged : .success }
    /// A restored database or file against its snapshot's manifest; no manifest, nothing to differ.
    init(_ comparison: ManifestComparison?) { self = comparison.map { $0.equal ? .success : .damaged } ?? .success }
}

enum Terminal {
    static let isInteractive = isatty(STDERR_FILENO) != 0

    /// Writes without Foundation's FileHandle, which traps on a closed pipe (`kho ls | head`).
    /// When standard output's reader is gone there is nobody left to tell: leave quietly.
    static func write(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EPIPE && fd == STDOUT_FILENO { exit(0) }
                return
            }
            done += n
        }
        bytes.removeAll()
    }

    static func error(_ message: String) {
        write(STDERR_FILENO, "kho: \(message)\n")
    }

    static func warning(_ message: String) {
        write(STDERR_FILENO, "warning: \(message)\n")
    }

    static func out(_ text: String) {
        write(STDOUT_FILENO, text + "\n")
    }

    static func json<T: Encodable>(_ value: T) throws {
        let data = try JSON.prettyEncoder.encode(value)
        write(STDOUT_FILENO, String(decoding: data, as: UTF8.self) + "\n")
    }
}

enum Format {
    static func bytes(_ count: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while abs(value) >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: "%.2f %@", value, units[unit])
    }

    static func duration(_ seconds: Double) -> String {
        if seconds < 60 { return String(format: "%.2f s", seconds) }
        let total = Int(seconds.rounded())
        if total < 3600 { return String(format: "%d min %02d s", total / 60, total % 60) }
        return String(format: "%d h %02d min", total / 3600, (total % 3600) / 60)
    }

    /// `2026-11-28 23:00:00 +07`: the time in `zone` (see `TimeZoneOption`), to the second, with its
    /// UTC offset.
    static func time(_ date: Date, _ zone: TimeZone) -> String {
        ZonedTime.format(date, in: zone)
    }

    /// As `time`, with the zone's name: `2026-11-28 23:00:00 +07 (Asia/Ho_Chi_Minh)`.
    static func namedTime(_ date: Date, _ zone: TimeZone) -> String {
        ZonedTime.formatNamed(date, in: zone)
    }
}

/// `--time-zone ZONE` of the commands that print or read times. The zone itself is chosen by
/// `DisplayZone.resolve`: this option, else KHO_TIME_ZONE, else the policies' time-zone (commands
/// that work on policies), else Asia/Ho_Chi_Minh. A zone that does not exist is a usage error.
struct TimeZoneOption: ParsableArguments {
    @Option(name: .customLong("time-zone"),
            help: "Show and read times in this zone, e.g. Asia/Ho_Chi_Minh or UTC. Default: $KHO_TIME_ZONE, else the policy's time-zone where a policy is in play, else Asia/Ho_Chi_Minh.")
    var timeZone: String?

    func validate() throws {
        do {
            _ = try DisplayZone.resolve(option: timeZone)
        } catch let error as KhoError {
            throw ValidationError(error.message)
        }
    }

    /// The zone to use; `policies` are those the command works on.
    func zone(policies: [Policy] = []) throws -> TimeZone {
        try DisplayZone.resolve(option: timeZone, policyZones: policies.map(\.timeZone))
    }
}

/// Where the repository is and how to open it: `--repo` or KHO_REPOSITORY, and the password from
/// KHO_PASSWORD_FILE, KHO_PASSWORD_COMMAND or KHO_PASSWORD (never a flag: flags show in `ps`).
struct RepositoryOptions: ParsableArguments {
    @Option(name: .long, help: "The repository: a folder, or s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]. Default: $KHO_REPOSITORY.")
    var repo: String?

    @Option(name: .customLong("lock-wait"), help: "How long to wait for a conflicting lock, e.g. 30s, 5m (default 0).")
    var lockWait: String?

    func location() throws -> String {
        try RepositoryOptions.location(repo, missing: "No repository given: pass --repo PATH or set KHO_REPOSITORY.")
    }

    /// The address given by a flag, else KHO_REPOSITORY; `missing` is the usage error's text.
    static func location(_ given: String?, missing: String) throws -> String {
        if let given, !given.isEmpty { return given }
        if let env = ProcessInfo.processInfo.environment["KHO_REPOSITORY"], !env.isEmpty { return env }
        throw KhoError(.usage, missing)
    }

    /// A folder, or `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]` (credentials and settings from the
    /// environment; the server is asked once that it answers and the bucket exists).
    func storage() throws -> any Storage {
        try StorageFactory.make(location: try location())
    }

    func lockWaitSeconds() throws -> TimeInterval {
        guard let lockWait else { return 0 }
        return try DurationText.parse(lockWait, option: "--lock-wait")
    }

    func open() throws -> Repository {
        try openWithPassword().repository
    }

    /// The repository and the password that opened it (for `upgrade`, which binds the config with it).
    func openWithPassword() throws -> (repository: Repository, password: [UInt8]) {
        let storage = try storage()
        let config = try Repository.readConfig(storage: storage)
        let password = try Password.read(purpose: "repository password")
        let repository = try Repository.open(storage: storage, password: password, config: config)
        // A privileged command's audit ledger entry is keyed and anchored with it.
        OpenedRepositories.remember(repository)
        return (repository, password)
    }

    /// Opens the repository and takes a lock for the duration of `body`.
    func withRepository<R>(exclusive: Bool, command: String, _ body: (Repository) throws -> R) throws -> R {
        let repository = try open()
        let lock = try Signals.lock(repository.storage, exclusive: exclusive, command: command, wait: try lockWaitSeconds())
        defer { Signals.unlock(lock) }
        return try body(repository)
    }
}

/// Checks of flags several commands share.
enum Flags {
    /// `--connections` (backup, copy, rekey): uploads in flight, within what a storage client pools.
    static func checkConnections(_ connections: Int?) throws {
        if let connections, !(1...64).contains(connections) {
            throw ValidationError("--connections must be 1 to 64; got \(connections).")
        }
    }
}

enum DurationText {
    /// Parses a duration option (`90s`, `15m`, `2h`, `7d`, `1h30m` or plain seconds).
    static func parse(_ text: String, option: String) throws -> TimeInterval {
        guard let seconds = DurationFormat.parse(text) else {
            throw KhoError(.usage, "\(option) \(text) is not a duration: use e.g. 30s, 15m, 2h or 7d.")
        }
        return seconds
    }
}

enum Password {
    /// The password from the environment (`PasswordSource`'s order), or asked on a terminal.
    static func read(purpose: String, prefix: String = "KHO_PASSWORD", confirm: Bool = false) throws -> [UInt8] {
        if let password = try PasswordSource.read(prefix: prefix) { return password }
        if isatty(STDIN_FILENO) != 0 {
            let first = prompt("Enter \(purpose): ")
            if confirm {
                guard prompt("Enter it again: ") == first else {
                    throw KhoError(.usage, "The two passwords differ: run the command again.")
                }
            }
            return first
        }
        throw PasswordSource.missing(purpose: purpose, prefix: prefix)
    }

    private static func prompt(_ text: String) -> [UInt8] {
        guard let raw = getpass(text) else { return [] }
        return Array(String(cString: raw).utf8)
    }
}

/// The other repository of `copy`, `rekey` and `init --copy-chunker-params-from`: its address is
/// given on the command line, its password by KHO_FROM_PASSWORD_FILE, _COMMAND or KHO_FROM_PASSWORD.
struct OtherRepository {
    let location: String
    let storage: any Storage
    let config: RepositoryConfig

    /// Reads the config first: a place that is no repository says so before a password is asked for.
    init(_ location: String) throws {
        self.location = location
        storage = try StorageFactory.make(location: location)
        config = try Repository.readConfig(storage: storage)
    }

    func open() throws -> Repository {
        try Repository.open(storage: storage, password: try Password.read(purpose: "password of \(location)", prefix: "KHO_FROM_PASSWORD"),
                            config: config)
    }
}

/// On SIGINT or SIGTERM, release the locks this process holds and leave with 130/143, so that an
/// operator's Ctrl-C never leaves a repository locked.
enum Signals {
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []
    private static let locks = Locked<[ObjectIdentifier: RepositoryLock]>([:])

    static func install() {
        // A database client that stops reading must give a write error, not kill kho.
        signal(SIGPIPE, SIG_IGN)
        for signo in [SIGINT, SIGTERM] {
            signal(signo, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signo, queue: .global())
            source.setEventHandler {
                if let graceful = gracefulHandler {
                    graceful()
                    return
                }
                ScratchRegistry.tearDownAll()
                for folder in temporaryFolders.current { MariaDBPointInTimePlan.remove(folder) }
                for lock in locks.current.values { lock.release() }
                // try?: a lock still being written may not exist yet; one left behind is stale and `kho unlock` removes it.
                for (storage, name) in pendingLocks.current { try? storage.remove(Handle(.lock, name)) }
                if Terminal.isInteractive { Terminal.write(STDERR_FILENO, "\n") }
                Terminal.error("interrupted; nothing was committed after the last complete step.")
                _exit(128 + signo)
            }
            source.resume()
            sources.append(source)
        }
    }

    nonisolated(unsafe) private static var gracefulHandler: (@Sendable () -> Void)?
    /// Folders of fetched binary logs a restore removes when it ends, and the handler on an interruption.
    static let temporaryFolders = Locked<Set<String>>([])

    /// For the daemon: a signal asks running jobs to stop after their current step instead of
    /// exiting at once.
    static func graceful(_ handler: @escaping @Sendable () -> Void) {
        gracefulHandler = handler
    }

    private static let pendingLocks = Locked<[(storage: any Storage, name: String)]>([])

    static func pending(storage: any Storage, name: String) {
        pendingLocks.withLock { $0.append((storage, name)) }
    }

    static func held(_ lock: RepositoryLock) {
        locks.withLock { $0[ObjectIdentifier(lock)] = lock }
    }

    static func released(_ lock: RepositoryLock) {
        locks.withLock { $0[ObjectIdentifier(lock)] = nil }
    }

    /// Takes a lock that Ctrl-C or SIGTERM removes at any moment: its name is known to the
    /// handler before the file exists. Give it back with `unlock`.
    static func lock(_ storage: any Storage, exclusive: Bool, command: String, wait: TimeInterval) throws -> RepositoryLock {
        let name = try RepositoryLock.newName()
        pending(storage: storage, name: name)
        let lock = try RepositoryLock.acquire(storage: storage, exclusive: exclusive, command: command, wait: wait, name: name)
        held(lock)
        return lock
    }

    static func unlock(_ lock: RepositoryLock) {
        lock.release()
        released(lock)
    }
}

/// Prints a progress line on a terminal, twice a second, and never anywhere else.
final class ProgressLine: @unchecked Sendable {
    private let progress: ProgressCounter
    private let label: String
    private let stop = DispatchSemaphore(value: 0)
    private var worker: Worker?

    init(progress: ProgressCounter, label: String, enabled: Bool) {
        self.progress = progress
        self.label = label
        guard enabled, Terminal.isInteractive else { return }
        worker = Worker(name: "kho-progress") { [self] in
            while stop.wait(timeout: .now() + 0.5) == .timedOut {
                Terminal.write(STDERR_FILENO, "\r\u{1b}[K" + line())
            }
            Terminal.write(STDERR_FILENO, "\r\u{1b}[K")
        }
    }

    private func line() -> String {
        let counts = progress.snapshot
        let elapsed = max(0.001, Date().timeIntervalSince(progress.start))
        let rate = Double(counts.bytes) / elapsed
        var text = "\(label) \(counts.files) files, \(Format.bytes(counts.bytes))"
        if let total = counts.totalBytes, total > 0 {
            let share = min(100, Double(counts.bytes) * 100 / Double(total))
            text += String(format: " of %@ (%.0f%%)", Format.bytes(total), share)
            if rate > 0 {
                text += ", ETA " + Format.duration(max(0, Double(total - counts.bytes) / rate))
            }
        }
        text += ", \(Format.bytes(Int64(rate)))/s, \(Format.duration(elapsed))"
        return text
    }

    func finish() {
        guard let worker else { return }
        stop.signal()
        worker.join()
        self.worker = nil
    }
}

