internal import COpenSSL
import Foundation

/// Bytes that must not outlive their use: zeroed when the last reference goes.
public final class SecretBytes: @unchecked Sendable {
    let pointer: UnsafeMutableRawBufferPointer

    public init(_ bytes: some Collection<UInt8>) {
        pointer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        pointer.copyBytes(from: bytes)
        count = bytes.count
    }

    public static func random(count: Int) -> SecretBytes {
        let secret = SecretBytes([UInt8](repeating: 0, count: count))
        secret.pointer.withUnsafeBytes { _ in }
        let ok = RAND_bytes(secret.pointer.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(count))
        precondition(ok == 1, "the system's random generator failed; refusing to make a key")
        return secret
    }

    public let count: Int

    public var bytes: [UInt8] { Array(UnsafeRawBufferPointer(rebasing: pointer[0..<count])) }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(rebasing: pointer[0..<count]))
    }

    deinit {
        OPENSSL_cleanse(pointer.baseAddress, pointer.count)
        pointer.deallocate()
    }
}

/// Algorithms fetched once from OpenSSL's default provider; fetching per call costs microseconds.
enum Algorithms {
    nonisolated(unsafe) static let sha256: OpaquePointer = EVP_MD_fetch(nil, "SHA256", nil)!
    nonisolated(unsafe) static let md5: OpaquePointer = EVP_MD_fetch(nil, "MD5", nil)!
    nonisolated(unsafe) static let aes256gcm: OpaquePointer = EVP_CIPHER_fetch(nil, "AES-256-GCM", nil)!
}

/// MD5, only because S3 asks for a `Content-MD5` on uploads that carry an object lock; never used
/// to identify or authenticate anything.
public enum MD5 {
    public static func digest(_ data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        var length: UInt32 = 0
        data.withUnsafeBytes { input in
            out.withUnsafeMutableBufferPointer { _ = EVP_Digest(input.baseAddress, input.count, $0.baseAddress, &length, Algorithms.md5, nil) }
        }
        return out
    }
}

public enum Random {
    public static func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let ok = out.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32(count)) }
        precondition(ok == 1, "the system's random generator failed; refusing to continue")
        return out
    }
}

/// SHA-256, used to name stored files.
public enum SHA256 {
    public static func hash(_ data: UnsafeRawBufferPointer) -> BlobID {
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        out.withUnsafeMutableBufferPointer { digest in
            _ = EVP_Digest(data.baseAddress, data.count, digest.baseAddress, &length, Algorithms.sha256, nil)
        }
        return out.withUnsafeBytes { BlobID(bytes: $0.baseAddress!) }
    }

    public static func hash(_ data: [UInt8]) -> BlobID {
        data.withUnsafeBytes { hash($0) }
    }

    /// Incremental hashing, for files too large to hold in memory.
    public final class Context {
        private let ctx: OpaquePointer
        public init() {
            ctx = EVP_MD_CTX_new()
            EVP_DigestInit_ex(ctx, Algorithms.sha256, nil)
        }
        public func update(_ data: UnsafeRawBufferPointer) {
            if data.count > 0 { EVP_DigestUpdate(ctx, data.baseAddress, data.count) }
        }
        public func update(_ data: [UInt8]) { data.withUnsafeBytes { update($0) } }
        public func finish() -> BlobID {
            var out = [UInt8](repeating: 0, count: 32)
            var length: UInt32 = 0
            out.withUnsafeMutableBufferPointer { _ = EVP_DigestFinal_ex(ctx, $0.baseAddress, &length) }
            return out.withUnsafeBytes { BlobID(bytes: $0.baseAddress!) }
        }
        deinit { EVP_MD_CTX_free(ctx) }
    }
}

/// HMAC-SHA256 under a fixed key. The key's inner and outer pads are hashed once, so each call only
/// copies two prepared states; one instance per thread.
public final class BlobHasher {
    private let inner: OpaquePointer
    private let outer: OpaquePointer
    private let work: OpaquePointer

