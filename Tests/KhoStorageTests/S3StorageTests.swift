import Dispatch
import Foundation
import KhoCore
import KhoSupport
import KhoTestSupport
import KhoStorage
import Testing

/// Signature Version 4 against the examples of AWS's documentation (the values are AWS's own).
@Suite struct S3SignatureTests {
    @Test func signingKeyOfTheDocumentation() throws {
        // "Examples of how to derive a signing key for Signature Version 4".
        let key = try SigV4.signingKey(secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", date: "20120215", region: "us-east-1", service: "iam")
        #expect(Hex.encode(key) == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d")
    }

    @Test func getVanillaOfTheTestSuite() throws {
        // The "get-vanilla" case of the Signature Version 4 test suite.
        let signed = try SigV4.sign(method: "GET", encodedPath: "/", query: [],
                                headers: ["Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"],
                                payloadHash: SigV4.emptyPayloadHash,
                                credentials: S3Credentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                                region: "us-east-1", service: "service", time: "20150830T123600Z")
        #expect(signed.canonicalRequest == "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + SigV4.emptyPayloadHash)
        #expect(signed.signature == "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        #expect(signed.authorization == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    }

    static let s3Example = S3Credentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")

    @Test func s3GetObjectWithRange() throws {
        // "Signature Calculations for the Authorization Header: Transferring Payload in a Single
        // Chunk", example GET Object.
        let signed = try SigV4.sign(method: "GET", encodedPath: "/test.txt", query: [],
                                headers: ["Host": "examplebucket.s3.amazonaws.com", "Range": "bytes=0-9",
                                          "x-amz-content-sha256": SigV4.emptyPayloadHash, "x-amz-date": "20130524T000000Z"],
                                payloadHash: SigV4.emptyPayloadHash, credentials: Self.s3Example,
                                region: "us-east-1", service: "s3", time: "20130524T000000Z")
        #expect(signed.signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    @Test func s3PutObject() throws {
        // The same page, example PUT Object: a `$` in the key is encoded, the payload is hashed.
        let body = Array("Welcome to Amazon S3.".utf8)
        let hash = try SHA256.hash(body).hex
        #expect(hash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        let signed = try SigV4.sign(method: "PUT", encodedPath: "/" + SigV4.uriEncode("test$file.text", keepSlash: true), query: [],
                                headers: ["Host": "examplebucket.s3.amazonaws.com", "Date": "Fri, 24 May 2013 00:00:00 GMT",
                                          "x-amz-date": "20130524T000000Z", "x-amz-storage-class": "REDUCED_REDUNDANCY",
                                          "x-amz-content-sha256": hash],
                                payloadHash: hash, credentials: Self.s3Example, region: "us-east-1", service: "s3", time: "20130524T000000Z")
        #expect(signed.canonicalRequest.hasPrefix("PUT\n/test%24file.text\n\n"))
        #expect(signed.signature == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    }

    @Test func s3ListObjects() throws {
        // The same page, example GET Bucket (List Objects): the query is sorted by name.
        let signed = try SigV4.sign(method: "GET", encodedPath: "/", query: [("prefix", "J"), ("max-keys", "2")],
                                headers: ["Host": "examplebucket.s3.amazonaws.com", "x-amz-content-sha256": SigV4.emptyPayloadHash,
                                          "x-amz-date": "20130524T000000Z"],
                                payloadHash: SigV4.emptyPayloadHash, credentials: Self.s3Example, region: "us-east-1", service: "s3",
                                time: "20130524T000000Z")
        #expect(signed.canonicalRequest.hasPrefix("GET\n/\nmax-keys=2&prefix=J\n"))
        #expect(signed.signature == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    @Test func encoding() {
        #expect(SigV4.uriEncode("a b/c~d_e-f.g+h=i&é", keepSlash: true) == "a%20b/c~d_e-f.g%2Bh%3Di%26%C3%A9")
        #expect(SigV4.uriEncode("agency/data/", keepSlash: false) == "agency%2Fdata%2F")
        #expect(SigV4.canonicalQuery([("prefix", "p/data/"), ("list-type", "2"), ("continuation-token", "a+b=")])
                == "continuation-token=a%2Bb%3D&list-type=2&prefix=p%2Fdata%2F")
        #expect(SigV4.timestamps(Date(timeIntervalSince1970: 1_440_938_160)).time == "20150830T123600Z")
    }

    @Test func hmacWithALongKeyHashesTheKeyFirst() throws {
        // RFC 4231 test case 6: a 131-byte key.
        let key = [UInt8](repeating: 0xaa, count: 131)
        let mac = try SigV4.hmac(key: key, Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8))
        #expect(Hex.encode(mac) == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }

    @Test func credentialsFromEnvironmentAndFile() throws {
        let env = try S3Credentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "tok"])
        #expect(env == S3Credentials(accessKeyID: "AKID", secretAccessKey: "secret", sessionToken: "tok"))
        expectKhoError(.usage, "an ID without a secret") { _ = try S3Credentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "AKID", "HOME": "/nonexistent"]) }
        try withTemporaryFolder { (folder: String) throws in
            let file = folder + "/credentials"
            try Data("""
            [other]
            aws_access_key_id = WRONG
            aws_secret_access_key = WRONG

            # the one kho uses
            [default]
            aws_access_key_id = AKIDFILE
            aws_secret_access_key = s3cr3t/with+signs=
            [profile night]
            aws_access_key_id=NIGHT
            aws_secret_access_key=nightsecret

            """.utf8).write(to: URL(fileURLWithPath: file))
            #expect(try S3Credentials.fromEnvironment(["AWS_SHARED_CREDENTIALS_FILE": file])
                    == S3Credentials(accessKeyID: "AKIDFILE", secretAccessKey: "s3cr3t/with+signs="))
            #expect(try S3Credentials.fromEnvironment(["AWS_SHARED_CREDENTIALS_FILE": file, "AWS_PROFILE": "night"])
                    == S3Credentials(accessKeyID: "NIGHT", secretAccessKey: "nightsecret"))
            expectKhoError(.usage, "no credentials anywhere") { _ = try S3Credentials.fromEnvironment(["HOME": folder + "/nothing"]) }
        }
    }

    @Test func configurationFromEnvironment() throws {
        let base = ["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"]
        let defaults = try S3Configuration.fromEnvironment(base)
        #expect(defaults.region == "us-east-1")
        #expect(defaults.timeout == 60)
        let set = try S3Configuration.fromEnvironment(base.merging(["AWS_DEFAULT_REGION": "ap-southeast-1", "KHO_S3_REGION": "vn-qng-1",
                                                                    "KHO_S3_TIMEOUT": "7.5", "KHO_S3_RETRIES": "0"]) { $1 })
        #expect(set.region == "vn-qng-1")
        #expect(set.timeout == 7.5)
        #expect(set.retries == 0)
        expectKhoError(.usage) { _ = try S3Configuration.fromEnvironment(base.merging(["KHO_S3_TIMEOUT": "soon"]) { $1 }) }
        // A private CA file that is not there is a usage error (S3TLSTests tries one that is).
        let missing = #expect(throws: KhoError.self) { _ = try S3Configuration.fromEnvironment(base.merging(["KHO_S3_CA_FILE": "/nonexistent/kho/ca.pem"]) { $1 }) }
        #expect(missing?.kind == .usage && missing?.message.contains("KHO_S3_CA_FILE=/nonexistent/kho/ca.pem does not exist") == true)
    }

    @Test func addresses() throws {
        let full = try S3Address.parse("s3:https://s3.qngai.gov.vn:9000/backups/agency/so-tu-phap/")
        #expect(full == S3Address(scheme: "https", host: "s3.qngai.gov.vn", port: 9000, bucket: "backups", prefix: "agency/so-tu-phap"))
        #expect(full.description == "s3:https://s3.qngai.gov.vn:9000/backups/agency/so-tu-phap")
        let bare = try S3Address.parse("s3:http://127.0.0.1/kho-test")
        #expect(bare == S3Address(scheme: "http", host: "127.0.0.1", port: nil, bucket: "kho-test", prefix: ""))
        let v6 = try S3Address.parse("s3:http://[::1]:9000/bucket/x")
        #expect(v6.host == "[::1]" && v6.port == 9000 && v6.prefix == "x")
        for bad in ["s3://bucket/prefix", "s3:ftp://host/bucket", "s3:http://host", "s3:http://host/", "s3:http://host:port/bucket",
                    "s3:http://host/Bucket_Name", "s3:http://user@host/bucket", "s3:http://host/bucket?x=1", "s3:http://host:70000/bucket"] {
            expectKhoError(.usage, bad) { _ = try S3Address.parse(bad) }
        }
        // The factory sends s3: addresses to S3 and everything else to a folder.
        #expect(try StorageFactory.make(location: "/srv/kho/repo") is LocalStorage)
        let s3 = try StorageFactory.make(location: "s3:http://127.0.0.1:1/kho-test/p", checkAccess: false,
                                         environment: ["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"])
        #expect(s3 is S3Storage)
        #expect(s3.location == "s3:http://127.0.0.1:1/kho-test/p")
    }
}

