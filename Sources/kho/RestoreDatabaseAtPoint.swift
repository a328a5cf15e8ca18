import ArgumentParser
import Foundation
import Glibc
import KhoCore
import KhoSources
import KhoSupport
import KhoVerify

extension Restore {
    /// `kho restore --source NAME --pitr --at T --database D --to-database URL` (docs/design/pitr.md
    /// section 6): the source's cluster recovered to the point in a private scratch cluster, then
    /// database D of it loaded into the target by `DatabaseRestore`, read live in an exported
    /// snapshot (`LiveDumpFiles`) and compared with what that snapshot held. The scratch cluster
    /// is removed afterwards, whatever happened.
    func restoreDatabaseAtPoint() throws {
        let zone = displayZone
        let sourceName = source!, database = self.database!
        let spec = try SourceSpec.database(url: toDatabase!, name: sourceName, passwordFile: passwordFile, passwordEnv: passwordEnv)
        if spec.kind == .mariadb, let endpoint = spec.endpoint {
            try restoreMariaDBDatabaseAtPoint(spec: spec, endpoint: endpoint)
            return
        }
        guard spec.kind == .postgres, let endpoint = spec.endpoint else {
            throw KhoError(.usage, "--pitr restores a PostgreSQL or MariaDB database: give the target as postgres://USER@HOST:PORT/DB or mariadb://USER@HOST:PORT/DB.")
        }
        let target = try recoveryTarget()
        let timeout = try pointInTime.recoveryTimeout.map { try DurationText.parse($0, option: "--recovery-timeout") } ?? 7200
        let options = try databaseRestoreOptions()
        let place = "postgres://\(endpoint.user)@\(endpoint.host):\(endpoint.port)/\(endpoint.database)"

        try repository.withRepository(exclusive: false, command: "restore") { repo in
            let began = Date()
            // A gap before the target refuses here (exit 12), before anything is restored anywhere.
            let plan = try PointInTimePlan.make(repository: repo, source: sourceName, target: target, baseBackup: pointInTime.baseBackup)
            var lines = ["Plan: restore database \(database) of cluster \(plan.cluster) (source \(sourceName), PostgreSQL \(plan.manifest.serverVersion)) as it was at \(describeTarget(target, zone)) into \(place)",
                         "  base backup \(plan.base.shortID), taken \(Format.namedTime(plan.base.time, zone)), \(Format.bytes(plan.manifest.bytes)), WAL from \(plan.manifest.startSegment)",
                         "  archived WAL continuous from it to \(plan.continuity.reached?.description ?? "-")" + (plan.newest.map { ", newest \($0.name) stored \(Format.namedTime($0.stored, zone))" } ?? ""),
                         "  first recovered in a private scratch cluster (no TCP port, kho's configuration, archive_mode off), removed afterwards;",
                         "  then the database's load plan is shown and, on a terminal, confirmed before anything is written to the target"]
            lines += plan.warnings.map { "  warning: \($0)" }
            if !json { Terminal.write(STDERR_FILENO, lines.joined(separator: "\n") + "\n") }

            let progress = ProgressCounter()
            let recovery: ScratchRecovery
            do {
                let line = ProgressLine(progress: progress, label: "recover", enabled: !json)
                defer { line.finish() }
                recovery = try ScratchRecovery(repository: repo, plan: plan, began: began, timeout: timeout, progress: progress)
            }
            let scratch = recovery.scratch
            defer { scratch.tearDown() }
            let reached = recovery.recovered.reached
            let live = try LiveDumpFiles(endpoint: scratch.endpoint(database: database), database: database, sourceName: sourceName)
            // try?: ending the read-only transaction of a scratch cluster that is removed next
            // changes nothing; the normal path ends it with `finish()` below and reports a failure.
            defer { try? live.finish() }
            let restore = try spec.restore(options: options, dumpFile: live.dumpFile, recorded: live.recorded, files: live)
            let loadPlan = try restore.plan()
            var header = ["Plan: load database \(database) as recovered into \(place)"]
            if let stopped = reached.stoppedAt { header.append("  recovery reached: \(stopped)") }
            if let commit = reached.lastCommit { header.append("  last replayed commit: \(commit)") }
            if !loadPlan.refusals.isEmpty {
                if !json { Terminal.write(STDERR_FILENO, (header + loadPlan.lines).joined(separator: "\n") + "\n") }
                throw loadPlan.refusal
            }
            try confirm((header + loadPlan.lines).joined(separator: "\n"))

            let loadProgress = ProgressCounter()
            let result: DatabaseRestoreResult
            do {
                let line = ProgressLine(progress: loadProgress, label: "load", enabled: !json)
                defer { line.finish() }
                result = try restore.run(loadPlan) { loadProgress.add(bytes: $0) }
            }
            try live.finish()
            let summary = PointInTimeDatabaseResult(
                cluster: plan.cluster.description, baseBackup: plan.base.id ?? "", target: target.description, database: database,
                toDatabase: result.database, reached: reached, walFilesServed: recovery.recovered.served.served,
                walBytesServed: recovery.recovered.served.bytes, filesSeconds: recovery.filesSeconds, recoverySeconds: recovery.recoverySeconds,
                rtoSeconds: Date().timeIntervalSince(began), equal: result.equal, restore: result)
            if json {
                try Terminal.json(summary)
            } else {
                Terminal.out("recovered base backup \(plan.base.shortID) in a scratch cluster: files in \(Format.duration(recovery.filesSeconds)), \(summary.walFilesServed) WAL files (\(Format.bytes(summary.walBytesServed))) replayed in \(Format.duration(recovery.recoverySeconds))")
                if let stopped = reached.stoppedAt { Terminal.out("reached: \(stopped)") }
                if let commit = reached.lastCommit { Terminal.out("last replayed commit: \(commit)") }
                Terminal.out("loaded \(Format.bytes(result.bytesLoaded)) of \(database) into \(result.database) in \(Format.duration(result.seconds))")
                if let kept = result.replacedDatabaseKeptAs {
                    Terminal.out("the database it replaced is kept as \(kept); drop it once you no longer need it")
                }
                for note in result.notes { Terminal.out("note: \(note)") }
                if let comparison = result.comparison { Restore.printComparison(comparison, expected: "in the recovered cluster") }
                if let schema = result.schema { Restore.printSchema(schema) }
                Terminal.out("RTO (first repository read to the database loaded and compared): \(Format.duration(summary.rtoSeconds))")
            }
            try finish(result.equal ? .success : .damaged)
        }
    }
}

/// `kho restore --pitr --json`: what was recovered, where it stopped, and the database restore.
struct PointInTimeDatabaseResult: Encodable {
    var cluster: String
    var baseBackup: String
    var target: String
    /// The database in the recovered cluster, and its name on the target.
    var database: String
    var toDatabase: String
    var reached: RecoveryReached
    var walFilesServed: Int
    var walBytesServed: Int64
    var filesSeconds: Double
    var recoverySeconds: Double
    var rtoSeconds: Double
    /// Tables, rows, checksums and schema equal to the recovered cluster's.
    var equal: Bool
    var restore: DatabaseRestoreResult
}
