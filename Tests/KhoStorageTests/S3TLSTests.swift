import Foundation
import KhoCore
import KhoSupport
import KhoTestSupport
import KhoStorage
import Testing

// HTTPS to an S3 server whose certificate a private CA signed: moto behind a TLS front
// (scripts/lib/s3-test-server.py tls-proxy), with a CA and certificates made by `openssl` for
// the run. Without `KHO_S3_CA_FILE` the certificate is refused at once (one connection, no
// retries); with it the storage works, and the conformance suite passes over TLS.

/// `KHO_S3_CA_FILE` is read when the configuration is made: what is wrong with it is a usage error.
@Suite(.enabled(if: PrivateCA.unavailableReason == nil, Comment(rawValue: PrivateCA.unavailableReason ?? "")))
struct S3CAFileTests {
    let credentials = ["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"]

    func configuration(caFile: String) throws -> S3Configuration {
        try S3Configuration.fromEnvironment(credentials.merging(["KHO_S3_CA_FILE": caFile]) { $1 })
    }

    @Test func aPEMFileOfOneOrMoreCertificatesIsTaken() throws {
        let ca = try PrivateCA()
        #expect(try configuration(caFile: ca.certificateFile).caFile == ca.certificateFile)
        // A bundle: two CAs in one file.
        let other = try PrivateCA(name: "another test CA")
        let bundle = ca.folder + "/bundle.pem"
        let both = try Data(contentsOf: URL(fileURLWithPath: ca.certificateFile)) + Data(contentsOf: URL(fileURLWithPath: other.certificateFile))
        try both.write(to: URL(fileURLWithPath: bundle))
        #expect(try configuration(caFile: bundle).caFile == bundle)
        // Unset (or blank): only the system's store.
        #expect(try S3Configuration.fromEnvironment(credentials).caFile == nil)
        #expect(try S3Configuration.fromEnvironment(credentials.merging(["KHO_S3_CA_FILE": " "]) { $1 }).caFile == nil)
    }

    @Test func wrongFilesAreUsageErrors() throws {
        let ca = try PrivateCA()
        let notPEM = ca.folder + "/not-pem.txt"
        try Data("this is not a certificate\n".utf8).write(to: URL(fileURLWithPath: notPEM))
        let keyOnly = ca.folder + "/ca.key"
        let cases: [(file: String, says: String)] = [
            (ca.folder + "/no-such-ca.pem", "does not exist"),
            (ca.folder, "is a folder"),
            (notPEM, "holds no PEM certificate"),
            // A private key is PEM, but not a certificate.
            (keyOnly, "holds no PEM certificate"),
        ]
        for (file, says) in cases {
            let error = #expect(throws: KhoError.self, "\(file)") { _ = try configuration(caFile: file) }
            #expect(error?.kind == .usage, "\(file): \(error?.message ?? "")")
            #expect(error?.message.contains("KHO_S3_CA_FILE=\(file) \(says)") == true, "\(error?.message ?? "")")
            // One sentence that says what to do.
            #expect(error?.message.contains("set KHO_S3_CA_FILE to the PEM file of the CA") == true, "\(error?.message ?? "")")
        }
    }
}

@Suite(.privateCATLSServer,
       .enabled(if: PrivateCATLSServer.unavailableReason == nil, Comment(rawValue: PrivateCATLSServer.unavailableReason ?? "")))
struct S3TLSTests {
    @Test func withoutTheCAFileTheCertificateIsRefusedAtOnce() throws {
        let server = try PrivateCATLSServer.requireShared()
        // A front of its own, so that its connection count is this test's alone.
        let (certificate, key) = try server.ca.serverCertificate("alone")
        let front = try TLSFront(target: server.moto.port, certificate: certificate, key: key)
        var configuration = try server.configuration(caFile: nil, retries: 5)
        configuration.retryDelay = 2
        let storage = try server.freshStorage(port: front.port, configuration: configuration)
        let error = #expect(throws: KhoError.self) { try storage.checkAccess() }
        #expect(error?.kind == .storage && error?.retryable == false, "\(error?.message ?? "")")
        let message = error?.message ?? ""
        #expect(message.contains("TLS certificate is refused"), "\(message)")
        #expect(message.contains("CERTIFICATE_VERIFY_FAILED"), "\(message)")
        #expect(message.contains("set KHO_S3_CA_FILE to that CA's PEM file"), "\(message)")
        #expect(!message.contains("attempts"), "not tried again: \(message)")
        // One connection: the refused certificate was not tried again.
        #expect(front.connections == 1)
        // Every verb says the same.
        var rng = SplitMix64(seed: 61)
        let handle = Handle(.index, rng.name())
        for (verb, body) in [("save", { try storage.save(handle, data: [1]) }), ("load", { _ = try storage.load(handle) }),
                             ("list", { _ = try storage.list(.snapshot) }), ("remove", { try storage.remove(handle) })] as [(String, () throws -> Void)] {
            let error = #expect(throws: KhoError.self, "\(verb)") { try body() }
            #expect(error?.message.contains("TLS certificate is refused") == true, "\(verb): \(error?.message ?? "")")
        }
        #expect(front.connections == 5)
    }

    @Test(arguments: StorageConformance.Check.allCases)
    func conformanceOverTLSWithTheCAFile(_ check: StorageConformance.Check) throws {
        let server = try PrivateCATLSServer.requireShared()
        let configuration = try server.configuration(caFile: server.ca.certificateFile)
        try StorageConformance { try server.freshStorage(configuration: configuration) }.run(check)
    }