/// The S3 storage against moto's S3 server on loopback, with signatures checked.
@Suite(.motoServer, .enabled(if: S3TestSupport.isAvailable, Comment(rawValue: S3TestSupport.unavailableReason ?? "")))
struct S3StorageTests {
    @Test(arguments: StorageConformance.Check.allCases)
    func conformance(_ check: StorageConformance.Check) throws {
        let server = try MotoServer.requireShared()
        try StorageConformance { try server.freshStorage() }.run(check)
    }

    /// moto, like AWS and MinIO, refuses a PUT with `If-None-Match: *` over an existing object:
    /// the probe finds that, leaves nothing behind, and the race check above ran on it.
    @Test func conditionalWritesAreFoundAndUsed() throws {
        let server = try MotoServer.requireShared()
        let storage = try server.freshStorage()
        #expect(storage.honoursConditionalWrites == nil)
        let handle = Handle(.wal, "0000000000000001/0000000100000000/000000010000000000000001")
        #expect(try storage.saveIfAbsent(handle, data: [1]))
        #expect(storage.honoursConditionalWrites == true)
        #expect(try !storage.saveIfAbsent(handle, data: [2]))
        #expect(try storage.load(handle) == [1])
        #expect(try storage.list(.lock).isEmpty)
        // The probe object is gone, not just hidden from listings.
        #expect(try storage.list(.wal) == [StoredFile(name: handle.name, size: 1)])
        try storage.remove(handle)
        #expect(try storage.isEmpty())
    }

