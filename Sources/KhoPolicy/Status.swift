import Foundation
import KhoCatalog
import KhoCore
import KhoSupport

/// Per policy source: how fresh the newest good backup is against the RPO, what failed last, and
/// when the next run is.
public struct SourceStatus: Codable, Sendable {
    public enum Freshness: String, Codable, Sendable, CaseIterable {
        /// The newest good snapshot is within the RPO.
        case ok
        /// Older than the RPO, but within twice the RPO.
        case late
        /// Older than twice the RPO, or no good snapshot at all.
        case missed
    }
    public var policy: String
    public var agency: String
    public var source: String
    public var kind: String
    public var lastSuccess: Date?
    public var lastSnapshot: String?
    public var newestGoodSnapshotTime: Date?
    public var ageSeconds: Double?
    public var rpoSeconds: Double
    public var rtoSeconds: Double
    public var freshness: Freshness
    public var lastFailure: Date?
    public var lastError: String?
    public var nextRun: Date?
    public var lastDrill: Date?
    public var lastDrillOutcome: RunOutcome?
    /// No drill that passed within the policy's drill period (or never).
    public var untested: Bool
    /// One per `copies:` destination of the policy.
    public var copies: [CopyStatus] = []
}

/// How far a `copies:` destination is behind the source's newest good backup.
public struct CopyStatus: Codable, Sendable {
    public var destination: String
    /// Time of the newest snapshot copied there (the source snapshot's time).
    public var newestCopiedSnapshotTime: Date?
    /// Newest good snapshot time − newest copied snapshot time; nil when nothing was copied yet.
    public var lagSeconds: Double?
    public var lastCopy: Date?
    public var lastCopyOutcome: RunOutcome?
    /// The last copy to this destination failed.
    public var lastCopyFailed: Bool
    public var lastError: String?
}

public enum StatusReport {
    public static func compute(policies: [Policy], catalog: Catalog, now: Date) throws -> [SourceStatus] {
        var result: [SourceStatus] = []
        for policy in policies {
            for source in policy.sources {
                let success = try catalog.last(policy: policy.name, source: source.name, kind: .backup, outcome: .success)
                let partial = try catalog.last(policy: policy.name, source: source.name, kind: .backup, outcome: .partial)
                let good = [success, partial].compactMap { $0 }.max { ($0.snapshotTime ?? $0.started) < ($1.snapshotTime ?? $1.started) }
                let failure = try catalog.last(policy: policy.name, source: source.name, kind: .backup, outcome: .failure)
                let drill = try catalog.last(policy: policy.name, source: source.name, kind: .drill)
                let goodTime = good?.snapshotTime ?? good?.started
                let age = goodTime.map { now.timeIntervalSince($0) }
                let freshness: SourceStatus.Freshness
                if let age, age <= policy.rpo { freshness = .ok }
                else if let age, age <= 2 * policy.rpo { freshness = .late }
                else { freshness = .missed }
                let failureIsNewer = failure.map { f in good.map { f.started > $0.started } ?? true } ?? false
                // Tested means a drill that passed, within the period: a failed one proves nothing.
                let passedDrill = drill?.outcome == .success
                    ? drill : try catalog.last(policy: policy.name, source: source.name, kind: .drill, outcome: .success)
                var untested = true
                if let passedDrill, let period = policy.drills?.every {
                    untested = now.timeIntervalSince(passedDrill.started) > period
                } else if passedDrill != nil && policy.drills == nil {
                    untested = false
                }
                var copyStatuses: [CopyStatus] = []
                if !policy.copies.isEmpty {
                    let runs = try catalog.runs(policy: policy.name, source: source.name, kind: .copy)
                    for destination in policy.copies {
                        let mine = runs.filter { $0.decodedDetails(CopyDetails.self)?.destination == destination.path }
                        let newest = mine.filter { $0.outcome == .success }.compactMap(\.snapshotTime).max()
                        let last = mine.last { $0.outcome.isFinished }
                        let lag = newest.map { copied in goodTime.map { max(0, $0.timeIntervalSince(copied)) } ?? 0 }
                        copyStatuses.append(CopyStatus(destination: destination.path, newestCopiedSnapshotTime: newest, lagSeconds: lag,
                                                       lastCopy: last?.started, lastCopyOutcome: last?.outcome,
                                                       lastCopyFailed: last?.outcome == .failure,
                                                       lastError: last?.outcome == .failure ? last?.error : nil))
                    }
                }
                result.append(SourceStatus(policy: policy.name, agency: policy.agency, source: source.name, kind: source.kind.rawValue,
                                           lastSuccess: good?.ended ?? good?.started, lastSnapshot: good?.snapshot,
                                           newestGoodSnapshotTime: goodTime, ageSeconds: age, rpoSeconds: policy.rpo, rtoSeconds: policy.rto,
                                           freshness: freshness,
                                           lastFailure: failureIsNewer ? failure?.started : nil,
                                           lastError: failureIsNewer ? failure?.error : nil,
                                           nextRun: policy.schedule.next(after: now),
                                           lastDrill: drill?.started, lastDrillOutcome: drill?.outcome, untested: untested, copies: copyStatuses))
            }
        }
        return result
    }
}

