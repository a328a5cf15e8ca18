import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoSources
import KhoStorage
import KhoVerify
import Logging

/// Runs policies' jobs: the backups that are due (or all), then retention for each source whose
/// backup succeeded, recording everything in the catalog. Jobs on different repositories run in
/// parallel; jobs on one repository run one after another.
public final class PolicyRunner: @unchecked Sendable {
    public let policies: [Policy]
    public let catalog: Catalog
    public let options: RunOptions
    let log: @Sendable (String) -> Void
    /// Tells the command line's signal handler about a drill's repository lock.
    public var drillLockHooks = DrillLockHooks.none
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

    /// Whether the backup planned for `planned` failed every time so far, has attempts left, its
    /// last failure may pass without anyone changing anything (`KhoError.retryable`: a storage that
    /// could not be reached, a refused connection, an interruption — not a wrong password, a usage,
    /// policy or integrity error, which fail again the same way), and its last attempt began long
    /// enough ago. An attempt still "running" is not tried again: a
    /// large database's backup may well run longer than the pause, and a second one beside it
    /// would only wait for its lock (a killed one is caught up at the next planned time).
    func isRetryDue(_ policy: Policy, _ source: SourceSpec, planned: Date, now: Date) throws -> Bool {
        let attempts = try catalog.attempts(policy: policy.name, source: source.name, planned: planned)
        guard let latest = attempts.last, attempts.count <= PolicyRunner.retryDelays.count,
              attempts.allSatisfy({ $0.outcome == .failure }),
              latest.retryable != false else { return false }
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
        if !stopRequested.current {
            for (policy, source, planned) in try dueDrills(now: now) {
                if stopRequested.current { break }
                drillResults.append(runDrill(policy, source, planned: planned))
            }
        }
        if !stopRequested.current {
            try notifyFreshness(now: Clock.now)
        }
        if let metricsFile = options.metricsFile {
            try Metrics.write(to: metricsFile, policies: policies, catalog: catalog, now: Clock.now, wal: .standard)
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
                // A base backup is proven by a point-in-time recovery drill, on its own period
                // (`pitr-every`), beside the rotation of the dump drills.
                if source.kind.retentionFamily == .physical {
                    guard let period = drills.pitrEvery else { continue }
                    let last = try catalog.last(policy: policy.name, source: source.name, kind: .drill)
                    if options.onlyDue, let last {
                        let wait = last.outcome == .success ? period : PolicyRunner.retryPause(every: period)
                        if now.timeIntervalSince(last.started) < wait { continue }
                    }
                    result.append((policy, source, now))
                    continue
                }
                let last = try catalog.last(policy: policy.name, source: source.name, kind: .drill)
                let lastPassed = last?.outcome == .success
                    ? last?.started : try catalog.last(policy: policy.name, source: source.name, kind: .drill, outcome: .success)?.started
                if options.onlyDue, let last {
                    let wait = last.outcome == .success ? drills.every : PolicyRunner.retryPause(every: drills.every)
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

    func openRepository(_ spec: RepositorySpec) throws -> Repository {
        try Repository.open(storage: try StorageFactory.make(location: spec.path), password: try spec.password())
    }

    /// Marks a run failed in the catalog and returns the one-sentence message; when the catalog
    /// cannot record it, the message says that too.
    func recordFailure(_ record: inout RunRecord, _ error: Error, ended: Date) -> String {
        record.fail(error, ended: ended)
        let message = Secrets.mask(record.error ?? "")
        do {
            try catalog.update(record)
        } catch {
            return message + "; " + PolicyRunner.message(error)
        }
        return message
    }

    /// An error's one sentence, secrets masked.
    static func message(_ error: Error) -> String {
        Secrets.mask((error as? KhoError)?.message ?? "\(error)")
    }
}
