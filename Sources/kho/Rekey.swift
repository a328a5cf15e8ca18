import ArgumentParser
import Foundation
import KhoCore
import KhoSupport
import KhoStorage

struct Rekey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rekey",
        abstract: "Move every snapshot into a repository with a fresh key, check it, and say when the old one can be retired.",
        discussion: """
        For a repository whose key can no longer be trusted: `kho check` found repeated nonces
        (repositories written by kho release builds before 2026-12), or a key was exposed. Creates
        --to-repo with a fresh master key unless it exists (same chunk, pack and compression
        settings, append-only and object lock as --from-repo), copies every snapshot with its
        manifest, tags, host, paths and times (every blob decrypted and sealed again under the new
        key with fresh nonces), then reads every pack of the new repository back
        (`check --read-data`, nonces included) and compares the snapshot lists. Only when all of
        that passes does it say that the old repository and its keys can be retired; it never
        removes anything from either.

        Passwords: --from-repo from KHO_FROM_PASSWORD_FILE, KHO_FROM_PASSWORD_COMMAND or
        KHO_FROM_PASSWORD; --to-repo (and its first key) from KHO_PASSWORD_FILE,
        KHO_PASSWORD_COMMAND or KHO_PASSWORD.
        Exit 0: moved and checked; 12: the new repository does not check clean; 1: anything else.
        """
    )

    @Option(name: .customLong("from-repo"), help: "The repository to move from (a folder or s3:…).")
    var fromRepo: String

    @Option(name: .customLong("to-repo"), help: "The new repository (created if it does not exist). Default: $KHO_REPOSITORY.")
    var toRepo: String?

    @Option(help: "Packs uploaded at the same time (default 1 for a folder, 4 for an S3 repository).")
    var connections: Int?

    @OptionGroup var zone: TimeZoneOption

    @Flag(help: "Print the result as JSON.")
    var json = false

    func validate() throws {
        try Flags.checkConnections(connections)
    }

    struct Result: Codable {
        var from: String
        var to: String
        var created: Bool
        var snapshots: Int
        var copy: CopySummary
        var check: CheckReport
        var retireOld: Bool
    }

    func run() throws {
        let zone = try self.zone.zone()
        let targetAddress = try RepositoryOptions.location(toRepo, missing: "No new repository given: pass --to-repo PATH (an empty or new folder, or s3:…).")
        try RepositoryPair.refuseSameAddress(fromRepo, targetAddress, fix: "give a new, empty place for the repository with the fresh key")
        let source = try OtherRepository(fromRepo).open()

        let targetStorage = try StorageFactory.make(location: targetAddress)
        let targetPassword = try Password.read(purpose: "password of the new repository \(targetAddress)", confirm: true)
        let target: Repository
        let created: Bool
        if try targetStorage.isEmpty() {
            var options = Repository.CreateOptions()
            options.chunker = source.config.chunker
            options.compressionLevel = source.config.compressionLevel
            options.packSize = source.config.packSize
            options.appendOnly = source.config.appendOnly ?? false
            options.objectLock = source.config.objectLock
            options.scrypt = try Key.scrypt()
            options.keyLabel = "moved from \(source.config.id.prefix(8))"
            target = try Repository.create(storage: targetStorage, password: targetPassword, options: options)
            created = true
        } else {
            let config = try Repository.readConfig(storage: targetStorage)
            target = try Repository.open(storage: targetStorage, password: targetPassword, config: config)
            created = false
        }
        try RepositoryPair.refuseSame(source, target, from: fromRepo, to: targetAddress, fix: "give a new, empty place")
        if target.key.encryption.constantTimeEquals(source.key.encryption) {
            throw KhoError(.usage, "\(targetAddress) uses the same encryption key as \(fromRepo): give a new, empty place so that a fresh key is made.")
        }

        let sourceLock = try Signals.lock(source.storage, exclusive: false, command: "rekey to \(targetAddress)", wait: 0)
        defer { Signals.unlock(sourceLock) }
        let targetLock = try Signals.lock(target.storage, exclusive: false, command: "rekey from \(fromRepo)", wait: 0)
        defer { Signals.unlock(targetLock) }

        var damaged: [String] = []
        let snapshots = try source.listSnapshots { name, error in damaged.append("snapshots/\(name.prefix(8)): \(error.message)") }
        let summary = try Copy.copy(snapshots, from: source, to: target, connections: connections, label: "rekey", showProgress: !json)

        var checkOptions = CheckOptions()
        checkOptions.readData = .all
        checkOptions.workers = target.storage.suggestedCheckWorkers(checkOptions.workers)
        let report = try Checker(repository: target, options: checkOptions).run()
        let moved = try target.listSnapshots()
        let missing = snapshots.filter { old in !moved.contains { Copier.sameBackup($0, old) } }
        let retire = report.ok && missing.isEmpty && damaged.isEmpty

        if json {
            try Terminal.json(Result(from: fromRepo, to: targetAddress, created: created, snapshots: snapshots.count,
                                     copy: summary, check: report, retireOld: retire))
        } else {
            if created { Terminal.out("created \(targetAddress) with a fresh key (\(target.keyID.prefix(8)))") }
            Terminal.out("\(summary.copied.count) snapshots copied, \(summary.alreadyThere.count) there already; "
                         + "\(summary.blobsNew) blobs sealed again under the new key (\(Format.bytes(summary.bytesAdded)))")
            Terminal.out("checked \(targetAddress): read \(report.packsRead) packs, \(report.blobsRead) blobs; "
                         + "nonces of \(report.noncesCompared) sealed objects compared, \(report.repeatedNonces.count) repeat; \(report.errors.count) errors")
            for error in report.errors { Terminal.out("error: \(error)") }
            for item in damaged { Terminal.out("error: not moved, unreadable in the old repository: \(item)") }
            for snapshot in missing { Terminal.out("error: snapshot \(snapshot.shortID) of \(Format.time(snapshot.time, zone)) is not in \(targetAddress)") }
            if retire {
                Terminal.out("all \(snapshots.count) snapshots are in \(targetAddress) and it checks clean: point KHO_REPOSITORY and the policies at it; "
                             + "\(fromRepo) and its key files can now be retired (kho removes nothing: delete it yourself once nothing uses it).")
            } else {
                Terminal.out("keep \(fromRepo): the move is not complete; fix what is listed above and run `kho rekey` again (it copies only what is missing).")
            }
        }
        try finish(Verdict(report).worst(retire ? .success : .incomplete))
    }
}
