import Foundation
import KhoCore
import KhoSupport

/// Writes privileged actions to the audit ledger of a state folder: commands of the command line
/// (named by it), drills run by the policy runner, policy changes. Every write that fails is an
/// error for the caller: an action the ledger does not hold did not happen as far as an auditor
/// can tell.
public struct AuditRecorder: Sendable {
    public let stateDirectory: String

    public init(stateDirectory: String) {
        self.stateDirectory = stateDirectory
    }

    /// The state folder when no option names one: KHO_STATE_DIR, else /var/lib/kho.
    public static var defaultStateDirectory: String {
        ProcessInfo.processInfo.environment["KHO_STATE_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/var/lib/kho"
    }

    /// Before a privileged command runs: its entry must be writable, or it does not run.
    public func checkWritable() throws {
        try AuditLedger(stateDirectory: stateDirectory).checkWritable()
    }

    /// Writes one entry, keyed with the first witness and anchored in every witness.
    public func record(command: String, arguments: [String], outcome: String, witnesses: [any LedgerWitness]) throws {
        try AuditLedger(stateDirectory: stateDirectory).append(command: command, arguments: arguments, outcome: outcome, witnesses: witnesses)
    }

    /// A drill of `kho run`: keyed with, and anchored in, the policy's repository when it was opened.
    public func recordDrill(policy: String, repository: String, source: String, outcome: RunOutcome) throws {
        let opened = OpenedRepositories.all
        let witnesses = opened.filter { $0.storage.location == repository }
        try record(command: RunKind.drill.rawValue, arguments: ["--policy", policy, "--source", source], outcome: outcome.rawValue,
                   witnesses: witnesses.isEmpty ? Array(opened.prefix(1)) : witnesses)
    }
}
