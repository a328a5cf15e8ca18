import Foundation
import Glibc
import KhoCatalog
import KhoCore
import KhoSources
import KhoSupport

/// What a point-in-time recovery drill recovers to (docs/design/pitr.md section 8): a kho marker
/// beside a dump of the archive's cluster, or, without one, a random WAL position in the window.
struct PITRChoice {
    var record: WALArchiveRecord
    var cluster: String
    var base: Snapshot
    var baseManifest: PhysicalBackupManifest
    var target: RecoveryTarget
    var marker: (dump: Snapshot, database: DumpManifest.Database, marker: DumpManifest.PITRMarker)?
    /// The plan, or why the archive cannot reach the target (the wal-continuity check's failure).
    var plan: Result<PointInTimePlan, KhoError>

    /// Chooses the marker: `name` when given; else one no earlier PITR drill used (the newest),
    /// else the least recently drilled; then the newest base backup that ends before it.
    static func choose(repository: Repository, source: String, markerName: String?) throws -> PITRChoice {
        guard let record = try WALArchive.currentRecord(source: source, in: repository) else {
            throw KhoError(.usage, "Source \(source) has no WAL archive in this repository: a PITR drill recovers a base backup with its archived WAL; set up archiving with `kho wal setup --source \(source)`.")
        }
        let snapshots = try repository.listSnapshots()
        // try?: a manifest whose end does not parse is not a base backup a drill can start from.
        let bases: [(Snapshot, PhysicalBackupManifest, LSN)] = snapshots.compactMap { snapshot in
            guard snapshot.source.sourceKind == .postgresBase, !snapshot.partial,
                  let manifest = PhysicalBackupManifest(snapshot.manifest), manifest.cluster == record.cluster,
                  let end = try? LSN(parsing: manifest.endLSN) else { return nil }
            return (snapshot, manifest, end)
        }.sorted { $0.2 < $1.2 }
        guard let oldestEnd = bases.first?.2 else {
            throw KhoError(.usage, "Source \(source) has no base backup of cluster \(record.cluster) in this repository: take one with `kho backup --postgres-base … --source-name \(source)` before a PITR drill.")
        }
        // Markers of this cluster that some base backup precedes.
        var markers: [(dump: Snapshot, database: DumpManifest.Database, marker: DumpManifest.PITRMarker, lsn: LSN)] = []
        for snapshot in snapshots where !snapshot.partial {
            guard let manifest = DumpManifest(snapshot.manifest) else { continue }
            for database in manifest.databases {
                // try?: a marker whose position does not parse cannot be recovered to.
                guard let marker = database.pitrMarker, marker.cluster == record.cluster,
                      let lsn = try? LSN(parsing: marker.lsn), lsn >= oldestEnd else { continue }
                markers.append((snapshot, database, marker, lsn))
            }
        }
        markers.sort { $0.lsn > $1.lsn }
        var chosen: (dump: Snapshot, database: DumpManifest.Database, marker: DumpManifest.PITRMarker, lsn: LSN)?
        if let markerName {
            guard let found = markers.first(where: { $0.marker.name == markerName }) else {
                throw KhoError(.usage, "\(markerName) is not a kho marker of source \(source)'s cluster \(record.cluster) after one of its base backups: list the markers with `kho snapshots --json` (pitrMarker of each database), or leave out --marker.")
            }
            chosen = found
        } else if !markers.isEmpty {
            // When each marker was last drilled, from the evidence the repository keeps.
            var drilled: [String: Date] = [:]
            for (evidence, _) in try repository.drillEvidence() {
                guard let name = evidence.pitr?.marker else { continue }
                drilled[name] = max(drilled[name] ?? .distantPast, evidence.start)
            }
            chosen = markers.first { drilled[$0.marker.name] == nil }
                ?? markers.min { drilled[$0.marker.name] ?? .distantPast < drilled[$1.marker.name] ?? .distantPast }
        }
        let target: RecoveryTarget
        let base: (Snapshot, PhysicalBackupManifest, LSN)
        if let chosen {
            target = .restorePoint(chosen.marker.name)
            base = bases.last { $0.2 <= chosen.lsn } ?? bases[0]
        } else {
            // No marker: a random position between the newest base backup's end and the start of
            // the last segment the archive holds without a hole from it (a WAL position, unlike a
            // time, is reached whether or not a commit follows it).
            base = bases[bases.count - 1]
            let size = try WALSegmentSize(bytes: record.segmentSize)
            let inventory = try WALArchive.inventory(of: record, in: repository)
            let histories = try WALArchive.histories(of: inventory, record: record, in: repository)
            let start = try WALFileName(parsing: base.1.startSegment)
            let continuity = WALContinuity.walk(inventory, startTimeline: start.timeline, start: start.segmentNumber(segmentSize: size), histories: histories)
            let last = continuity.reached.map { $0.segmentNumber(segmentSize: size) * UInt64(size.bytes) } ?? base.2.value
            target = last > base.2.value ? .lsn(LSN(UInt64.random(in: base.2.value...last))) : .immediate
        }
        let plan: Result<PointInTimePlan, KhoError>
        do {
            plan = .success(try PointInTimePlan.make(repository: repository, source: source, target: target, baseBackup: base.0.id))
        } catch let error as KhoError where error.kind == .integrity {
            plan = .failure(error)
        }
        return PITRChoice(record: record, cluster: record.cluster, base: base.0, baseManifest: base.1, target: target,
                          marker: chosen.map { ($0.dump, $0.database, $0.marker) }, plan: plan)
    }
}

