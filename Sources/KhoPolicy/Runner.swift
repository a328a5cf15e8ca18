import Foundation
import KhoCore
import KhoSupport
import KhoSources
import KhoStorage
import Logging

/// One backup job: a source of a policy, for a planned time.
public struct Job: Sendable {
    public var policy: Policy
    public var source: SourceSpec
    public var planned: Date
}

public struct JobResult: Sendable, Codable {
    /// backup or drill.
    public var kind: String = "backup"
    public var policy: String
    public var source: String
    public var planned: Date
    public var outcome: String
    public var snapshot: String?
    public var error: String?
    public var bytesRead: Int64
    public var bytesAdded: Int64
    public var seconds: Double
    public var retention: String?
    /// One line per `copies:` destination: what was copied there, or why the copy failed.
    public var copies: [String]?
    /// How many of this backup's copies failed (the backup itself still counts as made).
    public var copiesFailed: Int?

    public init(policy: String, source: String, planned: Date, outcome: String, snapshot: String?, error: String?,
                bytesRead: Int64, bytesAdded: Int64, seconds: Double, retention: String?) {
        self.policy = policy; self.source = source; self.planned = planned; self.outcome = outcome; self.snapshot = snapshot
        self.error = error; self.bytesRead = bytesRead; self.bytesAdded = bytesAdded; self.seconds = seconds; self.retention = retention
    }
}

public struct RunOptions: Sendable {
    public var onlyDue = true
    public var policy: String?
    public var source: String?
    public var jobs = 2
    public var lockWait: TimeInterval = 600
    public var metricsFile: String?
    public init() {}
}

/// Runs policies' jobs: the backups that are due (or all), then retention for each source whose
/// backup succeeded, recording everything in the catalog. Jobs on different repositories run in
/// parallel; jobs on one repository run one after another.
public final class PolicyRunner: @unchecked Sendable {
    public let policies: [Policy]
    public let catalog: Catalog
    public let options: RunOptions
    private let log: @Sendable (String) -> Void
    /// Runs a restore drill (set by the command line, which knows the drill module).
    public var drill: (@Sendable (Policy, SourceSpec, Date) -> JobResult)?
    /// Set by a SIGTERM in the daemon: jobs finish their current step, no new step starts.
    public let stopRequested = Locked(false)

    public init(policies: [Policy], catalog: Catalog, options: RunOptions, log: @escaping @Sendable (String) -> Void) {
        self.policies = policies
        self.catalog = catalog
        self.options = options
        // Every line kho prints about a run goes through the mask: a secret in an error message
        // (a command's output, a client's) is shown as ***.
        self.log = { log(Secrets.mask($0)) }
    }

    private var selected: [(Policy, SourceSpec)] {
        policies.filter { options.policy == nil || $0.name == options.policy }
            .flatMap { policy in policy.sources.filter { options.source == nil || $0.name == options.source }.map { (policy, $0) } }
    }

    /// The jobs to run at `now`. A source never run is due at once; otherwise a source is due when
    /// its schedule fired since the last planned run, and a run missed while the host was down is
    /// caught up once, for the latest planned time. A planned time whose backup failed is tried
    /// again (see `retryDelays`) until the schedule fires next.
    public func plan(now: Date) throws -> [Job] {
        var jobs: [Job] = []
        for (policy, source) in selected {
            if !options.onlyDue {
                jobs.append(Job(policy: policy, source: source, planned: now))
                continue
            }
            if let last = try catalog.lastPlanned(policy: policy.name, source: source.name) {
                if let planned = policy.schedule.latest(after: last, upTo: now) {
                    jobs.append(Job(policy: policy, source: source, planned: planned))
                } else if try isRetryDue(policy, source, planned: last, now: now) {
                    jobs.append(Job(policy: policy, source: source, planned: last))
                }
            } else {
                let recent = policy.schedule.latest(after: now.addingTimeInterval(-86400), upTo: now)
                jobs.append(Job(policy: policy, source: source, planned: recent ?? now))
            }
        }
        return jobs
    }

    /// Pauses before the second and third attempt of a planned backup that failed: a database
    /// restarting, a full disk being cleared or an S3 server back from maintenance should not cost
    /// the night's recovery point, and a lasting fault should not be hammered.
    public static let retryDelays: [TimeInterval] = [15 * 60, 30 * 60]

