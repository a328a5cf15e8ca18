import Foundation
import KhoPolicy

/// kho's baseline of backup requirements per security level (1 to 5, as information systems are
/// classified in Việt Nam). These are kho's proposal for a province to adopt or tighten, not a
/// quotation of a regulation: the higher the level, the fresher the backups, the more frequent
/// the drills, and from level 3 a copy at a second site.
public enum SecurityLevels {
    public static let requirements: [LevelRequirement] = [
        LevelRequirement(level: 1, maxRpoSeconds: 7 * 86400, drillEverySeconds: 365 * 86400, minSuccessRate: 0.90, offsiteCopy: false, auditLedger: false),
        LevelRequirement(level: 2, maxRpoSeconds: 86400, drillEverySeconds: 90 * 86400, minSuccessRate: 0.95, offsiteCopy: false, auditLedger: true),
        LevelRequirement(level: 3, maxRpoSeconds: 86400, drillEverySeconds: 30 * 86400, minSuccessRate: 0.95, offsiteCopy: true, auditLedger: true),
        LevelRequirement(level: 4, maxRpoSeconds: 12 * 3600, drillEverySeconds: 14 * 86400, minSuccessRate: 0.98, offsiteCopy: true, auditLedger: true),
        LevelRequirement(level: 5, maxRpoSeconds: 4 * 3600, drillEverySeconds: 7 * 86400, minSuccessRate: 0.99, offsiteCopy: true, auditLedger: true),
    ]

    public static func requirement(_ level: Int) -> LevelRequirement {
        requirements[min(max(level, 1), 5) - 1]
    }
}

/// The controls auditors ask about, each judged from facts about the datasets in the report.
enum ControlMapping {
    static func evaluate(datasets: [Dataset], ledger: LedgerSection, policies: [Policy], scope: ReportScope) -> [Control] {
        func fact(_ id: String, _ over: [Dataset], threshold: Double? = nil, _ test: (Dataset) -> Bool) -> Fact {
            let failing = over.filter { !test($0) }.map(\.key)
            return Fact(id: id, met: over.count - failing.count, of: over.count, threshold: threshold, failing: failing)
        }
        func passedDrillAge(_ d: Dataset) -> Double? {
            d.backups.lastVerified.map { scope.to.timeIntervalSince($0.confirmedAt) }
        }
        let all = datasets
        let goodBackup = fact("goodBackupInPeriod", all) { $0.backups.succeeded > 0 }
        let rpoMet = fact("rpoMet", all) { $0.backups.rpoMet == true }
        let drilled = fact("passedDrillWithinPeriod", all) { d in passedDrillAge(d).map { $0 <= d.objectives.drillPeriodUsedSeconds } ?? false }
        let rtoMet = fact("rtoMet", all) { $0.drills.rtoMet == true }
        let content = fact("contentVerified", all) { $0.dimensions.correct.verdict == .pass }
        let noMissed = fact("noMissedRuns", all) { $0.backups.attempted > 0 && $0.backups.missed == 0 }
        let successRate = fact("successRateAtLevel", all) { d in
            (d.backups.successRate.map { $0 >= SecurityLevels.requirement(d.securityLevel).minSuccessRate }) ?? false
        }
        let objectives = fact("objectivesDefined", all) { $0.objectives.rpoSeconds > 0 && $0.objectives.rtoSeconds > 0 }
        let drillsScheduled = fact("drillsScheduled", all) { $0.objectives.drillEverySeconds != nil }
        // Every kho repository is encrypted (AES-256-GCM) and authenticated; there is no
        // unencrypted mode, so this holds for every dataset by construction.
        let encrypted = fact("encryptedByDesign", all) { _ in true }
        // A copy at a second site counts when the policy has `copies:` and every destination is
        // current at the period end: it holds a snapshot no more than the RPO (plus its 1%
        // tolerance) older than the newest good backup (see `DatasetBuilder.copies`).
        let offsite = fact("offsiteCopy", all) { $0.copies.status == "current" }
        let ledgerIntact = Fact(id: "ledgerIntact", met: ledger.status == "intact" ? 1 : 0, of: 1, threshold: nil, failing: [])
        let records = all.flatMap(\.drills.records)
        let sealed = Fact(id: "evidenceSealed", met: records.filter(\.sealIntact).count, of: records.count, threshold: nil,
                          failing: all.filter { $0.drills.records.contains { !$0.sealIntact } }.map(\.key))

        var controls = [
            control("iso27001-A.8.13", "ISO/IEC 27001:2022", "A.8.13", [goodBackup, rpoMet, drilled, content]),
            control("cis-11.1", "CIS Controls v8", "11.1", [objectives, drillsScheduled]),
            control("cis-11.2", "CIS Controls v8", "11.2", [goodBackup, noMissed, successRate]),
            control("cis-11.3", "CIS Controls v8", "11.3", [encrypted, ledgerIntact, sealed]),
            control("cis-11.4", "CIS Controls v8", "11.4", [offsite]),
            control("cis-11.5", "CIS Controls v8", "11.5", [drilled, content, rtoMet]),
            control("nist-CP-4", "NIST SP 800-34 / SP 800-53", "CP-4", [drilled, rtoMet, sealed]),
            control("nist-CP-9", "NIST SP 800-34 / SP 800-53", "CP-9", [goodBackup, rpoMet, content, encrypted]),
        ]
        for level in Set(all.map(\.securityLevel)).sorted() {
            let members = all.filter { $0.securityLevel == level }
            let r = SecurityLevels.requirement(level)
            var facts = [
                fact("levelRpoObjective", members, threshold: r.maxRpoSeconds) { $0.objectives.rpoSeconds <= r.maxRpoSeconds },
                fact("rpoMet", members) { $0.backups.rpoMet == true },
                fact("levelDrillFrequency", members, threshold: r.drillEverySeconds) { d in
                    passedDrillAge(d).map { $0 <= r.drillEverySeconds } ?? false
                },
                fact("levelSuccessRate", members, threshold: r.minSuccessRate) { d in
                    (d.backups.successRate.map { $0 >= r.minSuccessRate }) ?? false
                },
            ]
            if r.offsiteCopy { facts.append(fact("offsiteCopy", members) { $0.copies.status == "current" }) }
            if r.auditLedger { facts.append(ledgerIntact) }
            controls.append(control("level-\(level)", "security level", String(level), facts))
        }
        return controls
    }

    /// Met when every fact holds for everything it covers; not met when none holds for anything;
    /// partly met otherwise.
    static func control(_ id: String, _ framework: String, _ clause: String, _ facts: [Fact]) -> Control {
        let status: ControlStatus
        if !facts.isEmpty && facts.allSatisfy(\.satisfied) { status = .met }
        else if facts.allSatisfy({ $0.met == 0 }) { status = .notMet }
        else { status = .partlyMet }
        return Control(id: id, framework: framework, clause: clause, status: status, facts: facts)
    }
}
