import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoSources
import KhoStorage

extension PolicyRunner {
    /// Copies to every `copies:` destination in turn, and applies each destination's retention
    /// after a good backup; adds one line per destination to `result`.
    func copyToDestinations(_ job: Job, from repository: Repository, newest: Snapshot?, into result: inout JobResult) {
        guard !job.policy.copies.isEmpty else { return }
        var lines: [String] = []
        var failed = 0
        for destination in job.policy.copies {
            if stopRequested.current { break }
            guard let (line, ok) = copy(job, from: repository, newest: newest, to: destination) else { continue }
            lines.append(line)
            if !ok { failed += 1 }
        }
        if newest != nil || !lines.isEmpty {
            result.copies = (result.copies ?? []) + lines
            result.copiesFailed = (result.copiesFailed ?? 0) + failed
        }
    }

    /// The snapshots of one source (one host's, as retention groups them) to copy to a
    /// destination, oldest first: those the destination lacks that the destination's retention
    /// would keep, counted together with what the destination holds of that source, and always
    /// `newest` (this run's backup) when the destination lacks it. Without retention rules every
    /// snapshot the destination lacks is copied. Counting retention keeps a destination that keeps
    /// less than the main repository from receiving, every night, snapshots it has forgotten.
    public static func copyPlan(source: [Snapshot], destination: [Snapshot], rules: RetentionPolicy, newest: String?) -> [Snapshot] {
        let lacking = source.filter { snapshot in !destination.contains { Copier.sameBackup($0, snapshot) } }
            .sorted { ($0.time, $0.id ?? "") < ($1.time, $1.id ?? "") }
        guard !rules.isEmpty else { return lacking }
        let candidate = "candidate:"
        let decisions = Retention.apply(rules, to: destination.map { ($0.id ?? "", $0.time, $0.tags) }
                                               + lacking.map { (candidate + ($0.id ?? ""), $0.time, $0.tags) })
        let kept = Set(decisions.filter(\.keep).map(\.snapshotID))
        return lacking.filter { kept.contains(candidate + ($0.id ?? "")) || ($0.id != nil && $0.id == newest) }
    }