    /// Whether the backup planned for `planned` failed every time so far, has attempts left, and
    /// its last attempt began long enough ago. An attempt still "running" is not tried again: a
    /// large database's backup may well run longer than the pause, and a second one beside it
    /// would only wait for its lock (a killed one is caught up at the next planned time).
    func isRetryDue(_ policy: Policy, _ source: SourceSpec, planned: Date, now: Date) throws -> Bool {
        let attempts = try catalog.attempts(policy: policy.name, source: source.name, planned: planned)
        guard let latest = attempts.last, attempts.count <= PolicyRunner.retryDelays.count,
              attempts.allSatisfy({ $0.outcome == "failure" }) else { return false }
        return now.timeIntervalSince(latest.started) >= PolicyRunner.retryDelays[attempts.count - 1]
    }

    /// Runs the planned jobs and returns their results in plan order.
    public func run(now: Date) throws -> [JobResult] {
        let jobs = try plan(now: now)
        var byRepository: [String: [Int]] = [:]
        var order: [String] = []
        for (i, job) in jobs.enumerated() {
            if byRepository[job.policy.repository.path] == nil { order.append(job.policy.repository.path) }
            byRepository[job.policy.repository.path, default: []].append(i)
        }
        let results = Locked<[Int: JobResult]>([:])
        let slots = DispatchSemaphore(value: max(1, options.jobs))
        var workers: [Worker] = []
        for repository in order {
            let indices = byRepository[repository]!
            slots.wait()
            workers.append(Worker(name: "kho-job") { [self] in
                defer { slots.signal() }
                for i in indices {
                    if stopRequested.current { break }
                    let result = runJob(jobs[i])
                    results.withLock { $0[i] = result }
                }
            })
        }
        workers.forEach { $0.join() }
        var drillResults: [JobResult] = []
        if let drill, !stopRequested.current {
            for (policy, source, planned) in try dueDrills(now: now) {
                if stopRequested.current { break }
                drillResults.append(drill(policy, source, planned))
            }
        }
        if !stopRequested.current {
            try notifyFreshness(now: Clock.now)
        }
        if let metricsFile = options.metricsFile {
            try Metrics.write(to: metricsFile, policies: policies, catalog: catalog, now: Clock.now)
        }
        let collected = results.current
        return jobs.indices.compactMap { collected[$0] } + drillResults
    }

    /// Drills to run now: per policy with drills, one source per run, so that drills rotate
    /// through a policy's sources. A source is due when it was never drilled, when its last drill
    /// passed longer ago than the policy's drill period, or when its last drill did not pass (it
    /// failed, or was interrupted) and started longer ago than `retryPause(every:)`: a drill that
    /// did not pass proves nothing, so it is tried again soon rather than a whole period later.
    /// Of the due sources, the one whose last passed drill is oldest (never passed first) goes.
    public func dueDrills(now: Date) throws -> [(Policy, SourceSpec, Date)] {
        var result: [(Policy, SourceSpec, Date)] = []
        for policy in policies where options.policy == nil || policy.name == options.policy {
            guard let drills = policy.drills else { continue }
            var chosen: (source: SourceSpec, lastPassed: Date?)?
            for source in policy.sources where options.source == nil || source.name == options.source {
                let last = try catalog.last(policy: policy.name, source: source.name, kind: "drill")
                let lastPassed = last?.outcome == "success"
                    ? last?.started : try catalog.last(policy: policy.name, source: source.name, kind: "drill", outcome: "success")?.started
                if options.onlyDue, let last {
                    let wait = last.outcome == "success" ? drills.every : PolicyRunner.retryPause(every: drills.every)
                    if now.timeIntervalSince(last.started) < wait { continue }
                }
                if chosen == nil || (lastPassed ?? .distantPast) < (chosen!.lastPassed ?? .distantPast) {
                    chosen = (source, lastPassed)
                }
            }
            if let chosen { result.append((policy, chosen.source, now)) }
        }
        return result
    }

