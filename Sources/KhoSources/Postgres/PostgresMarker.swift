import Foundation
import KhoCore
import KhoSupport

/// Restore points made beside each dump's snapshot (docs/design/pitr.md section 8): the dump's
/// manifest is then the truth at a point of the cluster's WAL, which a point-in-time drill
/// recovers to and compares.
enum PostgresMarker {
    /// How often a new snapshot and restore point are tried when a transaction took an ID or ended
    /// between them.
    static let attempts = 5

    enum Outcome {
        case made(DumpManifest.PITRMarker)
        /// No restore point: the reason, for a warning (the dump goes on without one).
        case none(String)
    }

    /// Exports the dump's snapshot in `dump` (a REPEATABLE READ transaction begun by the caller is
    /// restarted on a retry) and makes a restore point through `other`, a second connection. Returns
    /// the exported snapshot's ID for pg_dump and the marker.
    static func exportWithMarker(dump: PostgresConnection, other: () throws -> PostgresConnection, source: String,
                                 database: String) throws -> (snapshotID: String, marker: Outcome) {
        var connection: PostgresConnection?
        var last: (String, DumpManifest.PITRMarker)?
        // Tests only: a transaction commits between the dump's snapshot and the restore point, and
        // no retry hides it (what a PITR drill then reports as approximate).
        let commitInWindow = TestKnobs.value("KHO_TEST_MARKER_INFLIGHT") == "1"
        for attempt in 1...(commitInWindow ? 1 : attempts) {
            if attempt > 1 {
                try dump.query("ROLLBACK")
                try dump.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            }
            let row = try dump.query("SELECT pg_export_snapshot(), pg_current_snapshot()::text").first ?? []
            guard let snapshotID = row.first ?? nil, !snapshotID.isEmpty, row.count > 1, let snapshot = row[1] else {
                throw KhoError(.source, "Source \(source): PostgreSQL did not export a snapshot for \(database).")
            }
            if connection == nil {
                do { connection = try other() } catch let error as KhoError { return (snapshotID, .none(error.message)) }
            }
            guard let marker = connection else { return (snapshotID, .none("no second connection")) }
            let name = "kho-" + (0..<8).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
            if commitInWindow { try marker.query("SELECT pg_current_xact_id()") }
            let made: [String?]
            do {
                made = try marker.query("SELECT pg_create_restore_point($1)::text, (SELECT timeline_id FROM pg_control_checkpoint())::text, (SELECT system_identifier FROM pg_control_system())::text", [name]).first ?? []
            } catch let error as KhoError {
                // Not allowed (needs EXECUTE on pg_create_restore_point), wal_level minimal, a
                // standby: the dump is as good without; the operator is told why.
                return (snapshotID, .none(error.message))
            }
            let after = try marker.value("SELECT pg_current_snapshot()::text") ?? ""
            guard made.count == 3, let lsn = made[0], let timeline = made[1].flatMap({ UInt32($0) }),
                  let sysid = made[2].flatMap({ UInt64($0) }) else {
                return (snapshotID, .none("PostgreSQL did not say where the restore point is"))
            }
            let recorded = DumpManifest.PITRMarker(name: name, lsn: lsn, timeline: timeline, cluster: SystemIdentifier(sysid).description,
                                                   snapshot: snapshot, snapshotAfter: after, attempts: attempt)
            last = (snapshotID, recorded)
            if recorded.equalAtDump { break }
        }
        guard let (snapshotID, marker) = last else {
            throw KhoError(.failure, "Source \(source): no snapshot was exported for \(database): report this as a bug.")
        }
        return (snapshotID, .made(marker))
    }
}
