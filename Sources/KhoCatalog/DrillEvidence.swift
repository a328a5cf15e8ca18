import Foundation
import KhoCore
import KhoSupport
import KhoSources

/// How one check of a drill ended. The raw values are those stored in evidence since the first
/// drill, so that sealed evidence reads (and verifies) unchanged.
public enum DrillCheckOutcome: String, Codable, Sendable, CaseIterable {
    case pass
    /// The data or the restore is wrong.
    case fail
    /// The check could not run (a scratch server did not start, a tool is missing).
    case error
    case skipped
}

/// What a policy's `drills: checks:` can name: the groups of checks that decide a drill's verdict.
/// A failed restore always decides it.
public enum DrillRequirement: String, Codable, Sendable, CaseIterable {
    /// The engine's own checks of the restored data, the restored files and their modes.
    case integrity
    /// The restored tables against the snapshot's manifest.
    case manifest
    /// The time to a usable restore against the RTO.
    case rto

    /// What a policy without `checks:` requires.
    public static let all: [DrillRequirement] = [.integrity, .manifest, .rto]
}

/// What a drill check checks.
public enum DrillCheckKind: String, Codable, Sendable, CaseIterable {
    /// The restore itself (loading the dumps, restoring the files).
    case restore
    case rto
    case manifest
    /// The restored database's schema against the fingerprint recorded at backup.
    case schema
    /// Roles and tablespaces loaded into a scratch PostgreSQL cluster (never fails a drill).
    case globals
    case pgAmcheck = "pg_amcheck"
    case checkTable = "check-table"
    case sqliteIntegrity = "sqlite-integrity"
    case fileContents = "file-contents"
    case fileModes = "file-modes"
    /// A PITR drill's recovery stopped where it was sent (the marker's restore point).
    case pitrTarget = "pitr-target"
    /// The archive holds the WAL from the base backup to the target without a hole.
    case walContinuity = "wal-continuity"

    /// The requirement that decides whether a failure of this check counts; nil for the restore,
    /// which always counts.
    public var requirement: DrillRequirement? {
        switch self {
        case .restore, .pitrTarget, .walContinuity: nil
        case .rto: .rto
        case .manifest, .schema: .manifest
        case .globals, .pgAmcheck, .checkTable, .sqliteIntegrity, .fileContents, .fileModes: .integrity
        }
    }

    /// Whether the check is the database engine's own check of the restored data.
    public var isEngineCheck: Bool {
        switch self {
        case .pgAmcheck, .checkTable, .sqliteIntegrity: true
        case .restore, .rto, .manifest, .schema, .globals, .fileContents, .fileModes, .pitrTarget, .walContinuity: false
        }
    }

    /// The kind of a check in evidence of a kho that stored only the check's name (the names it
    /// gave are fixed: see `DrillRunner`). Used for reading old evidence, never for deciding a
    /// verdict.
    static func legacy(name: String) -> DrillCheckKind {
        switch name {
        case "restore": return .restore
        case "rto": return .rto
        case "manifest": return .manifest
        case "globals": return .globals
        case "file contents and sizes": return .fileContents
        case "file modes": return .fileModes
        default:
            if name.hasPrefix("pg_amcheck") { return .pgAmcheck }
            if name.hasPrefix("CHECK TABLE") { return .checkTable }
            return .sqliteIntegrity
        }
    }
}

/// Everything a drill found, kept in the catalog as evidence (and, sealed, in the repository's `drills/`,
/// so that `kho catalog rebuild` can bring it back) and printed by `kho verify --json`.
/// Fields added after the first drills are optional, so that evidence of an earlier kho decodes and
/// re-encodes to the bytes it was sealed over.
public struct DrillEvidence: Codable, Sendable {
    public struct Check: Codable, Sendable {
        /// The name shown to people (e.g. "pg_amcheck shop", "CHECK TABLE land").
        public var name: String
        public var outcome: DrillCheckOutcome
        /// What the check printed, bounded to 4 KiB.
        public var output: String
        /// Absent in evidence of an earlier kho: see `checkKind`.
        public var kind: DrillCheckKind?
        /// Whether the check decides the verdict (the policy requires its group); absent in
        /// evidence of an earlier kho.
        public var counted: Bool?

