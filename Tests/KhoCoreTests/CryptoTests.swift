import Testing
import Foundation
@testable import KhoCore
import KhoSupport

/// HMAC-SHA256 written out from RFC 2104 on top of the (separately tested) SHA-256, as a reference.
func referenceHMACSHA256(key: [UInt8], message: [UInt8]) throws -> [UInt8] {
    var k = key.count > 64 ? try SHA256.hash(key).bytes : key
    k += [UInt8](repeating: 0, count: 64 - k.count)
    let inner = try SHA256.hash(k.map { $0 ^ 0x36 } + message).bytes
    return try SHA256.hash(k.map { $0 ^ 0x5c } + inner).bytes
}

private func hex(_ text: String) -> [UInt8] { Hex.decode(text)! }

@Suite struct SHA256Tests {
    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
    ])
    func knownVectors(message: String, digest: String) throws {
        #expect(try SHA256.hash(Array(message.utf8)).hex == digest)
        let context = try SHA256.Context()
        try context.update(Array(message.utf8))
        #expect(try context.finish().hex == digest)
    }

    @Test func millionAsIncrementally() throws {
        let expected = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: 1000)
        let context = try SHA256.Context()
        try context.update([])
        for _ in 0..<1000 { try context.update(chunk) }
        #expect(try context.finish().hex == expected)
        #expect(try SHA256.hash([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)).hex == expected)
    }

    @Test func incrementalEqualsOneShotForOddSplits() throws {
        var rng = SplitMix64(seed: 5)
        let data = rng.bytes(100_003)
        let context = try SHA256.Context()
        var at = 0
        while at < data.count {
            let n = min(Int.random(in: 0...4099, using: &rng), data.count - at)
            try context.update(Array(data[at..<(at + n)]))
            at += n
        }
        #expect(try context.finish() == SHA256.hash(data))
    }
}

