import Foundation
import KhoCore
import KhoSupport
import KhoCatalog
import KhoSources
import KhoStorage

/// What a drill needs to know of the policy it belongs to.
public struct DrillTarget: Sendable {
    /// The policy's name.
    public var name: String
    /// The repository's location.
    public var repository: String
    public var password: @Sendable () throws -> [UInt8]
    /// The recovery time objective, seconds.
    public var rto: TimeInterval
    /// The groups of checks whose failure fails the drill (a failed restore always does).
    public var requirements: Set<DrillRequirement>

    public init(name: String, repository: String, password: @escaping @Sendable () throws -> [UInt8], rto: TimeInterval,
                requirements: Set<DrillRequirement>) {
        self.name = name
        self.repository = repository
        self.password = password
        self.rto = rto
        self.requirements = requirements
    }
}

/// Tells the command line's signal handler about a drill's repository lock: its name before its
/// file exists, the lock once held, and when released, so that an interrupted drill removes it.
public struct DrillLockHooks: Sendable {
    public var pending: @Sendable (_ storage: any Storage, _ name: String) -> Void
    public var held: @Sendable (RepositoryLock) -> Void
    public var released: @Sendable (RepositoryLock) -> Void

    public init(pending: @escaping @Sendable (any Storage, String) -> Void, held: @escaping @Sendable (RepositoryLock) -> Void,
                released: @escaping @Sendable (RepositoryLock) -> Void) {
        self.pending = pending
        self.held = held
        self.released = released
    }

    public static let none = DrillLockHooks(pending: { _, _ in }, held: { _ in }, released: { _ in })
}

/// A failure a drill found, with the check it belongs to (which decides whether it counts).
struct DrillFinding {
    var kind: DrillCheckKind
    var reason: String
}

/// Restores a snapshot into a scratch target kho creates, runs the engine's own integrity checks,
/// recomputes the manifest and compares it with the recorded one, measures the time to a usable
/// restore against the RTO, and always tears the scratch target down.
public final class DrillRunner {
    public let catalog: Catalog?
    public let khoVersion: String
    private let log: (String) -> Void

    public let lockHooks: DrillLockHooks

    public init(catalog: Catalog?, khoVersion: String, lockHooks: DrillLockHooks = .none, log: @escaping (String) -> Void) {
        self.catalog = catalog
        self.khoVersion = khoVersion
        self.lockHooks = lockHooks
        self.log = log
    }

    static func bounded(_ text: String) -> String {
        text.utf8.count <= 4096 ? text : String(decoding: Array(text.utf8.prefix(4096)), as: UTF8.self) + "…"
    }

    /// Runs one drill. `snapshotID` nil means the newest good snapshot of the source.
    /// A failure to record the drill in the catalog is thrown: a drill without its record proves
    /// nothing to status, reports or the next run's planning.
    public func drill(_ policy: DrillTarget, source: SourceSpec, snapshotID: String?, planned: Date? = nil) throws -> DrillEvidence {
        try run(policy, source: source, mode: .snapshot(snapshotID), planned: planned)
    }

    /// Runs a point-in-time recovery drill of the source's archived cluster (PITRDrill.swift):
    /// `marker` names the kho marker to recover to; nil chooses one.
    public func pitrDrill(_ policy: DrillTarget, source: SourceSpec, marker: String?, planned: Date? = nil) throws -> DrillEvidence {
        try run(policy, source: source, mode: .pointInTime(marker: marker), planned: planned)
    }

    enum Mode {
        case snapshot(String?)
        case pointInTime(marker: String?)
    }

