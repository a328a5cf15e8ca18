import Foundation
import Logging

/// The `config` file: plain JSON that says what the repository is and how it chunks. It holds no
/// secret; the chunker's gear table comes from the master key.
public struct RepositoryConfig: Codable, Sendable, Equatable {
    public var format: String = "kho-repository"
    public var version: Int = 1
    public var id: String
    public var created: Date
    public var chunker: ChunkerParameters
    /// Default zstd level for new blobs; 0 stores blobs uncompressed.
    public var compressionLevel: Int
    /// Packs are closed once their blobs reach this many bytes.
    public var packSize: Int
    /// Set by `kho init --append-only`: forget and prune refuse to remove anything. Absent (nil)
    /// in repositories made without it.
    public var appendOnly: Bool? = nil
    /// Set by `kho init --object-lock-days N`: every file but locks is written locked for that long.
    public var objectLock: ObjectLockSettings? = nil

    public static let currentVersion = 1
}

/// A repository whose key has been opened. Everything that reads or writes blobs starts here;
/// `loadIndex()` gives the next state, in which blobs can be found.
public final class Repository: Sendable {
    public let storage: any Storage
    public let config: RepositoryConfig
    public let key: MasterKey
    /// The key file that opened the repository.
    public let keyID: String
    public let gear: GearTable
    public let logger: Logger

    init(storage: any Storage, config: RepositoryConfig, key: MasterKey, keyID: String, logger: Logger) {
        self.storage = storage
        self.config = config
        self.key = key
        self.keyID = keyID
        self.gear = GearTable(seed: key.chunkerSeed)
        self.logger = logger
    }

    public var chunker: Chunker { Chunker(parameters: config.chunker, gear: gear) }

    // MARK: creating and opening

    public struct CreateOptions: Sendable {
        public var chunker: ChunkerParameters = .standard
        /// zstd level 1: on database dumps as small as level 3 and twice as fast; a few percent
        /// larger on file trees (docs/BENCHMARKS.md, "Compression level").
        public var compressionLevel: Int = 1
        public var packSize: Int = 16 << 20
        public var scrypt: Scrypt.Parameters = .standard
        /// Use another repository's chunker seed and sizes, so both cut data the same way.
        public var copyChunkerFrom: Repository?
        public var keyLabel: String = "first key"
        /// Forget and prune refuse in the new repository (`kho init --append-only`).
        public var appendOnly = false
        /// Lock every file written for this long (`kho init --object-lock-days`); S3 only.
        public var objectLock: ObjectLockSettings?
        public init() {}
    }

    public static func create(storage: any Storage, password: [UInt8], options: CreateOptions = CreateOptions(), logger: Logger = Logger(label: "kho")) throws -> Repository {
        guard try storage.isEmpty() else {
            throw KhoError(.usage, "\(storage.location) is not empty: choose an empty or new folder for a new repository.")
        }
        guard !password.isEmpty else {
            throw KhoError(.usage, "The password is empty: set KHO_PASSWORD_FILE, KHO_PASSWORD_COMMAND or KHO_PASSWORD to a non-empty password.")
        }
        var chunkerParameters = options.chunker
        var master = MasterKey.random()
        if let source = options.copyChunkerFrom {
            chunkerParameters = source.config.chunker
            master = MasterKey(encryption: master.encryption, mac: master.mac, chunkerSeed: source.key.chunkerSeed)
        }
        try chunkerParameters.validate()
        guard (1 << 20...512 << 20).contains(options.packSize) else {
            throw KhoError(.usage, "Pack size \(options.packSize >> 20) MiB is out of range: use 1 to 512 MiB; 16 is the default.")
        }
        guard (0...22).contains(options.compressionLevel) else {
            throw KhoError(.usage, "Compression level \(options.compressionLevel) is out of range: use 0 (off) to 22; 1 is the default.")
        }
        var config = RepositoryConfig(id: Hex.encode(Random.bytes(32)), created: Date(), chunker: chunkerParameters,
                                      compressionLevel: options.compressionLevel, packSize: options.packSize)
        if options.appendOnly { config.appendOnly = true }
        if let lock = options.objectLock {
            guard ObjectLockSettings.allowedDays.contains(lock.days) else {
                throw KhoError(.usage, "--object-lock-days \(lock.days) is out of range: use 1 to 36500 days (e.g. 30, longer than the time an intrusion may go unnoticed).")
            }
            guard let retaining = storage as? any RetainingStorage else {
                throw KhoError(.usage, "\(storage.location) cannot lock files: object lock needs an S3 bucket made with object lock enabled (s3:http(s)://HOST/BUCKET/PREFIX); leave out --object-lock-days for a folder.")
            }
            try retaining.checkRetentionSupported()
            config.objectLock = lock
            retaining.setRetention(lock)
        }
        let keyFile = try KeyFile.make(master: master, password: password, label: options.keyLabel, parameters: options.scrypt)
        let keyBytes = try keyFile.encoded()
        let keyID = SHA256.hash(keyBytes).hex
        // The key first: a folder with a config but no key could never be opened.
        try storage.save(Handle(.key, keyID), data: keyBytes)
        try storage.save(.config, data: Array(try JSON.prettyEncoder.encode(config)))
        return Repository(storage: storage, config: config, key: master, keyID: keyID, logger: logger)
    }

