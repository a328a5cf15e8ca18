internal import COpenSSL
import Foundation
import KhoSupport

// Every OpenSSL call below has its result checked. A failure is thrown as a `KhoError` naming the
// call: a digest, seal or key that OpenSSL did not finish must never be used as if it were right.
// None of these checks sits in `precondition` or `assert`, which a `-Ounchecked` build (or, for
// `assert`, any release build) does not evaluate.

/// Throws when an OpenSSL call did not return 1 (its success value for every call used here).
@inline(__always)
func checkOpenSSL(_ result: Int32, _ call: StaticString) throws {
    guard result == 1 else { throw CryptoFailure.error(call) }
}

enum CryptoFailure {
    /// The error for a failed OpenSSL call, with OpenSSL's own reason when it left one.
    static func error(_ call: StaticString) -> KhoError {
        var reason = ""
        let code = ERR_get_error()
        if code != 0 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            reason = " (" + String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) + ")"
        }
        while ERR_get_error() != 0 {}
        return KhoError(.failure, "OpenSSL's \(call) failed\(reason): nothing was written with its result; check the host's OpenSSL installation and memory, then run the command again.")
    }
}

/// Bytes that must not outlive their use: zeroed when the last reference goes.
package final class SecretBytes: @unchecked Sendable {
    let pointer: UnsafeMutableRawBufferPointer

    package init(_ bytes: some Collection<UInt8>) {
        pointer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        pointer.copyBytes(from: bytes)
        count = bytes.count
    }

    private init(zeroed count: Int) {
        pointer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 16)
        pointer.initializeMemory(as: UInt8.self, repeating: 0)
        self.count = count
    }

    /// Fresh bytes from the system's generator, written straight into wiped memory (no copy of the
    /// secret is left in an ordinary array).
    package static func random(count: Int) throws -> SecretBytes {
        let secret = SecretBytes(zeroed: count)
        try checkOpenSSL(RAND_bytes(secret.pointer.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(count)), "RAND_bytes")
        return secret
    }

    package let count: Int

    /// A copy in an ordinary array: the caller wipes it (`Wipe.bytes`) when done.
    package var bytes: [UInt8] { Array(UnsafeRawBufferPointer(rebasing: pointer[0..<count])) }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(rebasing: pointer[0..<count]))
    }

    /// Compares in time that does not depend on where the bytes differ.
    package func constantTimeEquals(_ other: [UInt8]) -> Bool {
        guard other.count == count else { return false }
        return other.withUnsafeBytes { o in withUnsafeBytes { ConstantTime.equal($0, o) } }
    }

    /// Compares two secrets without copying either out of wiped memory.
    package func constantTimeEquals(_ other: SecretBytes) -> Bool {
        guard other.count == count else { return false }
        return other.withUnsafeBytes { o in withUnsafeBytes { ConstantTime.equal($0, o) } }
    }

    deinit {
        OPENSSL_cleanse(pointer.baseAddress, pointer.count)
        pointer.deallocate()
    }
}

package enum Wipe {
    /// Overwrites an array's bytes with zeros in a way the optimizer cannot drop.
    package static func bytes(_ array: inout [UInt8]) {
        let count = array.count
        array.withUnsafeMutableBytes { if let base = $0.baseAddress { OPENSSL_cleanse(base, count) } }
    }
}

package enum ConstantTime {
    /// Compares MACs, tags and other authenticators in time that does not depend on their content.
    package static func equal(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == b.count else { return false }
        if a.count == 0 { return true }
        return CRYPTO_memcmp(a.baseAddress, b.baseAddress, a.count) == 0
    }

    package static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.withUnsafeBytes { x in b.withUnsafeBytes { y in equal(x, y) } }
    }

    /// Blob IDs are MACs: compared without an early exit.
    package static func equal(_ a: BlobID, _ b: BlobID) -> Bool {
        ((a.w0 ^ b.w0) | (a.w1 ^ b.w1) | (a.w2 ^ b.w2) | (a.w3 ^ b.w3)) == 0
    }
}

