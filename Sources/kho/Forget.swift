import ArgumentParser
import Foundation
import KhoCore
import KhoSupport

struct Forget: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forget",
        abstract: "Remove snapshots by retention rules (or by ID); --prune then frees their data.",
        discussion: """
        Snapshots are grouped by host and source (its name, or the paths of a backup without one), and by tags with
        --group-by-tags; the rules apply within each group. Days, weeks, months and years are counted
        in --time-zone, else KHO_TIME_ZONE, else Asia/Ho_Chi_Minh; times are shown in the same zone. --keep-within counts back from
        the newest snapshot of the group. --dry-run shows every decision and the rule behind it.
        """
    )

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "Snapshots to remove explicitly (IDs or prefixes), instead of rules.")
    var snapshots: [String] = []

    @Option(name: .customLong("keep-last"), help: "Keep the N newest snapshots.") var keepLast: Int = 0
    @Option(name: .customLong("keep-hourly"), help: "Keep the newest snapshot of each of the last N hours that have one.") var keepHourly: Int = 0
    @Option(name: .customLong("keep-daily"), help: "Keep the newest snapshot of each of the last N days that have one.") var keepDaily: Int = 0
    @Option(name: .customLong("keep-weekly"), help: "Keep the newest snapshot of each of the last N ISO weeks that have one.") var keepWeekly: Int = 0
    @Option(name: .customLong("keep-monthly"), help: "Keep the newest snapshot of each of the last N months that have one.") var keepMonthly: Int = 0
    @Option(name: .customLong("keep-yearly"), help: "Keep the newest snapshot of each of the last N years that have one.") var keepYearly: Int = 0
    @Option(name: .customLong("keep-within"), help: "Keep every snapshot within this duration of the newest (e.g. 7d, 36h).") var keepWithin: String?
    @Option(name: .customLong("keep-tag"), help: "Keep every snapshot with this tag (repeatable).") var keepTag: [String] = []
    @Option(name: .customLong("time-zone"), help: "Time zone for days, weeks, months and years, and for the times shown. Default: $KHO_TIME_ZONE, else Asia/Ho_Chi_Minh.") var timeZone: String?

    @Flag(name: .customLong("group-by-tags"), help: "Also group snapshots by their tags.") var groupByTags = false
    @Option(help: "Only snapshots of this host.") var host: String?
    @Flag(name: .customLong("dry-run"), help: "Show what would be removed and why; change nothing.") var dryRun = false
    @Flag(help: "Run prune after removing snapshots.") var prune = false
    @Option(name: .customLong("max-unused"), help: "With --prune: unused space allowed to remain, e.g. 5%.") var maxUnused: String = "5%"
    @Flag(help: "Print decisions as JSON.") var json = false

    func validate() throws {
        for (name, value) in [("--keep-last", keepLast), ("--keep-hourly", keepHourly), ("--keep-daily", keepDaily),
                              ("--keep-weekly", keepWeekly), ("--keep-monthly", keepMonthly), ("--keep-yearly", keepYearly)] where value < 0 {
            throw ValidationError("\(name) must be 0 or more; got \(value).")
        }
        let zone: TimeZone
        do {
            zone = try self.zone()
        } catch let error as KhoError {
            throw ValidationError(error.message)
        }
        if !snapshots.isEmpty && (!policy(zone).isEmpty || keepWithin != nil) {
            throw ValidationError("Give snapshot IDs or --keep-* rules, not both.")
        }
        if snapshots.isEmpty && policy(zone).isEmpty && keepWithin == nil {
            throw ValidationError("No --keep-* rule and no snapshot given: refusing to remove every snapshot. Add rules such as --keep-daily 7.")
        }
        _ = try Prune.parseShare(maxUnused)
    }

    /// The zone days are counted and times shown in (see `DisplayZone`).
    func zone() throws -> TimeZone { try DisplayZone.resolve(option: timeZone) }

    func policy(_ zone: TimeZone) -> RetentionPolicy {
        var p = RetentionPolicy()
        p.last = keepLast
        p.hourly = keepHourly
        p.daily = keepDaily
        p.weekly = keepWeekly
        p.monthly = keepMonthly
        p.yearly = keepYearly
        p.tags = keepTag
        p.timeZone = zone.identifier
        return p
    }

    struct Group: Encodable {
        var host: String
        var source: String
        var tags: [String]?
        var decisions: [RetentionDecision]
    }

    struct Output: Encodable {
        var dryRun: Bool
        var groups: [Group]
        var removed: [String]
        /// Snapshots the rules or IDs would remove that object lock keeps until a date.
        var retained: [RetainedFile]?
        var prune: PruneReport?
    }

    func run() throws {
        let zone = try self.zone()
        var rules = policy(zone)
        if let keepWithin { rules.within = try DurationText.parse(keepWithin, option: "--keep-within") }
        let repo = try repository.open()
        let all = try repo.listSnapshots().filter { host == nil || $0.hostname == host }
        var groups: [Group] = []
        var toRemove: [String] = []
        if !snapshots.isEmpty {
            for reference in snapshots {
                let snapshot = try repo.findSnapshot(reference)
                // The same snapshot named twice (full ID and prefix) is removed and counted once.
                if !toRemove.contains(snapshot.id!) { toRemove.append(snapshot.id!) }
            }
        } else {
            for group in RetentionGroups.group(all, byTags: groupByTags) {
                let decisions = group.decisions(rules)
                groups.append(Group(host: group.host, source: group.label, tags: group.tags, decisions: decisions))
                toRemove += decisions.filter { !$0.keep }.map(\.snapshotID)
            }
        }

        if !json {
            for group in groups {
                Terminal.out("host \(group.host), source \(group.source)\(group.tags.map { " [\($0.joined(separator: ","))]" } ?? ""):")
                for d in group.decisions {
                    Terminal.out("  \(d.keep ? "keep  " : "remove") \(d.snapshotID.prefix(8))  \(Format.time(d.time, zone))  \(d.reasons.joined(separator: "; "))")
                }
            }
        }
        var pruneReport: PruneReport?
        var retained: [RetainedFile] = []
        if !dryRun && (!toRemove.isEmpty || prune) {
            try repository.withRepository(exclusive: true, command: "forget") { repo in
                retained = try repo.removeSnapshots(toRemove)
                for file in retained {
                    let name = "Snapshot \(file.path.split(separator: "/").last!.prefix(8))"
                    Terminal.warning(repo.retainedMessage(name, until: file.until, command: "forget"))
                }
                if !json { Terminal.out("removed \(toRemove.count - retained.count) snapshots") }
                if prune {
                    var options = PruneOptions()
                    options.maxUnused = try Prune.parseShare(maxUnused)
                    pruneReport = try Pruner(repository: repo, options: options, warn: { Terminal.warning($0) }).run()
                }
            }
        } else if dryRun && !json {
            Terminal.out("dry run: would remove \(toRemove.count) snapshots")
        }
        let kept = Set(retained.map { String($0.path.split(separator: "/").last!) })
        if json {
            try Terminal.json(Output(dryRun: dryRun, groups: groups, removed: dryRun ? [] : toRemove.filter { !kept.contains($0) },
                                     retained: retained.isEmpty ? nil : retained, prune: pruneReport))
        } else if let pruneReport {
            Prune.describe(pruneReport)
        }
        if !snapshots.isEmpty && !retained.isEmpty {
            // Named explicitly and not removed: the operator must know the command did not do it.
            throw KhoError(.failure, "\(retained.count) of the snapshots given are still under object lock and were not removed (see above): run forget again after \(ObjectLockFormat.text(retained.map(\.until).max()!)).")
        }
    }
}