    /// How long after a drill that did not pass the source is drilled again: a quarter of the
    /// drill period, at most a day (a drill restores a whole snapshot into a scratch server).
    public static func retryPause(every: TimeInterval) -> TimeInterval {
        min(every / 4, 86400)
    }

    /// Runs a policy's `notify:` when a selected source's newest good backup is older than the RPO
    /// (event "late") or than twice the RPO ("missed"). Each state is announced once per newest
    /// good snapshot: the catalog keeps a "notify" row, so a timer running every few minutes does
    /// not repeat it.
    func notifyFreshness(now: Date) throws {
        let chosen = policies.filter { $0.notify != nil && (options.policy == nil || $0.name == options.policy) }
        guard !chosen.isEmpty else { return }
        for status in try StatusReport.compute(policies: chosen, catalog: catalog, now: now) where status.freshness != .ok {
            if let source = options.source, status.source != source { continue }
            guard let policy = chosen.first(where: { $0.name == status.policy }) else { continue }
            let last = try catalog.last(policy: status.policy, source: status.source, kind: "notify")
            if let last, last.outcome == status.freshness.rawValue, last.snapshot == status.lastSnapshot { continue }
            let age = status.ageSeconds.map { "the newest good backup is \(Int($0) / 3600)h\(Int($0) % 3600 / 60)m old" } ?? "there is no good backup"
            let detail = "\(age); the RPO is \(DurationFormat.describe(policy.rpo))"
            log("\(policy.name)/\(status.source): RPO \(status.freshness.rawValue): \(detail)")
            Notifier.notify(policy, source: status.source, event: status.freshness.rawValue, detail: detail, snapshot: status.lastSnapshot, log: log)
            var record = RunRecord(kind: "notify", policy: policy.name, source: status.source, repository: policy.repository.path,
                                   planned: nil, started: now)
            record.outcome = status.freshness.rawValue
            record.snapshot = status.lastSnapshot
            record.details = detail
            record.ended = now
            try catalog.insert(record)
        }
    }

    private func openRepository(_ spec: RepositorySpec) throws -> Repository {
        try Repository.open(storage: try StorageFactory.make(location: spec.path), password: try spec.password())
    }

