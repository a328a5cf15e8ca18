import Foundation
import KhoCore
import KhoPolicy
import KhoSources
import KhoStorage

/// Everything a drill found, kept in the catalog as evidence and printed by `kho verify --json`.
public struct DrillEvidence: Codable, Sendable {
    public struct Check: Codable, Sendable {
        public var name: String
        /// pass, fail (the data or the restore is wrong), error (the drill could not run: a
        /// scratch server did not start, a tool is missing) or skipped.
        public var outcome: String
        /// What the check printed, bounded to 4 KiB.
        public var output: String
    }
    public var drillID: String
    public var policy: String
    public var source: String
    public var sourceKind: String
    public var snapshot: String
    public var snapshotTime: Date
    public var scratch: String
    public var start: Date
    public var end: Date
    public var checks: [Check]
    public var comparison: ManifestComparison?
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

    public mutating func seal(key: DerivedKey? = nil) throws {
        evidenceSHA256 = ""
        evidenceMAC = nil
        sealRepository = key?.repositoryID
        if let key { evidenceMAC = key.mac(Array(try JSON.encoder.encode(self))) }
        evidenceSHA256 = SHA256.hash(Array(try JSON.encoder.encode(self))).hex
    }

    /// True when the keyed seal matches the record (and the SHA-256 too); false without one.
    public func verifyKeyedSeal(_ key: DerivedKey) -> Bool {
        guard verifySeal(), let mac = evidenceMAC, sealRepository == key.repositoryID else { return false }
        var copy = self
        copy.evidenceSHA256 = ""
        copy.evidenceMAC = nil
        guard let data = try? JSON.encoder.encode(copy) else { return false }
        return key.verify(Array(data), expected: mac)
    }

    /// True when the stored hash matches the record.
    public func verifySeal() -> Bool {
        var copy = self
        copy.evidenceSHA256 = ""
        guard let data = try? JSON.encoder.encode(copy) else { return false }
        return SHA256.hash(Array(data)).hex == evidenceSHA256
    }
}

/// Restores a snapshot into a scratch target kho creates, runs the engine's own integrity checks,
/// recomputes the manifest and compares it with the recorded one, measures the time to a usable
/// restore against the RTO, and always tears the scratch target down.
public final class DrillRunner {
    public let catalog: Catalog?
    public let khoVersion: String
    private let log: (String) -> Void

    /// Told the name of the repository lock before its file exists, then the lock once held and
    /// when released: the command line's signal handler removes it when the drill is interrupted.
    public var lockPending: ((_ storage: any Storage, _ name: String) -> Void)?
    public var lockHeld: ((RepositoryLock) -> Void)?
    public var lockReleased: ((RepositoryLock) -> Void)?

    public init(catalog: Catalog?, khoVersion: String, log: @escaping (String) -> Void) {
        self.catalog = catalog
        self.khoVersion = khoVersion
        self.log = log
    }

    static func bounded(_ text: String) -> String {
        text.utf8.count <= 4096 ? text : String(decoding: Array(text.utf8.prefix(4096)), as: UTF8.self) + "…"
    }