    public init(key: SecretBytes) {
        precondition(key.count <= 64)
        var ipad = [UInt8](repeating: 0x36, count: 64)
        var opad = [UInt8](repeating: 0x5c, count: 64)
        key.withUnsafeBytes { k in
            for i in 0..<k.count { ipad[i] ^= k[i]; opad[i] ^= k[i] }
        }
        inner = EVP_MD_CTX_new()
        outer = EVP_MD_CTX_new()
        work = EVP_MD_CTX_new()
        EVP_DigestInit_ex(inner, Algorithms.sha256, nil)
        EVP_DigestUpdate(inner, ipad, 64)
        EVP_DigestInit_ex(outer, Algorithms.sha256, nil)
        EVP_DigestUpdate(outer, opad, 64)
        OPENSSL_cleanse(&ipad, 64)
        OPENSSL_cleanse(&opad, 64)
    }

    public func id(of data: UnsafeRawBufferPointer) -> BlobID {
        var digest = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        var length: UInt32 = 0
        return withUnsafeMutableBytes(of: &digest) { d -> BlobID in
            let out = d.baseAddress!.assumingMemoryBound(to: UInt8.self)
            EVP_MD_CTX_copy_ex(work, inner)
            if data.count > 0 { EVP_DigestUpdate(work, data.baseAddress, data.count) }
            EVP_DigestFinal_ex(work, out, &length)
            EVP_MD_CTX_copy_ex(work, outer)
            EVP_DigestUpdate(work, out, 32)
            EVP_DigestFinal_ex(work, out, &length)
            return BlobID(bytes: UnsafeRawPointer(out))
        }
    }

    public func id(of data: [UInt8]) -> BlobID { data.withUnsafeBytes { id(of: $0) } }

    deinit {
        EVP_MD_CTX_free(inner)
        EVP_MD_CTX_free(outer)
        EVP_MD_CTX_free(work)
    }
}

/// AES-256-GCM with a random 96-bit nonce per message. A sealed message is
/// `nonce (12) ‖ ciphertext ‖ tag (16)`; `context` is authenticated but not stored.
/// One instance per thread.
public final class Sealer {
    public static let nonceSize = 12
    public static let tagSize = 16
    public static let overhead = nonceSize + tagSize

    private let ctx: OpaquePointer
    private let key: SecretBytes

    public init(key: SecretBytes) {
        precondition(key.count == 32)
        self.key = key
        ctx = EVP_CIPHER_CTX_new()
    }

    deinit { EVP_CIPHER_CTX_free(ctx) }

