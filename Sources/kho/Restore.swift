import ArgumentParser
import Foundation
import KhoCore

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restore a snapshot's files into a folder.",
        discussion: "The target must be new or empty unless --overwrite is given. Exit 12 when some files could not be restored because data is damaged; everything else is restored."
    )

    @OptionGroup var repository: RepositoryOptions

    @Argument(help: "Snapshot: `latest`, an ID or a unique prefix.")
    var snapshot: String

    @Option(help: "Folder to restore into.")
    var target: String

    @Option(help: "Restore only paths matching this shell pattern, and everything below matching folders (repeatable).")
    var include: [String] = []

    @Flag(help: "Replace files that already exist in the target.")
    var overwrite = false

    @Flag(help: "Print the summary as JSON.")
    var json = false

    func run() throws {
        let summary: RestoreSummary = try repository.withRepository(exclusive: false, command: "restore") { repo in
            let index = try repo.loadIndex()
            let snap = try repo.findSnapshot(snapshot)
            var options = RestoreOptions()
            options.includes = include
            options.overwrite = overwrite
            let progress = ProgressCounter()
            let line = ProgressLine(progress: progress, label: "restore", enabled: !json)
            defer { line.finish() }
            let restorer = Restorer(repository: repo, index: index, options: options, progress: progress) { message in
                Terminal.warning(message)
            }
            if !json {
                Terminal.out("restoring snapshot \(snap.shortID) of \(Format.time(snap.time)) from \(snap.hostname) to \(target)")
            }
            return try restorer.restore(snapshot: snap, target: target)
        }
        if json {
            try Terminal.json(summary)
        } else {
            Terminal.out("restored \(summary.files) files, \(summary.directories) folders, \(summary.otherEntries) other entries, \(Format.bytes(summary.bytes)) in \(Format.duration(summary.duration))")
            if summary.errors > 0 {
                Terminal.out("\(summary.errors) entries could not be restored: see the warnings above and run `kho check --read-data`.")
            }
        }
        if summary.errors > 0 { throw ExitStatus(code: ExitStatus.integrity) }
    }
}
