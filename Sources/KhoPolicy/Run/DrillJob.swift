import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoSources
import KhoVerify

extension PolicyRunner {
    /// A drill as a job of `kho run`: runs it (the drill records itself in the catalog), writes it
    /// to the audit ledger and turns its evidence into a job result. A drill that left no ledger
    /// entry does not count as done.
    func runDrill(_ policy: Policy, _ source: SourceSpec, planned: Date) -> JobResult {
        let start = Date()
        var result = JobResult(policy: policy.name, source: source.name, planned: planned, outcome: .failure, snapshot: nil,
                               error: nil, bytesRead: 0, bytesAdded: 0, seconds: 0, retention: nil)
        result.kind = .drill
        let drills = DrillRunner(catalog: catalog, khoVersion: options.khoVersion, lockHooks: drillLockHooks, log: log)
        do {
            let evidence = source.kind.retentionFamily == .physical
                ? try drills.pitrDrill(policy.drillTarget, source: source, marker: nil, planned: planned)
                : try drills.drill(policy.drillTarget, source: source, snapshotID: nil, planned: planned)
            result.outcome = evidence.passed ? .success : .failure
            result.snapshot = evidence.snapshot
            result.error = evidence.passed ? nil : evidence.failureReasons.joined(separator: "; ")
            do {
                try AuditRecorder(stateDirectory: options.stateDirectory ?? AuditRecorder.defaultStateDirectory)
                    .recordDrill(policy: policy.name, repository: policy.repository.path, source: source.name, outcome: result.outcome)
            } catch {
                result.outcome = .failure
                result.error = "the drill could not be recorded in the audit ledger: \(PolicyRunner.message(error))"
            }
        } catch {
            result.error = PolicyRunner.message(error)
        }
        result.seconds = Date().timeIntervalSince(start)
        return result
    }
}

extension Policy {
    /// What a drill of this policy's sources needs of it.
    public var drillTarget: DrillTarget {
        let repository = self.repository
        return DrillTarget(name: name, repository: repository.path, password: { try repository.password() }, rto: rto,
                           requirements: Set(drills?.checks ?? DrillRequirement.all))
    }
}