    /// Writes the sealed form of `plaintext` to `out`, which must hold `plaintext.count + overhead`.
    public func seal(_ plaintext: UnsafeRawBufferPointer, context: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) {
        let nonce = out.assumingMemoryBound(to: UInt8.self)
        // A repeated nonce would break GCM: never continue without fresh randomness.
        precondition(RAND_bytes(nonce, Int32(Sealer.nonceSize)) == 1, "the system's random generator failed; refusing to encrypt")
        key.withUnsafeBytes { k in
            _ = EVP_EncryptInit_ex(ctx, Algorithms.aes256gcm, nil, k.baseAddress!.assumingMemoryBound(to: UInt8.self), nonce)
        }
        var outLength: Int32 = 0
        if context.count > 0 {
            EVP_EncryptUpdate(ctx, nil, &outLength, context.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(context.count))
        }
        let body = nonce + Sealer.nonceSize
        var written = 0
        if plaintext.count > 0 {
            EVP_EncryptUpdate(ctx, body, &outLength, plaintext.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(plaintext.count))
            written = Int(outLength)
        }
        EVP_EncryptFinal_ex(ctx, body + written, &outLength)
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, Int32(Sealer.tagSize), body + plaintext.count)
    }

    public func seal(_ plaintext: [UInt8], context: [UInt8]) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: plaintext.count + Sealer.overhead) { buffer, count in
            plaintext.withUnsafeBytes { p in
                context.withUnsafeBytes { c in seal(p, context: c, into: UnsafeMutableRawPointer(buffer.baseAddress!)) }
            }
            count = plaintext.count + Sealer.overhead
        }
    }

    /// Opens a sealed message into `out` (room for `sealed.count - overhead` bytes); false when the
    /// message does not authenticate under this key and context.
    public func open(_ sealed: UnsafeRawBufferPointer, context: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) -> Bool {
        guard sealed.count >= Sealer.overhead else { return false }
        let nonce = sealed.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let bodyLength = sealed.count - Sealer.overhead
        key.withUnsafeBytes { k in
            _ = EVP_DecryptInit_ex(ctx, Algorithms.aes256gcm, nil, k.baseAddress!.assumingMemoryBound(to: UInt8.self), nonce)
        }
        var outLength: Int32 = 0
        if context.count > 0 {
            EVP_DecryptUpdate(ctx, nil, &outLength, context.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(context.count))
        }
        let output = out.assumingMemoryBound(to: UInt8.self)
        if bodyLength > 0 {
            EVP_DecryptUpdate(ctx, output, &outLength, nonce + Sealer.nonceSize, Int32(bodyLength))
        }
        let tag = UnsafeMutableRawPointer(mutating: nonce + Sealer.nonceSize + bodyLength)
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, Int32(Sealer.tagSize), tag)
        return EVP_DecryptFinal_ex(ctx, output + bodyLength, &outLength) == 1
    }

    public func open(_ sealed: [UInt8], context: [UInt8]) -> [UInt8]? {
        guard sealed.count >= Sealer.overhead else { return nil }
        var ok = false
        let plain = [UInt8](unsafeUninitializedCapacity: sealed.count - Sealer.overhead) { buffer, count in
            sealed.withUnsafeBytes { s in
                context.withUnsafeBytes { c in
                    ok = open(s, context: c, into: UnsafeMutableRawPointer(buffer.baseAddress ?? UnsafeMutablePointer<UInt8>.allocate(capacity: 1)))
                }
            }
            count = sealed.count - Sealer.overhead
        }
        return ok ? plain : nil
    }
}

public enum Scrypt {
    public struct Parameters: Codable, Sendable, Equatable {
        public var n: UInt64
        public var r: UInt64
        public var p: UInt64
        public init(n: UInt64, r: UInt64, p: UInt64) { self.n = n; self.r = r; self.p = p }
        /// 2^15 × 8 × 1: about 32 MiB and a tenth of a second on a small server.
        public static let standard = Parameters(n: 1 << 15, r: 8, p: 1)
    }

    public static func deriveKey(password: [UInt8], salt: [UInt8], parameters: Parameters, length: Int) throws -> SecretBytes {
        // Bounds keep a planted key file from exhausting memory: at most 2^22 × 32 × 128 B = 16 GiB would be
        // absurd, so r ≤ 32 and N ≤ 2^22 with N·r ≤ 2^24 (2 GiB).
        guard parameters.n >= 2, parameters.n.nonzeroBitCount == 1, parameters.n <= 1 << 22,
              (1...32).contains(parameters.r), (1...16).contains(parameters.p), parameters.n * parameters.r <= 1 << 24 else {
            throw KhoError(.integrity, "A key file asks for scrypt parameters N=\(parameters.n) r=\(parameters.r) p=\(parameters.p) outside the accepted bounds: the key file is damaged or planted.")
        }
        var out = [UInt8](repeating: 0, count: length)
        let maxMemory = parameters.n * parameters.r * 128 * 2 + (1 << 20)
        let ok = EVP_PBE_scrypt(password.map { CChar(bitPattern: $0) }, password.count, salt, salt.count,
                                parameters.n, parameters.r, parameters.p, maxMemory, &out, length)
        guard ok == 1 else {
            throw KhoError(.failure, "scrypt key derivation failed with N=\(parameters.n) r=\(parameters.r) p=\(parameters.p): the parameters stored with the key are not usable.")
        }
        defer { OPENSSL_cleanse(&out, length) }
        return SecretBytes(out)
    }
}
