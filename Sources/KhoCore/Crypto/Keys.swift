import Foundation
import KhoSupport

/// The repository's secrets. Created once at `init`; every key file wraps the same master key.
package final class MasterKey: Sendable {
    /// AES-256-GCM key for blobs and files.
    package let encryption: SecretBytes
    /// HMAC-SHA256 key that makes blob IDs.
    package let mac: SecretBytes
    /// Seed of the chunker's gear table.
    package let chunkerSeed: SecretBytes

    package init(encryption: SecretBytes, mac: SecretBytes, chunkerSeed: SecretBytes) {
        self.encryption = encryption
        self.mac = mac
        self.chunkerSeed = chunkerSeed
    }

    package static func random() throws -> MasterKey {
        MasterKey(encryption: try .random(count: 32), mac: try .random(count: 32), chunkerSeed: try .random(count: 32))
    }

    /// encryption ‖ mac ‖ chunker seed, 96 bytes, in one array with room for the key file's binding
    /// byte (so appending it does not leave a copy behind); the caller wipes it (`Wipe.bytes`).
    var serialized: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(97)
        for part in [encryption, mac, chunkerSeed] { part.withUnsafeBytes { out.append(contentsOf: $0) } }
        return out
    }

    convenience init?(serialized bytes: [UInt8]) {
        guard bytes.count >= 96 else { return nil }
        self.init(encryption: SecretBytes(bytes[0..<32]), mac: SecretBytes(bytes[32..<64]), chunkerSeed: SecretBytes(bytes[64..<96]))
    }

    /// A key for one purpose, derived from the MAC key: HMAC-SHA256(mac, "kho/" ‖ purpose). Keys
    /// for different purposes are unrelated, and none reveals the MAC key.
    package func derived(_ purpose: String) throws -> SecretBytes {
        let hasher = try BlobHasher(key: mac)
        let id = try hasher.id(of: Array("kho/\(purpose)".utf8))
        var bytes = id.bytes
        defer { Wipe.bytes(&bytes) }
        return SecretBytes(bytes)
    }
}

/// How a key file's wrapping key is derived from what opens it.
package enum KeyDerivation: Sendable, Equatable {
    /// A password a person chose: scrypt, costly on purpose, since it may be guessable.
    case scrypt(Scrypt.Parameters)
    /// A 256-bit random secret kho generated (`kho key add --secret-to`): there is nothing to
    /// guess, so one HMAC derives the wrapping key and opening costs no scrypt.
    case secret
}

/// A key secret: 32 random bytes kho generates for a job (a WAL push, a daemon) instead of a
/// password, written as `kho-secret-v1:` and 64 lower-case hex digits (docs/FORMAT.md section 5.2).
package enum KeySecret {
    static let prefix = Array("kho-secret-v1:".utf8)
    static let context = Array("kho/key-secret".utf8)

    /// A fresh secret as the text a password file holds; the caller wipes it (`Wipe.bytes`).
    package static func generate() throws -> [UInt8] {
        let secret = try SecretBytes.random(count: 32)
        let digits = Array("0123456789abcdef".utf8)
        var text = prefix
        text.reserveCapacity(prefix.count + 64)
        secret.withUnsafeBytes { for byte in $0 { text.append(digits[Int(byte >> 4)]); text.append(digits[Int(byte & 15)]) } }
        return text
    }

    /// The 32 bytes of `password` when it is a key secret's text, else nil.
    static func parse(_ password: [UInt8]) -> SecretBytes? {
        guard password.count == prefix.count + 64, password.starts(with: prefix) else { return nil }
        var bytes = [UInt8](repeating: 0, count: 32)
        defer { Wipe.bytes(&bytes) }
        for index in 0..<32 {
            guard let high = nibble(password[prefix.count + 2 * index]), let low = nibble(password[prefix.count + 2 * index + 1]) else { return nil }
            bytes[index] = high << 4 | low
        }
        return SecretBytes(bytes)
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        default: nil
        }
    }

    /// HMAC-SHA256(secret, "kho/key-secret" ‖ salt): with 256 random bits nothing is gained by a
    /// costly derivation, and the salt keeps two key files of one secret unrelated.
    static func wrappingKey(secret: SecretBytes, salt: [UInt8]) throws -> SecretBytes {
        let id = try BlobHasher(key: secret).id(of: context + salt)
        var bytes = id.bytes
        defer { Wipe.bytes(&bytes) }
        return SecretBytes(bytes)
    }
}