    /// Runs one drill. `snapshotID` nil means the newest good snapshot of the source.
    public func drill(policy: Policy, source: SourceSpec, snapshotID: String?, planned: Date? = nil) throws -> DrillEvidence {
        let repository = try Repository.open(storage: try StorageFactory.make(location: policy.repository.path), password: try policy.repository.password())
        // The audit ledger keys the drill's entry with it.
        OpenedRepositories.remember(repository)
        let lockName = RepositoryLock.newName()
        lockPending?(repository.storage, lockName)
        let lock = try RepositoryLock.acquire(storage: repository.storage, exclusive: false, command: "verify \(policy.name)/\(source.name)",
                                              wait: 600, name: lockName)
        lockHeld?(lock)
        defer {
            lock.release()
            lockReleased?(lock)
        }
        let index = try repository.loadIndex()
        let snapshot: Snapshot
        if let snapshotID {
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
                                     sourceKind: source.kind.rawValue, snapshot: snapshot.id ?? "", snapshotTime: snapshot.time,
                                     scratch: "", start: started, end: started, checks: [], comparison: nil, rtoSeconds: nil,
                                     rtoObjectiveSeconds: policy.rto, passed: false, failureReasons: [], khoVersion: khoVersion,
                                     host: Host.name, evidenceSHA256: "")
        log("\(policy.name)/\(source.name): drill of snapshot \(snapshot.shortID) started")
        var record = RunRecord(kind: "drill", policy: policy.name, source: source.name, repository: policy.repository.path,
                               planned: planned, started: started)
        if let catalog { record = (try? catalog.insert(record)) ?? record }
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
                interrupted.outcome = "failure"
                interrupted.error = "interrupted before the drill completed"
                try? catalog.update(interrupted)
            }
        }
        defer { ScratchRegistry.removeOnInterrupt(onInterrupt) }

        do {
            try perform(&evidence, snapshot: snapshot, repository: repository, index: index, source: source, realStart: realStart)
        } catch {
            let message = (error as? KhoError)?.message ?? "\(error)"
            // Damaged data, or a dump that does not load, is what a drill is there to find; a
            // scratch server that does not start (or a missing tool) only means the drill could
            // not run: "error", which `kho verify` does not count as an integrity failure.
            let kind = (error as? KhoError)?.kind
            if kind == .integrity || kind == .source {
                evidence.checks.append(.init(name: "restore", outcome: "fail", output: DrillRunner.bounded(message)))
                evidence.failureReasons.append("restore failed: \(message)")
            } else {
                evidence.checks.append(.init(name: "restore", outcome: "error", output: DrillRunner.bounded(message)))
                evidence.failureReasons.append("the drill could not run: \(message)")
            }
        }
        if let rto = evidence.rtoSeconds {
            let pass = rto <= policy.rto
            // An objective under a minute is shown with its fraction ("0.5 s", not "0 s").
            let objective = policy.rto < 60 ? String(format: "%g", policy.rto) : String(format: "%.0f", policy.rto)
            evidence.checks.append(.init(name: "rto", outcome: pass ? "pass" : "fail",
                                         output: String(format: "usable after %.2f s", rto) + "; objective \(objective) s"))
            if !pass { evidence.failureReasons.append(String(format: "restore took %.2f s", rto) + ", more than the RTO of \(objective) s") }
        }
        // Every check runs and is recorded; only those the policy's `drills: checks:` names decide
        // the outcome (a failed restore always does).
        let required = Set(policy.drills?.checks ?? ["integrity", "manifest", "rto"])
        func category(_ reason: String) -> String {
            if reason.hasPrefix("restore took") { return "rto" }
            if reason.hasPrefix("table ") { return "manifest" }
            if reason.hasPrefix("restore failed") || reason.hasPrefix("the drill could not run") { return "restore" }
            return "integrity"
        }
        evidence.failureReasons = evidence.failureReasons.map { reason in
            let kind = category(reason)
            return kind == "restore" || required.contains(kind) ? reason : reason + " (not counted: the policy's drills do not require the \(kind) check)"
        }
        evidence.passed = !evidence.failureReasons.contains { !$0.contains("(not counted:") }
        evidence.end = started.addingTimeInterval(Date().timeIntervalSince(realStart))
        try evidence.seal(key: repository.evidenceKey)
        if let catalog {
            record.ended = evidence.end
            record.outcome = evidence.passed ? "success" : "failure"
            record.error = evidence.failureReasons.isEmpty ? nil : evidence.failureReasons.joined(separator: "; ")
            record.snapshot = snapshot.id
            record.snapshotTime = snapshot.time
            record.details = String(decoding: try JSON.encoder.encode(evidence), as: UTF8.self)
            let final = record
            recorded.withLock { done in
                guard !done else { return }
                done = true
                try? catalog.update(final)
            }
        }
        log("\(policy.name)/\(source.name): drill \(evidence.passed ? "PASSED" : "FAILED: " + evidence.failureReasons.joined(separator: "; "))")
        return evidence
    }

    private func perform(_ evidence: inout DrillEvidence, snapshot: Snapshot, repository: Repository, index: MasterIndex,
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
        case .postgres:
            guard let manifest else { throw KhoError(.integrity, "Snapshot \(snapshot.shortID) has no manifest to compare against.") }
            let scratch = try ScratchPostgres()
            defer { scratch.tearDown() }
            evidence.scratch = "postgres cluster on 127.0.0.1:\(scratch.port) in \(scratch.directory)"
            if source.endpoint?.host == "127.0.0.1" && source.endpoint?.port == scratch.port {
                throw KhoError(.usage, "The scratch cluster would be the source itself; refusing.")
            }
            if let globals = try? lookup("globals.sql") {
                // Roles first, so that ownership in the dump resolves; "already exists" errors are expected.
                let feedGlobals = try ClientFeederAccess.loadIgnoringErrors(endpoint: scratch.endpoint(database: "postgres")) { write in
                    try stream(globals, write)
                }
                evidence.checks.append(.init(name: "globals", outcome: "pass", output: "roles and tablespaces loaded (\(feedGlobals) bytes)"))
            }
            var comparisons: [ManifestComparison.Row] = []
            for database in manifest.databases {
                let node = try lookup(database.file)
                let loader = DatabaseLoader(engine: "postgres", target: scratch.endpoint(database: database.name), replace: false, sourceName: source.name)
                let result = try loader.load(expected: database) { write in try stream(node, write) }
                comparisons += result.comparison?.rows ?? []
            }
            evidence.rtoSeconds = Date().timeIntervalSince(realStart)
            for database in manifest.databases {
                let amcheck = Shell.find("pg_amcheck")
                if let amcheck {
                    let result = Shell.run(amcheck, ["--install-missing", "--heapallindexed", "-h", "127.0.0.1", "-p", String(scratch.port), "-U", "postgres", "-d", database.name])
                    let pass = result.status == 0
                    evidence.checks.append(.init(name: "pg_amcheck \(database.name)", outcome: pass ? "pass" : "fail",
                                                 output: DrillRunner.bounded(result.output.isEmpty ? "no corruption found in tables and B-tree indexes" : result.output)))
                    if !pass { evidence.failureReasons.append("pg_amcheck found problems in \(database.name)") }
                } else {
                    evidence.checks.append(.init(name: "pg_amcheck", outcome: "fail", output: "pg_amcheck is not installed"))
                    evidence.failureReasons.append("pg_amcheck is not installed")
                }
            }
            record(&evidence, ManifestComparison(rows: comparisons))
        case .mariadb:
            guard let manifest else { throw KhoError(.integrity, "Snapshot \(snapshot.shortID) has no manifest to compare against.") }
            let scratch = try ScratchMariaDB()
            defer { scratch.tearDown() }
            evidence.scratch = "mariadb server on 127.0.0.1:\(scratch.port) in \(scratch.directory)"
            var comparisons: [ManifestComparison.Row] = []
            for database in manifest.databases {
                let node = try lookup(database.file)
                let loader = DatabaseLoader(engine: "mariadb", target: scratch.endpoint(database: database.name), replace: false, sourceName: source.name)
                let result = try loader.load(expected: database) { write in try stream(node, write) }
                comparisons += result.comparison?.rows ?? []
            }
            evidence.rtoSeconds = Date().timeIntervalSince(realStart)
            let client = Shell.find("mariadb") ?? "/usr/bin/mariadb"
            for database in manifest.databases {
                let tables = database.tables.map { "`\(database.name)`.`\($0.name)`" }.joined(separator: ", ")
                guard !tables.isEmpty else { continue }
                let result = Shell.run(client, ["--protocol=TCP", "-h", "127.0.0.1", "-P", String(scratch.port), "-u", "root", "--batch", "--skip-column-names",
                                                "-e", "CHECK TABLE \(tables) EXTENDED"])
                let bad = result.output.split(separator: "\n").filter { line in
                    let fields = line.split(separator: "\t")
                    return fields.count >= 4 && (fields[2] == "error" || (fields[2] == "status" && fields[3] != "OK"))
                }
                let pass = result.status == 0 && bad.isEmpty
                evidence.checks.append(.init(name: "CHECK TABLE \(database.name)", outcome: pass ? "pass" : "fail", output: DrillRunner.bounded(result.output)))
                if !pass { evidence.failureReasons.append("CHECK TABLE reported problems in \(database.name)") }
            }
            record(&evidence, ManifestComparison(rows: comparisons))
        case .sqlite:
            guard let manifest, let database = manifest.databases.first else {
                throw KhoError(.integrity, "Snapshot \(snapshot.shortID) has no manifest to compare against.")
            }
            let scratch = try ScratchFolder()
            defer { scratch.tearDown() }
            let path = scratch.directory + "/" + database.file
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
            evidence.checks.append(.init(name: "PRAGMA integrity_check, foreign_key_check", outcome: problems.isEmpty ? "pass" : "fail",
                                         output: DrillRunner.bounded(problems.isEmpty ? "ok" : problems.joined(separator: "\n"))))
            if !problems.isEmpty { evidence.failureReasons.append("SQLite integrity checks found \(problems.count) problems") }
            record(&evidence, ManifestComparison(expected: database.tables, actual: try SQLiteSource.manifestTables(path: path, source: source.name)))
        case .files, .command:
            let scratch = try ScratchFolder()
            defer { scratch.tearDown() }
            let target = scratch.directory + "/restore"
            if source.paths.contains(target) { throw KhoError(.usage, "The scratch folder would be the source itself; refusing.") }
            evidence.scratch = "folder \(target)"
            var options = RestoreOptions()
            options.restoreOwners = false
            // What the restorer warns about (a damaged pack, a blob missing from the index) is the
            // reason a drill fails: keep the first messages as evidence.
            let warnings = Locked<[String]>([])
            let summary = try Restorer(repository: repository, index: index, options: options) { message in
                warnings.withLock { if $0.count < 20 { $0.append(message) } }
            }.restore(snapshot: snapshot, target: target)
            if summary.errors > 0 {
                // Not a usable restore: no RTO is measured.
                let messages = warnings.current
                evidence.checks.append(.init(name: "restore", outcome: "fail", output: DrillRunner.bounded(messages.joined(separator: "\n"))))
                evidence.failureReasons.append("restore failed: \(summary.errors) entries could not be restored"
                                               + (messages.first.map { " (first: \($0))" } ?? ""))
            } else {
                evidence.rtoSeconds = Date().timeIntervalSince(realStart)
            }
            let (checked, mismatches) = try FileVerifier.verify(snapshot: snapshot, repository: repository, index: index, restoredRoot: target)
            let pass = mismatches.isEmpty && summary.errors == 0
            evidence.checks.append(.init(name: "file contents and sizes", outcome: pass ? "pass" : "fail",
                                         output: DrillRunner.bounded(mismatches.isEmpty ? "\(checked) files: size and content (keyed chunk hashes) equal to the snapshot" : mismatches.joined(separator: "\n"))))
            if !mismatches.isEmpty { evidence.failureReasons.append("\(mismatches.count) files differ from the snapshot") }
        }
    }

    private func record(_ evidence: inout DrillEvidence, _ comparison: ManifestComparison) {
        evidence.comparison = comparison
        let bad = comparison.rows.filter { $0.outcome != .equal }
        evidence.checks.append(.init(name: "manifest", outcome: bad.isEmpty ? "pass" : "fail",
                                     output: bad.isEmpty ? "\(comparison.rows.count) tables: present, row counts and checksums equal"
                                         : bad.map { "\($0.table): \($0.outcome.rawValue) (rows \($0.expectedRows.map(String.init) ?? "-") → \($0.actualRows.map(String.init) ?? "-"))" }.joined(separator: "\n")))
        for row in bad {
            switch row.outcome {
            case .rowsDiffer: evidence.failureReasons.append("table \(row.table): row counts differ (\(row.expectedRows ?? 0) recorded, \(row.actualRows ?? 0) restored)")
            case .checksumDiffers: evidence.failureReasons.append("table \(row.table): checksum differs")
            case .missing: evidence.failureReasons.append("table \(row.table) is missing after restore")
            case .extra: evidence.failureReasons.append("table \(row.table) was not in the manifest")
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

/// Loads a script into PostgreSQL without stopping at errors (for globals.sql, whose CREATE ROLE
/// of existing roles fails harmlessly).
enum ClientFeederAccess {
    static func loadIgnoringErrors(endpoint: DatabaseEndpoint, produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws -> Int64 {
        guard let psql = Shell.find("psql") else { throw KhoError(.failure, "psql is not installed: install Debian's postgresql-client.") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: psql)
        process.arguments = ["-X", "-q", "-h", endpoint.host, "-p", String(endpoint.port), "-U", endpoint.user, "-d", endpoint.database, "-o", "/dev/null"]
        let input = Pipe()
        process.standardInput = input
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        var total: Int64 = 0
        let fd = input.fileHandleForWriting.fileDescriptor
        try produce { chunk in
            try Syscall.writeAll(fd, chunk, "psql")
            total += Int64(chunk.count)
        }
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        return total
    }
}

/// Checks restored files against the snapshot: every file's size, and its content by cutting it
/// with the repository's chunker and comparing the keyed chunk hashes with the snapshot's.
enum FileVerifier {
    static func verify(snapshot: Snapshot, repository: Repository, index: MasterIndex, restoredRoot: String) throws -> (Int, [String]) {
        guard let root = snapshot.treeID else { return (0, ["snapshot names no tree"]) }
        let codec = BlobCodec(repository: repository)
        let chunker = StreamChunker(chunker: repository.chunker)
        var checked = 0
        var mismatches: [String] = []
        func walk(_ tree: BlobID, _ path: String) throws {
            for node in try repository.loadTree(tree, index: index, codec: codec).nodes {
                let child = path + "/" + node.nameString
                if node.kind == .directory, let subtree = node.subtree {
                    try walk(subtree, child)
                    continue
                }
                guard node.kind == .file else { continue }
                checked += 1
                let full = restoredRoot + child
                let fd = open(full, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { mismatches.append("\(child): missing after restore"); continue }
                defer { close(fd) }
                var ids: [BlobID] = []
                var size: UInt64 = 0
                chunker.reset()
                while try chunker.next(read: { buffer in try Syscall.call("read", full) { read(fd, buffer.baseAddress, buffer.count) } }, { chunk in
                    ids.append(codec.hasher.id(of: chunk))
                    size += UInt64(chunk.count)
                }) {}
                if size != node.size { mismatches.append("\(child): size \(size), snapshot says \(node.size)") }
                else if ids != node.content { mismatches.append("\(child): content differs from the snapshot") }
            }
        }
        try walk(root, "")
        return (checked, mismatches)
    }
}
