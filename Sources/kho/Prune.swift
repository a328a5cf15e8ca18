import ArgumentParser
import Foundation
import KhoCore
import KhoSupport
import KhoStorage

struct Prune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Remove data no snapshot uses and repack mostly unused packs (exclusive lock).",
        discussion: "New packs and the new index are written before anything old is removed, so an interrupted prune loses nothing; run it again to finish."
    )

    @OptionGroup var repository: RepositoryOptions

    @Option(name: .customLong("max-unused"), help: "Unused space allowed to remain in partly used packs, e.g. 5% (0% repacks everything).")
    var maxUnused: String = "5%"

    @Flag(name: .customLong("dry-run"), help: "Show what would be freed; change nothing.")
    var dryRun = false

    @Flag(help: "Print the report as JSON.")
    var json = false

    static func parseShare(_ text: String) throws -> Double {
        let number = text.hasSuffix("%") ? String(text.dropLast()) : text
        guard let value = Double(number), value >= 0, value <= 100 else {
            throw ValidationError("--max-unused takes a percentage from 0% to 100%; got \(text).")
        }
        return value / 100
    }

    func validate() throws { _ = try Prune.parseShare(maxUnused) }

    static func describe(_ r: PruneReport) {
        Terminal.out("\(r.snapshots) snapshots use \(r.blobsUsed) blobs; \(r.blobsUnused) blobs are unused, \(Format.bytes(r.bytesUnused)) of \(Format.bytes(r.bytesTotal))")
        let verb = r.dryRun ? "would remove" : "removed"
        Terminal.out("\(verb) \(r.packsRemoved) packs (\(r.orphanPacks) left by interrupted backups), repacked \(r.packsRepacked) into \(r.packsWritten)")
        Terminal.out("\(r.dryRun ? "would free" : "freed") \(Format.bytes(r.bytesFreed))")
        if r.binlogFilesRemoved > 0 {
            Terminal.out("\(verb) \(r.binlogFilesRemoved) archived binary log files (\(Format.bytes(r.binlogBytesRemoved))) older than every kept dump's position")
        }
        if r.walFilesRemoved > 0 {
            Terminal.out("\(verb) \(r.walFilesRemoved) archived WAL files (\(Format.bytes(r.walBytesRemoved))) older than every kept base backup of their cluster")
        }
        if let last = r.retained.map(\.until).max() {
            Terminal.out("left \(r.retained.count) files that S3 Object Lock keeps (the last until \(ObjectLockFormat.text(last))); a prune after that date removes them")
        }
        if r.unindexedKept > 0 {
            Terminal.out("kept \(r.unindexedKept) packs no index lists yet: a running backup may still be writing them (a later prune removes them if they stay unlisted)")
        }
        if r.locksExtended > 0 {
            Terminal.out("extended the object lock of \(r.locksExtended) files that snapshots still use")
        }
    }

    func run() throws {
        var options = PruneOptions()
        options.maxUnused = try Prune.parseShare(maxUnused)
        options.dryRun = dryRun
        if let grace = TestKnobs.value("KHO_TEST_PRUNE_GRACE"), let seconds = Double(grace) {
            // Tests only: how long unlisted packs are kept (docs/FORMAT.md, "Locks").
            options.unindexedGrace = seconds
        }
        let report: PruneReport = try repository.withRepository(exclusive: !dryRun, command: "prune") { repo in
            let pruner = Pruner(repository: repo, options: options, warn: { Terminal.warning($0) })
            if let delay = TestKnobs.value("KHO_TEST_WAL_REMOVE_DELAY"), let milliseconds = UInt32(delay) {
                // Tests only: slow each archived WAL removal so that a test can kill prune amid them.
                pruner.stepHook = { name in if name == "remove-wal-file" { usleep(milliseconds * 1000) } }
            } else if let step = TestKnobs.value("KHO_TEST_PRUNE_PAUSE") {
                // Tests only: pause at a named step so that a test can kill the process there.
                pruner.stepHook = { name in
                    if name == step {
                        FileHandle.standardError.write(Data("paused at \(name)\n".utf8))
                        Thread.sleep(forTimeInterval: 3600)
                    }
                }
            }
            let report = try pruner.run()
            // Temporary files of saves that were interrupted (killed backups and prunes): nobody
            // writes while the exclusive lock is held except lock-less key commands, which finish
            // in seconds, so files older than an hour are leftovers.
            if !dryRun, let local = repo.storage as? LocalStorage {
                let old = try local.leftoverTemporaryFiles().filter { $0.age > 3600 }
                // try?: a leftover that cannot be removed now is found and removed by the next prune.
                for file in old { try? FileManager.default.removeItem(atPath: file.path) }
                if !old.isEmpty && !json { Terminal.out("removed \(old.count) temporary files left by interrupted saves") }
            }
            return report
        }
        if json { try Terminal.json(report) } else { Prune.describe(report) }
    }
}