        public init(_ kind: DrillCheckKind, name: String? = nil, outcome: DrillCheckOutcome, output: String, counted: Bool = true) {
            self.name = name ?? kind.rawValue
            self.outcome = outcome
            self.output = output
            self.kind = kind
            self.counted = counted
        }

        /// What the check checks, also in evidence that did not store it.
        public var checkKind: DrillCheckKind { kind ?? DrillCheckKind.legacy(name: name) }
        /// A check that failed or could not run.
        public var isBad: Bool { outcome == .fail || outcome == .error }
        /// A counted check that failed or could not run: the drill did not pass.
        public var failsDrill: Bool { isBad && counted != false }
    }

    public var drillID: String
    public var policy: String
    public var source: String
    /// Stored as its raw value, as every kho wrote it.
    public var sourceKind: SourceKind
    public var snapshot: String
    public var snapshotTime: Date
    public var scratch: String
    public var start: Date
    public var end: Date
    public var checks: [Check]
    public var comparison: ManifestComparison?
    /// The schema against the fingerprint recorded at backup, per database (nil in evidence of a
    /// kho before issue 19, and for snapshots that recorded no fingerprint).
    public var schema: [String: SchemaComparison]?
    public var rtoSeconds: Double?
    public var rtoObjectiveSeconds: Double
    public var passed: Bool
    public var failureReasons: [String]
    public var khoVersion: String
    public var host: String
    /// SHA-256 of this record's JSON with this field empty.
    public var evidenceSHA256: String
    /// The repository whose evidence key made `evidenceMAC` (absent in evidence of an earlier kho).
    public var sealRepository: String?
    /// HMAC-SHA256, under a key derived from the repository's master key, of this record's JSON
    /// with this field absent and `evidenceSHA256` empty: whoever edits the evidence and
    /// recomputes the SHA-256 cannot recompute this without the repository's password.
    public var evidenceMAC: String?
    /// For files and command sources: how many files were compared with the snapshot (absent in
    /// evidence of an earlier kho, and for databases).
    public var filesCompared: Int?
    /// Of those, how many were missing after the restore (absent in evidence of an earlier kho).
    public var filesMissing: Int?
    /// What a point-in-time recovery drill recovered to and how exactly (absent for other drills).
    public var pitr: PITRDrillEvidence?

    public init(drillID: String, policy: String, source: String, sourceKind: SourceSpec.Kind, snapshot: String, snapshotTime: Date,
                start: Date, rtoObjectiveSeconds: Double, khoVersion: String, host: String) {
        self.drillID = drillID
        self.policy = policy
        self.source = source
        self.sourceKind = sourceKind
        self.snapshot = snapshot
        self.snapshotTime = snapshotTime
        scratch = ""
        self.start = start
        end = start
        checks = []
        self.rtoObjectiveSeconds = rtoObjectiveSeconds
        passed = false
        failureReasons = []
        self.khoVersion = khoVersion
        self.host = host
        evidenceSHA256 = ""
    }

    /// The first check of a kind.
    public func check(_ kind: DrillCheckKind) -> Check? { checks.first { $0.checkKind == kind } }

    /// Whether the checks that count all passed (what `passed` is set to).
    public var verdict: Bool { !checks.contains { $0.failsDrill } }

    /// Whether a counted check found wrong data: the restore, the engine's checks, the files or the
    /// manifest — anything but a missed RTO or a drill that could not run.
    public var foundBadData: Bool {
        checks.contains { $0.outcome == .fail && $0.counted != false && $0.checkKind != .rto }
    }

    public mutating func seal(key: DerivedKey? = nil) throws {
        evidenceSHA256 = ""
        evidenceMAC = nil
        sealRepository = key?.repositoryID
        if let key { evidenceMAC = try key.mac(Array(try JSON.encoder.encode(self))) }
        evidenceSHA256 = try SHA256.hash(Array(try JSON.encoder.encode(self))).hex
    }

