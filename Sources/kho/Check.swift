import ArgumentParser
import Foundation
import KhoCore
import KhoSupport

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check the repository's structure, and with --read-data its stored data.",
        discussion: "Exit 12 when anything is damaged or missing; the damaged packs and the snapshots and files they affect are listed."
    )

    @OptionGroup var repository: RepositoryOptions

    @Flag(name: .customLong("read-data"), help: "Read every pack, decrypt every blob and recompute its ID.")
    var readData = false

    @Option(name: .customLong("read-data-subset"), help: "Read part of the packs: N% (random) or K/T (part K of T; parts 1..T together read every pack once).")
    var readDataSubset: String?

    @Flag(help: "Print the report as JSON.")
    var json = false

    func validate() throws {
        if readData && readDataSubset != nil {
            throw ValidationError("Give --read-data or --read-data-subset, not both.")
        }
        if let subset = readDataSubset { _ = try Check.parseSubset(subset) }
    }

    static func parseSubset(_ text: String) throws -> CheckOptions.DataSelection {
        if text.hasSuffix("%"), let percent = Double(text.dropLast()), percent > 0, percent <= 100 {
            return .fraction(percent / 100)
        }
        let parts = text.split(separator: "/")
        if parts.count == 2, let k = Int(parts[0]), let t = Int(parts[1]), t >= 1, k >= 1, k <= t {
            return .part(k, of: t)
        }
        throw ValidationError("--read-data-subset takes N% (0 < N ≤ 100) or K/T (1 ≤ K ≤ T); got \(text).")
    }

    func run() throws {
        var options = CheckOptions()
        if readData { options.readData = .all }
        if let subset = readDataSubset { options.readData = try Check.parseSubset(subset) }
        let report: CheckReport = try repository.withRepository(exclusive: false, command: "check") { repo in
            options.workers = repo.storage.suggestedCheckWorkers(options.workers)
            let progress = ProgressCounter()
            let line = ProgressLine(progress: progress, label: "check", enabled: !json && options.readData != .none)
            defer { line.finish() }
            return try Checker(repository: repo, options: options, progress: progress).run()
        }
        if json {
            try Terminal.json(report)
        } else {
            for warning in report.warnings { Terminal.warning(warning) }
            for error in report.errors { Terminal.out("error: \(error)") }
            if !report.damagedPacks.isEmpty {
                Terminal.out("damaged or missing packs: \(report.damagedPacks.map { String($0.prefix(8)) }.joined(separator: " "))")
            }
            if !report.affected.isEmpty {
                Terminal.out("affected snapshots and files:")
                for a in report.affected { Terminal.out("  snapshot \(a.snapshot.prefix(8)): \(a.path)") }
            }
            var line = "checked \(report.snapshots) snapshots, \(report.trees) trees, \(report.packs) packs"
            if options.readData != .none {
                line += "; read \(report.packsRead) packs, \(report.blobsRead) blobs, \(Format.bytes(report.bytesRead))"
            }
            Terminal.out(line)
            if report.binlogArchives > 0 {
                Terminal.out("checked the binary log archives of \(report.binlogArchives) sources: \(report.binlogFiles) files" + (options.readData != .none ? ", each piece opened" : ", listed"))
            }
            if report.walClusters > 0 {
                Terminal.out("checked the WAL archives of \(report.walClusters) clusters: \(report.walFiles) files" + (options.readData != .none ? ", each opened" : ", listed"))
            }
            line = "compared the nonces of \(report.noncesCompared) sealed objects"
            line += report.repeatedNonces.isEmpty ? ": none repeats" : ": \(report.repeatedNonces.count) repeat"
            Terminal.out(line)
            if report.ok {
                Terminal.out("no errors found")
            } else if !report.repeatedNonces.isEmpty {
                // try?: only the advice's wording; a repository given by flag or KHO_REPOSITORY was read above.
                Terminal.out("\(report.errors.count) errors found: move every snapshot to a fresh key with `kho rekey --from-repo \((try? repository.location()) ?? "THIS-REPOSITORY") --to-repo NEW`, then retire this repository and its keys")
            } else {
                Terminal.out("\(report.errors.count) errors found: restore what is affected from another copy, and run `kho backup` again for the sources listed")
            }
        }
        try finish(Verdict(report))
    }
}