/// Algorithms fetched once from OpenSSL's default provider; fetching per call costs microseconds.
/// A library without them cannot do anything kho needs, so their absence stops the process with
/// the reason, in every build.
enum Algorithms {
    nonisolated(unsafe) static let sha256: OpaquePointer = fetchDigest("SHA256")
    nonisolated(unsafe) static let md5: OpaquePointer = fetchDigest("MD5")
    nonisolated(unsafe) static let hmac: OpaquePointer = {
        guard let mac = EVP_MAC_fetch(nil, "HMAC", nil) else {
            fatalError("OpenSSL's EVP_MAC_fetch(HMAC) failed: this OpenSSL has no HMAC; install Debian's libssl3.")
        }
        return mac
    }()
    nonisolated(unsafe) static let aes256gcm: OpaquePointer = {
        guard let cipher = EVP_CIPHER_fetch(nil, "AES-256-GCM", nil) else {
            fatalError("OpenSSL's EVP_CIPHER_fetch(AES-256-GCM) failed: this OpenSSL has no AES-256-GCM; install Debian's libssl3.")
        }
        return cipher
    }()

    private static func fetchDigest(_ name: String) -> OpaquePointer {
        guard let digest = EVP_MD_fetch(nil, name, nil) else {
            fatalError("OpenSSL's EVP_MD_fetch(\(name)) failed: this OpenSSL has no \(name); install Debian's libssl3.")
        }
        return digest
    }
}

/// MD5, only because S3 asks for a `Content-MD5` on uploads that carry an object lock; never used
/// to identify or authenticate anything.
package enum MD5 {
    package static func digest(_ data: [UInt8]) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        var length: UInt32 = 0
        let ok = data.withUnsafeBytes { input in
            out.withUnsafeMutableBufferPointer { EVP_Digest(input.baseAddress, input.count, $0.baseAddress, &length, Algorithms.md5, nil) }
        }
        try checkOpenSSL(ok, "EVP_Digest(MD5)")
        return out
    }
}

package enum Random {
    /// Random bytes that are not secret (names, salts); `SecretBytes.random` for keys.
    package static func bytes(_ count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let ok = out.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32(count)) }
        try checkOpenSSL(ok, "RAND_bytes")
        return out
    }
}

/// SHA-256, used to name stored files.
package enum SHA256 {
    package static func hash(_ data: UnsafeRawBufferPointer) throws -> BlobID {
        var digest = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        var length: UInt32 = 0
        let ok = withUnsafeMutableBytes(of: &digest) { d in
            EVP_Digest(data.baseAddress, data.count, d.baseAddress!.assumingMemoryBound(to: UInt8.self), &length, Algorithms.sha256, nil)
        }
        try checkOpenSSL(ok, "EVP_Digest(SHA256)")
        return withUnsafeBytes(of: &digest) { BlobID(bytes: $0.baseAddress!) }
    }

    package static func hash(_ data: [UInt8]) throws -> BlobID {
        try data.withUnsafeBytes { try hash($0) }
    }

    /// Incremental hashing, for files too large to hold in memory.
    package final class Context {
        private let ctx: OpaquePointer
        public init() throws {
            guard let ctx = EVP_MD_CTX_new() else { throw CryptoFailure.error("EVP_MD_CTX_new") }
            self.ctx = ctx
            try checkOpenSSL(EVP_DigestInit_ex(ctx, Algorithms.sha256, nil), "EVP_DigestInit_ex(SHA256)")
        }
        public func update(_ data: UnsafeRawBufferPointer) throws {
            if data.count > 0 { try checkOpenSSL(EVP_DigestUpdate(ctx, data.baseAddress, data.count), "EVP_DigestUpdate(SHA256)") }
        }
        public func update(_ data: [UInt8]) throws { try data.withUnsafeBytes { try update($0) } }
        public func finish() throws -> BlobID {
            var out = [UInt8](repeating: 0, count: 32)
            var length: UInt32 = 0
            let ok = out.withUnsafeMutableBufferPointer { EVP_DigestFinal_ex(ctx, $0.baseAddress, &length) }
            try checkOpenSSL(ok, "EVP_DigestFinal_ex(SHA256)")
            return out.withUnsafeBytes { BlobID(bytes: $0.baseAddress!) }
        }
        deinit { EVP_MD_CTX_free(ctx) }
    }
}

