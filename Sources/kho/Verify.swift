import ArgumentParser
import Foundation
import KhoCore
import KhoPolicy
import KhoVerify

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run restore drills: restore into a scratch server kho creates and destroys, check integrity, compare the manifest, measure the RTO.",
        discussion: """
        Without --source, drills every source of the selected policies. Each drill is recorded in the
        catalog with its evidence and a SHA-256 over it. Exit 0 when every drill passed, 12 when data
        or the manifest check failed, 1 when only the RTO was missed or the drill could not run.
        """
    )

    @OptionGroup var orchestration: OrchestrationOptions
    @Option(help: "Only this policy.") var policy: String?
    @Option(help: "Only this source.") var source: String?
    @Option(help: "Drill this snapshot instead of the newest good one (needs --source).") var snapshot: String?
    @Flag(help: "Print the evidence as JSON.") var json = false

    func validate() throws {
        if snapshot != nil && source == nil { throw ValidationError("--snapshot needs --source NAME.") }
    }

    static func runner(catalog: Catalog?, quiet: Bool) -> DrillRunner {
        let runner = DrillRunner(catalog: catalog, khoVersion: Kho.version) { line in
            if !quiet { Terminal.write(STDERR_FILENO, "\(Format.time(Date())) \(line)\n") }
        }
        // An interrupted drill removes its lock like every other command.
        runner.lockPending = { storage, name in Signals.pending(storage: storage, name: name) }
        runner.lockHeld = { Signals.held($0) }
        runner.lockReleased = { Signals.released($0) }
        return runner
    }

    func run() throws {
        let policies = try orchestration.loadPolicies().filter { policy == nil || $0.name == policy }
        guard !policies.isEmpty else { throw KhoError(.usage, "No policy named \(policy ?? ""): see `kho policy list`.") }
        let catalog = try orchestration.catalog()
        let runner = Verify.runner(catalog: catalog, quiet: json)
        var results: [DrillEvidence] = []
        var couldNotRun = false
        for p in policies {
            for s in p.sources where source == nil || s.name == source {
                do {
                    results.append(try runner.drill(policy: p, source: s, snapshotID: snapshot))
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
            for e in results { Verify.describe(e) }
        }
        let integrityFailure = results.contains { e in e.checks.contains { $0.outcome == "fail" && $0.name != "rto" } }
        if integrityFailure { throw ExitStatus(code: ExitStatus.integrity) }
        if couldNotRun || results.contains(where: { !$0.passed }) { throw ExitStatus(code: ExitStatus.failure) }
    }

    static func describe(_ e: DrillEvidence) {
        Terminal.out("\(e.passed ? "PASS" : "FAIL") \(e.policy)/\(e.source): snapshot \(e.snapshot.prefix(8)) of \(Format.time(e.snapshotTime)), drill \(e.drillID.prefix(8))")
        Terminal.out("     scratch: \(e.scratch)")
        for check in e.checks {
            Terminal.out("     \(check.outcome.uppercased().rightPad(5)) \(check.name): \(check.output.split(separator: "\n").first ?? "")")
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

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The tamper-evident ledger of privileged actions (restore, drill, forget, prune, key change, policy change).",
        subcommands: [Log.self, VerifyLedger.self]
    )

    struct Log: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "log", abstract: "Show the ledger.")
        @OptionGroup var orchestration: OrchestrationOptions
        @Flag(help: "Print as JSON.") var json = false

        func run() throws {
            let entries = try AuditLedger(stateDirectory: orchestration.stateDirectory).entries()
            if json { try Terminal.json(entries); return }
            for e in entries {
                Terminal.out("\(String(e.sequence).leftPad(5)) \(Format.time(e.time)) \(e.user)@\(e.host) \(e.command) [\(e.outcome)] \(e.arguments.joined(separator: " "))")
            }
            if entries.isEmpty { Terminal.out("the ledger is empty") }
        }
    }

    struct VerifyLedger: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "verify", abstract: "Check the hash chain; exit 12 naming the first bad entry.")
        @OptionGroup var orchestration: OrchestrationOptions

        func run() throws {
            let ledger = try AuditLedger(stateDirectory: orchestration.stateDirectory)
            if let (_, reason) = try ledger.verify() {
                Terminal.out("ledger \(ledger.path): BROKEN: \(reason)")
                throw ExitStatus(code: ExitStatus.integrity)
            }
            Terminal.out("ledger \(ledger.path): \(try ledger.entries().count) entries, chain intact")
        }
    }
}

