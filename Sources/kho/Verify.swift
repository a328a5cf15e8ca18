import ArgumentParser
import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoPolicy
import KhoSources
import KhoStorage
import KhoVerify

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Run restore drills: restore into a scratch server kho creates and destroys, check integrity, compare the manifest, measure the RTO.",
        discussion: """
        Without --source, drills every source of the selected policies (a postgres-base source by a
        point-in-time recovery drill, as --pitr does). Each drill is recorded in the
        catalog with its evidence and a SHA-256 over it. Exit 0 when every drill passed, 12 when data
        or the manifest check failed, 1 when only the RTO was missed or the drill could not run.
        """
    )

    @OptionGroup var orchestration: OrchestrationOptions
    @Option(help: "Only this policy.") var policy: String?
    @Option(help: "Only this source.") var source: String?
    @Option(help: "Drill this snapshot instead of the newest good one (needs --source).") var snapshot: String?
    @Flag(help: "A point-in-time recovery drill of the source's archived cluster: its newest base backup before a kho marker (one not drilled before), recovered with the archived WAL to the marker and compared with the marker's dump (needs --source).")
    var pitr = false
    @Option(help: "With --pitr: recover to this kho marker (kho-<16 hex>, from a dump's manifest) instead of choosing one.") var marker: String?
    @OptionGroup var zone: TimeZoneOption
    @Flag(help: "Print the evidence as JSON.") var json = false

    func validate() throws {
        if snapshot != nil && source == nil { throw ValidationError("--snapshot needs --source NAME.") }
        if pitr && source == nil { throw ValidationError("--pitr needs --source NAME (the name the cluster's WAL is archived under).") }
        if pitr && snapshot != nil { throw ValidationError("--pitr chooses the base backup itself: leave out --snapshot (or give --marker NAME).") }
        if marker != nil && !pitr { throw ValidationError("--marker goes with --pitr.") }
        if let marker { _ = try RecoveryTarget.restorePoint(checking: marker) }
    }

    /// An interrupted drill removes its lock like every other command.
    static let lockHooks = DrillLockHooks(pending: { storage, name in Signals.pending(storage: storage, name: name) },
                                          held: { Signals.held($0) }, released: { Signals.released($0) })

    func run() throws {
        let policies = try orchestration.loadPolicies().filter { policy == nil || $0.name == policy }
        guard !policies.isEmpty else { throw KhoError(.usage, "No policy named \(policy ?? ""): see `kho policy list`.") }
        let catalog = try orchestration.catalog()
        let quiet = json
        let zone = try self.zone.zone(policies: policies)
        let runner = DrillRunner(catalog: catalog, khoVersion: Kho.version, lockHooks: Verify.lockHooks) { line in
            if !quiet { Terminal.write(STDERR_FILENO, "\(Format.time(Date(), zone)) \(line)\n") }
        }
        var results: [DrillEvidence] = []
        var couldNotRun = false
        if pitr {
            // One drill per archived cluster: a dump policy and a base-backup policy may share the
            // source name; the base backup's policy is the one whose objectives apply.
            let candidates = policies.flatMap { p in p.sources.filter { $0.name == source }.map { (p, $0) } }
            guard let (p, s) = candidates.first(where: { $0.1.kind == .postgresBase }) ?? candidates.first else {
                throw KhoError(.usage, "No source named \(source ?? ""): see `kho policy list`.")
            }
            do {
                results.append(try runner.pitrDrill(p.drillTarget, source: s, marker: marker))
            } catch {
                couldNotRun = true
                Terminal.error("\(p.name)/\(s.name): the PITR drill could not run: \((error as? KhoError)?.message ?? "\(error)")")
            }
        }
        for p in policies where !pitr {
            for s in p.sources where source == nil || s.name == source {
                do {
                    // A base backup is drilled by recovering it to a point with its WAL.
                    results.append(s.kind == .postgresBase && snapshot == nil
                                   ? try runner.pitrDrill(p.drillTarget, source: s, marker: nil)
                                   : try runner.drill(p.drillTarget, source: s, snapshotID: snapshot))
                } catch {
                    couldNotRun = true
                    Terminal.error("\(p.name)/\(s.name): the drill could not run: \((error as? KhoError)?.message ?? "\(error)")")
                }
            }
        }
        if results.isEmpty && !couldNotRun { throw KhoError(.usage, "No source named \(source ?? ""): see `kho policy list`.") }
        if json {
            try Terminal.json(results)
        } else {
            for e in results { Verify.describe(e, zone: try self.zone.zone(policies: policies.filter { $0.name == e.policy })) }
        }
        try finish(DrillVerdict.of(results, couldNotRun: couldNotRun))
    }

    static func describe(_ e: DrillEvidence, zone: TimeZone) {
        Terminal.out("\(e.passed ? "PASS" : "FAIL") \(e.policy)/\(e.source): snapshot \(e.snapshot.prefix(8)) of \(Format.time(e.snapshotTime, zone)), drill \(e.drillID.prefix(8))")
        Terminal.out("     scratch: \(e.scratch)")
        if let pitr = e.pitr { describe(pitr) }
        for check in e.checks {
            let counted = check.counted == false && check.isBad ? " (not counted)" : ""
            Terminal.out("     \(check.outcome.rawValue.uppercased().rightPad(5)) \(check.name)\(counted): \(check.output.split(separator: "\n").first ?? "")")
        }
        if let comparison = e.comparison {
            for row in comparison.rows {
                Terminal.out("           \(row.table.rightPad(30)) \(String(row.expectedRows ?? -1).leftPad(10)) → \(String(row.actualRows ?? -1).leftPad(10))  \(row.outcome.rawValue)")
            }
        }
        for reason in e.failureReasons { Terminal.out("     reason: \(reason)") }
        Terminal.out("     evidence SHA-256 \(e.evidenceSHA256)")
    }
}

