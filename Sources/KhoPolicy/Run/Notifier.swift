import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoSources
import KhoStorage

extension PolicyRunner {
    /// Runs a policy's `notify:` when a selected source's newest good backup is older than the RPO
    /// (event "late") or than twice the RPO ("missed"). Each state is announced once per newest
    /// good snapshot: the catalog keeps a "notify" row, so a timer running every few minutes does
    /// not repeat it.
    func notifyFreshness(now: Date) throws {
        let chosen = policies.filter { $0.notify != nil && (options.policy == nil || $0.name == options.policy) }
        guard !chosen.isEmpty else { return }
        for status in try StatusReport.compute(policies: chosen, catalog: catalog, now: now) {
            guard let (event, announced) = status.freshness.announcement else { continue }
            if let source = options.source, status.source != source { continue }
            guard let policy = chosen.first(where: { $0.name == status.policy }) else { continue }
            let last = try catalog.last(policy: status.policy, source: status.source, kind: .notify)
            if let last, last.outcome == announced, last.snapshot == status.lastSnapshot { continue }
            let age = status.ageSeconds.map { "the newest good backup is \(Int($0) / 3600)h\(Int($0) % 3600 / 60)m old" } ?? "there is no good backup"
            let detail = "\(age); the RPO is \(DurationFormat.describe(policy.rpo))"
            log("\(policy.name)/\(status.source): RPO \(status.freshness.rawValue): \(detail)")
            Notifier.notify(policy, source: status.source, event: event, detail: detail, snapshot: status.lastSnapshot, log: log)
            var record = RunRecord(kind: .notify, policy: policy.name, source: status.source, repository: policy.repository.path,
                                   planned: nil, started: now)
            record.outcome = announced
            record.snapshot = status.lastSnapshot
            record.details = detail
            record.ended = now
            try catalog.insert(record)
        }
    }
}

/// What a policy's `notify:` command is told happened (KHO_EVENT).
public enum NotifyEvent: String, Sendable, CaseIterable {
    /// A backup failed.
    case failure
    /// A copy to a `copies:` destination failed.
    case copyFailure = "copy-failure"
    /// The newest good backup is older than the RPO.
    case late
    /// The newest good backup is older than twice the RPO, or there is none.
    case missed
}

extension SourceStatus.Freshness {
    /// The event a policy's `notify:` is told of and the outcome of the catalog's notify row that
    /// remembers it was told; nil when all is well.
    var announcement: (NotifyEvent, RunOutcome)? {
        switch self {
        case .ok: nil
        case .late: (.late, .late)
        case .missed: (.missed, .missed)
        }
    }
}

/// Runs a policy's `notify:` command with the details in environment variables.
public enum Notifier {
    public static func notify(_ policy: Policy, source: String, event: NotifyEvent, detail: String, snapshot: String?, log: @Sendable (String) -> Void) {
        guard let command = policy.notify else { return }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        // The notify command learns what happened, not kho's secrets.
        var env = ChildEnvironment.minimal()
        env["KHO_EVENT"] = event.rawValue
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