extension DrillRunner {
    /// The PITR drill's steps (docs/design/pitr.md section 8): the base backup restored into a
    /// private scratch folder with kho's own configuration, recovered through the fetch server to
    /// the marker, promoted; then the target, exactness, pg_amcheck and the marker's manifest.
    func performPITR(_ evidence: inout DrillEvidence, _ findings: inout [DrillFinding], choice: PITRChoice, repository: Repository,
                     source: SourceSpec, realStart: Date) throws {
        var pitr = PITRDrillEvidence(cluster: choice.cluster, baseBackup: choice.base.id ?? "", target: choice.target.description,
                                     exactness: choice.marker == nil ? .none : .unmeasured)
        pitr.marker = choice.marker?.marker.name
        pitr.markerLSN = choice.marker?.marker.lsn
        pitr.markerDump = choice.marker?.dump.id
        pitr.markerDatabase = choice.marker?.database.name
        evidence.pitr = pitr
        let plan: PointInTimePlan
        switch choice.plan {
        case .failure(let error):
            evidence.checks.append(.init(.walContinuity, outcome: .fail, output: DrillRunner.bounded(error.message)))
            findings.append(DrillFinding(kind: .walContinuity, reason: "the archive cannot reach \(choice.target) from base backup \(choice.base.shortID): \(error.message)"))
            return
        case .success(let made):
            plan = made
        }
        evidence.checks.append(.init(.walContinuity, outcome: .pass,
                                     output: "continuous from \(plan.manifest.startSegment) to \(plan.continuity.reached?.description ?? "-")"))
        let bin = "/usr/lib/postgresql/\(plan.manifest.majorVersion)/bin"
        guard access(bin + "/pg_ctl", X_OK) == 0 else {
            throw KhoError(.failure, "Base backup \(choice.base.shortID) is of PostgreSQL \(plan.manifest.majorVersion), whose server programs (\(bin)) are not installed here: install postgresql-\(plan.manifest.majorVersion) for the drill.")
        }
        var phases: [String: Double] = [:]
        var recovered: PointInTimeRestore.Recovered?
        var recoveryBegan = false
        let scratch: ScratchPostgres
        do {
            scratch = try ScratchPostgres(recovering: bin, superuser: plan.manifest.superuser) { folder, owner in
                // Restored as root in a folder of root's (the restorer refuses a path another user
                // could change under it), then moved into the server's folder whole.
                let restoreFolder = try ScratchFolder()
                defer { restoreFolder.tearDown() }
                let staging = restoreFolder.directory + "/restore"
                let warnings = Locked<[String]>([])
                do {
                    _ = try PointInTimeRestore.restoreFiles(repository: repository, plan: plan, into: staging, owner: owner) { message in
                        warnings.withLock { if $0.count < 20 { $0.append(message) } }
                    }
                } catch let error as KhoError where error.kind == .integrity {
                    // What the restorer warned about is the evidence: a damaged pack, a missing blob.
                    throw KhoError(.integrity, ([error.message] + warnings.current).joined(separator: "\n"))
                }
                let data = folder + "/data"
                try DataDirectoryTarget.place(staging + "/data", at: data, owner: owner)
                try PITRScratchConfiguration.replace(in: data, socketFolder: folder, superuser: plan.manifest.superuser,
                                                     settings: plan.manifest.settings, owner: owner)
                phases["files"] = Date().timeIntervalSince(realStart)
                let recoveryStart = Date()
                recoveryBegan = true
                recovered = try PointInTimeRestore.recover(repository: repository, plan: plan, dataDirectory: data, socketFolder: folder, owner: owner,
                                                           port: nil, keepArchiving: false, timeout: 7200, logFile: folder + "/recovery.log")
                phases["recovery"] = Date().timeIntervalSince(recoveryStart)
            }
        } catch let error as KhoError where recoveryBegan && error.kind == .failure {
            // The files were restored and the server started with kho's configuration: a recovery
            // that does not reach promotion is what the drill is there to find, not a drill that
            // could not run.
            evidence.checks.append(.init(.restore, outcome: .fail, output: DrillRunner.bounded(error.message)))
            findings.append(DrillFinding(kind: .restore, reason: "recovery from base backup \(choice.base.shortID) to \(choice.target) did not reach promotion: \(error.message)"))
            pitr.phases = phases
            evidence.pitr = pitr
            return
        }
        defer { scratch.tearDown() }
        evidence.scratch = "postgres cluster recovered from base backup \(choice.base.shortID) on socket \(scratch.directory) (no TCP port, peer authentication, kho's configuration)"
        evidence.rtoSeconds = Date().timeIntervalSince(realStart)
        let checksStart = Date()
        guard let recovered else { throw KhoError(.failure, "The recovered cluster was not started: report this as a bug.") }
        pitr.reachedLSN = recovered.reached.redoDone
        pitr.reachedStop = recovered.reached.stoppedAt
        pitr.reachedCommitTime = recovered.reached.lastCommit
        pitr.walFiles = recovered.served.served
        pitr.walBytes = recovered.served.bytes
        evidence.checks.append(.init(.restore, outcome: .pass, output: "base backup \(choice.base.shortID) restored, \(recovered.served.served) WAL files replayed, promoted"))

        // The target: PostgreSQL says where it stopped.
        let stop = recovered.reached.stoppedAt ?? ""
        let reachedTarget: Bool
        switch choice.target {
        case .restorePoint(let name): reachedTarget = stop.contains("recovery stopping at restore point \"\(name)\"")
        case .lsn: reachedTarget = stop.contains("recovery stopping after WAL location")
        case .immediate, .latest, .time: reachedTarget = true
        }
        evidence.checks.append(.init(.pitrTarget, outcome: reachedTarget ? .pass : .fail,
                                     output: DrillRunner.bounded(stop.isEmpty ? "PostgreSQL did not say where recovery stopped" : stop)))
        if !reachedTarget { findings.append(DrillFinding(kind: .pitrTarget, reason: "recovery did not stop at \(choice.target): \(stop.isEmpty ? "no stop was logged" : stop)")) }

        // Exactness first: later checks (pg_amcheck installs its extension) take transaction IDs.
        let database = choice.marker?.database.name ?? "postgres"
        if let marker = choice.marker?.marker {
            let connection = try PostgresConnection(endpoint: scratch.endpoint(database: database), database: database, source: source.name)
            let window = try PITRExactnessCheck.measure(connection, marker: marker)
            pitr.inFlight = window.inFlight
            pitr.committedInWindow = window.committed
            pitr.exactness = window.committed == 0 ? .proven : .approximate
        }

        var databases: [String] = []
        do {
            let connection = try PostgresConnection(endpoint: scratch.endpoint(database: database), database: database, source: source.name)
            databases = try connection.query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname").compactMap { $0.first ?? nil }
            if let markerDatabase = choice.marker?.database {
                // Before pg_amcheck, which installs its extension into the database.
                let unlogged = Set(try connection.query("""
                    SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'u'
                    """).map { ($0.first.flatMap { $0 } ?? "") + "\u{0}" + ($0.count > 1 ? $0[1] ?? "" : "") })
                // Unlogged tables come back empty after recovery: they are compared by neither side.
                let keep = { (table: DumpManifest.Table) in !unlogged.contains(table.schema + "\u{0}" + table.name) }
                let comparison = ManifestComparison(expected: markerDatabase.tables.filter(keep), actual: try PostgresManifest.tables(connection).filter(keep))
                var manifestFindings: [DrillFinding] = []
                record(&evidence, &manifestFindings, comparison)
                if pitr.exactness == .proven {
                    findings += manifestFindings
                } else if let i = evidence.checks.lastIndex(where: { $0.checkKind == .manifest }) {
                    evidence.checks[i].output = "exactness approximate (\(pitr.committedInWindow ?? 0) transactions committed in the marker's window): not counted\n" + evidence.checks[i].output
                }
            }
        }
        for name in databases {
            guard let amcheck = Shell.find("pg_amcheck") else {
                evidence.checks.append(.init(.pgAmcheck, name: "pg_amcheck", outcome: .fail, output: "pg_amcheck is not installed"))
                findings.append(DrillFinding(kind: .pgAmcheck, reason: "pg_amcheck is not installed"))
                break
            }
            // The database in PGDATABASE: its name is never an option, a pattern or a connection string.
            let result = Shell.run(amcheck, ["--install-missing", "--heapallindexed", "--no-password"],
                                   environment: ChildEnvironment.minimal(scratch.endpoint(database: name).libpqEnvironment(database: name)))
            let pass = result.status == 0
            evidence.checks.append(.init(.pgAmcheck, name: "pg_amcheck \(name)", outcome: pass ? .pass : .fail,
                                         output: DrillRunner.bounded(result.output.isEmpty ? "no corruption found in tables and B-tree indexes" : result.output)))
            if !pass { findings.append(DrillFinding(kind: .pgAmcheck, reason: "pg_amcheck found problems in \(name)")) }
        }
        phases["checks"] = Date().timeIntervalSince(checksStart)
        pitr.phases = phases
        evidence.pitr = pitr
    }
}