    /// Copies to one `copies:` destination every snapshot of the job's source that it lacks (see
    /// `copyPlan`), oldest first, then, after a good backup and when every copy succeeded, applies
    /// the destination's retention. Each snapshot copied is a copy run in the catalog (snapshot and
    /// snapshot time are the source snapshot's, the details name the destination). A failure is
    /// logged, recorded and notified (event copy-failure); it does not undo the backup, and the
    /// snapshots not copied wait for the next run, except after an integrity error (that one
    /// snapshot's data is damaged), which does not hold back the newer snapshots. Returns the
    /// result line and whether the copies succeeded, or nil when there was nothing to do and
    /// nothing to say (a night without a backup).
    func copy(_ job: Job, from source: Repository, newest: Snapshot?, to destination: CopySpec) -> (String, Bool)? {
        let name = "\(job.policy.name)/\(job.source.name)"
        let host = Host.name
        var copied: [(snapshot: Snapshot, details: CopyDetails)] = []  // in this call, oldest first
        // Snapshots whose own data is damaged in the main repository, and why.
        var damaged: [(Snapshot, String)] = []
        var alreadyThere = false
        var target: Repository?
        // The snapshot being copied when a failure happens (before any: this run's, or the newest).
        var current = newest
        var record: RunRecord?
        let realStart = Date()
        do {
            let sourceLock = try RepositoryLock.acquire(storage: source.storage, exclusive: false, command: "run copy \(name) to \(destination.path)",
                                                        wait: options.lockWait)
            defer { sourceLock.release() }
            let group = RetentionGroups.group(of: job.source.name, host: host, family: job.source.kind.retentionFamily, in: try source.listSnapshots()).snapshots
            if current == nil { current = group.max { $0.time < $1.time } }
            let opened = try openRepository(destination.repository)
            target = opened
            try RepositoryPair.refuseSame(source, opened, from: job.policy.repository.path, to: destination.path, fix: "copy to another one")
            let targetLock = try RepositoryLock.acquire(storage: opened.storage, exclusive: false, command: "run copy \(name) from \(job.policy.repository.path)",
                                                        wait: options.lockWait)
            defer { targetLock.release() }
            let there = RetentionGroups.group(of: job.source.name, host: host, family: job.source.kind.retentionFamily, in: try opened.listSnapshots()).snapshots
            let plan = PolicyRunner.copyPlan(source: group, destination: there, rules: job.policy.retention(for: destination).rules, newest: newest?.id)
            if let newest, !plan.contains(where: { $0.id == newest.id }), there.contains(where: { Copier.sameBackup($0, newest) }) {
                // This run's snapshot is there already (copied by hand, or a run repeated): say so.
                let details = CopyDetails(destination: destination.path, targetSnapshot: there.first { Copier.sameBackup($0, newest) }?.id,
                                          blobsRead: 0, blobsNew: 0, bytesAdded: 0, alreadyThere: true)
                var done = try newCopyRecord(job, newest, destination: destination, details: details)
                done.outcome = .success
                done.ended = done.started
                try catalog.update(done)
                alreadyThere = true
            }
            if !plan.isEmpty {
                let sourceIndex = try source.loadIndex()
                for snapshot in plan {
                    if stopRequested.current { break }
                    current = snapshot
                    var details = CopyDetails(destination: destination.path, targetSnapshot: nil, blobsRead: 0, blobsNew: 0, bytesAdded: 0,
                                              alreadyThere: false, caughtUp: snapshot.id != newest?.id ? true : nil)
                    record = try newCopyRecord(job, snapshot, destination: destination, details: details)
                    let started = Clock.now
                    let snapshotStart = Date()
                    // A copier per snapshot, with the target's index as it now is: each copy is
                    // whole and verified on its own, and a failure leaves the earlier ones done.
                    let summary: CopySummary
                    do {
                        let copier = try Copier(source: source, sourceIndex: sourceIndex,
                                            target: opened, targetIndex: try opened.loadIndex(), uploaders: opened.storage.suggestedUploaders)
                        summary = try copier.copy([snapshot])
                    } catch let error as KhoError where error.kind == .integrity {
                        // This snapshot's data is damaged (`kho check` tells where): it must not
                        // hold back the newer ones, which are still copied.
                        var message = error.message
                        if var failed = record {
                            message = recordFailure(&failed, error, ended: started.addingTimeInterval(Date().timeIntervalSince(snapshotStart)))
                        }
                        record = nil
                        damaged.append((snapshot, message))
                        log("\(name): copy of snapshot \(snapshot.shortID) to \(destination.path) FAILED (the next ones are still copied): \(error.message)")
                        continue
                    }
                    details.targetSnapshot = summary.copied.first?.target
                    details.alreadyThere = summary.copied.isEmpty
                    details.blobsRead = summary.blobsRead
                    details.blobsNew = summary.blobsNew
                    details.bytesAdded = summary.bytesAdded
                    if var done = record {
                        done.outcome = .success
                        done.bytesRead = summary.bytesRead
                        done.bytesAdded = summary.bytesAdded
                        done.details = try RunRecord.encodeDetails(details)
                        done.ended = started.addingTimeInterval(Date().timeIntervalSince(snapshotStart))
                        // A copy done but not recorded fails the copy: the next run copies it
                        // again (the destination keeps it once) instead of trusting a "running" row.
                        try catalog.update(done)
                    }
                    record = nil
                    copied.append((snapshot, details))
                    log("\(name): copied snapshot \(snapshot.shortID) (\(ZonedTime.format(snapshot.time, in: job.policy.timeZone))) to \(destination.path) as \(details.targetSnapshot?.prefix(8) ?? "-")"
                        + (details.caughtUp == true ? ", caught up from an earlier run" : ""))
                }
            }
            if job.source.kind == .postgresBase, !stopRequested.current {
                // The source's archived WAL goes with its base backups: a copy restores to a point.
                let wal = try WALCopy.copy(from: source, to: opened, sources: [job.source.name], workers: opened.storage.suggestedUploaders)
                if wal.files + wal.records + wal.markers > 0 {
                    log("\(name): copied \(wal.files) archived WAL files (\(wal.bytes) bytes) to \(destination.path)")
                }
            }
            if job.source.kind == .mariadb, !stopRequested.current {
                // The source's archived binary log goes with its dumps: a copy restores to a time.
                let binlog = try BinlogCopy.copy(from: source, to: opened, sources: [job.source.name], workers: opened.storage.suggestedUploaders)
                if binlog.records + binlog.pieces + binlog.ends > 0 {
                    log("\(name): copied \(binlog.pieces) archived binary log pieces (\(binlog.bytes) bytes) to \(destination.path)")
                }
            }
        } catch {
            var message = (error as? KhoError)?.message ?? "\(error)"
            do {
                if var failed = try record ?? current.map({ try newCopyRecord(job, $0, destination: destination,
                                                                               details: CopyDetails(destination: destination.path, targetSnapshot: nil, blobsRead: 0,
                                                                                                    blobsNew: 0, bytesAdded: 0, alreadyThere: false)) }) {
                    message = recordFailure(&failed, error, ended: failed.started.addingTimeInterval(Date().timeIntervalSince(realStart)))
                }
            } catch let catalogError {
                message += "; " + PolicyRunner.message(catalogError)
            }
            log("\(name): copy to \(destination.path) FAILED: \(message)")
            Notifier.notify(job.policy, source: job.source.name, event: .copyFailure, detail: "copy to \(destination.path): \(message)",
                            snapshot: current?.id, log: log)
            let before = copied.isEmpty ? "" : " (\(PolicyRunner.describe(copied.map(\.details))) before)"
            return ("copy to \(destination.path) failed: \(message)\(before)", false)
        }
        if let (first, message) = damaged.first {
            let which = damaged.count == 1 ? "snapshot \(first.shortID)" : "\(damaged.count) snapshots (the first \(first.shortID))"
            let detail = "\(which) could not be copied: \(message)"
            Notifier.notify(job.policy, source: job.source.name, event: .copyFailure, detail: "copy to \(destination.path): \(detail)",
                            snapshot: first.id, log: log)
            let others = copied.isEmpty ? "" : " (also copied: \(PolicyRunner.describe(copied.map(\.details))))"
            return ("copy to \(destination.path) failed: \(detail)\(others)", false)
        }
        var text: String
        if !copied.isEmpty {
            text = "copy to \(destination.path): " + PolicyRunner.describe(copied.map(\.details))
        } else if alreadyThere {
            text = "copy to \(destination.path): already there"
        } else if newest != nil {
            text = "copy to \(destination.path): nothing to copy"
        } else {
            return nil
        }
        if newest != nil, let target, !stopRequested.current {
            let (rules, prune) = job.policy.retention(for: destination)
            if !rules.isEmpty {
                if target.isAppendOnly {
                    log("\(name): retention on \(destination.path) skipped: the repository is append-only (kho init --append-only), so nothing is forgotten there")
                    text += "; retention skipped (append-only)"
                } else if let retention = applyRetention(job, rules: rules, prune: prune, on: target, at: destination.path) {
                    text += "; retention \(retention)"
                }
            }
        }
        log("\(name): \(text)")
        return (text, true)
    }

