import ArgumentParser
import Foundation
import KhoCore
import KhoSupport
import KhoStorage

struct Copy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy",
        abstract: "Copy snapshots to another repository (the second copy of 3-2-1): only those it lacks, only data it lacks.",
        discussion: """
        The repositories have different keys: every blob is read and decrypted from --from-repo and
        stored again under the key of --to-repo, unless that repository already has it. Make the
        target with `kho init --copy-chunker-params-from SOURCE` so that both cut data alike and
        new backups in either deduplicate against the copies. Every copied snapshot is read back
        from the target before the command succeeds.

        Passwords: --from-repo from KHO_FROM_PASSWORD_FILE, KHO_FROM_PASSWORD_COMMAND or
        KHO_FROM_PASSWORD; --to-repo from KHO_PASSWORD_FILE, KHO_PASSWORD_COMMAND or KHO_PASSWORD.
        """
    )

    @Option(name: .customLong("from-repo"), help: "The repository to copy from (a folder or s3:…).")
    var fromRepo: String

    @Option(name: .customLong("to-repo"), help: "The repository to copy to. Default: $KHO_REPOSITORY.")
    var toRepo: String?

    @Argument(help: "Snapshots of the source to copy (`latest`, IDs or unique prefixes). Default: all of them.")
    var snapshots: [String] = []

    @Option(help: "Packs uploaded at the same time (default 1 for a folder, 4 for an S3 repository).")
    var connections: Int?

    @Option(name: .customLong("lock-wait"), help: "How long to wait for a conflicting lock, e.g. 30s, 5m (default 0).")
    var lockWait: String?

    @OptionGroup var zone: TimeZoneOption

    @Flag(help: "Print the result as JSON.")
    var json = false

    /// Copies `snapshots` with a progress line on a terminal (copy, rekey).
    static func copy(_ snapshots: [Snapshot], from source: Repository, to target: Repository, connections: Int?,
                     label: String, showProgress: Bool) throws -> CopySummary {
        let progress = ProgressCounter()
        let line = ProgressLine(progress: progress, label: label, enabled: showProgress)
        defer { line.finish() }
        let copier = try Copier(source: source, sourceIndex: try source.loadIndex(), target: target, targetIndex: try target.loadIndex(),
                                uploaders: connections ?? target.storage.suggestedUploaders, progress: progress)
        var summary = try copier.copy(snapshots)
        // The WAL archives go with the snapshots: a base backup without its WAL restores to no point.
        summary.wal = try WALCopy.copy(from: source, to: target, workers: connections ?? target.storage.suggestedUploaders)
        // So do the binary logs: a MariaDB dump restores to a time only with the log after it.
        summary.binlog = try BinlogCopy.copy(from: source, to: target, workers: connections ?? target.storage.suggestedUploaders)
        return summary
    }

    func validate() throws {
        try Flags.checkConnections(connections)
    }

    func run() throws {
        let zone = try self.zone.zone()
        let targetAddress = try RepositoryOptions.location(toRepo, missing: "No target repository: pass --to-repo PATH or set KHO_REPOSITORY.")
        try RepositoryPair.refuseSameAddress(fromRepo, targetAddress, fix: "copy to another one")
        let wait = try lockWait.map { try DurationText.parse($0, option: "--lock-wait") } ?? 0
        let from = try OtherRepository(fromRepo)
        let targetStorage = try StorageFactory.make(location: targetAddress)
        let targetConfig = try Repository.readConfig(storage: targetStorage)
        let source = try from.open()
        let target = try Repository.open(storage: targetStorage, password: try Password.read(purpose: "password of \(targetAddress)"), config: targetConfig)
        try RepositoryPair.refuseSame(source, target, from: fromRepo, to: targetAddress, fix: "copy to another one")

        let sourceLock = try Signals.lock(source.storage, exclusive: false, command: "copy to \(targetAddress)", wait: wait)
        defer { Signals.unlock(sourceLock) }
        let targetLock = try Signals.lock(target.storage, exclusive: false, command: "copy from \(fromRepo)", wait: wait)
        defer { Signals.unlock(targetLock) }

        let chosen: [Snapshot]
        if snapshots.isEmpty {
            chosen = try source.listSnapshots()
        } else {
            var seen = Set<String>()
            chosen = try snapshots.map { try source.findSnapshot($0) }.filter { seen.insert($0.id ?? "").inserted }
        }
        if source.config.chunker != target.config.chunker || !source.key.chunkerSeed.constantTimeEquals(target.key.chunkerSeed) {
            if !json {
                Terminal.warning("\(targetAddress) cuts data differently from \(fromRepo) (it was not made with --copy-chunker-params-from): copies are complete, but new backups in one will not deduplicate against data copied from the other.")
            }
        }
        let summary = try Copy.copy(chosen, from: source, to: target, connections: connections, label: "copy", showProgress: !json)
        if json {
            try Terminal.json(summary)
            return
        }
        for item in summary.copied {
            Terminal.out("copied \(item.source.prefix(8)) (\(Format.time(item.time, zone))) as \(item.target.prefix(8))")
        }
        if !summary.alreadyThere.isEmpty {
            Terminal.out("\(summary.alreadyThere.count) snapshots were there already")
        }
        if let wal = summary.wal, wal.records + wal.files + wal.markers > 0 {
            Terminal.out("WAL archives: \(wal.files) files (\(Format.bytes(wal.bytes))), \(wal.records) archive records and \(wal.markers) retirements copied")
        }
        if let binlog = summary.binlog, binlog.records + binlog.pieces + binlog.ends > 0 {
            Terminal.out("binary log archives: \(binlog.pieces) pieces (\(Format.bytes(binlog.bytes))), \(binlog.records) archive records and \(binlog.ends) end markers copied")
        }
        if summary.copied.isEmpty {
            Terminal.out("nothing to copy: \(targetAddress) has every snapshot asked for")
            return
        }
        Terminal.out("\(summary.copied.count) snapshots copied: read \(summary.blobsRead) blobs (\(Format.bytes(summary.bytesRead))), "
                     + "\(summary.blobsNew) new in the target, added \(Format.bytes(summary.bytesAdded)); read back \(summary.blobsVerified) blobs, all intact")
    }
}