/// The marker's window on the recovered, promoted cluster (docs/design/pitr.md section 8): the
/// transactions in flight at the dump's snapshot (its xip) and those that took an ID from its xmax
/// up to the recovered cluster's own xmax. None may have committed for the recovered state to be
/// exactly the dump's.
enum PITRExactnessCheck {
    static func measure(_ connection: PostgresConnection, marker: DumpManifest.PITRMarker) throws -> (inFlight: Int, committed: Int) {
        // xmin:xmax:xip,… — digits and separators only, or the manifest is not kho's.
        let parts = marker.snapshot.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, let xmax = UInt64(parts[1]) else {
            throw KhoError(.integrity, "The marker \(marker.name) records the snapshot \"\(marker.snapshot.prefix(64))\", which is not PostgreSQL's xmin:xmax:xip form: the dump's manifest is damaged; run `kho check`.")
        }
        var xip: [UInt64] = []
        for text in parts[2].split(separator: ",") {
            guard let xid = UInt64(text) else {
                throw KhoError(.integrity, "The marker \(marker.name) lists \"\(text.prefix(32))\" among its running transactions: the dump's manifest is damaged; run `kho check`.")
            }
            xip.append(xid)
        }
        guard let recoveredText = try connection.value("SELECT pg_snapshot_xmax(pg_current_snapshot())::text"), let recoveredXmax = UInt64(recoveredText) else {
            throw KhoError(.failure, "The recovered cluster did not report its snapshot: report this as a bug.")
        }
        let array = "{" + xip.map(String.init).joined(separator: ",") + "}"
        let committed = try connection.value("""
            SELECT count(*) FROM (
              SELECT x FROM unnest($1::xid8[]) AS x
              UNION SELECT g::text::xid8 FROM generate_series($2::bigint, $3::bigint - 1) AS g
            ) AS w WHERE pg_xact_status(w.x) = 'committed'
            """, [array, String(xmax), String(recoveredXmax)])
        let inFlight = xip.count + Int(recoveredXmax > xmax ? recoveredXmax - xmax : 0)
        return (inFlight, Int(committed ?? "") ?? -1)
    }
}