    @Test func saveLoadListRemoveByHostName() throws {
        let server = try PrivateCATLSServer.requireShared()
        // The certificate names localhost too.
        let storage = try server.freshStorage(host: "localhost", configuration: server.configuration(caFile: server.ca.certificateFile))
        try storage.checkAccess()
        var rng = SplitMix64(seed: 62)
        let handle = Handle(.data, rng.name())
        let data = rng.bytes(3 << 20)
        try storage.save(handle, data: data)
        #expect(try storage.load(handle) == data)
        #expect(try storage.load(handle, offset: 1_000_000, length: 1000) == Array(data[1_000_000..<1_001_000]))
        #expect(try storage.list(.data) == [StoredFile(name: handle.name, size: data.count)])
        try storage.remove(handle)
        #expect(try storage.isEmpty())
    }

    @Test func aCAFileOfAnotherCAIsRefusedAndNamed() throws {
        let server = try PrivateCATLSServer.requireShared()
        let other = try PrivateCA(name: "not the server's CA")
        let storage = try server.freshStorage(configuration: server.configuration(caFile: other.certificateFile, retries: 5))
        let error = #expect(throws: KhoError.self) { try storage.checkAccess() }
        #expect(error?.kind == .storage && error?.retryable == false, "\(error?.message ?? "")")
        #expect(error?.message.contains("TLS certificate is refused") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("KHO_S3_CA_FILE=\(other.certificateFile)") == true, "\(error?.message ?? "")")
    }

    @Test func aCertificateForAnotherHostIsRefused() throws {
        let server = try PrivateCATLSServer.requireShared()
        // Signed by the trusted CA, but for another name than the address's host.
        let (certificate, key) = try server.ca.serverCertificate("elsewhere", names: ["s3.elsewhere.example"])
        let front = try TLSFront(target: server.moto.port, certificate: certificate, key: key)
        let storage = try server.freshStorage(port: front.port, configuration: server.configuration(caFile: server.ca.certificateFile, retries: 5))
        let error = #expect(throws: KhoError.self) { try storage.checkAccess() }
        #expect(error?.kind == .storage && error?.retryable == false, "\(error?.message ?? "")")
        #expect(error?.message.contains("TLS certificate is refused (it is not for 127.0.0.1)") == true, "\(error?.message ?? "")")
        #expect(front.connections == 1)
    }
}

/// How the HTTP client's answers are handled, against a server that always gives the same answer:
/// redirects are reported, not followed; 5xx, 429 and 400 RequestTimeout are tried again.
@Suite(.enabled(if: S3TestSupport.isAvailable, Comment(rawValue: S3TestSupport.unavailableReason ?? "")))
struct S3AnswerTests {
    func storage(_ server: FixedAnswerServer, retries: Int = 2) throws -> S3Storage {
        var configuration = S3Configuration(credentials: S3Credentials(accessKeyID: "AKID", secretAccessKey: "secret"))
        configuration.retries = retries
        configuration.retryDelay = 0.01
        configuration.maximumRetryDelay = 0.05
        configuration.timeout = 20
        return try S3Storage(location: "s3:http://127.0.0.1:\(server.port)/kho-test/x", configuration: configuration)
    }

    @Test(arguments: [301, 307])
    func redirectsAreReportedNotFollowed(_ status: Int) throws {
        // Followed, the request would go to a port where nothing listens: "connection refused".
        let elsewhere = "127.0.0.1:\(try S3TestSupport.freePort())"
        let server = try FixedAnswerServer(status: status, code: "PermanentRedirect", location: "http://\(elsewhere)/kho-test/x")
        let error = #expect(throws: KhoError.self) { try storage(server).checkAccess() }
        #expect(error?.kind == .storage && error?.retryable == false, "\(error?.message ?? "")")
        #expect(error?.message.contains("says bucket kho-test is served elsewhere") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains(elsewhere) == true, "\(error?.message ?? "")")
        #expect(server.requests == 1)
    }

    @Test(arguments: [(503, "SlowDown"), (500, "InternalError"), (429, "SlowDown"), (400, "RequestTimeout")])
    func transientAnswersAreTriedAgain(_ status: Int, _ code: String) throws {
        let server = try FixedAnswerServer(status: status, code: code)
        let handle = Handle(.index, String(repeating: "ab", count: 32))
        let error = #expect(throws: KhoError.self) { try storage(server, retries: 2).save(handle, data: [1, 2, 3]) }
        #expect(error?.kind == .storage && error?.retryable == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("kept failing to write index/\(handle.name) (HTTP \(status) \(code), 3 attempts)") == true,
                "\(error?.message ?? "")")
        #expect(server.requests == 3)
    }

    @Test(arguments: ["XAmzContentSHA256Mismatch", "BadDigest"])
    func aBodyTheServerFoundDamagedIsNamedAndNothingIsStored(_ code: String) throws {
        let server = try FixedAnswerServer(status: 400, code: code)
        let handle = Handle(.data, String(repeating: "ef", count: 32))
        let error = #expect(throws: KhoError.self) { try storage(server).save(handle, data: [1, 2, 3]) }
        #expect(error?.kind == .storage && error?.retryable == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("refused to write data/ef/\(handle.name): the bytes it received do not match their checksum (\(code))") == true,
                "\(error?.message ?? "")")
        #expect(error?.message.contains("Run the command again") == true)
        #expect(server.requests == 1)
    }

    @Test func otherClientErrorsAreNotTriedAgain() throws {
        let server = try FixedAnswerServer(status: 400, code: "InvalidArgument")
        let error = #expect(throws: KhoError.self) { _ = try storage(server).load(Handle(.index, String(repeating: "cd", count: 32))) }
        #expect(error?.kind == .storage && error?.retryable == false, "\(error?.message ?? "")")
        #expect(error?.message.contains("answered HTTP 400 (InvalidArgument") == true, "\(error?.message ?? "")")
        #expect(server.requests == 1)
    }
}