/// HMAC-SHA256 under a fixed key, through OpenSSL's MAC API. The key is set once; each call
/// re-initializes the context from the keyed state OpenSSL keeps (no key schedule, no allocation
/// of ours); one instance per thread.
package final class BlobHasher {
    private let context: OpaquePointer

    package init(key: SecretBytes) throws {
        guard let context = EVP_MAC_CTX_new(Algorithms.hmac) else { throw CryptoFailure.error("EVP_MAC_CTX_new(HMAC)") }
        self.context = context
        // The key is read from its wiped memory, never copied out; its pointer is never null (even
        // for an empty key), which matters: a null key asks OpenSSL to reuse one never set.
        let ok = "digest".withCString { name in
            "SHA256".withCString { digest in
                var params = [OSSL_PARAM_construct_utf8_string(name, UnsafeMutablePointer(mutating: digest), 0),
                              OSSL_PARAM_construct_end()]
                return EVP_MAC_init(context, key.pointer.baseAddress!.assumingMemoryBound(to: UInt8.self), key.count, &params)
            }
        }
        try checkOpenSSL(ok, "EVP_MAC_init(HMAC, SHA256)")
    }

    package func id(of data: UnsafeRawBufferPointer) throws -> BlobID {
        var digest = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        var length = 0
        // All results are combined and checked once: the hot path keeps a single branch.
        let ok = withUnsafeMutableBytes(of: &digest) { d -> Int32 in
            let out = d.baseAddress!.assumingMemoryBound(to: UInt8.self)
            // A null key re-initializes with the key set in `init`.
            var ok = EVP_MAC_init(context, nil, 0, nil)
            if data.count > 0 { ok &= EVP_MAC_update(context, data.baseAddress!.assumingMemoryBound(to: UInt8.self), data.count) }
            ok &= EVP_MAC_final(context, out, &length, 32)
            return ok
        }
        try checkOpenSSL(length == 32 ? ok : 0, "HMAC-SHA256 (EVP_MAC_init/EVP_MAC_update/EVP_MAC_final)")
        return withUnsafeBytes(of: &digest) { BlobID(bytes: $0.baseAddress!) }
    }

    package func id(of data: [UInt8]) throws -> BlobID { try data.withUnsafeBytes { try id(of: $0) } }

    deinit { EVP_MAC_CTX_free(context) }
}

/// Where a `Sealer`'s nonces come from. Outside kho's own tests it is always `.random`: the other
/// case is internal, reachable only through `@testable import`, so that tests can make the damaged
/// repositories (repeated nonces) that `kho check` must find and `kho copy` must heal.
enum NonceSource: Sendable {
    case random
    /// Every nonce all zeros, as release builds before this check wrote into snapshot and index files.
    case repeatedForTesting
}