@Suite struct BlobHasherTests {
    /// RFC 4231 test cases 1–7. Case 5 is truncated to 128 bits; cases 6 and 7 have a 131-byte key,
    /// longer than a SHA-256 block (SigV4's secrets may be).
    @Test(arguments: [
        ("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "4869205468657265",
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        ("4a656665", "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", String(repeating: "dd", count: 50),
         "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
        ("0102030405060708090a0b0c0d0e0f10111213141516171819", String(repeating: "cd", count: 50),
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
        ("0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c", "546573742057697468205472756e636174696f6e",
         "a3b6167473100ee06e0c796c2955552b"),
        (String(repeating: "aa", count: 131), "54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d2048617368204b6579204669727374",
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
        (String(repeating: "aa", count: 131), "5468697320697320612074657374207573696e672061206c6172676572207468616e20626c6f636b2d73697a65206b657920616e642061206c6172676572207468616e20626c6f636b2d73697a6520646174612e20546865206b6579206e6565647320746f20626520686173686564206265666f7265206265696e6720757365642062792074686520484d414320616c676f726974686d2e",
         "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
    ])
    func rfc4231(key: String, data: String, mac: String) throws {
        let hasher = try BlobHasher(key: SecretBytes(hex(key)))
        let id = try hasher.id(of: hex(data))
        #expect(id.hex.hasPrefix(mac))
        // The hasher is reused: a second call gives the same answer.
        #expect(try hasher.id(of: hex(data)) == id)
    }

    @Test func matchesReferenceForAnyKeyAndMessageLength() throws {
        var rng = SplitMix64(seed: 11)
        for keyLength in [0, 1, 31, 32, 63, 64, 65, 131] {
            let key = rng.bytes(keyLength)
            let hasher = try BlobHasher(key: SecretBytes(key))
            for length in [0, 1, 55, 56, 63, 64, 65, 1000, 70_001] {
                let message = rng.bytes(length)
                #expect(try hasher.id(of: message).bytes == referenceHMACSHA256(key: key, message: message),
                        "key \(keyLength) bytes, message \(length) bytes")
            }
        }
    }

    @Test func differentKeysGiveDifferentIDs() throws {
        let message = Array("same plaintext".utf8)
        let a = try BlobHasher(key: SecretBytes([UInt8](repeating: 1, count: 32))).id(of: message)
        let b = try BlobHasher(key: SecretBytes([UInt8](repeating: 2, count: 32))).id(of: message)
        #expect(a != b)
        #expect(try a != SHA256.hash(message))
    }
}

@Suite struct SealerTests {
    let key = SecretBytes((0..<32).map { UInt8($0) })
    let context = Array("kho/test".utf8)

    /// What the release build of 971e2b7 got wrong: under -Ounchecked the nonce was never drawn.
    /// Run in the release lane too, so an optimization that drops the draw fails here.
    @Test func everySealDrawsAFreshNonce() throws {
        let sealer = try Sealer(key: key)
        var seen = Set<[UInt8]>()
        for i in 0..<10_000 {
            // The same message every time, into a buffer that keeps the previous nonce.
            let sealed = try sealer.seal([UInt8(i & 1)], context: context)
            let nonce = Array(sealed[0..<Sealer.nonceSize])
            #expect(nonce != [UInt8](repeating: 0, count: Sealer.nonceSize))
            #expect(seen.insert(nonce).inserted, "nonce \(Hex.encode(nonce)) drawn twice")
        }
        var buffer = [UInt8](repeating: 0, count: 16 + Sealer.overhead)
        var nonces = Set<[UInt8]>()
        for _ in 0..<1000 {
            try [UInt8](repeating: 7, count: 16).withUnsafeBytes { p in
                try context.withUnsafeBytes { c in try buffer.withUnsafeMutableBytes { try sealer.seal(p, context: c, into: $0.baseAddress!) } }
            }
            nonces.insert(Array(buffer[0..<Sealer.nonceSize]))
        }
        #expect(nonces.count == 1000, "sealing into the same buffer reused a nonce")
    }

    /// The engine's test-only source (reachable only through @testable) repeats: what `kho check`
    /// must find in old repositories.
    @Test func theTestOnlyNonceSourceRepeats() throws {
        let sealer = try Sealer(key: key, nonces: .repeatedForTesting)
        let a = try sealer.seal([1], context: context), b = try sealer.seal([2], context: context)
        #expect(a[0..<12] == b[0..<12])
    }

    @Test(arguments: [0, 1, 15, 16, 17, 1000, 1 << 20])
    func roundTrip(length: Int) throws {
        var rng = SplitMix64(seed: UInt64(length))
        let plaintext = rng.bytes(length)
        let sealer = try Sealer(key: key)
        let sealed = try sealer.seal(plaintext, context: context)
        #expect(sealed.count == length + Sealer.overhead)
        let opened = try #require(try sealer.open(sealed, context: context))
        #expect(opened == plaintext)
        // Another instance with the same key opens it too.
        #expect(try Sealer(key: SecretBytes(key.bytes)).open(sealed, context: context) == plaintext)
        if length >= 16 {
            #expect(Array(sealed[Sealer.nonceSize..<(Sealer.nonceSize + length)]) != plaintext, "ciphertext equals plaintext")
        }
    }

    @Test func emptyContextRoundTrip() throws {
        let sealer = try Sealer(key: key)
        let sealed = try sealer.seal(Array("hello".utf8), context: [])
        #expect(try sealer.open(sealed, context: []) == Array("hello".utf8))
        #expect(try sealer.open(sealed, context: [0]) == nil)
        #expect(try sealer.open(sealer.seal([], context: []), context: []) == [])
    }

    @Test func freshNonceEveryTime() throws {
        let sealer = try Sealer(key: key)
        let plaintext = [UInt8](repeating: 7, count: 64)
        let a = try sealer.seal(plaintext, context: context)
        let b = try sealer.seal(plaintext, context: context)
        #expect(a != b)
        #expect(a[0..<Sealer.nonceSize] != b[0..<Sealer.nonceSize])
    }

    @Test(arguments: [0, 1, 40])
    func tamperingWithAnyByteFailsToOpen(length: Int) throws {
        var rng = SplitMix64(seed: 77)
        let plaintext = rng.bytes(length)
        let sealer = try Sealer(key: key)
        let sealed = try sealer.seal(plaintext, context: context)
        for index in sealed.indices {
            for mask: UInt8 in [0x01, 0x80] {
                var damaged = sealed
                damaged[index] ^= mask
                let region = index < Sealer.nonceSize ? "nonce" : index < Sealer.nonceSize + length ? "body" : "tag"
                #expect(try sealer.open(damaged, context: context) == nil, "flipping \(mask) in byte \(index) (\(region)) still opens")
            }
        }
        // A failed open leaves the sealer usable.
        #expect(try sealer.open(sealed, context: context) == plaintext)
    }

    @Test func truncatedOrExtendedMessagesFailToOpen() throws {
        let sealer = try Sealer(key: key)
        let sealed = try sealer.seal(Array("some plaintext".utf8), context: context)
        for count in 0..<sealed.count {
            #expect(try sealer.open(Array(sealed[0..<count]), context: context) == nil, "prefix of \(count) bytes opens")
        }
        #expect(try sealer.open(sealed + [0], context: context) == nil)
    }

    @Test func wrongContextOrKeyFailsToOpen() throws {
        let sealer = try Sealer(key: key)
        let sealed = try sealer.seal(Array("secret".utf8), context: context)
        #expect(try sealer.open(sealed, context: Array("kho/tesT".utf8)) == nil)
        #expect(try sealer.open(sealed, context: []) == nil)
        #expect(try sealer.open(sealed, context: context + [0]) == nil)
        var otherKey = key.bytes
        otherKey[31] ^= 1
        #expect(try Sealer(key: SecretBytes(otherKey)).open(sealed, context: context) == nil)
        #expect(try sealer.open(sealed, context: context) == Array("secret".utf8))
    }

    @Test func pointerAPIRoundTrip() throws {
        let sealer = try Sealer(key: key)
        let plaintext = Array("pointer api".utf8)
        var sealed = [UInt8](repeating: 0, count: plaintext.count + Sealer.overhead)
        try plaintext.withUnsafeBytes { p in
            try context.withUnsafeBytes { c in
                try sealed.withUnsafeMutableBytes { try sealer.seal(p, context: c, into: $0.baseAddress!) }
            }
        }
        var opened = [UInt8](repeating: 0, count: plaintext.count)
        let ok = try sealed.withUnsafeBytes { s in
            try context.withUnsafeBytes { c in
                try opened.withUnsafeMutableBytes { try sealer.open(s, context: c, into: $0.baseAddress!) }
            }
        }
        #expect(ok)
        #expect(opened == plaintext)
    }
}

@Suite struct ScryptTests {
    @Test func rfc7914SmallVector() throws {
        let key = try Scrypt.derive(password: [], salt: [], parameters: .init(n: 16, r: 1, p: 1), length: 64)
        #expect(Hex.encode(key.bytes) == "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906")
    }

    @Test func rfc7914SecondVector() throws {
        let key = try Scrypt.derive(password: Array("password".utf8), salt: Array("NaCl".utf8),
                                       parameters: .init(n: 1024, r: 8, p: 16), length: 64)
        #expect(Hex.encode(key.bytes) == "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640")
    }

    @Test func passwordAndSaltMatter() throws {
        let parameters = Scrypt.minimum
        let a = try Scrypt.deriveKey(password: Array("pw".utf8), salt: Array("salt".utf8), parameters: parameters, length: 32)
        let b = try Scrypt.deriveKey(password: Array("pw".utf8), salt: Array("salT".utf8), parameters: parameters, length: 32)
        let c = try Scrypt.deriveKey(password: Array("pW".utf8), salt: Array("salt".utf8), parameters: parameters, length: 32)
        let again = try Scrypt.deriveKey(password: Array("pw".utf8), salt: Array("salt".utf8), parameters: parameters, length: 32)
        #expect(a.count == 32)
        #expect(a.bytes == again.bytes)
        #expect(a.bytes != b.bytes)
        #expect(a.bytes != c.bytes)
    }

    @Test(arguments: [
        Scrypt.Parameters(n: 1000, r: 8, p: 1),      // N not a power of two
        Scrypt.Parameters(n: 1, r: 8, p: 1),         // N too small
        Scrypt.Parameters(n: 0, r: 8, p: 1),
        Scrypt.Parameters(n: 1024, r: 0, p: 1),
        Scrypt.Parameters(n: 1024, r: 8, p: 0),
        Scrypt.Parameters(n: 1 << 40, r: 8, p: 1),   // a planted key file asking for terabytes
        Scrypt.Parameters(n: 1 << 20, r: 1 << 20, p: 1),
        Scrypt.Parameters(n: 1024, r: 8, p: .max),
    ])
    func unusableParametersAreRefused(parameters: Scrypt.Parameters) {
        expectKhoError(.integrity, "N=\(parameters.n) r=\(parameters.r) p=\(parameters.p)") {
            _ = try Scrypt.deriveKey(password: [1], salt: [2], parameters: parameters, length: 32)
        }
    }

    @Test(arguments: [
        Scrypt.Parameters(n: 1 << 8, r: 8, p: 1),     // below the floor in every build
        Scrypt.Parameters(n: 1 << 15, r: 4, p: 1),    // r below the floor
        Scrypt.Parameters(n: 1 << 20, r: 8, p: 1),    // 1 GiB: above the memory ceiling
        Scrypt.Parameters(n: 1 << 17, r: 8, p: 16),   // accepted memory, 128× the work
    ])
    func floorAndCeilingAreKept(parameters: Scrypt.Parameters) {
        #expect(Scrypt.refusal(parameters) != nil)
        expectKhoError(.integrity, "N=\(parameters.n) r=\(parameters.r) p=\(parameters.p)") {
            _ = try Scrypt.deriveKey(password: [1], salt: [2], parameters: parameters, length: 32)
        }
    }

    @Test func theFloorAndTheStandardAreAccepted() {
        #expect(Scrypt.refusal(.standard) == nil)
        #expect(Scrypt.refusal(Scrypt.minimum) == nil)
        #expect(Scrypt.refusal(Scrypt.Parameters(n: 1 << 17, r: 8, p: 1)) == nil)
    }

    @Test func standardParametersAreAccepted() throws {
        // Only checks that the default is inside the accepted bounds; a small password keeps it quick.
        let key = try Scrypt.deriveKey(password: [1], salt: [2], parameters: .standard, length: 32)
        #expect(key.count == 32)
    }
}

@Suite struct SecretBytesTests {
    @Test(arguments: [0, 1, 32, 96, 1000])
    func roundTrip(count: Int) throws {
        var rng = SplitMix64(seed: UInt64(count) &+ 1)
        let bytes = rng.bytes(count)
        let secret = SecretBytes(bytes)
        #expect(secret.count == count)
        #expect(secret.bytes == bytes)
        // From a slice, as MasterKey does.
        let sliced = SecretBytes(bytes[(count / 2)...])
        #expect(sliced.bytes == Array(bytes[(count / 2)...]))
    }

    @Test func randomSecretsDiffer() throws {
        let a = try SecretBytes.random(count: 32)
        let b = try SecretBytes.random(count: 32)
        #expect(a.count == 32)
        #expect(a.bytes != b.bytes)
        #expect(a.bytes != [UInt8](repeating: 0, count: 32))
        #expect(try Random.bytes(16).count == 16)
        #expect(try Random.bytes(16) != Random.bytes(16))
    }
}

/// Key secrets (`kho key add --secret-to`): generated text, parsed back, and key files that only
/// such a secret opens, with one HMAC instead of scrypt.
@Suite struct KeySecretTests {
    @Test func generatedSecretsParseAndDiffer() throws {
        let one = try KeySecret.generate()
        let two = try KeySecret.generate()
        #expect(one != two)
        #expect(one.count == "kho-secret-v1:".utf8.count + 64)
        #expect(String(decoding: one, as: UTF8.self).hasPrefix("kho-secret-v1:"))
        #expect(KeySecret.parse(one) != nil)
        for bad in ["kho-secret-v1:" + String(repeating: "g", count: 64),
                    "kho-secret-v1:" + String(repeating: "A", count: 64),
                    "kho-secret-v1:" + String(repeating: "0", count: 63),
                    "kho-secret-v2:" + String(repeating: "0", count: 64),
                    String(repeating: "0", count: 78)] {
            #expect(KeySecret.parse(Array(bad.utf8)) == nil, "\(bad) is not a key secret")
        }
    }

    @Test func onlyItsSecretOpensASecretKeyFile() throws {
        let master = try MasterKey.random()
        let secret = try KeySecret.generate()
        let file = try KeyFile.make(master: master, password: secret, label: "wal push", derivation: .secret)
        #expect(file.kdf == .secret && file.scrypt == nil && file.cost == 0 && file.refusal == nil)
        let opened = try #require(try file.open(password: secret))
        #expect(opened.encryption.constantTimeEquals(master.encryption) && opened.mac.constantTimeEquals(master.mac))
        #expect(try file.open(password: try KeySecret.generate()) == nil, "another secret")
        #expect(try file.open(password: Array("a person's password".utf8)) == nil, "a password is never tried against a secret key")
        // The encoded file has no scrypt parameters, and decodes to the same derivation.
        let bytes = try file.encoded()
        #expect(!String(decoding: bytes, as: UTF8.self).contains("scrypt"))
        let decoded = try JSON.decoder.decode(KeyFile.self, from: Data(bytes))
        #expect(decoded.derivation == .secret)
        // A password key file is not opened by a secret (nor made from a non-secret as .secret).
        let scrypt = try KeyFile.make(master: master, password: Array("pw".utf8), label: "p", parameters: Scrypt.minimum)
        #expect(try scrypt.open(password: secret) == nil)
        #expect(throws: KhoError.self) { try KeyFile.make(master: master, password: Array("pw".utf8), label: "x", derivation: .secret) }
    }

    @Test func aKeyFileNamingScryptWithoutParametersIsRefused() throws {
        var file = try KeyFile.make(master: try MasterKey.random(), password: Array("pw".utf8), label: "p", parameters: Scrypt.minimum)
        file.scrypt = nil
        #expect(file.refusal != nil && file.derivation == nil)
        #expect(try file.open(password: Array("pw".utf8)) == nil)
    }
}