extension Verify {
    static func describe(_ pitr: PITRDrillEvidence) {
        Terminal.out("     point in time: \(pitr.target) of cluster \(pitr.cluster) from base backup \(pitr.baseBackup.prefix(8))"
                     + (pitr.markerDump.map { ", marker of dump \($0.prefix(8))" + (pitr.markerDatabase.map { " (\($0))" } ?? "") } ?? ""))
        Terminal.out("     reached: \(pitr.reachedStop ?? "-"); redo done at \(pitr.reachedLSN ?? "-"); \(pitr.walFiles) WAL files (\(Format.bytes(pitr.walBytes))) served")
        let exactness: String
        switch pitr.exactness {
        case .proven: exactness = "proven (none of the \(pitr.inFlight ?? 0) transactions in flight or begun in the marker's window committed)"
        case .approximate: exactness = "approximate (\(pitr.committedInWindow ?? 0) transactions committed in the marker's window): the manifest check is not counted"
        case .none: exactness = "none (no marker in the recovery window: recovery tested, content not compared)"
        case .unmeasured: exactness = "unmeasured (the drill stopped before the recovered cluster could be asked)"
        }
        Terminal.out("     exactness: \(exactness)")
    }
}

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "The tamper-evident ledger of privileged actions (restore, drill, forget, prune, key change, policy change).",
        subcommands: [Log.self, VerifyLedger.self]
    )

    struct Log: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "log", abstract: "Show the ledger.")
        @OptionGroup var orchestration: OrchestrationOptions
        @OptionGroup var zone: TimeZoneOption
        @Flag(help: "Print as JSON.") var json = false

        func run() throws {
            let zone = try self.zone.zone()
            let entries = try AuditLedger(stateDirectory: orchestration.stateDirectory).entries()
            if json { try Terminal.json(entries); return }
            for e in entries {
                Terminal.out("\(String(e.sequence).leftPad(5)) \(Format.time(e.time, zone)) \(e.user)@\(e.host) \(e.command) [\(e.outcome)] \(e.arguments.joined(separator: " "))")
            }
            if entries.isEmpty { Terminal.out("the ledger is empty") }
        }
    }

    struct VerifyLedger: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify",
            abstract: "Check the ledger's keyed chain, the heads the repositories recorded and the keyed seals of drill evidence; exit 12 naming the first problem.",
            discussion: """
            The keys come from the repositories: --repo (repeatable; default $KHO_REPOSITORY, password as
            for every command) and those of the policies (their password files). Every repository
            that keyed an entry must be given.
            """
        )
        @OptionGroup var orchestration: OrchestrationOptions
        @Option(name: .customLong("repo"), help: "A repository whose key checks the ledger (repeatable). Default: $KHO_REPOSITORY.")
        var repos: [String] = []

        func run() throws {
            let ledger = try AuditLedger(stateDirectory: orchestration.stateDirectory)
            let (witnesses, notes) = try openWitnesses()
            for note in notes { Terminal.warning(note) }
            guard !witnesses.isEmpty else {
                throw KhoError(.usage, "No repository could be opened to check the ledger's keys with: give --repo (or KHO_REPOSITORY) and its password, or policies whose repositories can be opened.")
            }
            let check = try ledger.check(witnesses: witnesses)
            if let (_, reason) = check.problem {
                Terminal.out("ledger \(ledger.path): BROKEN: \(reason)")
                try finish(.damaged)
            }
            if let evidenceProblem = try checkEvidence(witnesses: witnesses, ledger: ledger) {
                Terminal.out("drill evidence in \(orchestration.stateDirectory): BROKEN: \(evidenceProblem)")
                try finish(.damaged)
            }
            var detail: [String] = []
            if let legacy = check.legacyThrough {
                detail.append("legacy (plain SHA-256) up to entry \(legacy), keyed from entry \(legacy + 1)")
            }
            if !check.unkeyed.isEmpty {
                let which = check.unkeyed.count == 1 ? "entry \(check.unkeyed[0]) is" : "entries \(check.unkeyed.map(String.init).joined(separator: ", ")) are"
                detail.append("\(which) not keyed (the command could not open its repository; only keyed entries after an entry hold it in place)")
            }
            if !check.anchored.isEmpty {
                detail.append("head confirmed by \(check.anchored.count) repositor\(check.anchored.count == 1 ? "y" : "ies")")
            }
            Terminal.out("ledger \(ledger.path): \(check.entries) entries, chain intact\(detail.isEmpty ? "" : " (" + detail.joined(separator: "; ") + ")")")
        }

        /// The repositories named by --repo (or KHO_REPOSITORY) and by the policies.
        private func openWitnesses() throws -> ([Repository], [String]) {
            var opened: [Repository] = []
            var notes: [String] = []
            var locations = repos
            if locations.isEmpty, let env = ProcessInfo.processInfo.environment["KHO_REPOSITORY"], !env.isEmpty { locations = [env] }
            for location in locations {
                let storage = try StorageFactory.make(location: location)
                opened.append(try Repository.open(storage: storage, password: try Password.read(purpose: "password of \(location)"),
                                                  config: try Repository.readConfig(storage: storage)))
            }
            var isFolder: ObjCBool = false
            if FileManager.default.fileExists(atPath: orchestration.policyDirectory, isDirectory: &isFolder), isFolder.boolValue {
                let (policies, _) = PolicyLoader(checkSecrets: false).load(directory: orchestration.policyDirectory)
                var seen = Set(locations)
                for policy in policies where seen.insert(policy.repository.path).inserted {
                    do {
                        let repository = try Repository.open(storage: try StorageFactory.make(location: policy.repository.path), password: try policy.repository.password())
                        if !opened.contains(where: { $0.config.id == repository.config.id }) { opened.append(repository) }
                    } catch {
                        notes.append("the repository \(policy.repository.path) of policy \(policy.name) could not be opened: \((error as? KhoError)?.message ?? "\(error)")")
                    }
                }
            }
            return (opened, notes)
        }

        /// The first drill record whose evidence does not carry a valid keyed seal. Evidence
        /// without one is accepted only from before the ledger was keyed (an earlier kho).
        private func checkEvidence(witnesses: [Repository], ledger: AuditLedger) throws -> String? {
            let catalogFile = orchestration.stateDirectory + "/catalog.sqlite"
            guard FileManager.default.fileExists(atPath: catalogFile) else { return nil }
            let keyedSince = try ledger.entries().first { $0.isKeyed }?.time
            let keys = Dictionary(try witnesses.map { ($0.config.id, try $0.evidenceKey) }, uniquingKeysWith: { a, _ in a })
            for record in try orchestration.catalog().runs(kind: .drill) {
                guard let details = record.details else { continue }
                let name = "drill record \(record.id.map(String.init) ?? "?") (\(record.policy)/\(record.source), \(Timestamp.format(record.started)))"
                // try?: evidence that does not decode, for whatever reason, is the finding below.
                guard let evidence = try? JSON.decoder.decode(DrillEvidence.self, from: Data(details.utf8)) else {
                    return "\(name) holds no readable evidence: it was edited"
                }
                guard evidence.verifySeal() else { return "\(name): the evidence does not match its SHA-256: it was edited" }
                guard let repository = evidence.sealRepository, evidence.evidenceMAC != nil else {
                    if let keyedSince, evidence.end >= keyedSince {
                        return "\(name) carries no keyed seal although it is newer than the keyed ledger: its seal was removed and recomputed"
                    }
                    continue
                }
                guard let key = keys[repository] else {
                    return "\(name) is sealed with repository \(repository.prefix(8)), which was not opened: give it with --repo"
                }
                guard evidence.verifyKeyedSeal(key) else {
                    return "\(name): the evidence does not match its keyed seal: it was edited and its SHA-256 recomputed without the repository's key"
                }
            }
            return nil
        }
    }
}

