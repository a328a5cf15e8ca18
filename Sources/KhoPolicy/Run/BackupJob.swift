import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoSources
import KhoStorage

extension PolicyRunner {
    func runJob(_ job: Job) -> JobResult {
        let started = Clock.now
        let realStart = Date()
        var result = JobResult(policy: job.policy.name, source: job.source.name, planned: job.planned, outcome: .failure,
                               snapshot: nil, error: nil, bytesRead: 0, bytesAdded: 0, seconds: 0, retention: nil)
        var record = RunRecord(kind: .backup, policy: job.policy.name, source: job.source.name, repository: job.policy.repository.path,
                               planned: job.planned, started: started)
        do {
            record = try catalog.insert(record)
        } catch {
            // A backup the catalog does not know would be planned again at every run and missing
            // from status and reports: nothing is done until the catalog can record it.
            result.error = PolicyRunner.message(error)
            log("\(job.policy.name)/\(job.source.name): FAILED: \(result.error ?? "")")
            return result
        }
        log("\(job.policy.name)/\(job.source.name): backup of \(job.source.summary) started")
        // Set once the repository is open: a backup that fails after this failed because of its
        // source, and copies can still catch up from the repository.
        var opened: Repository?
        do {
            let repository = try openRepository(job.policy.repository)
            opened = repository
            let snapshot: Snapshot = try {
                let lock = try RepositoryLock.acquire(storage: repository.storage, exclusive: false, command: "run \(job.policy.name)/\(job.source.name)",
                                                      wait: options.lockWait)
                defer { lock.release() }
                let index = try repository.loadIndex()
                var backupOptions = BackupOptions()
                backupOptions.time = Clock.isSimulated ? started : nil
                backupOptions.tags = ["policy:\(job.policy.name)"]
                backupOptions.excludes = job.source.excludes
                backupOptions.source = SnapshotSource(kind: job.source.kind, name: job.source.name)
                backupOptions.workers = max(1, Machine.cores / max(1, min(options.jobs, 2)))
                backupOptions.uploaders = repository.storage.suggestedUploaders
                let archiver = try Archiver(repository: repository, index: index, options: backupOptions) { [log] warning in
                    log("\(job.policy.name)/\(job.source.name): warning: \(warning)")
                }
                if let source = job.source.make() {
                    return try source.backup(with: archiver, repository: repository)
                }
                return try archiver.backup(paths: job.source.paths)
            }()
            record.outcome = snapshot.partial ? .partial : .success
            record.snapshot = snapshot.id
            record.snapshotTime = snapshot.time
            record.bytesRead = snapshot.summary?.bytesRead ?? 0
            record.bytesAdded = snapshot.summary?.bytesAdded ?? 0
            if let manifest = DumpManifest(snapshot.manifest) {
                record.details = try RunRecord.encodeDetails(ManifestSummary(manifest))
            }
            result.outcome = record.outcome
            result.snapshot = snapshot.id
            result.bytesRead = record.bytesRead
            result.bytesAdded = record.bytesAdded
            log("\(job.policy.name)/\(job.source.name): snapshot \(snapshot.shortID) saved (\(record.outcome.rawValue))")
            record.ended = started.addingTimeInterval(Date().timeIntervalSince(realStart))
            do {
                try catalog.update(record)
            } catch {
                // The snapshot is saved, but the catalog still says "running": the run did not
                // end as recorded, and whoever reads the result must learn it.
                result.outcome = .failure
                result.error = "snapshot \(snapshot.shortID) was saved, but " + PolicyRunner.message(error)
                log("\(job.policy.name)/\(job.source.name): FAILED: \(result.error ?? "")")
            }
            copyToDestinations(job, from: repository, newest: snapshot, into: &result)
            if !stopRequested.current {
                result.retention = applyRetention(job, rules: job.policy.retention, prune: job.policy.prune,
                                                  on: repository, at: job.policy.repository.path)
            }
        } catch {
            let message = recordFailure(&record, error, ended: started.addingTimeInterval(Date().timeIntervalSince(realStart)))
            result.error = message
            log("\(job.policy.name)/\(job.source.name): FAILED: \(message)")
            Notifier.notify(job.policy, source: job.source.name, event: .failure, detail: message, snapshot: nil, log: log)
            // The source failed, not the repository: copies still catch up on what earlier runs
            // saved (nothing is forgotten on a night without a new backup).
            if let repository = opened, PolicyRunner.sourceFailed(error) {
                copyToDestinations(job, from: repository, newest: nil, into: &result)
            }
        }
        result.seconds = Date().timeIntervalSince(realStart)
        return result
    }

    /// Whether a backup failed because of its source (a dump that failed, a server that is down,
    /// a source password missing) rather than because of its repository.
    static func sourceFailed(_ error: Error) -> Bool {
        guard let error = error as? KhoError else { return false }
        return error.kind == .source || error.kind == .usage
    }
}
