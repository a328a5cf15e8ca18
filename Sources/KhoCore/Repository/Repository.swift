import Foundation
import KhoSupport
import Logging

/// The `config` file: plain JSON that says what the repository is and how it chunks. It holds no
/// secret; the chunker's gear table comes from the master key. Its `authenticator` binds it to the
/// master key (docs/FORMAT.md, section 4), so whoever can write the storage cannot switch off
/// append-only or object lock, or change sizes, without `kho` noticing.
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
    /// HMAC-SHA256 under the master key's "config" key of the stored file's bytes with this value
    /// written as 64 zeros. Absent in repositories made before configs were authenticated.
    public var authenticator: String? = nil
    /// The file's bytes as stored (what the authenticator covers); empty for a config not read from storage.
    public var stored: [UInt8] = []

    public static let currentVersion = 1

    private enum CodingKeys: String, CodingKey {
        case format, version, id, created, chunker, compressionLevel, packSize, appendOnly, objectLock, authenticator
    }

    static let authenticatorField = Array("\"authenticator\"".utf8)

    /// The range of the authenticator's 64 hex digits in `bytes`, when the field occurs exactly once.
    static func authenticatorRange(in bytes: [UInt8]) -> Range<Int>? {
        let field = authenticatorField
        var found: [Int] = []
        var i = 0
        while i + field.count <= bytes.count {
            if bytes[i] == field[0], Array(bytes[i..<(i + field.count)]) == field { found.append(i) }
            i += 1
        }
        guard found.count == 1 else { return nil }
        // `"authenticator"`, optional spaces, `:`, optional spaces, `"`, 64 hex digits, `"`.
        var j = found[0] + field.count
        func skipSpaces() { while j < bytes.count, bytes[j] == 0x20 || bytes[j] == 0x0A || bytes[j] == 0x09 || bytes[j] == 0x0D { j += 1 } }
        skipSpaces()
        guard j < bytes.count, bytes[j] == UInt8(ascii: ":") else { return nil }
        j += 1
        skipSpaces()
        guard j + 66 <= bytes.count, bytes[j] == UInt8(ascii: "\""), bytes[j + 65] == UInt8(ascii: "\"") else { return nil }
        return (j + 1)..<(j + 65)
    }

    /// The MAC of `bytes` with the authenticator's digits as zeros.
    static func computeAuthenticator(of bytes: [UInt8], range: Range<Int>, key: MasterKey) throws -> [UInt8] {
        var unsigned = bytes
        for i in range { unsigned[i] = UInt8(ascii: "0") }
        return try BlobHasher(key: try key.derived("config")).id(of: unsigned).bytes
    }

    /// The config's file bytes with a valid authenticator under `key`.
    func encodedAuthenticated(key: MasterKey) throws -> [UInt8] {
        var unsigned = self
        unsigned.authenticator = String(repeating: "0", count: 64)
        var bytes = Array(try JSON.prettyEncoder.encode(unsigned))
        guard let range = RepositoryConfig.authenticatorRange(in: bytes) else {
            throw KhoError(.failure, "The new config's authenticator field could not be placed: this is a bug in kho.")
        }
        let mac = Array(Hex.encode(try RepositoryConfig.computeAuthenticator(of: bytes, range: range, key: key)).utf8)
        bytes.replaceSubrange(range, with: mac)
        return bytes
    }

    /// Whether `stored` carries an authenticator that is valid under `key`.
    func hasValidAuthenticator(key: MasterKey) throws -> Bool {
        guard authenticator != nil, let range = RepositoryConfig.authenticatorRange(in: stored),
              let claimed = Hex.decode(String(decoding: stored[range], as: UTF8.self)) else { return false }
        let expected = try RepositoryConfig.computeAuthenticator(of: stored, range: range, key: key)
        return ConstantTime.equal(claimed, expected)
    }
}

/// A repository whose key has been opened. Everything that reads or writes blobs starts here;
/// `loadIndex()` gives the next state, in which blobs can be found.
public final class Repository: Sendable {
    public let storage: any Storage
    public let config: RepositoryConfig
    package let key: MasterKey
    /// The key file that opened the repository.
    public let keyID: String
    package let gear: GearTable
    public let logger: Logger
    /// Whether `config` is bound to the master key; false only for repositories made before
    /// configs were authenticated and not yet upgraded (`kho upgrade`).
    public let configAuthenticated: Bool
    /// Always `.random` but in kho's own tests (see `NonceSource`).
    let nonces: NonceSource