/// Appends the command line's privileged actions to the audit ledger (see `AuditRecorder`).
enum AuditTrail {
    /// The privileged commands and the name each is recorded under (not taken from the command
    /// line, where `restore latest` or `forget 1a2b3c4d` would carry an argument into the name).
    static let privileged: [(type: Any.Type, name: String)] = [
        (Restore.self, "restore"), (Forget.self, "forget"), (Prune.self, "prune"), (Key.Add.self, "key add"),
        (Key.Remove.self, "key remove"), (Key.Passwd.self, "key passwd"), (Verify.self, "verify"),
    ]

    static func name(of command: ParsableCommand) -> String? {
        privileged.first(where: { $0.type == type(of: command) })?.name
    }

    /// Before a privileged command runs: its entry must be writable, or it does not run.
    static func prepare(_ command: ParsableCommand) throws {
        guard name(of: command) != nil else { return }
        try recorder(for: command).checkWritable()
    }

    /// Writes the entry of a privileged command, keyed with the repository it opened (or, when
    /// it failed before opening one, the repository its options name, if that opens) and
    /// anchored in every repository it opened.
    static func record(_ command: ParsableCommand, outcome: String) throws {
        guard let name = name(of: command) else { return }
        var witnesses = OpenedRepositories.all
        if witnesses.isEmpty, let options = group(RepositoryOptions.self, of: command) {
            do {
                witnesses = [try options.open()]
            } catch {
                // Nothing was done in a repository that cannot be opened: the entry is written
                // unkeyed, and held in place by the next keyed one.
            }
        }
        try recorder(for: command).record(command: name, arguments: Array(CommandLine.arguments.dropFirst()), outcome: outcome, witnesses: witnesses)
    }

    /// The ledger of the state folder the command was given (--state-dir of the orchestration
    /// commands), else KHO_STATE_DIR, else /var/lib/kho: `kho audit log --state-dir X` shows what
    /// a command given the same option recorded.
    static func recorder(for command: ParsableCommand) -> AuditRecorder {
        AuditRecorder(stateDirectory: ledgerDirectory(of: command))
    }

    static func ledgerDirectory(of command: ParsableCommand) -> String {
        group(OrchestrationOptions.self, of: command)?.stateDirectory ?? AuditRecorder.defaultStateDirectory
    }

    private static func group<T: ParsableArguments>(_ type: T.Type, of command: ParsableCommand) -> T? {
        for child in Mirror(reflecting: command).children {
            if let group = child.value as? OptionGroup<T> { return group.wrappedValue }
        }
        return nil
    }
}