    /// On a server that ignores `If-None-Match` (acted here), HEAD then PUT still never replaces a
    /// stored object; only two writers of one name at the same moment could both store.
    @Test func theFallbackWithoutConditionalWritesNeverReplaces() throws {
        let server = try MotoServer.requireShared()
        try StorageConformance {
            let storage = try server.freshStorage()
            storage.assumeConditionalWrites(false)
            return storage
        }.run(.saveIfAbsentNeverReplaces)
    }

    @Test func listingsOfManyPages() throws {
        let server = try MotoServer.requireShared()
        var configuration = server.configuration()
        configuration.listPageSize = 7
        // The suite's own check, with every listing cut into pages of 7 objects.
        try StorageConformance { try server.freshStorage(configuration: configuration) }.run(.listReturnsExactlyWhatWasSaved)
        try StorageConformance { try server.freshStorage(configuration: configuration) }.run(.listUnderNestedFolders)
        let storage = try server.freshStorage(configuration: configuration)
        var rng = SplitMix64(seed: 38)
        var names = Set<String>()
        for _ in 0..<50 {
            let name = rng.name()
            names.insert(name)
            try storage.save(Handle(.index, name), data: [1])
        }
        #expect(Set(try storage.list(.index).map(\.name)) == names)
        #expect(try !storage.isEmpty())
    }

    @Test func prefixesKeepRepositoriesApart() throws {
        let server = try MotoServer.requireShared()
        let base = "s3:\(server.endpoint)/\(MotoServer.spareBucket)"
        let one = try S3Storage(location: base + "/site/one", configuration: server.configuration())
        let oneAndMore = try S3Storage(location: base + "/site/one-more", configuration: server.configuration())
        let top = try S3Storage(location: base, configuration: server.configuration())
        #expect(try one.isEmpty() && oneAndMore.isEmpty() && top.isEmpty())
        var rng = SplitMix64(seed: 30)
        let pack = rng.name()
        try one.save(Handle(.data, pack), data: [1, 2, 3])
        try one.save(.config, data: [4])
        // A prefix that merely starts with the same letters is another repository.
        #expect(try oneAndMore.isEmpty())
        #expect(try oneAndMore.list(.data).isEmpty)
        #expect(try !top.isEmpty())
        // The bucket's top is a repository of its own: the files below site/one are not its files.
        #expect(try top.list(.data).isEmpty)
        #expect(try !top.exists(.config))
        #expect(try one.list(.data) == [StoredFile(name: pack, size: 3)])
        try one.remove(Handle(.data, pack))
        try one.remove(.config)
        #expect(try top.isEmpty())
    }

