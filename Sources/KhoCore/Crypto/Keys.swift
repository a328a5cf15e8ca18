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

/// A key file: the master key sealed under a key derived from one password.
package struct KeyFile: Codable, Sendable {
    package var version: Int
    package var created: Date
    package var host: String
    package var user: String
    package var label: String
    package var kdf: String
    package var scrypt: Scrypt.Parameters
    package var salt: Data
    /// AES-256-GCM (context `kho/key`) under scrypt(password, salt) of the 96-byte master key,
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

    package static func make(master: MasterKey, password: [UInt8], label: String, parameters: Scrypt.Parameters = .standard,
                            configAuthenticated: Bool = true) throws -> KeyFile {
        let salt = try Random.bytes(32)
        let wrapping = try Scrypt.deriveKey(password: password, salt: salt, parameters: parameters, length: 32)
        var plain = master.serialized
        if configAuthenticated { plain.append(1) }
        defer { Wipe.bytes(&plain) }
        let sealed = try Sealer(key: wrapping).seal(plain, context: context)
        return KeyFile(version: 1, created: Date(), host: Host.name, user: Host.user, label: label, kdf: "scrypt",
                       scrypt: parameters, salt: Data(salt), sealedMasterKey: Data(sealed))
    }

    package func open(password: [UInt8]) throws -> MasterKey? {
        guard kdf == "scrypt",
              sealedMasterKey.count == KeyFile.sealedLengthLegacy || sealedMasterKey.count == KeyFile.sealedLengthBound else { return nil }
        let wrapping = try Scrypt.deriveKey(password: password, salt: Array(salt), parameters: scrypt, length: 32)
        guard var plain = try Sealer(key: wrapping).open(Array(sealedMasterKey), context: KeyFile.context) else { return nil }
        defer { Wipe.bytes(&plain) }
        if plain.count == 97, plain[96] != 1 { return nil }
        return MasterKey(serialized: plain)
    }

    package func encoded() throws -> [UInt8] {
        Array(try JSON.encoder.encode(self))
    }
}