    /// "snapshot 1a2b3c4d, added N bytes" for one snapshot (its ID in the destination); otherwise
    /// how many were copied and how many of them were caught up from earlier runs.
    static func describe(_ details: [CopyDetails]) -> String {
        let added = details.reduce(Int64(0)) { $0 + $1.bytesAdded }
        if details.count == 1 {
            let earlier = details[0].caughtUp == true ? " (caught up from an earlier run)" : ""
            return "snapshot \(details[0].targetSnapshot?.prefix(8) ?? "-")\(earlier), added \(added) bytes"
        }
        let caughtUp = details.filter { $0.caughtUp == true }.count
        return "\(details.count) snapshots (\(caughtUp) caught up from earlier runs), added \(added) bytes"
    }

    /// Inserts a running copy run for `snapshot` (its ID and time) to `destination`.
    private func newCopyRecord(_ job: Job, _ snapshot: Snapshot, destination: CopySpec, details: CopyDetails) throws -> RunRecord {
        var record = RunRecord(kind: .copy, policy: job.policy.name, source: job.source.name, repository: job.policy.repository.path,
                               planned: nil, started: Clock.now)
        record.snapshot = snapshot.id
        record.snapshotTime = snapshot.time
        record.details = try RunRecord.encodeDetails(details)
        return try catalog.insert(record)
    }
}