    @Test func wrongSecretIsRefusedAtOnce() throws {
        let server = try MotoServer.requireShared()
        var configuration = server.configuration(retries: 5)
        configuration.credentials.secretAccessKey = "not-the-secret"
        configuration.retryDelay = 2
        let storage = try server.freshStorage(configuration: configuration)
        let started = Date()
        let error = #expect(throws: KhoError.self) { try storage.checkAccess() }
        #expect(Date().timeIntervalSince(started) < 1.5, "a refused credential is not tried again")
        #expect(error?.kind == .storage)
        #expect(error?.retryable == false)
        #expect(error?.message.contains("refused the credentials") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("SignatureDoesNotMatch") == true, "\(error?.message ?? "")")
        // Every verb says the same, not "missing".
        let handle = Handle(.snapshot, randomName(31))
        for (verb, body) in [("save", { try storage.save(handle, data: [1]) }), ("load", { _ = try storage.load(handle) }),
                             ("list", { _ = try storage.list(.index) }), ("remove", { try storage.remove(handle) })] as [(String, () throws -> Void)] {
            let error = #expect(throws: KhoError.self, "\(verb)") { try body() }
            #expect(error?.kind == .storage, "\(verb): \(error?.message ?? "")")
            #expect(error?.message.contains("refused the credentials") == true, "\(verb): \(error?.message ?? "")")
        }
    }

    @Test func unknownAccessKeyIsRefused() throws {
        let server = try MotoServer.requireShared()
        var configuration = server.configuration()
        configuration.credentials.accessKeyID = "AKIANOTKNOWNATALL000"
        let error = #expect(throws: KhoError.self) { try server.freshStorage(configuration: configuration).checkAccess() }
        #expect(error?.message.contains("InvalidAccessKeyId") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("AKIANOTKNOWNATALL000") == true)
    }

    @Test func keyWithoutPermissionIsRefused() throws {
        let server = try MotoServer.requireShared()
        // `reader` may only GetObject: listing is denied.
        let error = #expect(throws: KhoError.self) { try server.freshStorage(configuration: server.configuration("reader")).checkAccess() }
        #expect(error?.kind == .storage)
        #expect(error?.message.contains("refused the credentials") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("AccessDenied") == true, "\(error?.message ?? "")")
    }

    @Test func missingBucketIsReportedAtOnce() throws {
        let server = try MotoServer.requireShared()
        var configuration = server.configuration(retries: 5)
        configuration.retryDelay = 2
        let storage = try server.freshStorage(bucket: "kho-no-such-bucket", configuration: configuration)
        let handle = Handle(.index, randomName(32))
        let started = Date()
        let cases: [(String, () throws -> Void)] = [
            ("check", { try storage.checkAccess() }), ("isEmpty", { _ = try storage.isEmpty() }),
            ("save", { try storage.save(handle, data: [1]) }), ("load", { _ = try storage.load(handle) }),
            ("ranged load", { _ = try storage.load(handle, offset: 1, length: 2) }), ("stat", { _ = try storage.stat(handle) }),
            ("list", { _ = try storage.list(.snapshot) }), ("list config", { _ = try storage.list(.config) }),
            ("remove", { try storage.remove(handle) }),
        ]
        for (verb, body) in cases {
            let error = #expect(throws: KhoError.self, "\(verb)") { try body() }
            #expect(error?.kind == .storage, "\(verb): \(error?.message ?? "")")
            #expect(error?.message.contains("bucket kho-no-such-bucket does not exist") == true, "\(verb): \(error?.message ?? "")")
        }
        #expect(Date().timeIntervalSince(started) < 3, "nothing was tried again")
    }

    @Test func unreachableServerIsRetriedThenReported() throws {
        let server = try MotoServer.requireShared()
        let port = try S3TestSupport.freePort()
        let storage = try server.freshStorage(port: port, configuration: server.configuration(retries: 2))
        let error = #expect(throws: KhoError.self) { _ = try storage.load(Handle(.snapshot, randomName(33))) }
        #expect(error?.kind == .storage)
        #expect(error?.retryable == true)
        #expect(error?.message.contains("did not answer") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("3 attempts") == true, "\(error?.message ?? "")")
    }

    @Test func serverThatGoesAwayAndComesBack() throws {
        let server = try MotoServer.requireShared()
        let proxy = try TCPProxy(target: server.port)
        let storage = try server.freshStorage(port: proxy.port, configuration: server.configuration(retries: 1))
        var rng = SplitMix64(seed: 34)
        let first = Handle(.data, rng.name())
        let data = rng.bytes(300_000)
        try storage.save(first, data: data)
        proxy.kill()
        let second = Handle(.data, rng.name())
        let error = #expect(throws: KhoError.self) { try storage.save(second, data: data) }
        #expect(error?.kind == .storage && error?.retryable == true, "\(error?.message ?? "")")
        try proxy.start()
        // The server is back with what it had; nothing half-written appeared meanwhile.
        #expect(try storage.load(first) == data)
        #expect(try !storage.exists(second))
        try storage.save(second, data: data)
        #expect(Set(try storage.list(.data).map(\.name)) == [first.name, second.name])
    }

