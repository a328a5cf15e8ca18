import ArgumentParser
import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoPolicy
import KhoStorage

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Per policy and source: newest good backup against the RPO (ok, late, missed), last failure, next run, last drill."
    )

    @OptionGroup var orchestration: OrchestrationOptions
    @OptionGroup var zone: TimeZoneOption
    @Flag(help: "Print as JSON (times in RFC 3339, UTC).") var json = false
    @Option(name: .customLong("metrics-file"), help: "Also write the Prometheus metrics (textfile-collector format) here.") var metricsFile: String?

    func run() throws {
        let policies = try orchestration.loadPolicies(checkSecrets: false)
        let catalog = try orchestration.catalog()
        let now = Clock.now
        let statuses = try StatusReport.compute(policies: policies, catalog: catalog, now: now, wal: .standard)
        if let metricsFile { try Metrics.write(to: metricsFile, policies: policies, catalog: catalog, now: now, wal: .standard) }
        // A stalled archiver loses the RPO minute by minute and a hole cuts recovery: unlike a
        // late backup, which the next run repairs, both need someone now.
        let failing = statuses.filter { $0.wal?.failing ?? false || $0.binlog?.failing ?? false }
        if json {
            try Terminal.json(statuses)
            try StatusCommand.refuse(failing)
            return
        }
        // Each policy's lines in its own time-zone, unless --time-zone or KHO_TIME_ZONE says otherwise.
        var zones: [String: TimeZone] = [:]
        for policy in policies { zones[policy.name] = try zone.zone(policies: [policy]) }
        let fallback = try zone.zone()
        for s in statuses {
            let zone = zones[s.policy] ?? fallback
            let age = s.ageSeconds.map { Format.duration($0) + " old" } ?? "no good backup"
            Terminal.out("\(s.freshness.rawValue.uppercased().rightPad(7)) \(s.policy)/\(s.source): \(age) (RPO \(DurationFormat.describe(s.rpoSeconds)))"
                         + (s.lastSnapshot.map { ", snapshot \($0.prefix(8))" } ?? "")
                         + (s.nextRun.map { ", next run \(Format.time($0, zone))" } ?? ""))
            if let error = s.lastError, let when = s.lastFailure {
                Terminal.out("        last failure \(Format.time(when, zone)): \(error)")
            }
            Terminal.out("        drill: " + (s.lastDrill.map { "\(s.lastDrillOutcome?.rawValue ?? "?") at \(Format.time($0, zone))" } ?? "never") + (s.untested ? " (no passed drill within the drill period)" : ""))
            for c in s.copies {
                let lag = c.lagSeconds.map { "lag " + ($0 < 60 ? "\(Int($0)) s" : Format.duration($0)) + (c.newestCopiedSnapshotTime.map { ", newest copy \(Format.time($0, zone))" } ?? "") } ?? "lag unknown, nothing copied yet"
                let failed = c.lastCopyFailed ? "; last copy FAILED" + (c.lastCopy.map { " \(Format.time($0, zone))" } ?? "") + (c.lastError.map { ": \($0)" } ?? "") : ""
                Terminal.out("        copy to \(c.destination): \(lag)\(failed)")
            }
            if let w = s.wal { StatusCommand.describe(w, zone: zone) }
            if let b = s.binlog { StatusCommand.describe(b, zone: zone) }
        }
        try StatusCommand.refuse(failing)
    }

    static func describe(_ w: WALSourceStatus, zone: TimeZone) {
        let newest = w.newestSegment.map { name in "newest \(name)" + (w.newestStored.map { " stored \(Format.time($0, zone))" } ?? "") } ?? "nothing archived"
        let lag = w.lagSeconds.map { ", lag " + ($0 < 60 ? "\(Int($0)) s" : Format.duration($0)) } ?? ""
        Terminal.out("        WAL \(w.freshness.rawValue.uppercased()): \(newest)\(lag) (WAL RPO \(DurationFormat.describe(w.rpoSeconds)))")
        switch w.continuity {
        case .ok: Terminal.out("        continuity: ok")
        case .gap: Terminal.out("        continuity: GAP at \(w.gap ?? "?")" + (w.gapCuts.isEmpty ? "" : ", cuts base backups \(w.gapCuts.joined(separator: ", "))"))
        case .unknown: Terminal.out("        continuity: unknown")
        }
        if let start = w.windowStart, let end = w.windowEnd {
            Terminal.out("        recovery window: \(Format.time(start, zone)) to \(Format.time(end, zone)) (\(w.baseBackups) base backups)")
        } else {
            Terminal.out("        recovery window: none (\(w.baseBackups == 0 ? "no base backup" : "no archived WAL"))")
        }
        if let running = w.agentRunning {
            Terminal.out("        agent: \(running ? "running" : "NOT RUNNING"), \(w.readyFiles ?? 0) files waiting" + (w.stalled ? ", STALLED" : ""))
        }
        if let error = w.lastError { Terminal.out("        WAL error: \(error)") }
    }

    static func describe(_ b: BinlogSourceStatus, zone: TimeZone) {
        let newest = b.newestFile.map { name in "newest \(name)" + (b.newestStored.map { " stored \(Format.time($0, zone))" } ?? "") } ?? "nothing archived"
        let caught = b.caughtUp.map { ", serve caught up \(Format.time($0, zone))" } ?? ""
        let lag = b.lagSeconds.map { ", lag " + ($0 < 60 ? "\(Int($0)) s" : Format.duration($0)) } ?? ""
        Terminal.out("        binary log \(b.freshness.rawValue.uppercased()): \(newest)\(caught)\(lag) (RPO \(DurationFormat.describe(b.rpoSeconds)), \(b.files) files)")
        switch b.continuity {
        case .ok: Terminal.out("        continuity: ok")
        case .gap: Terminal.out("        continuity: GAP: \(b.gap ?? "?")")
        case .unknown: Terminal.out("        continuity: unknown")
        }
        if let error = b.lastError { Terminal.out("        binary log error: \(error)") }
    }

    static func refuse(_ failing: [SourceStatus]) throws {
        guard !failing.isEmpty else { return }
        let names = failing.map { "\($0.policy)/\($0.source)" + ($0.wal?.stalled == true ? " (stalled)" : "") + ($0.wal?.continuity == .gap ? " (gap)" : "") + ($0.wal?.continuity == .unknown ? " (archive unreadable)" : "")
            + ($0.binlog?.freshness == .missed ? " (binary log behind)" : "") + ($0.binlog?.continuity == .gap ? " (binary log gap)" : "") + ($0.binlog?.continuity == .unknown ? " (binary log unreadable)" : "") }
        throw KhoError(.failure, "WAL or binary log archiving fails for \(names.joined(separator: ", ")): restart the WAL agent or kho binlog serve, or fix the archive_command, for a stall; take a base backup (PostgreSQL) or a dump (MariaDB) now for a gap; run `kho check` for an unreadable archive.")
    }
}