    public static func readConfig(storage: any Storage) throws -> RepositoryConfig {
        let bytes: [UInt8]
        do {
            bytes = try storage.load(.config)
        } catch let error as KhoError where error.kind == .integrity {
            throw KhoError(.notARepository, "\(storage.location) is not a kho repository (it has no config file): check --repo or KHO_REPOSITORY, or create one with `kho init`.")
        }
        let config: RepositoryConfig
        do {
            config = try JSON.decoder.decode(RepositoryConfig.self, from: Data(bytes))
        } catch {
            throw KhoError(.notARepository, "\(storage.location) has a config file that is not a kho repository config: check --repo or KHO_REPOSITORY.")
        }
        guard config.format == "kho-repository" else {
            throw KhoError(.notARepository, "\(storage.location) is not a kho repository: check --repo or KHO_REPOSITORY.")
        }
        guard config.version >= 1, (try? config.chunker.validate()) != nil, (1 << 20...512 << 20).contains(config.packSize),
              (0...22).contains(config.compressionLevel) else {
            throw KhoError(.notARepository, "\(storage.location) has a config file with impossible values: it is damaged; restore it from a copy of the repository.")
        }
        guard config.version <= RepositoryConfig.currentVersion else {
            throw KhoError(.notARepository, "\(storage.location) uses repository format \(config.version), newer than this kho understands (\(RepositoryConfig.currentVersion)): upgrade kho.")
        }
        return config
    }

    /// `config` is the one the caller read already with `readConfig` (to say "not a repository"
    /// before asking for a password), so that it is not fetched twice.
    public static func open(storage: any Storage, password: [UInt8], config known: RepositoryConfig? = nil,
                            logger: Logger = Logger(label: "kho")) throws -> Repository {
        let config = try known ?? readConfig(storage: storage)
        let keys = try storage.list(.key)
        guard !keys.isEmpty else {
            throw KhoError(.integrity, "\(storage.location) has no key files left: restore keys/ from a copy of the repository.")
        }
        for file in keys.sorted(by: { $0.name < $1.name }) {
            let handle = Handle(.key, file.name)
            guard let bytes = try? storage.load(handle),
                  let keyFile = try? JSON.decoder.decode(KeyFile.self, from: Data(bytes)) else {
                logger.warning("skipping unreadable key file \(handle.path)")
                continue
            }
            if let master = try? keyFile.open(password: password) {
                if let lock = config.objectLock, let retaining = storage as? any RetainingStorage {
                    retaining.setRetention(lock)
                }
                return Repository(storage: storage, config: config, key: master, keyID: file.name, logger: logger)
            }
        }
        throw KhoError(.wrongPassword, "No key of the repository at \(storage.location) opens with this password: check KHO_PASSWORD_FILE, KHO_PASSWORD_COMMAND or KHO_PASSWORD.")
    }

    // MARK: keys

    public func listKeys() throws -> [(id: String, file: KeyFile)] {
        try storage.list(.key).compactMap { file in
            guard let bytes = try? storage.load(Handle(.key, file.name)),
                  let keyFile = try? JSON.decoder.decode(KeyFile.self, from: Data(bytes)) else { return nil }
            return (file.name, keyFile)
        }
    }

    @discardableResult
    public func addKey(password: [UInt8], label: String, parameters: Scrypt.Parameters = .standard) throws -> String {
        guard !password.isEmpty else {
            throw KhoError(.usage, "The new password is empty: give a non-empty password.")
        }
        let keyFile = try KeyFile.make(master: key, password: password, label: label, parameters: parameters)
        let bytes = try keyFile.encoded()
        let id = SHA256.hash(bytes).hex
        try storage.save(Handle(.key, id), data: bytes)
        return id
    }

    public func removeKey(id: String) throws {
        let keys = try storage.list(.key)
        let matches = keys.filter { $0.name.hasPrefix(id) }
        guard matches.count == 1, let match = matches.first else {
            throw KhoError(.usage, matches.isEmpty ? "No key has an ID starting with \(id): see `kho key list`." : "Several keys start with \(id): give more digits of the ID.")
        }
        guard keys.count > 1 else {
            throw KhoError(.usage, "Key \(match.name.prefix(8)) is the repository's last key and cannot be removed: add another key first.")
        }
        if let until = try retainedUntil(Handle(.key, match.name)) {
            throw KhoError(.failure, retainedMessage("Key \(match.name.prefix(8))", until: until, command: "`kho key remove`"))
        }
        try storage.remove(Handle(.key, match.name))
    }

