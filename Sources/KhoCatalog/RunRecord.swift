import Foundation
import GRDB
import KhoSupport

/// What a catalog row records. The raw values are what the catalog stores (and what every kho
/// since the first catalog wrote), so that a row reads the same whichever kho wrote it.
public enum RunKind: String, Codable, Sendable, CaseIterable, DatabaseValueConvertible {
    case backup
    /// Forgetting (and pruning) what a source's retention no longer keeps.
    case retention
    /// A restore drill; its details are the drill's evidence.
    case drill
    /// A snapshot copied to a `copies:` destination; its details are `CopyDetails`.
    case copy
    /// A freshness notification sent (late or missed); one per state and newest good snapshot.
    case notify
}

/// How a run ended. `late` and `missed` are the outcomes of `notify` rows only: the freshness state
/// that was announced.
public enum RunOutcome: String, Codable, Sendable, CaseIterable, DatabaseValueConvertible {
    /// Started and not (yet) ended; a killed run stays so.
    case running
    case success
    case failure
    /// A backup that saved a snapshot but could not read everything (see the snapshot's errors).
    case partial
    case late
    case missed

    /// Whether the run ended (anything but `running`).
    public var isFinished: Bool { self != .running }
    /// Whether the run produced something usable: a snapshot, even a partial one.
    public var isGood: Bool { self == .success || self == .partial }
}

/// One job run as the catalog records it.
public struct RunRecord: Codable, Sendable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "runs"
    public var id: Int64?
    public var kind: RunKind
    public var policy: String
    public var source: String
    public var repository: String
    public var planned: Date?
    public var started: Date
    public var ended: Date?
    public var outcome: RunOutcome
    public var error: String?
    /// For a failed run: whether the same run may succeed later without anyone changing anything
    /// (`KhoError.retryable`); nil for successes and for rows of a kho before the column existed.
    public var retryable: Bool?
    /// For a failed run: the kind of its error (`KhoError.Kind`), so that reports count, say,
    /// refused shrunken dumps without reading messages; nil for successes and older rows.
    public var errorKind: KhoError.Kind?
    public var bytesRead: Int64
    public var bytesAdded: Int64
    public var snapshot: String?
    /// When the snapshot's data was taken (its time), for freshness against the RPO.
    public var snapshotTime: Date?
    /// JSON: for backups the manifest summary, for drills the evidence record, for copies
    /// `CopyDetails`, for retention the decisions, for notify rows the message.
    public var details: String?
    public var host: String
    /// True for rows recreated by `kho catalog rebuild` from what a repository still holds.
    public var rebuilt: Bool

    public init(kind: RunKind, policy: String, source: String, repository: String, planned: Date?, started: Date) {
        self.kind = kind
        self.policy = policy
        self.source = source
        self.repository = repository
        self.planned = planned
        self.started = started
        outcome = .running
        bytesRead = 0
        bytesAdded = 0
        host = Host.name
        rebuilt = false
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }

    public var duration: TimeInterval? { ended.map { $0.timeIntervalSince(started) } }

    /// Marks the run failed with `error`'s message (secrets are masked when the catalog stores it)
    /// and whether it is worth trying again.
    public mutating func fail(_ error: Error, ended: Date) {
        outcome = .failure
        self.error = (error as? KhoError)?.message ?? "\(error)"
        retryable = (error as? KhoError)?.retryable ?? false
        errorKind = (error as? KhoError)?.kind ?? .failure
        self.ended = ended
    }

    /// The details decoded as `T` (nil when there are none or they are of another shape).
    public func decodedDetails<T: Decodable>(_ type: T.Type) -> T? {
        guard let details else { return nil }
        // try?: a row whose details are of another shape (another kind's, an older kho's) has none of this kind.
        return try? JSON.decoder.decode(T.self, from: Data(details.utf8))
    }
}
