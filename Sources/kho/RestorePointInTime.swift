import ArgumentParser
import Foundation
import Glibc
import KhoCore
import KhoSources
import KhoSupport

/// The options of `kho restore --to-data-directory`: where recovery stops and what happens after.
struct PointInTimeOptions: ParsableArguments {
    @Option(name: .customLong("restore-point"), help: "With --to-data-directory or --pitr: recover to this restore point (kho's markers beside dumps, or one made with pg_create_restore_point and --base-backup).")
    var restorePoint: String?

    @Option(help: "With --to-data-directory or --pitr: recover up to this WAL position, e.g. 3/5A0012F8.")
    var lsn: String?

    @Flag(help: "With --to-data-directory or --pitr: recover everything archived.")
    var latest = false

    @Option(name: .customLong("base-backup"), help: "With --to-data-directory or --pitr: start from this base backup (ID or prefix) instead of the newest before the target.")
    var baseBackup: String?

    @Flag(help: "With --to-data-directory: start the recovered cluster, serve it the WAL, and wait until it has reached the target and been promoted.")
    var start = false

    @Option(help: "With --start: the port the recovered cluster listens on (default: the one in its configuration).")
    var port: Int?

    @Option(help: "With --to-data-directory: the user who owns the data directory and runs the server (default postgres).")
    var owner: String?

    @Flag(name: .customLong("keep-archiving"), help: "With --to-data-directory: keep archive_mode as the backup had it (by default it is turned off: a copy must not write into its original's archive).")
    var keepArchiving = false

    @Option(name: .customLong("recovery-timeout"), help: "With --start or --pitr: how long to wait for recovery, e.g. 30m (default 2h).")
    var recoveryTimeout: String?

    @Flag(help: "With --to-database, --database and --source: recover the source's cluster to the point (--at, --restore-point, --lsn or --latest) in a private scratch cluster, and load that database as it was then into the target under its name there.")
    var pitr = false

    var given: Bool {
        restorePoint != nil || lsn != nil || latest || baseBackup != nil || start || port != nil || owner != nil || keepArchiving || recoveryTimeout != nil
    }

    func refuseWithoutDataDirectory() throws {
        if given {
            throw ValidationError("--restore-point, --lsn, --latest, --base-backup and --recovery-timeout go with --to-data-directory or --pitr; --start, --port, --owner and --keep-archiving with --to-data-directory.")
        }
    }

    /// `--pitr`: one database of the cluster recovered to a point, loaded into --to-database.
    func validateDatabase(source: String?, at: String?, snapshot: String?, database: String?) throws {
        guard source != nil, snapshot == nil else {
            throw ValidationError("--pitr recovers a source's cluster: give --source NAME (the name its WAL is archived under), not a snapshot.")
        }
        guard database != nil else {
            throw ValidationError("--pitr needs --database NAME: the database of the recovered cluster to load into --to-database.")
        }
        if start || port != nil || owner != nil || keepArchiving {
            throw ValidationError("--start, --port, --owner and --keep-archiving go with --to-data-directory: --pitr recovers into a private scratch cluster it removes afterwards.")
        }
        let targets = [at != nil, restorePoint != nil, lsn != nil, latest].filter { $0 }.count
        guard targets == 1 else {
            throw ValidationError("Give exactly one recovery target: --at TIME, --restore-point NAME, --lsn X/X or --latest.")
        }
    }

    func validate(source: String?, at: String?, snapshot: String?) throws {
        guard source != nil, snapshot == nil else {
            throw ValidationError("--to-data-directory restores a source's cluster: give --source NAME (the name its WAL is archived under), not a snapshot.")
        }
        let targets = [at != nil, restorePoint != nil, lsn != nil, latest].filter { $0 }.count
        guard targets == 1 else {
            throw ValidationError("Give exactly one recovery target: --at TIME, --restore-point NAME, --lsn X/X or --latest.")
        }
        if port != nil && !start { throw ValidationError("--port goes with --start.") }
        if let port, !(1...65535).contains(port) { throw ValidationError("--port must be 1 to 65535; got \(port).") }
    }
}