/// Appends privileged actions to the audit ledger in the state folder.
enum AuditTrail {
    /// The privileged commands and the name each is recorded under (not taken from the command
    /// line, where `restore latest` or `forget 1a2b3c4d` would carry an argument into the name).
    static let privileged: [(type: Any.Type, name: String)] = [
        (Restore.self, "restore"), (Forget.self, "forget"), (Prune.self, "prune"), (Key.Add.self, "key add"),
        (Key.Remove.self, "key remove"), (Key.Passwd.self, "key passwd"), (Verify.self, "verify"),
    ]

    static func record(_ command: ParsableCommand, outcome: String) {
        guard let name = privileged.first(where: { $0.type == type(of: command) })?.name else { return }
        let state = ledgerDirectory
        let arguments = Array(CommandLine.arguments.dropFirst())
        do {
            try AuditLedger(stateDirectory: state).append(command: name, arguments: arguments, outcome: outcome)
        } catch {
            Terminal.warning("the action could not be written to the audit ledger in \(state): \((error as? KhoError)?.message ?? "\(error)")")
        }
    }

    /// The state folder as the orchestration commands find it (`OrchestrationOptions.stateDirectory`):
    /// --state-dir first, then KHO_STATE_DIR, so that `kho audit log --state-dir X` shows what a
    /// command given the same option recorded.
    static var ledgerDirectory: String {
        stateDirectory(in: CommandLine.arguments)
            ?? ProcessInfo.processInfo.environment["KHO_STATE_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/var/lib/kho"
    }

    private static func stateDirectory(in arguments: [String]) -> String? {
        for (i, argument) in arguments.enumerated() {
            if argument == "--" { break }
            if argument == "--state-dir", i + 1 < arguments.count { return arguments[i + 1] }
            if argument.hasPrefix("--state-dir=") { return String(argument.dropFirst("--state-dir=".count)) }
        }
        return nil
    }
}

extension AuditTrail {
    static func recordDrill(policy: String, source: String, outcome: String) {
        let state = ledgerDirectory
        try? AuditLedger(stateDirectory: state).append(command: "drill", arguments: ["--policy", policy, "--source", source], outcome: outcome)
    }
}

/// Notices policy files that changed since the last run and writes each change to the ledger.
enum PolicyChanges {
    static func record(policies: [Policy], stateDirectory: String) throws {
        let path = stateDirectory + "/policy-hashes.json"
        let old = (FileManager.default.contents(atPath: path)).flatMap { try? JSONDecoder().decode([String: String].self, from: $0) } ?? [:]
        var current: [String: String] = [:]
        for policy in policies {
            guard let data = FileManager.default.contents(atPath: policy.file) else { continue }
            current[policy.name] = try SHA256.hash(Array(data)).hex
        }
        guard current != old else { return }
        let ledger = try? AuditLedger(stateDirectory: stateDirectory)
        for (name, hash) in current.sorted(by: { $0.key < $1.key }) where old[name] != hash {
            let file = policies.first { $0.name == name }?.file ?? name
            _ = try? ledger?.append(command: "policy change", arguments: [file, old[name].map { "from \($0.prefix(12))" } ?? "new", "to \(hash.prefix(12))"], outcome: "picked up by kho run")
        }
        for name in old.keys.sorted() where current[name] == nil {
            _ = try? ledger?.append(command: "policy change", arguments: [name, "removed"], outcome: "picked up by kho run")
        }
        if let data = try? JSONEncoder().encode(current) {
            FileManager.default.createFile(atPath: path, contents: data)
        }
    }
}
