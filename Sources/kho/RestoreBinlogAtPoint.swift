import ArgumentParser
import Foundation
import Glibc
import KhoCore
import KhoSources
import KhoSupport

extension Restore {
    /// `kho restore --source NAME --pitr --at T --database D --to-database mariadb://…/NEW`
    /// (docs/design/pitr.md section 9): the newest dump of D whose binary log position precedes T,
    /// loaded by `DatabaseRestore` as a dump restore is, then the archived binary log replayed from
    /// that position up to T. A gap refuses (exit 12) before anything is written.
    func restoreMariaDBDatabaseAtPoint(spec: SourceSpec, endpoint: DatabaseEndpoint) throws {
        let zone = displayZone
        let sourceName = source!, database = self.database!
        let target: Date?
        switch try recoveryTarget() {
        case .time(let date): target = date
        case .latest: target = nil
        default:
            throw KhoError(.usage, "A MariaDB source is restored to a point with --at TIME or --latest: restore points and LSNs are PostgreSQL's.")
        }
        if pointInTime.baseBackup != nil || pointInTime.recoveryTimeout != nil {
            throw KhoError(.usage, "--base-backup and --recovery-timeout are for PostgreSQL; a MariaDB source starts from its newest dump before --at.")
        }
        let options = try databaseRestoreOptions()
        let place = "mariadb://\(endpoint.user)@\(endpoint.host):\(endpoint.port)/\(endpoint.database)"

        try repository.withRepository(exclusive: false, command: "restore") { repo in
            let began = Date()
            let plan = try MariaDBPointInTimePlan.make(repository: repo, source: sourceName, database: database, target: target)
            let when = target.map { "time \(Format.namedTime($0, zone))" } ?? "the newest archived event"
            var lines = ["Plan: restore database \(database) of source \(sourceName) as it was at \(when) into \(place)",
                         "  dump: snapshot \(plan.snapshot.shortID), taken \(Format.namedTime(plan.snapshot.time, zone)), binary log position \(plan.position.file):\(plan.position.position) (GTID \(plan.position.gtid))",
                         "  then the archived binary log (server_id \(plan.record.serverId)) from that position: \(plan.chain.files.first.map(\.name.description) ?? "-") … \(plan.chain.files.last.map(\.name.description) ?? "-")"]
            if let gap = plan.chain.gap { lines.append("  the archive has a gap after it: \(gap)") }
            let index = try repo.loadIndex()
            let files = try SnapshotFiles(repository: repo, index: index, snapshot: plan.snapshot)
            var fetchFolder: String?
            try plan.withFetched(made: { folder in
                if let folder { Signals.temporaryFolders.withLock { _ = $0.insert(folder) } }
                else if let known = fetchFolder { Signals.temporaryFolders.withLock { _ = $0.remove(known) } }
                fetchFolder = folder
            }) { fetched in
                if target != nil && !fetched.reachesTarget {
                    lines.append("  warning: the archive's newest event after the dump is at \(fetched.lastApplied.map { Format.namedTime($0, zone) } ?? "-"), before the time asked for: the database is restored as of then (a server that wrote nothing since is restored exactly)")
                }
                try plan.checkStatements(fetched, newName: endpoint.database)
                let restore = try spec.restore(options: options, dumpFile: plan.dumpFile, recorded: plan.recorded, files: files)
                let loadPlan = try restore.plan()
                let replay = "  then replay \(fetched.files.count) binary log files (\(Format.bytes(fetched.bytes)) fetched) for \(database) into the loaded database; last event applied: \(fetched.lastApplied.map { Format.namedTime($0, zone) } ?? "none after the dump")"
                if !loadPlan.refusals.isEmpty {
                    if !json { Terminal.write(STDERR_FILENO, (lines + loadPlan.lines).joined(separator: "\n") + "\n") }
                    throw loadPlan.refusal
                }
                try confirm((lines + loadPlan.lines + [replay]).joined(separator: "\n"))

                let progress = ProgressCounter()
                let result: DatabaseRestoreResult
                do {
                    let line = ProgressLine(progress: progress, label: "load", enabled: !json)
                    defer { line.finish() }
                    result = try restore.run(loadPlan) { progress.add(bytes: $0) }
                }
                let replayStarted = Date()
                let replayed = try plan.replay(fetched, into: endpoint.with(database: result.database))
                let summary = BinlogPointInTimeResult(
                    source: sourceName, database: database, toDatabase: result.database, target: target.map(Timestamp.format),
                    dump: plan.snapshot.id ?? "", dumpTaken: Timestamp.format(plan.snapshot.time), position: plan.position,
                    binlogFiles: fetched.files, binlogBytesFetched: fetched.bytes, replayBytes: replayed,
                    lastEventApplied: fetched.lastApplied.map(Timestamp.format), reachesTarget: fetched.reachesTarget,
                    replaySeconds: Date().timeIntervalSince(replayStarted), rtoSeconds: Date().timeIntervalSince(began), dumpEqual: result.equal, restore: result)
                if json {
                    try Terminal.json(summary)
                } else {
                    Terminal.out("loaded dump \(plan.snapshot.shortID) of \(database) into \(result.database) in \(Format.duration(result.seconds))")
                    if let comparison = result.comparison { Restore.printComparison(comparison) }
                    if let schema = result.schema { Restore.printSchema(schema) }
                    for note in result.notes { Terminal.out("note: \(note)") }
                    Terminal.out("replayed \(fetched.files.joined(separator: ", ")) from \(plan.position.file):\(plan.position.position) (\(Format.bytes(replayed)) of statements) in \(Format.duration(summary.replaySeconds))")
                    Terminal.out("last event applied: \(fetched.lastApplied.map { Format.namedTime($0, zone) } ?? "none after the dump")")
                    Terminal.out("RTO (first repository read to the database loaded and replayed): \(Format.duration(summary.rtoSeconds))")
                }
                try finish(result.equal ? .success : .damaged)
            }
        }
    }
}

/// `kho restore --pitr --json` for a MariaDB source.
struct BinlogPointInTimeResult: Encodable {
    var source: String
    var database: String
    var toDatabase: String
    /// Nil for --latest.
    var target: String?
    var dump: String
    var dumpTaken: String
    var position: DumpManifest.BinlogPosition
    var binlogFiles: [String]
    var binlogBytesFetched: Int64
    var replayBytes: Int64
    var lastEventApplied: String?
    var reachesTarget: Bool
    var replaySeconds: Double
    var rtoSeconds: Double
    /// The dump loaded equal to its manifest (before the replay).
    var dumpEqual: Bool
    var restore: DatabaseRestoreResult
}
