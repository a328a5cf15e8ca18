import Foundation

/// Drops the lines of mariadb-binlog's text that would give replayed transactions the source's
/// identity: `SET @@session.gtid_domain_id`, `server_id` and `gtid_seq_no`. Replayed with them,
/// the target logs the source's old GTIDs again, out of order behind its own (the source server,
/// when the restore goes to it, then has duplicate GTIDs in its binary log, which replicas and
/// later replays refuse); without them the target gives the replayed transactions GTIDs of its own,
/// as for any other write. Every other line passes unchanged.
struct BinlogSessionFilter {
    static let dropped: [[UInt8]] = ["gtid_domain_id=", "server_id=", "gtid_seq_no="].map { Array("/*M!100001 SET @@session.\($0)".utf8) }
    private var partial: [UInt8] = []
    private(set) var droppedLines = 0

    /// Passes `bytes` on through `write`, whole lines only; `flush` writes what is left.
    mutating func process(_ bytes: UnsafeRawBufferPointer, _ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        var start = 0
        var kept = 0
        var i = 0
        while i < bytes.count {
            if bytes[i] == 0x0a {
                if !partial.isEmpty {
                    partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start...i]))
                    if !drops(partial[...]) { try partial.withUnsafeBytes { try write($0) } } else { droppedLines += 1 }
                    partial.removeAll(keepingCapacity: true)
                    start = i + 1
                    kept = start
                } else {
                    let line = UnsafeRawBufferPointer(rebasing: bytes[start...i])
                    if drops(line) {
                        if kept < start { try write(UnsafeRawBufferPointer(rebasing: bytes[kept..<start])) }
                        droppedLines += 1
                        kept = i + 1
                    }
                    start = i + 1
                }
            }
            i += 1
        }
        if kept < start { try write(UnsafeRawBufferPointer(rebasing: bytes[kept..<start])) }
        if start < bytes.count { partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start...])) }
    }

    mutating func flush(_ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        if !partial.isEmpty && !drops(partial[...]) { try partial.withUnsafeBytes { try write($0) } }
        partial.removeAll()
    }

    private func drops<C: Collection>(_ line: C) -> Bool where C.Element == UInt8 {
        guard line.first == UInt8(ascii: "/") else { return false }
        return BinlogSessionFilter.dropped.contains { line.starts(with: $0) }
    }
}