    @Test func slowServerTimesOutAndIsTriedAgain() throws {
        let server = try MotoServer.requireShared()
        // The first two connections get no answer for 30 s; requests time out after 1 s.
        let proxy = try TCPProxy(target: server.port, stallFirst: 2, stallSeconds: 30)
        let storage = try server.freshStorage(port: proxy.port, configuration: server.configuration(timeout: 1, retries: 3))
        var rng = SplitMix64(seed: 35)
        let handle = Handle(.index, rng.name())
        let data = rng.bytes(10_000)
        let started = Date()
        try storage.save(handle, data: data)
        let elapsed = Date().timeIntervalSince(started)
        #expect(elapsed >= 1.5, "two timeouts of 1 s came before success, took \(elapsed) s")
        #expect(elapsed < 20, "took \(elapsed) s")
        #expect(try storage.load(handle) == data)
    }

    @Test func slowServerBeyondTheRetriesIsReported() throws {
        let server = try MotoServer.requireShared()
        let proxy = try TCPProxy(target: server.port, stallFirst: 100, stallSeconds: 60)
        let storage = try server.freshStorage(port: proxy.port, configuration: server.configuration(timeout: 0.5, retries: 2))
        let error = #expect(throws: KhoError.self) { _ = try storage.isEmpty() }
        #expect(error?.kind == .storage && error?.retryable == true)
        #expect(error?.message.contains("timed out") == true, "\(error?.message ?? "")")
    }

    @Test func untrustedCertificateIsRefusedAtOnce() throws {
        let server = try MotoServer.requireShared()
        let folder = try S3TestSupport.temporaryFolder("tls")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let (process, ready) = try S3TestSupport.start(["tls"], folder: folder)
        defer { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        let port = try #require(ready["port"] as? Int)
        var configuration = server.configuration(retries: 5)
        configuration.retryDelay = 2
        let storage = try S3Storage(location: "s3:https://127.0.0.1:\(port)/kho-test/x", configuration: configuration)
        let started = Date()
        let error = #expect(throws: KhoError.self) { try storage.checkAccess() }
        #expect(Date().timeIntervalSince(started) < 1.5, "a refused certificate is not tried again")
        #expect(error?.kind == .storage && error?.retryable == false)
        #expect(error?.message.contains("TLS certificate is refused") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("update-ca-certificates") == true, "\(error?.message ?? "")")
    }

    @Test func objectRemovedBehindOurBackIsMissing() throws {
        let server = try MotoServer.requireShared()
        let storage = try server.freshStorage()
        // Another client with the same address (another host, or an attacker) removes a pack.
        let other = try S3Storage(location: storage.location, configuration: server.configuration())
        var rng = SplitMix64(seed: 36)
        let handle = Handle(.data, rng.name())
        try storage.save(handle, data: rng.bytes(5000))
        #expect(try storage.load(handle, offset: 100, length: 10).count == 10)
        try other.remove(handle)
        for (verb, body) in [("load", { _ = try storage.load(handle) }), ("ranged load", { _ = try storage.load(handle, offset: 100, length: 10) }),
                             ("stat", { _ = try storage.stat(handle) })] as [(String, () throws -> Void)] {
            let error = #expect(throws: KhoError.self, "\(verb)") { try body() }
            #expect(error?.kind == .integrity, "\(verb): \(error?.message ?? "")")
            #expect(error?.message.contains(handle.path) == true, "\(verb): \(error?.message ?? "")")
        }
    }

    @Test func manyParallelRangedReads() throws {
        let server = try MotoServer.requireShared()
        let storage = try server.freshStorage()
        var rng = SplitMix64(seed: 37)
        let handle = Handle(.data, rng.name())
        let data = rng.bytes(2 << 20)
        try storage.save(handle, data: data)
        let failures = Failures()
        DispatchQueue.concurrentPerform(iterations: 64) { i in
            let offset = i * 30_000
            do {
                let got = try storage.load(handle, offset: offset, length: 20_000)
                if got != Array(data[offset..<(offset + 20_000)]) { failures.append("range \(i) differs") }
            } catch {
                failures.append("range \(i): \(error)")
            }
        }
        #expect(failures.all.isEmpty, "\(failures.all)")
    }
}

/// A repository file name from a seeded generator.
private func randomName(_ seed: UInt64) -> String {
    var rng = SplitMix64(seed: seed)
    return rng.name()
}