    init(storage: any Storage, config: RepositoryConfig, key: MasterKey, keyID: String, logger: Logger,
         configAuthenticated: Bool, nonces: NonceSource = .random) throws {
        self.storage = storage
        self.config = config
        self.key = key
        self.keyID = keyID
        self.gear = try GearTable(seed: key.chunkerSeed)
        self.logger = logger
        self.configAuthenticated = configAuthenticated
        self.nonces = nonces
    }

    /// A sealer under the repository's encryption key (one per thread).
    func makeSealer() throws -> Sealer { try Sealer(key: key.encryption, nonces: nonces) }

    public var chunker: Chunker { Chunker(parameters: config.chunker, gear: gear) }

    // MARK: creating and opening

    public struct CreateOptions: Sendable {
        public var chunker: ChunkerParameters = .standard
        /// zstd level 1: on database dumps as small as level 3 and twice as fast; a few percent
        /// larger on file trees (docs/BENCHMARKS.md, "Compression level").
        public var compressionLevel: Int = 1
        public var packSize: Int = 16 << 20
        package var scrypt: Scrypt.Parameters = .standard
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
        try create(storage: storage, password: password, options: options, logger: logger, nonces: .random)
    }

    static func create(storage: any Storage, password: [UInt8], options: CreateOptions, logger: Logger, nonces: NonceSource) throws -> Repository {
        guard try storage.isEmpty() else {
            throw KhoError(.usage, "\(storage.location) is not empty: choose an empty or new folder for a new repository.")
        }
        guard !password.isEmpty else {
            throw KhoError(.usage, "The password is empty: set KHO_PASSWORD_FILE, KHO_PASSWORD_COMMAND or KHO_PASSWORD to a non-empty password.")
        }
        var chunkerParameters = options.chunker
        var master = try MasterKey.random()
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
        var config = RepositoryConfig(id: Hex.encode(try Random.bytes(32)), created: Date(), chunker: chunkerParameters,
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
        let keyID = try SHA256.hash(keyBytes).hex
        let configBytes = try config.encodedAuthenticated(key: master)
        config = try decodeConfig(configBytes, location: storage.location)
        // The key first: a folder with a config but no key could never be opened.
        try storage.save(Handle(.key, keyID), data: keyBytes)
        try storage.save(.config, data: configBytes)
        return try Repository(storage: storage, config: config, key: master, keyID: keyID, logger: logger,
                              configAuthenticated: true, nonces: nonces)
    }

    public static func readConfig(storage: any Storage) throws -> RepositoryConfig {
        let bytes: [UInt8]
        do {
            bytes = try storage.load(.config)
        } catch let error as KhoError where error.kind == .integrity {
            throw KhoError(.notARepository, "\(storage.location) is not a kho repository (it has no config file): check --repo or KHO_REPOSITORY, or create one with `kho init`.")
        }
        return try decodeConfig(bytes, location: storage.location)
    }

    static func decodeConfig(_ bytes: [UInt8], location: String) throws -> RepositoryConfig {
        guard bytes.count <= 64 << 10 else {
            throw KhoError(.notARepository, "\(location) has a config file of \(bytes.count) bytes, far more than a kho config: check --repo or KHO_REPOSITORY.")
        }
        var config: RepositoryConfig
        do {
            config = try JSON.decoder.decode(RepositoryConfig.self, from: Data(bytes))
        } catch {
            throw KhoError(.notARepository, "\(location) has a config file that is not a kho repository config: check --repo or KHO_REPOSITORY.")
        }
        config.stored = bytes
        guard config.format == "kho-repository" else {
            throw KhoError(.notARepository, "\(location) is not a kho repository: check --repo or KHO_REPOSITORY.")
        }
        // try?: `validate` says why in terms of flags; here any failure means a damaged config.
        guard config.version >= 1, (try? config.chunker.validate()) != nil, (1 << 20...512 << 20).contains(config.packSize),
              (0...22).contains(config.compressionLevel) else {
            throw KhoError(.notARepository, "\(location) has a config file with impossible values: it is damaged; restore it from a copy of the repository.")
        }
        guard config.version <= RepositoryConfig.currentVersion else {
            throw KhoError(.notARepository, "\(location) uses repository format \(config.version), newer than this kho understands (\(RepositoryConfig.currentVersion)): upgrade kho.")
        }
        return config
    }

    /// `config` is the one the caller read already with `readConfig` (to say "not a repository"
    /// before asking for a password), so that it is not fetched twice.
    public static func open(storage: any Storage, password: [UInt8], config known: RepositoryConfig? = nil,
                            logger: Logger = Logger(label: "kho")) throws -> Repository {
        try open(storage: storage, password: password, config: known, logger: logger, nonces: .random)
    }

    /// Key files are tried cheapest first, so a planted key file with a costly (but accepted) scrypt
    /// cannot slow down opening with a genuine one; every key file is read with a size cap.
    static func open(storage: any Storage, password: [UInt8], config known: RepositoryConfig?, logger: Logger,
                     nonces: NonceSource) throws -> Repository {
        let config = try known ?? readConfig(storage: storage)
        let keys: [StoredFile]
        do {
            keys = try storage.list(.key)
        } catch let error as KhoError {
            throw keyStorageFailure("The key files of \(storage.location) could not be listed", error)
        }
        guard !keys.isEmpty else {
            throw KhoError(.integrity, "\(storage.location) has no key files left: restore keys/ from a copy of the repository.")
        }
        var candidates: [(name: String, file: KeyFile)] = []
        // A key file the storage failed to read (permissions, I/O, a server error) may be the one
        // the password opens: if no other key opens, that failure is the answer, not "wrong
        // password".
        var readFailure: KhoError?
        for file in keys where file.size <= KeyFile.maximumSize {
            let handle = Handle(.key, file.name)
            let bytes: [UInt8]
            do {
                bytes = try storage.load(handle)
            } catch let error as KhoError where error.kind == .integrity {
                // Removed since the listing, or truncated: not a key anyone can open.
                logger.warning("skipping key file \(handle.path): \(error.message)")
                continue
            } catch let error as KhoError {
                logger.warning("key file \(handle.path) could not be read: \(error.message)")
                readFailure = readFailure ?? keyStorageFailure("Key file \(handle.path) of \(storage.location) could not be read", error)
                continue
            }
            do {
                candidates.append((file.name, try JSON.decoder.decode(KeyFile.self, from: Data(bytes))))
            } catch {
                logger.warning("skipping unreadable key file \(handle.path)")
            }
        }
        for file in keys where file.size > KeyFile.maximumSize {
            logger.warning("skipping key file \(Handle(.key, file.name).path): \(file.size) bytes is not a kho key file")
        }
        let bound = candidates.contains { $0.file.requiresAuthenticatedConfig }
        candidates.sort { ($0.file.cost, $0.name) < ($1.file.cost, $1.name) }
        for (name, keyFile) in candidates {
            if let why = keyFile.refusal {
                logger.warning("skipping key file keys/\(name.prefix(8)): its scrypt parameters are refused (\(why))")
                continue
            }
            guard let master = try keyFile.open(password: password) else { continue }
            let authenticated = try config.hasValidAuthenticator(key: master)
            if !authenticated && (bound || config.authenticator != nil) {
                throw KhoError(.integrity, config.authenticator == nil
                    ? "The config of \(storage.location) has lost its authenticator although the repository's keys require one: someone who can write the storage replaced it (append-only, object lock or sizes may have been changed); restore `config` from a copy of the repository."
                    : "The config of \(storage.location) does not match its authenticator: it was changed by someone who can write the storage (append-only, object lock or sizes may have been changed); restore `config` from a copy of the repository.")
            }
            if !authenticated {
                logger.warning("the config of \(storage.location) is not authenticated (made before kho authenticated configs): run `kho upgrade` to bind it to the key")
            }
            if let lock = config.objectLock, let retaining = storage as? any RetainingStorage {
                retaining.setRetention(lock)
            }
            return try Repository(storage: storage, config: config, key: master, keyID: name, logger: logger,
                                  configAuthenticated: authenticated, nonces: nonces)
        }
        if let readFailure { throw readFailure }
        throw KhoError(.wrongPassword, "No key of the repository at \(storage.location) opens with this password: check KHO_PASSWORD_FILE, KHO_PASSWORD_COMMAND or KHO_PASSWORD.")
    }

    /// A storage failure met while looking for the key: reported as such (exit 1, retryable when
    /// the storage's error is), since whether the password is right is not known.
    private static func keyStorageFailure(_ what: String, _ error: KhoError) -> KhoError {
        KhoError(.storage, "\(what) (\(error.message)): the storage failed, so the password could not be tried; fix the storage (permissions, disk, server), then run the command again.",
                 retryable: error.retryable)
    }

    /// Binds the config of a repository made before configs were authenticated: writes `config`
    /// with its authenticator and replaces the key file that opened the repository with one that
    /// requires it (other key files keep working; the first bound key file makes the repository
    /// refuse an unauthenticated config from then on). Returns whether anything changed.
    public func upgradeConfig(password: [UInt8]) throws -> Bool {
        guard !configAuthenticated else { return false }
        if config.objectLock != nil {
            throw KhoError(.usage, "The config of \(storage.location) is under object lock and cannot be rewritten: move the repository's snapshots into a new one with `kho init` and `kho copy --from-repo`.")
        }
        let oldKey = try storage.load(Handle(.key, keyID))
        let oldFile = try JSON.decoder.decode(KeyFile.self, from: Data(oldKey))
        guard let checked = try oldFile.open(password: password), checked.mac.constantTimeEquals(key.mac) else {
            throw KhoError(.wrongPassword, "The password given does not open key \(keyID.prefix(8)): give the password of the key that opened the repository.")
        }
        var unsigned = config
        unsigned.authenticator = nil
        let configBytes = try unsigned.encodedAuthenticated(key: key)
        guard let derivation = oldFile.derivation else {
            throw KhoError(.integrity, "Key \(keyID.prefix(8)) names scrypt without parameters: it is damaged; open the repository with another key.")
        }
        var newFile = try KeyFile.make(master: key, password: password, label: oldFile.label, derivation: derivation)
        newFile.created = oldFile.created
        let keyBytes = try newFile.encoded()
        let newID = try SHA256.hash(keyBytes).hex
        // The new key and the config first; the old key goes last, so a crash in between leaves
        // two keys that open the repository, never none.
        try storage.save(Handle(.key, newID), data: keyBytes)
        try storage.save(.config, data: configBytes)
        try storage.remove(Handle(.key, keyID))
        return true
    }

    // MARK: keys

    package func listKeys() throws -> [(id: String, file: KeyFile)] {
        try storage.list(.key).compactMap { file in
            guard file.size <= KeyFile.maximumSize else { return nil }
            let bytes = try storage.load(Handle(.key, file.name))
            // try?: a file that is not a key file (damaged, planted) is left out of the list, as
            // `open` skips it; storage failures above are thrown.
            guard let keyFile = try? JSON.decoder.decode(KeyFile.self, from: Data(bytes)) else { return nil }
            return (file.name, keyFile)
        }
    }

    @discardableResult
    package func addKey(password: [UInt8], label: String, parameters: Scrypt.Parameters = .standard) throws -> String {
        try addKey(password: password, label: label, derivation: .scrypt(parameters))
    }

    /// Adds a key file that `password` (a key secret's text for `.secret`) opens; returns its ID.
    package func addKey(password: [UInt8], label: String, derivation: KeyDerivation) throws -> String {
        guard !password.isEmpty else {
            throw KhoError(.usage, "The new password is empty: give a non-empty password.")
        }
        let keyFile = try KeyFile.make(master: key, password: password, label: label, derivation: derivation,
                                       configAuthenticated: configAuthenticated)
        let bytes = try keyFile.encoded()
        let id = try SHA256.hash(bytes).hex
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
    func sealFile(_ body: [UInt8], kind: FileKind, compress: Bool) throws -> [UInt8] {
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
        return try makeSealer().seal(plain, context: Array("kho/\(kind.rawValue)".utf8))
    }

    func openFile(_ sealed: [UInt8], handle: Handle) throws -> [UInt8] {
        guard let plain = try makeSealer().open(sealed, context: Array("kho/\(handle.kind.rawValue)".utf8)),
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
        let sealed = try sealFile(body, kind: kind, compress: compress)
        let id = try SHA256.hash(sealed)
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

    /// Finds a snapshot by `latest`, a full ID or a unique prefix of one (the rule is `SnapshotSelector`'s).
    public func findSnapshot(_ reference: String, filter: (Snapshot) -> Bool = { _ in true }) throws -> Snapshot {
        try SnapshotSelector.find(reference, names: { try storage.list(.snapshot).map(\.name) }, snapshots: { try listSnapshots() },
                                  load: loadSnapshot(id:), filter: filter)
    }
}