    // MARK: sealed files (index, snapshots)

    /// Seals `body` for a file of `kind`: `sealed(encoding ‖ body)` with encoding 0 = raw, 1 = zstd.
    func sealFile(_ body: [UInt8], kind: FileKind, compress: Bool) -> [UInt8] {
        var plain: [UInt8] = [0]
        if compress, config.compressionLevel > 0 {
            let compressed = Compressor(level: config.compressionLevel).compress(body)
            if !compressed.isEmpty, compressed.count < body.count {
                plain = [1] + compressed
            } else {
                plain += body
            }
        } else {
            plain += body
        }
        return Sealer(key: key.encryption).seal(plain, context: Array("kho/\(kind.rawValue)".utf8))
    }

    func openFile(_ sealed: [UInt8], handle: Handle) throws -> [UInt8] {
        guard let plain = Sealer(key: key.encryption).open(sealed, context: Array("kho/\(handle.kind.rawValue)".utf8)),
              let encoding = plain.first else {
            throw KhoError(.integrity, "\(handle.path) does not authenticate (damaged or not of this repository): run `kho check` to see what it affects.")
        }
        switch encoding {
        case 0: return Array(plain[1...])
        case 1:
            guard let body = Decompressor().decompress(Array(plain[1...])) else {
                throw KhoError(.integrity, "\(handle.path) authenticates but does not decompress: the file was written by a faulty kho; run `kho check`.")
            }
            return body
        default:
            throw KhoError(.integrity, "\(handle.path) uses an unknown encoding \(encoding): upgrade kho.")
        }
    }

    /// Saves a sealed file named by the SHA-256 of its bytes and returns that name.
    @discardableResult
    func saveSealed(_ body: [UInt8], kind: FileKind, compress: Bool = true) throws -> BlobID {
        let sealed = sealFile(body, kind: kind, compress: compress)
        let id = SHA256.hash(sealed)
        try storage.save(Handle(kind, id.hex), data: sealed)
        return id
    }

    func loadSealed(_ handle: Handle) throws -> [UInt8] {
        let bytes: [UInt8]
        do {
            bytes = try storage.load(handle)
        } catch let error as KhoError where error.kind != .storage {
            throw KhoError.missing(handle, in: storage.location)
        }
        return try openFile(bytes, handle: handle)
    }

    // MARK: snapshots

    public func saveSnapshot(_ snapshot: Snapshot) throws -> BlobID {
        try saveSealed(Array(try JSON.encoder.encode(snapshot)), kind: .snapshot)
    }

    public func loadSnapshot(id: String) throws -> Snapshot {
        let body = try loadSealed(Handle(.snapshot, id))
        var snapshot: Snapshot
        do {
            snapshot = try JSON.decoder.decode(Snapshot.self, from: Data(body))
        } catch {
            throw KhoError(.integrity, "snapshots/\(id) authenticates but is not a valid snapshot: \(error).")
        }
        snapshot.id = id
        return snapshot
    }

    /// Every snapshot, oldest first. Unreadable snapshot files are reported through `damaged`.
    public func listSnapshots(damaged: ((String, KhoError) -> Void)? = nil) throws -> [Snapshot] {
        var result: [Snapshot] = []
        for file in try storage.list(.snapshot) {
            do {
                result.append(try loadSnapshot(id: file.name))
            } catch let error as KhoError {
                if let damaged { damaged(file.name, error) } else { logger.warning("\(error.message)") }
            }
        }
        return result.sorted { ($0.time, $0.id ?? "") < ($1.time, $1.id ?? "") }
    }

    /// Finds a snapshot by `latest`, a full ID or a unique prefix of one.
    public func findSnapshot(_ reference: String, filter: (Snapshot) -> Bool = { _ in true }) throws -> Snapshot {
        if reference == "latest" {
            guard let newest = try listSnapshots().filter(filter).last else {
                throw KhoError(.usage, "The repository has no snapshot yet (that matches the filters): run `kho backup` first.")
            }
            return newest
        }
        guard !reference.isEmpty, reference.allSatisfy(\.isHexDigit) else {
            throw KhoError(.usage, "\"\(reference)\" is not a snapshot ID: give `latest`, an ID or a unique prefix as shown by `kho snapshots`.")
        }
        let matches = try storage.list(.snapshot).filter { $0.name.hasPrefix(reference.lowercased()) }
        guard matches.count == 1 else {
            throw KhoError(.usage, matches.isEmpty
                ? "No snapshot has an ID starting with \(reference): see `kho snapshots`."
                : "\(matches.count) snapshots have IDs starting with \(reference): give more digits.")
        }
        return try loadSnapshot(id: matches[0].name)
    }
}