/// A key file: the master key sealed under a key derived from one password or key secret.
package struct KeyFile: Codable, Sendable {
    /// How the wrapping key is derived; a reader skips a key file with a value it does not know.
    package enum KDF: String, Codable, Sendable {
        case scrypt
        /// From a key secret (`KeySecret`); such a key file has no `scrypt` parameters.
        case secret
    }

    package var version: Int
    package var created: Date
    package var host: String
    package var user: String
    package var label: String
    package var kdf: KDF
    package var scrypt: Scrypt.Parameters?
    package var salt: Data
    /// AES-256-GCM (context `kho/key`) under the wrapping key of the 96-byte master key,
    /// followed, in key files made since the config is authenticated, by one byte 0x01 that says
    /// "this repository's config must carry a valid authenticator" (docs/FORMAT.md, section 4).
    package var sealedMasterKey: Data

    static let context = Array("kho/key".utf8)
    /// A key file is a few hundred bytes; anything far larger is not read.
    package static let maximumSize = 64 << 10
    /// Length of the sealed master key with and without the "config authenticated" byte.
    static let sealedLengthLegacy = 96 + Sealer.overhead
    static let sealedLengthBound = 97 + Sealer.overhead

    /// Whether this key file says the config must be authenticated. The length of the sealed
    /// payload is covered by its tag, so this cannot be changed without the password.
    package var requiresAuthenticatedConfig: Bool { sealedMasterKey.count == KeyFile.sealedLengthBound }

    /// How this key file derives its wrapping key, or nil when its fields do not say (a scrypt key
    /// file without parameters).
    package var derivation: KeyDerivation? {
        switch kdf {
        case .scrypt: scrypt.map { .scrypt($0) }
        case .secret: .secret
        }
    }

    /// Relative work to open this key file, to try cheap ones first.
    package var cost: UInt64 {
        switch derivation {
        case .scrypt(let parameters): parameters.cost
        case .secret: 0
        case nil: .max
        }
    }

    /// Why kho will not try this key file, or nil when it may.
    package var refusal: String? {
        switch derivation {
        case .scrypt(let parameters): Scrypt.refusal(parameters)
        case .secret: nil
        case nil: "it names scrypt but gives no parameters"
        }
    }

    package static func make(master: MasterKey, password: [UInt8], label: String, parameters: Scrypt.Parameters = .standard,
                            configAuthenticated: Bool = true) throws -> KeyFile {
        try make(master: master, password: password, label: label, derivation: .scrypt(parameters), configAuthenticated: configAuthenticated)
    }

    /// A key file for `password`, which for `.secret` must be a key secret's text.
    package static func make(master: MasterKey, password: [UInt8], label: String, derivation: KeyDerivation,
                            configAuthenticated: Bool = true) throws -> KeyFile {
        let salt = try Random.bytes(32)
        let wrapping = try wrappingKey(password: password, salt: salt, derivation: derivation)
        var plain = master.serialized
        if configAuthenticated { plain.append(1) }
        defer { Wipe.bytes(&plain) }
        let sealed = try Sealer(key: wrapping).seal(plain, context: context)
        let kdf: KDF
        let parameters: Scrypt.Parameters?
        switch derivation {
        case .scrypt(let given): kdf = .scrypt; parameters = given
        case .secret: kdf = .secret; parameters = nil
        }
        return KeyFile(version: 1, created: Date(), host: Host.name, user: Host.user, label: label, kdf: kdf,
                       scrypt: parameters, salt: Data(salt), sealedMasterKey: Data(sealed))
    }

    private static func wrappingKey(password: [UInt8], salt: [UInt8], derivation: KeyDerivation) throws -> SecretBytes {
        switch derivation {
        case .scrypt(let parameters):
            return try Scrypt.deriveKey(password: password, salt: salt, parameters: parameters, length: 32)
        case .secret:
            guard let secret = KeySecret.parse(password) else {
                throw KhoError(.usage, "A key for a key secret needs the secret's text (kho-secret-v1: and 64 hex digits): let `kho key add --secret-to FILE` generate it.")
            }
            return try KeySecret.wrappingKey(secret: secret, salt: salt)
        }
    }

    /// The master key, or nil when `password` does not open this key file. A password that is not
    /// a key secret never opens a secret key file (so it cannot be tried against one cheaply), and
    /// a secret key file costs one HMAC to try.
    package func open(password: [UInt8]) throws -> MasterKey? {
        guard let derivation,
              sealedMasterKey.count == KeyFile.sealedLengthLegacy || sealedMasterKey.count == KeyFile.sealedLengthBound else { return nil }
        if derivation == .secret && KeySecret.parse(password) == nil { return nil }
        let wrapping = try KeyFile.wrappingKey(password: password, salt: Array(salt), derivation: derivation)
        guard var plain = try Sealer(key: wrapping).open(Array(sealedMasterKey), context: KeyFile.context) else { return nil }
        defer { Wipe.bytes(&plain) }
        if plain.count == 97, plain[96] != 1 { return nil }
        return MasterKey(serialized: plain)
    }

    package func encoded() throws -> [UInt8] {
        Array(try JSON.encoder.encode(self))
    }
}