    private func run(_ policy: DrillTarget, source: SourceSpec, mode: Mode, planned: Date?) throws -> DrillEvidence {
        let repository = try Repository.open(storage: try StorageFactory.make(location: policy.repository), password: try policy.password())
        // The audit ledger keys the drill's entry with it.
        OpenedRepositories.remember(repository)
        let lockName = try RepositoryLock.newName()
        lockHooks.pending(repository.storage, lockName)
        let lock = try RepositoryLock.acquire(storage: repository.storage, exclusive: false, command: "verify \(policy.name)/\(source.name)",
                                              wait: 600, name: lockName)
        lockHooks.held(lock)
        defer {
            lock.release()
            lockHooks.released(lock)
        }
        let index = try repository.loadIndex()
        let snapshot: Snapshot
        var choice: PITRChoice?
        if case .pointInTime(let marker) = mode {
            let chosen = try PITRChoice.choose(repository: repository, source: source.name, markerName: marker)
            choice = chosen
            snapshot = chosen.base
        } else if case .snapshot(let snapshotID?) = mode {
            snapshot = try repository.findSnapshot(snapshotID)
        } else {
            guard let newest = try repository.listSnapshots().last(where: { $0.source.name == source.name && !$0.partial }) else {
                throw KhoError(.usage, "Source \(source.name) of policy \(policy.name) has no good snapshot to drill: run `kho run --policy \(policy.name)` first.")
            }
            snapshot = newest
        }
        let started = Clock.now
        let realStart = Date()
        var evidence = DrillEvidence(drillID: UUID().uuidString.lowercased(), policy: policy.name, source: source.name,
                                     sourceKind: source.kind, snapshot: snapshot.id ?? "", snapshotTime: snapshot.time,
                                     start: started, rtoObjectiveSeconds: policy.rto, khoVersion: khoVersion, host: Host.name)
        var findings: [DrillFinding] = []
        log("\(policy.name)/\(source.name): \(choice == nil ? "drill" : "PITR drill from base backup") of snapshot \(snapshot.shortID) started")
        var record = RunRecord(kind: .drill, policy: policy.name, source: source.name, repository: policy.repository,
                               planned: planned, started: started)
        if let catalog { record = try catalog.insert(record) }
        // An interrupted drill proved nothing: its record says so instead of "running" for ever.
        let recorded = Locked(false)
        var startedRecord = record
        startedRecord.snapshot = snapshot.id
        startedRecord.snapshotTime = snapshot.time
        let onInterrupt = ScratchRegistry.onInterrupt { [catalog, startedRecord] in
            recorded.withLock { done in
                guard !done, let catalog else { return }
                done = true
                var interrupted = startedRecord
                interrupted.ended = Clock.now
                interrupted.outcome = .failure
                interrupted.error = "interrupted before the drill completed"
                do {
                    try catalog.update(interrupted)
                } catch {
                    // The process is being interrupted: stderr is the one place left to say so.
                    FileHandle.standardError.write(Data("kho: \((error as? KhoError)?.message ?? "\(error)")\n".utf8))
                }
            }
        }
        defer { ScratchRegistry.removeOnInterrupt(onInterrupt) }

        do {
            if let choice {
                try performPITR(&evidence, &findings, choice: choice, repository: repository, source: source, realStart: realStart)
            } else {
                try perform(&evidence, &findings, snapshot: snapshot, repository: repository, index: index, source: source, realStart: realStart)
            }
        } catch {
            let message = (error as? KhoError)?.message ?? "\(error)"
            // Damaged data, or a dump that does not load, is what a drill is there to find; a
            // scratch server that does not start (or a missing tool) only means the drill could
            // not run: "error", which `kho verify` does not count as an integrity failure.
            let kind = (error as? KhoError)?.kind
            if kind == .integrity || kind == .source {
                evidence.checks.append(.init(.restore, outcome: .fail, output: DrillRunner.bounded(message)))
                findings.append(DrillFinding(kind: .restore, reason: "restore failed: \(message)"))
            } else {
                evidence.checks.append(.init(.restore, outcome: .error, output: DrillRunner.bounded(message)))
                findings.append(DrillFinding(kind: .restore, reason: "the drill could not run: \(message)"))
            }
        }
        if let rto = evidence.rtoSeconds {
            let pass = rto <= policy.rto
            // An objective under a minute is shown with its fraction ("0.5 s", not "0 s").
            let objective = policy.rto < 60 ? String(format: "%g", policy.rto) : String(format: "%.0f", policy.rto)
            evidence.checks.append(.init(.rto, outcome: pass ? .pass : .fail,
                                         output: String(format: "usable after %.2f s", rto) + "; objective \(objective) s"))
            if !pass { findings.append(DrillFinding(kind: .rto, reason: String(format: "restore took %.2f s", rto) + ", more than the RTO of \(objective) s")) }
        }
        DrillRunner.decide(&evidence, findings, requirements: policy.requirements)
        if let exactness = evidence.pitr?.exactness, exactness != .proven {
            // Not the dump's exact state: its manifest is evidence, not a verdict.
            for i in evidence.checks.indices where evidence.checks[i].checkKind == .manifest { evidence.checks[i].counted = false }
            evidence.passed = evidence.verdict
        }
        evidence.end = started.addingTimeInterval(Date().timeIntervalSince(realStart))
        try evidence.seal(key: try repository.evidenceKey)
        var recordError: Error?
        // The evidence goes into the repository too (drills/), so that `kho catalog rebuild` can
        // bring this record back; before the catalog row is finished, so that a crash between the
        // two leaves evidence to rebuild from. The drill is recorded in the catalog either way.
        do {
            try repository.saveDrillEvidence(evidence)
        } catch {
            let cause = (error as? KhoError) ?? KhoError(.failure, "\(error)")
            recordError = KhoError(cause.kind, "The drill of \(policy.name)/\(source.name) \(evidence.passed ? "passed" : "failed") but its evidence could not be stored in the repository \(policy.repository) (\(cause.message)), so a rebuilt catalog would lose it: fix the repository and run the drill again.",
                                   retryable: cause.retryable)
        }
        if let catalog {
            record.ended = evidence.end
            record.outcome = evidence.passed ? .success : .failure
            record.error = evidence.failureReasons.isEmpty ? nil : evidence.failureReasons.joined(separator: "; ")
            record.snapshot = snapshot.id
            record.snapshotTime = snapshot.time
            record.details = String(decoding: try JSON.encoder.encode(evidence), as: UTF8.self)
            let final = record
            recorded.withLock { done in
                guard !done else { return }
                done = true
                do { try catalog.update(final) } catch { recordError = error }
            }
        }
        if let recordError { throw recordError }
        log("\(policy.name)/\(source.name): drill \(evidence.passed ? "PASSED" : "FAILED: " + evidence.failureReasons.joined(separator: "; "))")
        return evidence
    }