/// Prometheus metrics in the node exporter's textfile-collector format, written atomically.
public enum Metrics {
    public static func write(to path: String, policies: [Policy], catalog: Catalog, now: Date) throws {
        let statuses = try StatusReport.compute(policies: policies, catalog: catalog, now: now)
        var lines: [String] = []
        func label(_ s: SourceStatus) -> String {
            "policy=\"\(escape(s.policy))\",source=\"\(escape(s.source))\""
        }
        lines.append("# HELP kho_last_success_timestamp_seconds Time of the newest good snapshot of the source.")
        lines.append("# TYPE kho_last_success_timestamp_seconds gauge")
        for s in statuses { lines.append("kho_last_success_timestamp_seconds{\(label(s))} \(Int(s.newestGoodSnapshotTime?.timeIntervalSince1970 ?? 0))") }
        lines.append("# HELP kho_rpo_seconds The source's recovery point objective.")
        lines.append("# TYPE kho_rpo_seconds gauge")
        for s in statuses { lines.append("kho_rpo_seconds{\(label(s))} \(Int(s.rpoSeconds))") }
        lines.append("# HELP kho_rpo_state 1 for the source's current freshness state (ok, late, missed).")
        lines.append("# TYPE kho_rpo_state gauge")
        for s in statuses {
            for state in SourceStatus.Freshness.allCases {
                lines.append("kho_rpo_state{\(label(s)),state=\"\(state.rawValue)\"} \(s.freshness == state ? 1 : 0)")
            }
        }
        // Each family's samples follow its own HELP and TYPE lines, as the text format requires.
        let lastRuns = try statuses.map { s in (s, try catalog.last(policy: s.policy, source: s.source, kind: .backup)) }
        let perRun: [(name: String, help: String, value: (RunRecord) -> String)] = [
            ("kho_last_run_success", "1 when the last backup run of the source succeeded.", { $0.outcome == .failure ? "0" : "1" }),
            ("kho_last_run_duration_seconds", "Duration of the last backup run.", { String(format: "%.3f", $0.duration ?? 0) }),
            ("kho_last_run_bytes_added", "Bytes the last backup run added to the repository.", { "\($0.bytesAdded)" }),
        ]
        for family in perRun {
            lines.append("# HELP \(family.name) \(family.help)")
            lines.append("# TYPE \(family.name) gauge")
            for (s, last) in lastRuns {
                guard let last else { continue }
                lines.append("\(family.name){\(label(s))} \(family.value(last))")
            }
        }
        let text = lines.joined(separator: "\n") + "\n"
        let temporary = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(text.utf8)) else {
            throw KhoError(.failure, "Cannot write the metrics file \(path): check that its folder exists and is writable.")
        }
        // Read by the metrics collector, which runs as its own user; it holds no data, only
        // sizes, times and names (kho's umask would make it 0600).
        chmod(temporary, 0o644)
        guard rename(temporary, path) == 0 else {
            throw KhoError.posix("rename", path, errno: errno)
        }
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }
}