struct CatalogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "catalog",
        abstract: "Maintain the catalog of runs.",
        subcommands: [Rebuild.self]
    )

    struct Rebuild: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rebuild",
            abstract: "Recreate the history of backups and drills from what the policies' repositories hold.",
            discussion: """
            Adds a backup row for each snapshot and a drill row (with its sealed evidence) for each drill
            whose evidence the repository keeps in drills/, that the catalog does not know; rows are
            marked rebuilt. Running it again adds nothing.
            """
        )
        @OptionGroup var orchestration: OrchestrationOptions

        func run() throws {
            let policies = try orchestration.loadPolicies()
            let catalog = try orchestration.catalog()
            var total = 0
            for policy in policies {
                let repository = try KhoCore.Repository.open(storage: try StorageFactory.make(location: policy.repository.path), password: try policy.repository.password())
                let added = try catalog.rebuild(policy: policy, snapshots: try repository.listSnapshots())
                Terminal.out("\(policy.name): \(added) backups recovered from \(policy.repository.path)")
                let drills = try catalog.rebuildDrills(policy: policy, evidence: try repository.drillEvidence())
                Terminal.out("\(policy.name): \(drills) drills recovered from \(policy.repository.path)")
                total += added + drills
            }
            Terminal.out("catalog \(catalog.path): \(total) runs added")
        }
    }
}
