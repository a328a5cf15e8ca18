import Foundation
import KhoCore
@testable import KhoSources
import KhoSupport
import Testing

// What a base backup checks before its snapshot is written, on the members pg_basebackup sent:
// every file the server's backup_manifest lists must have come with its size, the label must be
// kho's, pg_control must name the server's cluster. Any miss records nothing.

private let label = "kho-test-label"

private func manifest(files: [(String, Int)], encoded: [(String, Int)] = []) -> [UInt8] {
    let entries = files.map { "{ \"Path\": \"\($0.0)\", \"Size\": \($0.1), \"Last-Modified\": \"2026-12-07 10:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"00000000\" }" }
        + encoded.map { "{ \"Encoded-Path\": \"\(Hex.encode(Array($0.0.utf8)))\", \"Size\": \($0.1) }" }
    return Array("""
        {"PostgreSQL-Backup-Manifest-Version": 1,
        "Files": [
        \(entries.joined(separator: ",\n"))
        ],
        "WAL-Ranges": [
        { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000138" }
        ],
        "Manifest-Checksum": "0000"}

        """.utf8)
}

private func contents(files: [String: UInt64], manifestBytes: [UInt8], sysid: UInt64 = 7_400_000_000_000_000_001,
                      labelText: String = label, start: String = "0/2000028") -> PhysicalContents {
    var contents = PhysicalContents()
    contents.files = files
    contents.captured = [
        "backup_manifest": manifestBytes,
        "backup_label": Array("""
            START WAL LOCATION: \(start) (file 000000010000000000000002)
            CHECKPOINT LOCATION: 0/2000060
            BACKUP METHOD: streamed
            BACKUP FROM: primary
            START TIME: 2026-12-07 10:00:00 UTC
            LABEL: \(labelText)
            START TIMELINE: 1

            """.utf8),
        "global/pg_control": withUnsafeBytes(of: sysid.littleEndian) { Array($0) } + [UInt8](repeating: 0, count: 8184),
        "PG_VERSION": Array("15\n".utf8),
    ]
    return contents
}

private let facts = PostgresBaseBackup.ServerFacts(
    version: "15.10", systemIdentifier: 7_400_000_000_000_000_001, segmentSize: 16 << 20, pageSize: 8192, dataChecksums: false,
    settings: .init(maxConnections: 100, maxWorkerProcesses: 8, maxWalSenders: 10, maxPreparedTransactions: 0, maxLocksPerTransaction: 64),
    superuser: "postgres")

private func refused(_ contents: PhysicalContents, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
    // An endpoint nothing listens on: every refusal must come before kho asks the server the time.
    let base = PostgresBaseBackup(name: "cluster", endpoint: DatabaseEndpoint(host: "127.0.0.1", port: 1, user: "postgres", database: "postgres"))
    do {
        _ = try base.describe(contents, facts: facts, label: label, blockSize: 131072)
        Issue.record("accepted; expected a refusal mentioning \(text)", sourceLocation: sourceLocation)
    } catch let error as KhoError {
        #expect(error.kind == .source, sourceLocation: sourceLocation)
        #expect(error.message.contains(text), "\(error.message)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
    }
}

@Suite("base backup checks")
struct PostgresBaseBackupUnitTests {
    @Test("a file in backup_manifest missing from the stream, or of another size, records nothing")
    func manifestAgainstStream() {
        let listed = manifest(files: [("PG_VERSION", 3), ("base/1/112", 8192), ("global/pg_control", 8192)], encoded: [("base/1/héllo", 5)])
        let whole: [String: UInt64] = ["PG_VERSION": 3, "base/1/112": 8192, "global/pg_control": 8192, "base/1/héllo": 5, "backup_label": 200]
        var missing = whole
        missing["base/1/112"] = nil
        refused(contents(files: missing, manifestBytes: listed), "\"base/1/112\", which the stream of pg_basebackup did not hold")
        var missingEncoded = whole
        missingEncoded["base/1/héllo"] = nil
        refused(contents(files: missingEncoded, manifestBytes: listed), "base/1/héllo")
        var shorter = whole
        shorter["base/1/112"] = 4096
        refused(contents(files: shorter, manifestBytes: listed), "the stream held 4096")
    }

    @Test("another backup's label, a foreign pg_control, a label and manifest that disagree, a missing member: nothing recorded")
    func identity() {
        let listed = manifest(files: [("PG_VERSION", 3)])
        let files: [String: UInt64] = ["PG_VERSION": 3]
        refused(contents(files: files, manifestBytes: listed, labelText: "someone-else"), "not kho's")
        refused(contents(files: files, manifestBytes: listed, sysid: 42), "names the cluster 000000000000002a")
        refused(contents(files: files, manifestBytes: listed, start: "0/3000028"), "disagree")
        var noManifest = contents(files: files, manifestBytes: listed)
        noManifest.captured["backup_manifest"] = nil
        refused(noManifest, "held no backup_manifest")
        refused(contents(files: files, manifestBytes: Array("not json".utf8)), "not the JSON kho expects")
    }
}
