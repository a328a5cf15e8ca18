import ArgumentParser
import Foundation
import KhoCore
import KhoSupport
import KhoStorage

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init", abstract: "Create a new repository in an empty or new folder.")

    @OptionGroup var repository: RepositoryOptions

    @Option(help: "Default zstd level for new data, 0 (off) to 22; higher levels compress file trees a few percent smaller at twice the CPU or more.")
    var compression: Int = Repository.CreateOptions().compressionLevel

    @Option(name: .customLong("chunk-average"), help: "Average chunk size in bytes (a power of two); min is half, max 8×.")
    var chunkAverage: Int?

    @Option(name: .customLong("pack-size"), help: "Target pack size in MiB.")
    var packSize: Int = 16

    @Option(help: "Label of the first key.")
    var label: String = "first key"

    @Flag(help: "Print the result as JSON.")
    var json = false

    @Flag(name: .customLong("append-only"), help: "Make forget and prune refuse in this repository (guards against mistakes; only storage that refuses deletes guards against an attacker).")
    var appendOnly = false

    @Option(name: .customLong("object-lock-days"), help: "S3 only, on a bucket made with object lock: write every file locked against removal for N days; prune extends the lock of data still in use.")
    var objectLockDays: Int?

    @Option(name: .customLong("object-lock-mode"), help: "compliance (nobody can lift the lock) or governance (a user with s3:BypassGovernanceRetention can).")
    var objectLockMode: ObjectLockSettings.Mode = .compliance

    @Option(name: .customLong("copy-chunker-params-from"), help: "Cut data like this repository (its chunker seed and sizes), so that `kho copy` from it deduplicates. Its password comes from KHO_FROM_PASSWORD_FILE, KHO_FROM_PASSWORD_COMMAND or KHO_FROM_PASSWORD.")
    var copyChunkerParamsFrom: String?

    func run() throws {
        let storage = try repository.storage()
        guard try storage.isEmpty() else {
            throw KhoError(.usage, "\(storage.location) is not empty: choose an empty or new folder for a new repository.")
        }
        var options = Repository.CreateOptions()
        options.compressionLevel = compression
        options.packSize = packSize << 20
        options.keyLabel = label
        options.appendOnly = appendOnly
        if let days = objectLockDays {
            options.objectLock = ObjectLockSettings(days: days, mode: objectLockMode)
        }
        if let average = chunkAverage {
            options.chunker = ChunkerParameters(minSize: average / 2, averageSize: average, maxSize: average * 8)
        }
        options.scrypt = try Key.scrypt()
        if let other = copyChunkerParamsFrom {
            options.copyChunkerFrom = try OtherRepository(other).open()
            if chunkAverage != nil {
                throw KhoError(.usage, "--chunk-average and --copy-chunker-params-from both set the chunk sizes: give one of them.")
            }
        }
        let password = try Password.read(purpose: "password for the new repository", confirm: true)
        let repo = try Repository.create(storage: storage, password: password, options: options)
        if json {
            try Terminal.json(["id": repo.config.id, "location": storage.location, "key": repo.keyID])
        } else {
            Terminal.out("created repository \(repo.config.id.prefix(8)) at \(storage.location)\(appendOnly ? " (append-only: forget and prune refuse)" : "")\(objectLockDays.map { " (object lock: every file locked for \($0) days, \(objectLockMode.rawValue) mode)" } ?? "")")
            Terminal.out("Keep the password safe: without it the data cannot be read by anyone, including you.")
        }
    }
}

extension ObjectLockSettings.Mode: ExpressibleByArgument {}
