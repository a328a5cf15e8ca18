import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoSources
import KhoStorage

extension PolicyRunner {
    /// Forgets this source's snapshots in `repository` (the policy's own, or a copy destination
    /// at `location`) that `rules` no longer keep, and prunes when `prune` asks and something was
    /// forgotten. Recorded as a retention run whose repository is `location`.
    func applyRetention(_ job: Job, rules: RetentionPolicy, prune: Bool, on repository: Repository, at location: String) -> String? {
        guard !rules.isEmpty else { return nil }
        let started = Clock.now
        let onDestination = location != job.policy.repository.path
        let label = "\(job.policy.name)/\(job.source.name): retention" + (onDestination ? " on \(location)" : "")
        var record = RunRecord(kind: .retention, policy: job.policy.name, source: job.source.name, repository: location,
                               planned: nil, started: started)
        do {
            record = try catalog.insert(record)
            let lock = try RepositoryLock.acquire(storage: repository.storage, exclusive: true, command: "run retention \(job.policy.name)/\(job.source.name)",
                                                  wait: options.lockWait)
            defer { lock.release() }
            let host = Host.name
            let decisions = RetentionGroups.group(of: job.source.name, host: host, family: job.source.kind.retentionFamily, in: try repository.listSnapshots()).decisions(rules)
            let remove = decisions.filter { !$0.keep }.map(\.snapshotID)
            let retained = try repository.removeSnapshots(remove)
            var text = "kept \(decisions.count - remove.count), removed \(remove.count - retained.count)"
            if let last = retained.map(\.until).max() {
                text += ", \(retained.count) left under object lock until \(ObjectLockFormat.text(last))"
            }
            // After forget and before prune: WAL only goes below what a remaining base backup
            // starts from, so a crash here leaves extra WAL, never a hole (docs/design/pitr.md
            // section 7). Any source's retention may have forgotten a base backup of its cluster.
            var walRemoved = 0
            if job.source.kind == .postgresBase {
                let wal = try WALRetention.removeUnneeded(repository: repository, starts: try WALBaseBackup.startsForRemoval(in: repository),
                                                          dryRun: false)
                walRemoved = wal.files
                if wal.files > 0 { text += ", removed \(wal.files) archived WAL files (\(wal.bytes) bytes) no kept base backup needs" }
            }
            // Likewise the binary log before the oldest remaining dump's position.
            if job.source.kind == .mariadb {
                let binlog = try BinlogRetention.removeUnneeded(repository: repository, snapshots: try repository.listSnapshots(), dryRun: false)
                walRemoved += binlog.files
                if binlog.files > 0 { text += ", removed \(binlog.files) archived binary log files (\(binlog.bytes) bytes) no kept dump needs" }
            }
            // With object lock, prune also keeps the lock of used data from running out, so it
            // runs every time (and without prune the locks are extended on their own).
            if prune && (!remove.isEmpty || walRemoved > 0 || repository.objectLock != nil) {
                var pruneOptions = PruneOptions()
                pruneOptions.removeUnneededWAL = false
                let report = try Pruner(repository: repository, options: pruneOptions, warn: { [log] in log("prune: \($0)") }).run()
                text += ", pruned \(report.bytesFreed) bytes"
                if report.locksExtended > 0 { text += ", extended \(report.locksExtended) object locks" }
            } else if repository.objectLock != nil {
                let extended = try repository.extendRetentionOfAll()
                if extended > 0 { text += ", extended \(extended) object locks" }
            }
            record.outcome = .success
            record.details = try RunRecord.encodeDetails(decisions)
            record.ended = Clock.now
            try catalog.update(record)
            log("\(label) \(text)")
            return text
        } catch {
            // A record never inserted has no row to mark failed: the error says so already.
            let message = record.id == nil ? PolicyRunner.message(error) : recordFailure(&record, error, ended: Clock.now)
            log("\(label) FAILED: \(message)")
            return "failed: \(message)"
        }
    }
}