    func runJob(_ job: Job) -> JobResult {
        let started = Clock.now
        let realStart = Date()
        var record = RunRecord(kind: "backup", policy: job.policy.name, source: job.source.name, repository: job.policy.repository.path,
                               planned: job.planned, started: started)
        record = (try? catalog.insert(record)) ?? record
        var result = JobResult(policy: job.policy.name, source: job.source.name, planned: job.planned, outcome: "failure",
                               snapshot: nil, error: nil, bytesRead: 0, bytesAdded: 0, seconds: 0, retention: nil)
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
                backupOptions.source = SnapshotSource(kind: job.source.kind.rawValue, name: job.source.name)
                backupOptions.workers = max(1, Machine.cores / max(1, min(options.jobs, 2)))
                backupOptions.uploaders = PolicyRunner.uploaders(for: job.policy.repository.path)
                let archiver = try Archiver(repository: repository, index: index, options: backupOptions) { [log] warning in
                    log("\(job.policy.name)/\(job.source.name): warning: \(warning)")
                }
                if let source = job.source.make() {
                    return try source.backup(with: archiver, repository: repository)
                }
                return try archiver.backup(paths: job.source.paths)
            }()
            record.outcome = snapshot.partial ? "partial" : "success"
            record.snapshot = snapshot.id
            record.snapshotTime = snapshot.time
            record.bytesRead = snapshot.summary?.bytesRead ?? 0
            record.bytesAdded = snapshot.summary?.bytesAdded ?? 0
            if let manifest = DumpManifest(snapshot.manifest), let data = try? JSON.encoder.encode(ManifestSummary(manifest)) {
                record.details = String(decoding: data, as: UTF8.self)
            }
            result.outcome = record.outcome
            result.snapshot = snapshot.id
            result.bytesRead = record.bytesRead
            result.bytesAdded = record.bytesAdded
            log("\(job.policy.name)/\(job.source.name): snapshot \(snapshot.shortID) saved (\(record.outcome))")
            record.ended = started.addingTimeInterval(Date().timeIntervalSince(realStart))
            try? catalog.update(record)
            copyToDestinations(job, from: repository, newest: snapshot, into: &result)
            if !stopRequested.current {
                result.retention = applyRetention(job, rules: job.policy.retention, prune: job.policy.prune,
                                                  on: repository, at: job.policy.repository.path)
            }
        } catch {
            let message = recordFailure(&record, error, ended: started.addingTimeInterval(Date().timeIntervalSince(realStart)))
            result.error = message
            log("\(job.policy.name)/\(job.source.name): FAILED: \(message)")
            Notifier.notify(job.policy, source: job.source.name, event: "failure", detail: message, snapshot: nil, log: log)
            // The source failed, not the repository: copies still catch up on what earlier runs
            // saved (nothing is forgotten on a night without a new backup).
            if let repository = opened, PolicyRunner.sourceFailed(error) {
                copyToDestinations(job, from: repository, newest: nil, into: &result)
            }
        }
        result.seconds = Date().timeIntervalSince(realStart)
        return result
    }

    /// Uploaders for a repository: 4 on S3 (each upload waits on the network), 1 on a local
    /// folder, as `kho backup` and `kho copy` choose without `--connections`.
    public static func uploaders(for location: String) -> Int {
        location.hasPrefix("s3:") ? 4 : 1
    }

    /// Whether a backup failed because of its source (a dump that failed, a server that is down,
    /// a source password missing) rather than because of its repository.
    static func sourceFailed(_ error: Error) -> Bool {
        guard let error = error as? KhoError else { return false }
        return error.kind == .source || error.kind == .usage
    }

    /// Copies to every `copies:` destination in turn, and applies each destination's retention
    /// after a good backup; adds one line per destination to `result`.
    private func copyToDestinations(_ job: Job, from repository: Repository, newest: Snapshot?, into result: inout JobResult) {
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

    /// What a copy run records in the catalog's details: where the snapshot went and what it cost.
    public struct CopyDetails: Codable, Sendable {
        public var destination: String
        public var targetSnapshot: String?
        public var blobsRead: Int
        public var blobsNew: Int
        public var bytesAdded: Int64
        public var alreadyThere: Bool
        /// True for a snapshot of an earlier run that the destination lacked (catch-up).
        public var caughtUp: Bool?
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
    private func copy(_ job: Job, from source: Repository, newest: Snapshot?, to destination: CopySpec) -> (String, Bool)? {
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
            let group = try source.listSnapshots().filter { $0.source.name == job.source.name && $0.hostname == host }
            if current == nil { current = group.max { $0.time < $1.time } }
            let opened = try openRepository(destination.repository)
            target = opened
            guard opened.config.id != source.config.id else {
                throw KhoError(.usage, "\(destination.path) is the policy's own repository (id \(opened.config.id.prefix(8))): copy to another one.")
            }
            let targetLock = try RepositoryLock.acquire(storage: opened.storage, exclusive: false, command: "run copy \(name) from \(job.policy.repository.path)",
                                                        wait: options.lockWait)
            defer { targetLock.release() }
            let there = try opened.listSnapshots().filter { $0.source.name == job.source.name && $0.hostname == host }
            let plan = PolicyRunner.copyPlan(source: group, destination: there, rules: job.policy.retention(for: destination).rules, newest: newest?.id)
            if let newest, !plan.contains(where: { $0.id == newest.id }), there.contains(where: { Copier.sameBackup($0, newest) }) {
                // This run's snapshot is there already (copied by hand, or a run repeated): say so.
                let details = CopyDetails(destination: destination.path, targetSnapshot: there.first { Copier.sameBackup($0, newest) }?.id,
                                          blobsRead: 0, blobsNew: 0, bytesAdded: 0, alreadyThere: true)
                var done = newCopyRecord(job, newest, destination: destination, details: details)
                done.outcome = "success"
                done.ended = done.started
                try? catalog.update(done)
                alreadyThere = true
            }
            if !plan.isEmpty {
                let sourceIndex = try source.loadIndex()
                for snapshot in plan {
                    if stopRequested.current { break }
                    current = snapshot
                    var details = CopyDetails(destination: destination.path, targetSnapshot: nil, blobsRead: 0, blobsNew: 0, bytesAdded: 0,
                                              alreadyThere: false, caughtUp: snapshot.id != newest?.id ? true : nil)
                    record = newCopyRecord(job, snapshot, destination: destination, details: details)
                    let started = Clock.now
                    let snapshotStart = Date()
                    // A copier per snapshot, with the target's index as it now is: each copy is
                    // whole and verified on its own, and a failure leaves the earlier ones done.
                    let summary: CopySummary
                    do {
                        let copier = try Copier(source: source, sourceIndex: sourceIndex,
                                            target: opened, targetIndex: try opened.loadIndex(), uploaders: PolicyRunner.uploaders(for: destination.path))
                        summary = try copier.copy([snapshot])
                    } catch let error as KhoError where error.kind == .integrity {
                        // This snapshot's data is damaged (`kho check` tells where): it must not
                        // hold back the newer ones, which are still copied.
                        if var failed = record {
                            _ = recordFailure(&failed, error, ended: started.addingTimeInterval(Date().timeIntervalSince(snapshotStart)))
                        }
                        record = nil
                        damaged.append((snapshot, error.message))
                        log("\(name): copy of snapshot \(snapshot.shortID) to \(destination.path) FAILED (the next ones are still copied): \(error.message)")
                        continue
                    }
                    details.targetSnapshot = summary.copied.first?.target
                    details.alreadyThere = summary.copied.isEmpty
                    details.blobsRead = summary.blobsRead
                    details.blobsNew = summary.blobsNew
                    details.bytesAdded = summary.bytesAdded
                    if var done = record {
                        done.outcome = "success"
                        done.bytesRead = summary.bytesRead
                        done.bytesAdded = summary.bytesAdded
                        done.details = PolicyRunner.encode(details)
                        done.ended = started.addingTimeInterval(Date().timeIntervalSince(snapshotStart))
                        try? catalog.update(done)
                    }
                    record = nil
                    copied.append((snapshot, details))
                    log("\(name): copied snapshot \(snapshot.shortID) (\(Timestamp.format(snapshot.time))) to \(destination.path) as \(details.targetSnapshot?.prefix(8) ?? "-")"
                        + (details.caughtUp == true ? ", caught up from an earlier run" : ""))
                }
            }
        } catch {
            let message = (error as? KhoError)?.message ?? "\(error)"
            if var failed = record ?? (current.map { newCopyRecord(job, $0, destination: destination,
                                                                 details: CopyDetails(destination: destination.path, targetSnapshot: nil, blobsRead: 0,
                                                                                      blobsNew: 0, bytesAdded: 0, alreadyThere: false)) }) {
                _ = recordFailure(&failed, error, ended: failed.started.addingTimeInterval(Date().timeIntervalSince(realStart)))
            }
            log("\(name): copy to \(destination.path) FAILED: \(message)")
            Notifier.notify(job.policy, source: job.source.name, event: "copy-failure", detail: "copy to \(destination.path): \(message)",
                            snapshot: current?.id, log: log)
            let before = copied.isEmpty ? "" : " (\(PolicyRunner.describe(copied.map(\.details))) before)"
            return ("copy to \(destination.path) failed: \(message)\(before)", false)
        }
        if let (first, message) = damaged.first {
            let which = damaged.count == 1 ? "snapshot \(first.shortID)" : "\(damaged.count) snapshots (the first \(first.shortID))"
            let detail = "\(which) could not be copied: \(message)"
            Notifier.notify(job.policy, source: job.source.name, event: "copy-failure", detail: "copy to \(destination.path): \(detail)",
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

    static func encode(_ details: CopyDetails) -> String? {
        (try? JSON.encoder.encode(details)).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Inserts a running copy run for `snapshot` (its ID and time) to `destination`.
    private func newCopyRecord(_ job: Job, _ snapshot: Snapshot, destination: CopySpec, details: CopyDetails) -> RunRecord {
        var record = RunRecord(kind: "copy", policy: job.policy.name, source: job.source.name, repository: job.policy.repository.path,
                               planned: nil, started: Clock.now)
        record.snapshot = snapshot.id
        record.snapshotTime = snapshot.time
        record.details = PolicyRunner.encode(details)
        return (try? catalog.insert(record)) ?? record
    }

    /// Marks a run failed in the catalog and returns the one-sentence message.
    private func recordFailure(_ record: inout RunRecord, _ error: Error, ended: Date) -> String {
        let message = Secrets.mask((error as? KhoError)?.message ?? "\(error)")
        record.outcome = "failure"
        record.error = message
        record.ended = ended
        try? catalog.update(record)
        return message
    }

    /// Forgets this source's snapshots in `repository` (the policy's own, or a copy destination
    /// at `location`) that `rules` no longer keep, and prunes when `prune` asks and something was
    /// forgotten. Recorded as a retention run whose repository is `location`.
    private func applyRetention(_ job: Job, rules: RetentionPolicy, prune: Bool, on repository: Repository, at location: String) -> String? {
        guard !rules.isEmpty else { return nil }
        let started = Clock.now
        let onDestination = location != job.policy.repository.path
        let label = "\(job.policy.name)/\(job.source.name): retention" + (onDestination ? " on \(location)" : "")
        var record = RunRecord(kind: "retention", policy: job.policy.name, source: job.source.name, repository: location,
                               planned: nil, started: started)
        record = (try? catalog.insert(record)) ?? record
        do {
            let lock = try RepositoryLock.acquire(storage: repository.storage, exclusive: true, command: "run retention \(job.policy.name)/\(job.source.name)",
                                                  wait: options.lockWait)
            defer { lock.release() }
            let host = Host.name
            let group = try repository.listSnapshots().filter { $0.source.name == job.source.name && $0.hostname == host }
            let decisions = Retention.apply(rules, to: group.map { ($0.id!, $0.time, $0.tags) })
            let remove = decisions.filter { !$0.keep }.map(\.snapshotID)
            let retained = try repository.removeSnapshots(remove)
            var text = "kept \(decisions.count - remove.count), removed \(remove.count - retained.count)"
            if let last = retained.map(\.until).max() {
                text += ", \(retained.count) left under object lock until \(ObjectLockFormat.text(last))"
            }
            // With object lock, prune also keeps the lock of used data from running out, so it
            // runs every time (and without prune the locks are extended on their own).
            if prune && (!remove.isEmpty || repository.objectLock != nil) {
                let report = try Pruner(repository: repository, options: PruneOptions(), warn: { [log] in log("prune: \($0)") }).run()
                text += ", pruned \(report.bytesFreed) bytes"
                if report.locksExtended > 0 { text += ", extended \(report.locksExtended) object locks" }
            } else if repository.objectLock != nil {
                let extended = try repository.extendRetentionOfAll()
                if extended > 0 { text += ", extended \(extended) object locks" }
            }
            record.outcome = "success"
            if let data = try? JSON.encoder.encode(decisions) { record.details = String(decoding: data, as: UTF8.self) }
            record.ended = Clock.now
            try? catalog.update(record)
            log("\(label) \(text)")
            return text
        } catch {
            let message = recordFailure(&record, error, ended: Clock.now)
            log("\(label) FAILED: \(message)")
            return "failed: \(message)"
        }
    }
}

/// Runs a policy's `notify:` command with the details in environment variables.
public enum Notifier {
    public static func notify(_ policy: Policy, source: String, event: String, detail: String, snapshot: String?, log: @Sendable (String) -> Void) {
        guard let command = policy.notify else { return }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        // The notify command learns what happened, not kho's secrets.
        var env = ChildEnvironment.minimal()
        env["KHO_EVENT"] = event
        env["KHO_POLICY"] = policy.name
        env["KHO_AGENCY"] = policy.agency
        env["KHO_SYSTEM"] = policy.system
        env["KHO_SOURCE"] = source
        env["KHO_DETAIL"] = Secrets.mask(detail)
        env["KHO_SNAPSHOT"] = snapshot ?? ""
        env["KHO_TIME"] = Timestamp.format(Clock.now)
        process.environment = env
        do {
            try process.run()
            process.waitUntilExit()
            if process.terminationStatus != 0 {
                log("\(policy.name)/\(source): notify command exited with status \(process.terminationStatus)")
            }
        } catch {
            log("\(policy.name)/\(source): notify command cannot start: \(error.localizedDescription)")
        }
    }
}
