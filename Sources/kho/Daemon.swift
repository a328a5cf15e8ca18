import ArgumentParser
import Foundation
import KhoCore
import KhoSupport
import KhoPolicy

struct Daemon: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daemon",
        abstract: "Run the policies' schedules forever (instead of cron or a systemd timer).",
        discussion: "SIGTERM or SIGINT lets running jobs finish their current step, releases every lock and exits 0."
    )

    @OptionGroup var orchestration: OrchestrationOptions
    @Option(help: "Jobs on different repositories to run at once.") var jobs = 2
    @Option(name: .customLong("metrics-file"), help: "Write Prometheus metrics here after every round.") var metricsFile: String?
    @OptionGroup var zone: TimeZoneOption

    func run() throws {
        let stop = Locked(false)
        Signals.graceful { stop.withLock { $0 = true } }
        // Log times in the policies' zone as they are at start (policies with problems are reported below).
        let zone = try self.zone.zone(policies: PolicyLoader(checkSecrets: false).load(directory: orchestration.policyDirectory).policies)
        let log: @Sendable (String) -> Void = { line in Terminal.write(STDERR_FILENO, "\(Format.time(Date(), zone)) \(line)\n") }
        log("kho daemon started with policies from \(orchestration.policyDirectory)")
        while !stop.current {
            // Policies are read again each round, so that edits are picked up without a restart.
            let policies: [Policy]
            do { policies = try orchestration.loadPolicies() } catch { log("\(error)"); policies = [] }
            var options = RunOptions()
            options.jobs = jobs
            options.metricsFile = metricsFile
            options.khoVersion = Kho.version
            options.stateDirectory = orchestration.stateDirectory
            let catalog = try orchestration.catalog()
            let runner = PolicyRunner(policies: policies, catalog: catalog, options: options, log: log)
            runner.drillLockHooks = Verify.lockHooks
            do {
                try PolicyChanges.record(policies: policies, stateDirectory: orchestration.stateDirectory)
            } catch {
                // Not recorded: the hashes stay as they were, so the next round records the change.
                log("policy changes could not be recorded in the audit ledger: \((error as? KhoError)?.message ?? "\(error)")")
            }
            let watcher = Worker(name: "kho-daemon-stop") {
                while !stop.current && !runner.stopRequested.current { Thread.sleep(forTimeInterval: 0.2) }
                runner.stopRequested.withLock { $0 = true }
            }
            do {
                // Each job logs its own failure as it happens (also one the catalog could not
                // record); what is thrown here failed the round itself: planning against the
                // catalog, freshness notifications, the metrics file. The daemon goes on: the
                // next round tries again, and says so again while the fault lasts.
                _ = try runner.run(now: Clock.now)
            } catch {
                log("ERROR: this round's runs could not all be planned or recorded: \((error as? KhoError)?.message ?? "\(error)")")
            }
            runner.stopRequested.withLock { $0 = true }
            watcher.join()
            let next = policies.compactMap { $0.schedule.next(after: Clock.now) }.min() ?? Clock.now.addingTimeInterval(60)
            let wait = min(60, max(1, next.timeIntervalSince(Clock.now)))
            var waited = 0.0
            while waited < wait && !stop.current {
                Thread.sleep(forTimeInterval: 0.2)
                waited += 0.2
            }
        }
        log("kho daemon stopped; no job is running and no lock is held")
    }
}
