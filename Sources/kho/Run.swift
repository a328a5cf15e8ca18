import ArgumentParser
import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoPolicy
import KhoSources

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the policies' backups (those due, or all), then retention; for cron and systemd timers.",
        discussion: """
        A run missed while the host was down is caught up once. Jobs on different repositories run
        in parallel (--jobs); jobs on one repository one after another. Exit 0 only when every job
        succeeded; 3 when some were partial; 1 when any failed.

        KHO_TEST_NOW (tests only) sets the time kho believes it is.
        """
    )

    @OptionGroup var orchestration: OrchestrationOptions

    @Option(help: "Only this policy.") var policy: String?
    @Option(help: "Only this source.") var source: String?
    @Flag(help: "Run only the jobs that are due (the default).") var due = false
    @Flag(help: "Run every selected job now, due or not.") var all = false
    @Option(help: "Jobs on different repositories to run at once.") var jobs = 2
    @Option(name: .customLong("lock-wait"), help: "How long a job waits for a repository lock.") var lockWait = "10m"
    @Option(name: .customLong("metrics-file"), help: "Write Prometheus metrics (textfile-collector format) here.") var metricsFile: String?
    @OptionGroup var zone: TimeZoneOption
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        if due && all { throw ValidationError("Give --due or --all, not both.") }
        if jobs < 1 { throw ValidationError("--jobs must be at least 1.") }
    }

    func run() throws {
        let policies = try orchestration.loadPolicies()
        if let policy, !policies.contains(where: { $0.name == policy }) {
            throw KhoError(.usage, "No policy named \(policy): see `kho policy list`.")
        }
        var options = RunOptions()
        options.onlyDue = !all
        options.policy = policy
        options.source = source
        options.jobs = jobs
        options.lockWait = try DurationText.parse(lockWait, option: "--lock-wait")
        options.metricsFile = metricsFile
        options.khoVersion = Kho.version
        options.stateDirectory = orchestration.stateDirectory
        let quiet = json
        let zone = try self.zone.zone(policies: policies.filter { policy == nil || $0.name == policy })
        let runner = PolicyRunner(policies: policies, catalog: try orchestration.catalog(), options: options) { line in
            if !quiet { Terminal.write(STDERR_FILENO, "\(Format.time(Date(), zone)) \(line)\n") }
        }
        runner.drillLockHooks = Verify.lockHooks
        try PolicyChanges.record(policies: policies, stateDirectory: orchestration.stateDirectory)
        let results = try runner.run(now: Clock.now)
        try Run.report(results, json: json)
    }

    static func report(_ results: [JobResult], json: Bool) throws {
        if json {
            try Terminal.json(results)
        } else if results.isEmpty {
            Terminal.out("no job due")
        } else {
            for r in results {
                let detail = r.error ?? "snapshot \(r.snapshot?.prefix(8) ?? "-"), read \(Format.bytes(r.bytesRead)), added \(Format.bytes(r.bytesAdded))\(r.retention.map { "; retention: \($0)" } ?? "")"
                let drill = r.kind == .drill
                Terminal.out("\(r.outcome.rawValue.rightPad(8)) \(drill ? "drill " : "")\(r.policy)/\(r.source) (\(Format.duration(r.seconds))): \(drill && r.error == nil ? "passed, snapshot \(r.snapshot?.prefix(8) ?? "-")" : detail)")
                for line in r.copies ?? [] { Terminal.out("         \(line)") }
            }
        }
        try finish(JobResult.verdict(of: results))
    }
}