/// The configuration a recovered scratch cluster runs with: kho's, never the backup's. A restored
/// postgresql.conf (or postgresql.auto.conf, or an include) could carry archive_command,
/// restore_command, shared_preload_libraries or a TCP listener — programs run on the drill host,
/// or the restored data reachable by others.
enum PITRScratchConfiguration {
    static func replace(in data: String, socketFolder: String, superuser: String, settings: PhysicalBackupManifest.HotStandbySettings,
                        owner: (uid: uid_t, gid: gid_t)) throws {
        // Tablespaces are links to the original cluster's folders: recovery would write there.
        // A backup without pg_tblspc has no tablespaces; one that cannot be listed is not taken as none.
        var tablespaces: [String] = []
        if FileManager.default.fileExists(atPath: data + "/pg_tblspc") {
            tablespaces = try FileManager.default.contentsOfDirectory(atPath: data + "/pg_tblspc")
        }
        guard tablespaces.isEmpty else {
            throw KhoError(.usage, "The base backup has tablespaces (pg_tblspc), which a PITR drill does not yet recover into a scratch folder: drill the source's dumps instead.")
        }
        let auto = data + "/postgresql.auto.conf"
        if rename(auto, auto + ".kho-restored") != 0 && errno != ENOENT { throw KhoError.posix("rename", auto, errno: errno) }
        for name in ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] {
            let path = data + "/" + name
            if rename(path, path + ".kho-restored") != 0 && errno != ENOENT { throw KhoError.posix("rename", path, errno: errno) }
        }
        let me = geteuid() == 0 ? "root" : Scratch.userName()
        let serverUser = getpwuid(owner.uid).map { String(cString: $0.pointee.pw_name) } ?? "postgres"
        try write(data + "/pg_hba.conf", "local all all peer map=kho\n", owner: owner)
        try write(data + "/pg_ident.conf", "kho \(me) \(try identQuote(superuser))\nkho \(serverUser) \(try identQuote(superuser))\n", owner: owner)
        try write(data + "/postgresql.conf", """
            # written by kho's PITR drill: the backup's own configuration is in *.kho-restored
            listen_addresses = ''
            port = 5432
            unix_socket_directories = \(Scratch.configQuote(socketFolder))
            unix_socket_permissions = 0700
            archive_mode = off
            archive_command = ''
            shared_preload_libraries = ''
            session_preload_libraries = ''
            local_preload_libraries = ''
            max_connections = \(settings.maxConnections)
            max_worker_processes = \(settings.maxWorkerProcesses)
            max_wal_senders = \(settings.maxWalSenders)
            max_prepared_transactions = \(settings.maxPreparedTransactions)
            max_locks_per_transaction = \(settings.maxLocksPerTransaction)

            """, owner: owner)
    }

    /// A name in pg_ident.conf: double quotes, inner quotes doubled; no control characters.
    static func identQuote(_ name: String) throws -> String {
        guard !name.isEmpty, name.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7f }) else {
            throw KhoError(.integrity, "The base backup's superuser name holds a control character: the manifest is damaged; run `kho check`.")
        }
        return "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    private static func write(_ path: String, _ text: String, owner: (uid: uid_t, gid: gid_t)) throws {
        let fd = try Syscall.call("open", path) { open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600) }
        defer { close(fd) }
        try Array(text.utf8).withUnsafeBytes { try Syscall.writeAll(fd, $0, path) }
        try Syscall.call("fchown", path) { fchown(fd, owner.uid, owner.gid) }
    }
}