/// AES-256-GCM with a random 96-bit nonce per message. A sealed message is
/// `nonce (12) ‖ ciphertext ‖ tag (16)`; `context` is authenticated but not stored.
/// One instance per thread.
package final class Sealer {
    package static let nonceSize = 12
    package static let tagSize = 16
    package static let overhead = nonceSize + tagSize

    private let ctx: OpaquePointer
    private let key: SecretBytes
    let nonces: NonceSource

    package convenience init(key: SecretBytes) throws {
        try self.init(key: key, nonces: .random)
    }

    init(key: SecretBytes, nonces: NonceSource) throws {
        guard key.count == 32 else {
            throw KhoError(.failure, "An AES-256 key of \(key.count) bytes was given instead of 32: this is a bug in kho.")
        }
        guard let ctx = EVP_CIPHER_CTX_new() else { throw CryptoFailure.error("EVP_CIPHER_CTX_new") }
        self.ctx = ctx
        self.key = key
        self.nonces = nonces
    }

    deinit { EVP_CIPHER_CTX_free(ctx) }

    /// Writes the sealed form of `plaintext` to `out`, which must hold `plaintext.count + overhead`.
    /// Throws, leaving `out` unusable, when the random generator or the cipher fails.
    package func seal(_ plaintext: UnsafeRawBufferPointer, context: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) throws {
        let nonce = out.assumingMemoryBound(to: UInt8.self)
        switch nonces {
        case .random:
            // A repeated nonce would break GCM: never continue without fresh randomness.
            try checkOpenSSL(RAND_bytes(nonce, Int32(Sealer.nonceSize)), "RAND_bytes (AES-GCM nonce)")
        case .repeatedForTesting:
            nonce.initialize(repeating: 0, count: Sealer.nonceSize)
        }
        try key.withUnsafeBytes { k in
            try checkOpenSSL(EVP_EncryptInit_ex(ctx, Algorithms.aes256gcm, nil, k.baseAddress!.assumingMemoryBound(to: UInt8.self), nonce),
                             "EVP_EncryptInit_ex(AES-256-GCM)")
        }
        var outLength: Int32 = 0
        if context.count > 0 {
            try checkOpenSSL(EVP_EncryptUpdate(ctx, nil, &outLength, context.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(context.count)),
                             "EVP_EncryptUpdate(AES-256-GCM associated data)")
        }
        let body = nonce + Sealer.nonceSize
        var written = 0
        if plaintext.count > 0 {
            try checkOpenSSL(EVP_EncryptUpdate(ctx, body, &outLength, plaintext.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(plaintext.count)),
                             "EVP_EncryptUpdate(AES-256-GCM)")
            written = Int(outLength)
        }
        try checkOpenSSL(EVP_EncryptFinal_ex(ctx, body + written, &outLength), "EVP_EncryptFinal_ex(AES-256-GCM)")
        guard written + Int(outLength) == plaintext.count else {
            throw KhoError(.failure, "AES-256-GCM wrote \(written + Int(outLength)) bytes for \(plaintext.count): OpenSSL misbehaved; nothing was stored.")
        }
        try checkOpenSSL(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, Int32(Sealer.tagSize), body + plaintext.count),
                         "EVP_CIPHER_CTX_ctrl(EVP_CTRL_AEAD_GET_TAG)")
    }

    package func seal(_ plaintext: [UInt8], context: [UInt8]) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: plaintext.count + Sealer.overhead) { buffer, count in
            try plaintext.withUnsafeBytes { p in
                try context.withUnsafeBytes { c in try seal(p, context: c, into: UnsafeMutableRawPointer(buffer.baseAddress!)) }
            }
            count = plaintext.count + Sealer.overhead
        }
    }

    /// Opens a sealed message into `out` (room for `sealed.count - overhead` bytes); false when the
    /// message does not authenticate under this key and context (GCM compares the tag in constant
    /// time). Throws when the cipher itself fails.
    package func open(_ sealed: UnsafeRawBufferPointer, context: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) throws -> Bool {
        guard sealed.count >= Sealer.overhead else { return false }
        let nonce = sealed.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let bodyLength = sealed.count - Sealer.overhead
        try key.withUnsafeBytes { k in
            try checkOpenSSL(EVP_DecryptInit_ex(ctx, Algorithms.aes256gcm, nil, k.baseAddress!.assumingMemoryBound(to: UInt8.self), nonce),
                             "EVP_DecryptInit_ex(AES-256-GCM)")
        }
        var outLength: Int32 = 0
        if context.count > 0 {
            try checkOpenSSL(EVP_DecryptUpdate(ctx, nil, &outLength, context.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(context.count)),
                             "EVP_DecryptUpdate(AES-256-GCM associated data)")
        }
        let output = out.assumingMemoryBound(to: UInt8.self)
        if bodyLength > 0 {
            try checkOpenSSL(EVP_DecryptUpdate(ctx, output, &outLength, nonce + Sealer.nonceSize, Int32(bodyLength)),
                             "EVP_DecryptUpdate(AES-256-GCM)")
        }
        let tag = UnsafeMutableRawPointer(mutating: nonce + Sealer.nonceSize + bodyLength)
        try checkOpenSSL(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, Int32(Sealer.tagSize), tag), "EVP_CIPHER_CTX_ctrl(EVP_CTRL_AEAD_SET_TAG)")
        // 0 here is the tag not matching: an authentication failure, not an error of OpenSSL.
        return EVP_DecryptFinal_ex(ctx, output + bodyLength, &outLength) == 1
    }

    package func open(_ sealed: [UInt8], context: [UInt8]) throws -> [UInt8]? {
        guard sealed.count >= Sealer.overhead else { return nil }
        var ok = false
        var plain = [UInt8](repeating: 0, count: max(sealed.count - Sealer.overhead, 1))
        try plain.withUnsafeMutableBytes { buffer in
            try sealed.withUnsafeBytes { s in
                try context.withUnsafeBytes { c in ok = try open(s, context: c, into: buffer.baseAddress!) }
            }
        }
        plain.removeLast(plain.count - (sealed.count - Sealer.overhead))
        guard ok else {
            Wipe.bytes(&plain)
            return nil
        }
        return plain
    }
}

