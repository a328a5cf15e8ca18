import ArgumentParser
import Foundation
import KhoCatalog
import KhoCore
import KhoSupport
import KhoPolicy

/// Where the policies and the catalog are: shared by the orchestration commands.
struct OrchestrationOptions: ParsableArguments {
    @Option(help: "Folder of policy files. Default: $KHO_POLICIES, else /etc/kho/policies (never the current folder).")
    var policies: String?

    @Option(name: .customLong("state-dir"), help: "Folder of the catalog. Default: $KHO_STATE_DIR, else /var/lib/kho.")
    var stateDir: String?

    var policyDirectory: String {
        if let policies { return policies }
        if let env = ProcessInfo.processInfo.environment["KHO_POLICIES"], !env.isEmpty { return env }
        // Never the current folder: root starting kho in a folder another user can write would
        // run that user's commands.
        return "/etc/kho/policies"
    }

    var stateDirectory: String {
        stateDir ?? ProcessInfo.processInfo.environment["KHO_STATE_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/var/lib/kho"
    }

    /// Valid policies, or a usage error listing every problem.
    func loadPolicies(checkSecrets: Bool = true) throws -> [Policy] {
        let (policies, errors) = PolicyLoader(checkSecrets: checkSecrets).load(directory: policyDirectory)
        if !errors.isEmpty {
            for error in errors { Terminal.write(STDERR_FILENO, "\(error)\n") }
            throw KhoError(.usage, "\(errors.count) problem\(errors.count == 1 ? "" : "s") in the policies in \(policyDirectory): fix them and run `kho policy validate`.")
        }
        return policies
    }

    func catalog() throws -> Catalog { try Catalog(stateDirectory: stateDirectory) }
}

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Check and list the agency policies.",
        subcommands: [Validate.self, List.self]
    )

    struct Validate: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "validate", abstract: "Check every policy file: keys, types, schedules, durations, names, secrets files.")

        @Argument(help: "Folder of policy files (default: as --policies).")
        var directory: String?

        @OptionGroup var orchestration: OrchestrationOptions

        @Flag(name: .customLong("skip-secrets"), help: "Do not check that password files exist (for checking policies on another machine).")
        var skipSecrets = false

        func run() throws {
            let folder = directory ?? orchestration.policyDirectory
            let (policies, errors) = PolicyLoader(checkSecrets: !skipSecrets).load(directory: folder)
            for error in errors { Terminal.out(error.description) }
            if errors.isEmpty {
                Terminal.out("\(policies.count) policies, \(policies.reduce(0) { $0 + $1.sources.count }) sources: all valid")
            } else {
                Terminal.out("\(errors.count) problem\(errors.count == 1 ? "" : "s") found")
                throw ExitStatus(.usage)
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List policies, their sources and next run times.")

        @OptionGroup var orchestration: OrchestrationOptions
        @OptionGroup var zone: TimeZoneOption
        @Flag(help: "Print as JSON.") var json = false

        struct Entry: Encodable {
            var policy: String
            var agency: String
            var system: String
            var securityLevel: Int
            var schedule: String
            var nextRun: Date?
            var repository: String
            var sources: [String]
        }

        func run() throws {
            let policies = try orchestration.loadPolicies(checkSecrets: false)
            let now = Clock.now
            let entries = policies.map { p in
                Entry(policy: p.name, agency: p.agency, system: p.system, securityLevel: p.securityLevel, schedule: p.schedule.expression,
                      nextRun: p.schedule.next(after: now), repository: p.repository.path, sources: p.sources.map { "\($0.name) (\($0.summary))" })
            }
            if json { try Terminal.json(entries); return }
            for (e, policy) in zip(entries, policies) {
                let zone = try self.zone.zone(policies: [policy])
                Terminal.out("\(e.policy) — \(e.agency): \(e.system) (level \(e.securityLevel))")
                Terminal.out("  schedule \(e.schedule) (\(DisplayZone.name(of: policy.timeZone))), next run \(e.nextRun.map { Format.time($0, zone) } ?? "never")")
                Terminal.out("  repository \(e.repository)")
                for s in e.sources { Terminal.out("  source \(s)") }
            }
        }
    }
}