    /// Marks each check counted or not (a check counts when the policy requires its group; the
    /// restore always counts), words the failure reasons (those that do not count say so) and sets
    /// the verdict from the counted checks.
    static func decide(_ evidence: inout DrillEvidence, _ findings: [DrillFinding], requirements: Set<DrillRequirement>) {
        func counts(_ kind: DrillCheckKind) -> Bool { kind.requirement.map(requirements.contains) ?? true }
        for i in evidence.checks.indices {
            evidence.checks[i].counted = counts(evidence.checks[i].checkKind)
        }
        evidence.failureReasons = findings.map { finding in
            guard let requirement = finding.kind.requirement, !counts(finding.kind) else { return finding.reason }
            return finding.reason + " (not counted: the policy's drills do not require the \(requirement.rawValue) check)"
        }
        evidence.passed = evidence.verdict
    }

    private func perform(_ evidence: inout DrillEvidence, _ findings: inout [DrillFinding], snapshot: Snapshot, repository: Repository, index: MasterIndex,
                         source: SourceSpec, realStart: Date) throws {
        let manifest = DumpManifest(snapshot.manifest)
        let lookup = { (file: String) throws -> Node in
            guard let root = snapshot.treeID else { throw KhoError(.integrity, "Snapshot \(snapshot.shortID) names no valid tree.") }
            let tree = try repository.loadTree(root, index: index, codec: BlobCodec(repository: repository))
            guard let node = tree.node(named: Array(file.utf8)) else {
                throw KhoError(.integrity, "Snapshot \(snapshot.shortID) has no file \(file).")
            }
            return node
        }
        let stream = { (node: Node, write: (UnsafeRawBufferPointer) throws -> Void) throws in
            try OrderedBlobReader(repository: repository, index: index, content: node.content).run { bytes in
                try bytes.withUnsafeBytes { try write($0) }
            }
        }
        switch source.kind {
        case .postgresBase:
            // A base backup is drilled by recovering it with its WAL to a point (PITRDrill.swift);
            // restoring the files alone proves little.
            throw KhoError(.usage, "Source \(source.name) is a base backup: drill it by recovering it to a point with `kho verify --pitr --source \(source.name)`.")
        case .postgres:
            guard let manifest else { throw KhoError(.integrity, "Snapshot \(snapshot.shortID) has no manifest to compare against.") }
            let scratch = try ScratchPostgres()
            defer { scratch.tearDown() }
            evidence.scratch = "postgres cluster on socket \(scratch.directory) (no TCP port, peer authentication)"
            let comparisons = try restoreDatabases(&evidence, engine: .postgres, manifest: manifest, snapshot: snapshot, repository: repository,
                                 index: index, source: source) { scratch.endpoint(database: $0) }
            evidence.rtoSeconds = Date().timeIntervalSince(realStart)
            DrillRunner.pauseForTests(["host": scratch.directory, "port": String(scratch.port), "directory": scratch.directory])
            // Before pg_amcheck, which installs its extension into the restored database.
            try recordComparisons(&evidence, &findings, comparisons)
            for database in manifest.databases {
                let amcheck = Shell.find("pg_amcheck")
                if let amcheck {
                    // The database in PGDATABASE: its name is never an option, a pattern or a connection string.
                    let result = Shell.run(amcheck, ["--install-missing", "--heapallindexed", "--no-password"],
                                           environment: ChildEnvironment.minimal(scratch.endpoint(database: database.name).libpqEnvironment(database: database.name)))
                    let pass = result.status == 0
                    evidence.checks.append(.init(.pgAmcheck, name: "pg_amcheck \(database.name)", outcome: pass ? .pass : .fail,
                                                 output: DrillRunner.bounded(result.output.isEmpty ? "no corruption found in tables and B-tree indexes" : result.output)))
                    if !pass { findings.append(DrillFinding(kind: .pgAmcheck, reason: "pg_amcheck found problems in \(database.name)")) }
                } else {
                    evidence.checks.append(.init(.pgAmcheck, name: "pg_amcheck", outcome: .fail, output: "pg_amcheck is not installed"))
                    findings.append(DrillFinding(kind: .pgAmcheck, reason: "pg_amcheck is not installed"))
                }
            }
        case .mariadb:
            guard let manifest else { throw KhoError(.integrity, "Snapshot \(snapshot.shortID) has no manifest to compare against.") }
            let scratch = try ScratchMariaDB()
            defer { scratch.tearDown() }
            evidence.scratch = "mariadb server on socket \(scratch.socket) (no networking, unix_socket authentication)"
            let comparisons = try restoreDatabases(&evidence, engine: .mariadb, manifest: manifest, snapshot: snapshot, repository: repository,
                                 index: index, source: source) { scratch.endpoint(database: $0) }
            evidence.rtoSeconds = Date().timeIntervalSince(realStart)
            DrillRunner.pauseForTests(["host": scratch.socket, "port": "0", "directory": scratch.directory])
            for database in manifest.databases {
                guard !database.tables.isEmpty else { continue }
                // Names from the manifest are quoted, and the client runs sandboxed: a table name
                // is never a client command (`\!` would run a shell).
                var lines: [String] = []
                var failed: String?
                do {
                    lines = try MariaDBSource.checkTables(scratch.endpoint(database: database.name), database: database.name,
                                                          tables: database.tables.map(\.name), source: source.name)
                } catch {
                    failed = (error as? KhoError)?.message ?? "\(error)"
                }
                // Table, Op, Msg_type, Msg_text: read from the end, a name may hold a tab.
                let bad = lines.filter { line in
                    let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
                    guard fields.count >= 4 else { return false }
                    let type = fields[fields.count - 2], text = fields[fields.count - 1]
                    return type == "error" || (type == "status" && text != "OK")
                }
                let pass = failed == nil && bad.isEmpty
                let output = (lines + (failed.map { [$0] } ?? [])).joined(separator: "\n")
                evidence.checks.append(.init(.checkTable, name: "CHECK TABLE \(database.name)", outcome: pass ? .pass : .fail, output: DrillRunner.bounded(output)))
                if !pass { findings.append(DrillFinding(kind: .checkTable, reason: "CHECK TABLE reported problems in \(database.name)")) }
            }
            try recordComparisons(&evidence, &findings, comparisons)
        case .sqlite:
            guard let manifest, let database = manifest.databases.first else {
                throw KhoError(.integrity, "Snapshot \(snapshot.shortID) has no manifest to compare against.")
            }
            let scratch = try ScratchFolder()
            defer { scratch.tearDown() }
            // A fixed name: the manifest's file name is not joined to a path.
            let path = scratch.directory + "/restored.sqlite"
            if path == source.sqlitePath { throw KhoError(.usage, "The scratch file would be the source itself; refusing.") }
            evidence.scratch = "sqlite file \(path)"
            let node = try lookup(database.file)
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw KhoError.posix("open", path, errno: errno) }
            do {
                defer { close(fd) }
                try stream(node) { try Syscall.writeAll(fd, $0, path) }
            }
            evidence.rtoSeconds = Date().timeIntervalSince(realStart)
            let problems = try SQLiteSource.integrityProblems(path: path, source: source.name)
            evidence.checks.append(.init(.sqliteIntegrity, name: "PRAGMA integrity_check, foreign_key_check", outcome: problems.isEmpty ? .pass : .fail,
                                         output: DrillRunner.bounded(problems.isEmpty ? "ok" : problems.joined(separator: "\n"))))
            if !problems.isEmpty { findings.append(DrillFinding(kind: .sqliteIntegrity, reason: "SQLite integrity checks found \(problems.count) problems")) }
            record(&evidence, &findings, ManifestComparison(expected: database.tables, actual: try SQLiteSource.manifestTables(path: path, source: source.name)))
        case .files, .command, .stdin:
            let scratch = try ScratchFolder()
            defer { scratch.tearDown() }
            let target = scratch.directory + "/restore"
            if source.paths.contains(target) { throw KhoError(.usage, "The scratch folder would be the source itself; refusing.") }
            evidence.scratch = "folder \(target)"
            var options = RestoreOptions()
            options.restoreOwners = false
            // Restored as root, a setuid file or a device node would be a way in for whoever can
            // reach the scratch folder: the drill creates neither (nor world-writable folders) and
            // compares the modes with the snapshot instead.
            options.adjust = DrillModes.adjust
            // What the restorer warns about (a damaged pack, a blob missing from the index) is the
            // reason a drill fails: keep the first messages as evidence.
            let warnings = Locked<[String]>([])
            let summary = try Restorer(repository: repository, index: index, options: options) { message in
                warnings.withLock { if $0.count < 20 { $0.append(message) } }
            }.restore(snapshot: snapshot, target: target)
            if summary.errors > 0 {
                // Not a usable restore: no RTO is measured.
                let messages = warnings.current
                evidence.checks.append(.init(.restore, outcome: .fail, output: DrillRunner.bounded(messages.joined(separator: "\n"))))
                findings.append(DrillFinding(kind: .restore, reason: "restore failed: \(summary.errors) entries could not be restored"
                                                                     + (messages.first.map { " (first: \($0))" } ?? "")))
            } else {
                evidence.rtoSeconds = Date().timeIntervalSince(realStart)
            }
            DrillRunner.pauseForTests(["directory": scratch.directory])
            let (checked, missing, mismatches) = try FileVerifier.verify(snapshot: snapshot, repository: repository, index: index, restoredRoot: target)
            let pass = mismatches.isEmpty && summary.errors == 0
            evidence.filesCompared = checked
            evidence.filesMissing = missing
            evidence.checks.append(.init(.fileContents, name: "file contents and sizes", outcome: pass ? .pass : .fail,
                                         output: DrillRunner.bounded(mismatches.isEmpty ? "\(checked) files: size and content (keyed chunk hashes) equal to the snapshot" : mismatches.joined(separator: "\n"))))
            if !mismatches.isEmpty { findings.append(DrillFinding(kind: .fileContents, reason: "\(mismatches.count) files differ from the snapshot")) }
            let modes = try DrillModes.verify(snapshot: snapshot, repository: repository, index: index, restoredRoot: target)
            evidence.checks.append(.init(.fileModes, name: "file modes", outcome: modes.mismatches.isEmpty ? .pass : .fail,
                                         output: DrillRunner.bounded(modes.mismatches.isEmpty ? modes.summary : modes.mismatches.joined(separator: "\n"))))
            if !modes.mismatches.isEmpty { findings.append(DrillFinding(kind: .fileModes, reason: "\(modes.mismatches.count) entries have modes that differ from the snapshot")) }
        }
    }

    /// Restores every database of the snapshot into the scratch server by the path `kho restore
    /// --to-database` takes (`DatabaseRestore`): the plan, the roles or users, the database with
    /// its properties, the dump. `LoadedDatabases.compare` then compares them with the manifest
    /// and the schema fingerprint, after the engine's own checks.
    private func restoreDatabases(_ evidence: inout DrillEvidence, engine: SourceKind, manifest: DumpManifest,
                                  snapshot: Snapshot, repository: Repository, index: MasterIndex, source: SourceSpec,
                                  endpoint: (String) -> DatabaseEndpoint) throws -> LoadedDatabases {
        let files = try SnapshotFiles(repository: repository, index: index, snapshot: snapshot)
        var options = DatabaseRestoreOptions()
        options.scratch = true
        var loaded = LoadedDatabases()
        for database in manifest.databases {
            let restore = try DatabaseRestore(engine: engine, target: endpoint(database.name), options: options, sourceName: source.name,
                                              dumpFile: database.file, recorded: database, files: files)
            let plan = try restore.plan()
            loaded.restores.append((database.name, restore, try restore.load(plan)))
        }
        let notes = loaded.restores.flatMap { name, _, result in result.notes.map { "\(name): \($0)" } }
        if !notes.isEmpty {
            evidence.checks.append(.init(.globals, outcome: .pass, output: DrillRunner.bounded(notes.joined(separator: "\n"))))
        }
        return loaded
    }

    struct LoadedDatabases {
        var restores: [(name: String, restore: DatabaseRestore, result: DatabaseRestoreResult)] = []

        /// Compares each restored database; returns the tables' comparison, the schemas' and what
        /// the comparison noted (a snapshot without a fingerprint).
        func compare() throws -> (tables: ManifestComparison, schemas: [String: SchemaComparison], notes: [String]) {
            var tableRows: [ManifestComparison.Row] = []
            var schemas: [String: SchemaComparison] = [:]
            var notes: [String] = []
            for (name, restore, loaded) in restores {
                var result = loaded
                try restore.compare(&result)
                tableRows += result.comparison?.rows ?? []
                if let schema = result.schema { schemas[name] = schema }
                notes += result.notes.dropFirst(loaded.notes.count).map { "\(name): \($0)" }
            }
            return (ManifestComparison(rows: tableRows), schemas, notes)
        }
    }

    private func recordComparisons(_ evidence: inout DrillEvidence, _ findings: inout [DrillFinding], _ loaded: LoadedDatabases) throws {
        let comparisons = try loaded.compare()
        if !comparisons.notes.isEmpty {
            evidence.checks.append(.init(.schema, outcome: .skipped, output: DrillRunner.bounded(comparisons.notes.joined(separator: "\n"))))
        }
        record(&evidence, &findings, comparisons.tables)
        let schemas = comparisons.schemas
        guard !schemas.isEmpty else { return }
        evidence.schema = schemas
        let differences = schemas.sorted { $0.key < $1.key }.flatMap { name, comparison in comparison.differences.map { (name, $0) } }
        let compared = schemas.values.reduce(0) { $0 + $1.compared }
        evidence.checks.append(.init(.schema, name: "schema", outcome: differences.isEmpty ? .pass : .fail,
                                     output: DrillRunner.bounded(differences.isEmpty ? "\(compared) objects: present and equal to the schema recorded at backup"
                                                                 : differences.map { "\($0.0): \($0.1.sentence)" }.joined(separator: "\n"))))
        for (name, difference) in differences.prefix(20) {
            findings.append(DrillFinding(kind: .schema, reason: "\(name): \(difference.sentence)"))
        }
        if differences.count > 20 {
            findings.append(DrillFinding(kind: .schema, reason: "and \(differences.count - 20) more schema differences"))
        }
    }

    func record(_ evidence: inout DrillEvidence, _ findings: inout [DrillFinding], _ comparison: ManifestComparison) {
        evidence.comparison = comparison
        let bad = comparison.rows.filter { $0.outcome != .equal }
        evidence.checks.append(.init(.manifest, outcome: bad.isEmpty ? .pass : .fail,
                                     output: bad.isEmpty ? "\(comparison.rows.count) tables: present, row counts and checksums equal"
                                         : bad.map { "\($0.table): \($0.outcome.rawValue) (rows \($0.expectedRows.map(String.init) ?? "-") → \($0.actualRows.map(String.init) ?? "-"))" }.joined(separator: "\n")))
        for row in bad {
            switch row.outcome {
            case .rowsDiffer: findings.append(DrillFinding(kind: .manifest, reason: "table \(row.table): row counts differ (\(row.expectedRows ?? 0) recorded, \(row.actualRows ?? 0) restored)"))
            case .checksumDiffers: findings.append(DrillFinding(kind: .manifest, reason: "table \(row.table): checksum differs"))
            case .missing: findings.append(DrillFinding(kind: .manifest, reason: "table \(row.table) is missing after restore"))
            case .extra: findings.append(DrillFinding(kind: .manifest, reason: "table \(row.table) was not in the manifest"))
            case .equal: break
            }
        }
    }
}

extension ManifestComparison {
    init(rows: [Row]) {
        self.init(expected: [], actual: [])
        self.rows = rows
    }
}

extension DrillRunner {
    /// Tests only: with KHO_TEST_DRILL_PAUSE set to a file name, a drill whose scratch target is
    /// loaded writes where it is (key=value lines, then a line "."), and waits until the file is
    /// removed (at most ten minutes), so that a test can try to reach the scratch target.
    static func pauseForTests(_ facts: [String: String]) {
        guard let path = TestKnobs.value("KHO_TEST_DRILL_PAUSE"), !path.isEmpty else { return }
        let text = facts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)\n" }.joined() + ".\n"
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) else { return }
        let deadline = Date().addingTimeInterval(600)
        while access(path, F_OK) == 0 && Date() < deadline && !ScratchRegistry.interrupted.current { usleep(50_000) }
    }
}