package enum Scrypt {
    package struct Parameters: Codable, Sendable, Equatable {
        public var n: UInt64
        public var r: UInt64
        public var p: UInt64
        public init(n: UInt64, r: UInt64, p: UInt64) { self.n = n; self.r = r; self.p = p }
        /// 2^15 × 8 × 1: about 32 MiB and a tenth of a second on a small server.
        public static let standard = Parameters(n: 1 << 15, r: 8, p: 1)

        /// Memory scrypt needs: 128·N·r bytes.
        public var memory: UInt64 { n &* r &* 128 }
        /// Relative work, to try cheap key files first.
        public var cost: UInt64 { n &* r &* p }
    }

    /// The cheapest parameters kho accepts from a key file: below this a stolen repository's keys
    /// could be guessed cheaply, so a `keys/` file asking for less (planted or edited) is refused.
    /// Debug builds accept N = 2^10 so that the test suite's many keys are quick to make (the
    /// release build refuses the knob that asks for it, see `testParameters`).
    package static var minimum: Parameters {
        #if DEBUG
        Parameters(n: 1 << 10, r: 8, p: 1)
        #else
        Parameters(n: 1 << 14, r: 8, p: 1)
        #endif
    }

    /// The dearest parameters kho accepts: 256 MiB and about eight times the standard work, so a
    /// planted key file cannot make every command take minutes and gigabytes.
    package static let maximumMemory: UInt64 = 256 << 20
    package static let maximumCost: UInt64 = Parameters.standard.cost * 8

    /// Why `parameters` are outside kho's bounds, or nil when they are usable.
    package static func refusal(_ parameters: Parameters) -> String? {
        let least = minimum
        guard parameters.n >= 2, parameters.n.nonzeroBitCount == 1 else {
            return "N=\(parameters.n) is not a power of two"
        }
        guard (1...32).contains(parameters.r), (1...16).contains(parameters.p) else {
            return "r=\(parameters.r) p=\(parameters.p) are outside 1...32 and 1...16"
        }
        guard parameters.n >= least.n, parameters.r >= least.r else {
            return "N=\(parameters.n) r=\(parameters.r) is cheaper than kho's floor N=\(least.n) r=\(least.r)"
        }
        guard parameters.n <= 1 << 22, parameters.memory <= maximumMemory, parameters.cost <= maximumCost else {
            return "N=\(parameters.n) r=\(parameters.r) p=\(parameters.p) costs more than kho's ceiling (\(maximumMemory >> 20) MiB, \(maximumCost / Parameters.standard.cost)× the standard work)"
        }
        return nil
    }

    /// The parameters asked for by `KHO_TEST_SCRYPT_N` (tests only, debug builds only: see
    /// `TestKnobs`, which also makes a release kho refuse to start with it set), or nil.
    package static func testParameters(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Parameters? {
        guard let text = TestKnobs.value("KHO_TEST_SCRYPT_N", environment: environment) else { return nil }
        guard let n = UInt64(text) else {
            throw KhoError(.usage, "KHO_TEST_SCRYPT_N=\(text) is not a number: give a power of two such as 1024, or unset it.")
        }
        let parameters = Parameters(n: n, r: 8, p: 1)
        if let why = refusal(parameters) {
            throw KhoError(.usage, "KHO_TEST_SCRYPT_N=\(text) is refused (\(why)): give a power of two from \(minimum.n), or unset it.")
        }
        return parameters
    }

    /// Derives a key for a key file: parameters outside kho's floor and ceiling are refused.
    package static func deriveKey(password: [UInt8], salt: [UInt8], parameters: Parameters, length: Int) throws -> SecretBytes {
        if let why = refusal(parameters) {
            throw KhoError(.integrity, "A key file asks for scrypt parameters that kho does not accept (\(why)): the key file is damaged or planted; remove it with `kho key remove` once another key opens the repository.")
        }
        return try derive(password: password, salt: salt, parameters: parameters, length: length)
    }

    /// scrypt itself, with any parameters OpenSSL takes (the RFC 7914 test vectors are below kho's floor).
    static func derive(password: [UInt8], salt: [UInt8], parameters: Parameters, length: Int) throws -> SecretBytes {
        var out = [UInt8](repeating: 0, count: length)
        defer { Wipe.bytes(&out) }
        let maxMemory = parameters.memory * 2 + (1 << 20)
        let ok = password.withUnsafeBytes { pw in
            EVP_PBE_scrypt(pw.baseAddress?.assumingMemoryBound(to: CChar.self), password.count, salt, salt.count,
                           parameters.n, parameters.r, parameters.p, maxMemory, &out, length)
        }
        try checkOpenSSL(ok, "EVP_PBE_scrypt")
        return SecretBytes(out)
    }
}