    /// True when the keyed seal matches the record (and the SHA-256 too); false without one.
    public func verifyKeyedSeal(_ key: DerivedKey) -> Bool {
        guard verifySeal(), let mac = evidenceMAC, sealRepository == key.repositoryID else { return false }
        var copy = self
        copy.evidenceSHA256 = ""
        copy.evidenceMAC = nil
        do {
            return try key.verify(Array(try JSON.encoder.encode(copy)), expected: mac)
        } catch {
            // A record that cannot be encoded or a MAC that cannot be computed is not a valid seal.
            return false
        }
    }

    /// True when the stored hash matches the record.
    public func verifySeal() -> Bool {
        var copy = self
        copy.evidenceSHA256 = ""
        do {
            return try SHA256.hash(Array(try JSON.encoder.encode(copy))).hex == evidenceSHA256
        } catch {
            return false
        }
    }
}

/// Whether a PITR drill's recovered cluster is exactly the dump's snapshot (docs/design/pitr.md
/// section 8), which decides whether its manifest comparison counts.
public enum PITRExactness: String, Codable, Sendable {
    /// No transaction committed between the dump's snapshot and the restore point: the manifest
    /// comparison counts.
    case proven
    /// Some did: the comparison is recorded, not counted.
    case approximate
    /// No marker in the recovery window: recovered to a random point, integrity checks only.
    case none
    /// The drill stopped before the recovered cluster could be asked (no recovery, no promotion).
    case unmeasured
}

/// What a point-in-time recovery drill recovered and how (evidence field `pitr`).
public struct PITRDrillEvidence: Codable, Sendable {
    /// The cluster's system identifier.
    public var cluster: String
    /// The base backup snapshot recovery started from.
    public var baseBackup: String
    /// The kho marker (restore point) recovered to; nil without one.
    public var marker: String?
    public var markerLSN: String?
    /// The dump snapshot whose manifest the marker belongs to, and its database.
    public var markerDump: String?
    public var markerDatabase: String?
    /// PostgreSQL's recovery target, as kho describes it.
    public var target: String
    /// Where redo ended ("redo done at"), what PostgreSQL said it stopped at, and the last
    /// replayed commit's time.
    public var reachedLSN: String?
    public var reachedStop: String?
    public var reachedCommitTime: String?
    public var walFiles: Int
    public var walBytes: Int64
    /// Seconds per phase: `files` (base backup restored), `recovery` (to promotion), `checks`.
    public var phases: [String: Double]
    public var exactness: PITRExactness
    /// Transactions of the marker's window: in flight at the dump's snapshot or started before the
    /// restore point.
    public var inFlight: Int?
    /// Of those, how many the recovered cluster has committed (0 when exactness is proven).
    public var committedInWindow: Int?

    public init(cluster: String, baseBackup: String, target: String, exactness: PITRExactness) {
        self.cluster = cluster
        self.baseBackup = baseBackup
        self.target = target
        walFiles = 0
        walBytes = 0
        phases = [:]
        self.exactness = exactness
    }
}

/// Drill evidence in the repository (`drills/`, docs/FORMAT.md section 19.5): the same JSON as the
/// catalog's drill record, so that `kho catalog rebuild` restores the record with its seals intact.
extension Repository {
    /// Saves sealed evidence in the repository; a failure is thrown.
    @discardableResult
    public func saveDrillEvidence(_ evidence: DrillEvidence) throws -> String {
        try saveDrillEvidence(Array(try JSON.encoder.encode(evidence)))
    }

    /// Every drill's evidence the repository holds, with its JSON exactly as stored (what the
    /// catalog keeps, so that the SHA-256 and the keyed seal verify as they did).
    public func drillEvidence() throws -> [(evidence: DrillEvidence, json: String)] {
        try drillEvidenceFiles().map { file in
            do {
                return (try JSON.decoder.decode(DrillEvidence.self, from: Data(file.json)), String(decoding: file.json, as: UTF8.self))
            } catch {
                throw KhoError(.integrity, "drills/\(file.name) in \(storage.location) authenticates but is not drill evidence (\(error)): it was written by a faulty or newer kho; run `kho check`.")
            }
        }
    }
}