extension Restore {
    /// `kho restore --source NAME --to-data-directory DIR` (docs/design/pitr.md section 6).
    func restorePointInTime(into directory: String) throws {
        let zone = displayZone
        let target = try recoveryTarget()
        let timeout = try pointInTime.recoveryTimeout.map { try DurationText.parse($0, option: "--recovery-timeout") } ?? 7200
        let ownerName = pointInTime.owner ?? "postgres"
        guard let account = getpwnam(ownerName) else {
            throw KhoError(.usage, "There is no user \(ownerName) on this machine: give the user PostgreSQL runs as with --owner.")
        }
        let owner = (uid: account.pointee.pw_uid, gid: account.pointee.pw_gid)
        let directory = URL(fileURLWithPath: directory).standardizedFileURL.path
        try DataDirectoryTarget.check(directory)

        try repository.withRepository(exclusive: false, command: "restore") { repo in
            let began = Date()
            let plan = try PointInTimePlan.make(repository: repo, source: source!, target: target, baseBackup: pointInTime.baseBackup)
            var lines = ["Plan: restore cluster \(plan.cluster) (source \(source!), PostgreSQL \(plan.manifest.serverVersion)) to \(describeTarget(target, zone)) into the new data directory \(directory)",
                         "  base backup \(plan.base.shortID), taken \(Format.namedTime(plan.base.time, zone)), \(Format.bytes(plan.manifest.bytes)), WAL from \(plan.manifest.startSegment)",
                         "  archived WAL continuous from it to \(plan.continuity.reached?.description ?? "-")" + (plan.newest.map { ", newest \($0.name) stored \(Format.namedTime($0.stored, zone))" } ?? ""),
                         "  owner \(ownerName); archive_mode " + (pointInTime.keepArchiving ? "kept" : "off"),
                         pointInTime.start ? "  then start it\(pointInTime.port.map { " on port \($0)" } ?? ""), serve it the WAL and wait until it is promoted" : "  then leave it to be started (recovery.signal and restore_command written)"]
            lines += plan.warnings.map { "  warning: \($0)" }
            try confirm(lines.joined(separator: "\n"))

            // Files: restored beside the target and moved into place whole, so that a failed
            // restore leaves no half data directory under the target's name.
            let parent = (directory as NSString).deletingLastPathComponent
            let staging = parent + "/.kho-restore-\(UInt64.random(in: 0...UInt64.max))"
            try Syscall.call("mkdir", staging) { mkdir(staging, 0o700) }
            defer { _ = try? FileManager.default.removeItem(atPath: staging) }
            let progress = ProgressCounter()
            let line = ProgressLine(progress: progress, label: "restore", enabled: !json)
            let summary: RestoreSummary
            do {
                defer { line.finish() }
                summary = try PointInTimeRestore.restoreFiles(repository: repo, plan: plan, into: staging, owner: owner, progress: progress) { Terminal.warning($0) }
            }
            try DataDirectoryTarget.place(staging + "/data", at: directory, owner: owner)
            let filesDone = Date()

            var reached: RecoveryReached?
            var served: WALFetchServer.Statistics?
            if pointInTime.start {
                for setting in PostgresRecovery(dataDirectory: directory).codeLoadingSettings() {
                    Terminal.warning("the restored configuration loads code by path when the server starts (\(setting)): check that it is your production's own library before trusting the copy")
                }
                let state = try DataDirectoryTarget.stateFolder(owner: owner)
                defer { _ = try? FileManager.default.removeItem(atPath: state) }
                let recovered = try PointInTimeRestore.recover(repository: repo, plan: plan, dataDirectory: directory, socketFolder: state, owner: owner,
                                                               port: pointInTime.port, keepArchiving: pointInTime.keepArchiving, timeout: timeout,
                                                               logFile: directory + "/kho-recovery.log")
                reached = recovered.reached
                served = recovered.served
            } else {
                let location = try repository.location()
                try PostgresRecovery(dataDirectory: directory).configure(
                    restoreCommand: "\(shellQuote(try KhoExecutable.path())) wal fetch --repo \(shellQuote(location)) --source \(shellQuote(source!)) --cluster \(plan.cluster) %f \"%p\"",
                    target: target, promote: false, port: nil, keepArchiving: pointInTime.keepArchiving, label: plan.base.shortID)
            }
            let ended = Date()
            let result = PointInTimeResult(
                dataDirectory: directory, cluster: plan.cluster.description, baseBackup: plan.base.id ?? "", target: target.description,
                started: pointInTime.start, reached: reached, walFilesServed: served?.served, walFilesReadAhead: served?.fromReadAhead,
                walBytesServed: served?.bytes,
                filesSeconds: filesDone.timeIntervalSince(began), recoverySeconds: pointInTime.start ? ended.timeIntervalSince(filesDone) : nil,
                rtoSeconds: pointInTime.start ? ended.timeIntervalSince(began) : nil, bytes: summary.bytes)
            if json {
                try Terminal.json(result)
            } else {
                Terminal.out("restored base backup \(plan.base.shortID): \(summary.files) files, \(Format.bytes(summary.bytes)) in \(Format.duration(result.filesSeconds))")
                if let reached {
                    Terminal.out("recovered and promoted in \(Format.duration(result.recoverySeconds ?? 0)): \(served?.served ?? 0) WAL files (\(Format.bytes(served?.bytes ?? 0))) replayed")
                    if let stopped = reached.stoppedAt { Terminal.out("reached: \(stopped)") }
                    if let commit = reached.lastCommit { Terminal.out("last replayed commit: \(commit)") }
                    if let timeline = reached.timeline { Terminal.out("the cluster continues on timeline \(timeline)") }
                    Terminal.out("RTO (first repository read to promotion): \(Format.duration(result.rtoSeconds ?? 0))")
                } else {
                    Terminal.out("\(directory) is ready to recover: start it as \(ownerName) (pg_ctl -D \(directory) start) with KHO_PASSWORD_FILE in the server's environment naming a password file \(ownerName) can read, or run the restore again with --start, which serves the WAL from this process")
                }
            }
        }
    }

    /// Where recovery stops: --at, --restore-point, --lsn or --latest (validate() allows one).
    func recoveryTarget() throws -> RecoveryTarget {
        if let at { return .time(try LocalTime.parse(at, option: "--at", zone: displayZone)) }
        if let name = pointInTime.restorePoint { return try RecoveryTarget.restorePoint(checking: name) }
        if let lsn = pointInTime.lsn { return .lsn(try LSN(parsing: lsn)) }
        return .latest
    }

    func describeTarget(_ target: RecoveryTarget, _ zone: TimeZone) -> String {
        if case .time(let date) = target { return "time \(Format.namedTime(date, zone))" }
        return target.description
    }
}

struct PointInTimeResult: Encodable {
    var dataDirectory: String
    var cluster: String
    var baseBackup: String
    var target: String
    var started: Bool
    var reached: RecoveryReached?
    var walFilesServed: Int?
    /// Of those, how many were ready when asked (read ahead while replay went on).
    var walFilesReadAhead: Int?
    var walBytesServed: Int64?
    var filesSeconds: Double
    var recoverySeconds: Double?
    var rtoSeconds: Double?
    var bytes: Int64
}

