import Foundation
import KhoCatalog
import KhoCore
import KhoSupport

/// Prometheus metrics in the node exporter's textfile-collector format, written atomically.
public enum Metrics {
    public static func write(to path: String, policies: [Policy], catalog: Catalog, now: Date, wal: WALStatusOptions? = nil) throws {
        let statuses = try StatusReport.compute(policies: policies, catalog: catalog, now: now, wal: wal)
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
        // WAL families only for sources with an archive; a value that is unknown (no agent here,
        // a storage without modification times) is left out rather than written as 0.
        let walFamilies: [(name: String, help: String, value: (WALSourceStatus) -> String?)] = [
            ("kho_wal_last_archived_timestamp_seconds", "When the storage received the newest archived WAL segment.",
             { $0.newestStored.map { "\(Int($0.timeIntervalSince1970))" } }),
            ("kho_wal_archive_lag_seconds", "How far the WAL archive is behind (0 when nothing waits).", { $0.lagSeconds.map { "\(Int($0))" } }),
            ("kho_wal_ready_files", "WAL files waiting in PostgreSQL's archive queue, as the agent on this host saw them.", { $0.readyFiles.map { "\($0)" } }),
            ("kho_wal_stalled", "1 when archiving is stalled: files wait and nothing is archived.", { $0.stalled ? "1" : "0" }),
            ("kho_wal_gap", "1 when the archived WAL has a hole a recovery would stop at (or cannot be read).", { $0.continuity == .ok ? "0" : "1" }),
        ]
        for family in walFamilies where statuses.contains(where: { $0.wal != nil }) {
            lines.append("# HELP \(family.name) \(family.help)")
            lines.append("# TYPE \(family.name) gauge")
            for s in statuses {
                guard let wal = s.wal, let value = family.value(wal) else { continue }
                lines.append("\(family.name){\(label(s))} \(value)")
            }
        }
        let binlogFamilies: [(name: String, help: String, value: (BinlogSourceStatus) -> String?)] = [
            ("kho_binlog_last_archived_timestamp_seconds", "When the storage received the newest piece of the MariaDB binary log.",
             { $0.newestStored.map { "\(Int($0.timeIntervalSince1970))" } }),
            ("kho_binlog_archive_lag_seconds", "How far the binary log archive is behind (since the serve last had everything stored).",
             { $0.lagSeconds.map { "\(Int($0))" } }),
            ("kho_binlog_gap", "1 when the archived binary log has a hole a restore would stop at (or cannot be read).", { $0.continuity == .ok ? "0" : "1" }),
        ]
        for family in binlogFamilies where statuses.contains(where: { $0.binlog != nil }) {
            lines.append("# HELP \(family.name) \(family.help)")
            lines.append("# TYPE \(family.name) gauge")
            for s in statuses {
                guard let binlog = s.binlog, let value = family.value(binlog) else { continue }
                lines.append("\(family.name){\(label(s))} \(value)")
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
