import KhoSupport

/// One line of a timeline history file: the timeline this one branched from and where.
public struct WALTimelineSwitch: Hashable, Sendable {
    public var parentTimeline: UInt32
    public var switchPoint: LSN
    public var reason: String
}

/// Checks of the two text files PostgreSQL archives beside segments (docs/FORMAT.md 20.1), made
/// before anything is stored: their content comes from the cluster and is hostile until checked.
public enum WALTextFile {
    public static let largestHistory = 1 << 20
    public static let largestBackup = 64 << 10

    /// Parses `TTTTTTTT.history`: one line per ancestor, `parentTLI <tab> X/X <tab> reason`, as
    /// PostgreSQL writes it (`writeTimeLineHistory`); blank lines and `#` comments are skipped as
    /// PostgreSQL's reader skips them. Parents are below the file's timeline and ascending, and
    /// switch points do not go back.
    public static func history(_ bytes: [UInt8], name: WALFileName) throws -> [WALTimelineSwitch] {
        func refuse(_ why: String) -> KhoError {
            KhoError(.source, "\(name) is not a timeline history file PostgreSQL wrote (\(why)): it was refused and nothing was stored; check what wrote it into pg_wal.")
        }
        guard name.kind == .history else { throw refuse("its name is not TTTTTTTT.history") }
        guard bytes.count <= largestHistory else { throw refuse("\(bytes.count) bytes, more than 1 MiB") }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw refuse("not UTF-8") }
        var result: [WALTimelineSwitch] = []
        for raw in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let line = raw.drop { $0 == " " || $0 == "\t" }
            if line.isEmpty || line.hasPrefix("#") { continue }
            let fields = line.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count >= 2, let parent = UInt32(fields[0]), parent >= 1, parent < name.timeline else {
                throw refuse("a line does not start with a parent timeline below \(name.timeline)")
            }
            let point = try LSN(parsing: fields[1])
            if let last = result.last, parent <= last.parentTimeline || point < last.switchPoint {
                throw refuse("timelines or switch points out of order")
            }
            result.append(WALTimelineSwitch(parentTimeline: parent, switchPoint: point, reason: fields.count > 2 ? String(fields[2]) : ""))
        }
        guard !result.isEmpty else { throw refuse("no line names a parent timeline") }
        return result
    }

    /// Checks a backup history file: at most 64 KiB of UTF-8 whose `START WAL LOCATION: X/X
    /// (file NAME)` is where the file's name says the backup started. Returns that position.
    @discardableResult
    public static func backup(_ bytes: [UInt8], name: WALFileName, segmentSize: WALSegmentSize) throws -> LSN {
        func refuse(_ why: String) -> KhoError {
            KhoError(.source, "\(name) is not a backup history file PostgreSQL wrote (\(why)): it was refused and nothing was stored; check what wrote it into pg_wal.")
        }
        guard name.kind == .backup, let segment = name.segmentName else { throw refuse("its name is not <segment>.XXXXXXXX.backup") }
        try name.validate(segmentSize: segmentSize)
        guard bytes.count <= largestBackup else { throw refuse("\(bytes.count) bytes, more than 64 KiB") }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw refuse("not UTF-8") }
        let prefix = "START WAL LOCATION: "
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) else {
            throw refuse("no START WAL LOCATION line")
        }
        let fields = line.dropFirst(prefix.count).split(separator: " ")
        guard fields.count == 3, fields[1] == "(file", fields[2] == "\(segment))" else {
            throw refuse("START WAL LOCATION does not name segment \(segment)")
        }
        let start = try LSN(parsing: fields[0])
        guard start == name.startLSN(segmentSize: segmentSize) else {
            throw refuse("it says the backup started at \(start), its name says \(name.startLSN(segmentSize: segmentSize))")
        }
        return start
    }
}
